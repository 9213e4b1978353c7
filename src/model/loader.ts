// Hugging Face model folders: config.json plus model.safetensors, or shards
// model-0000i-of-0000n.safetensors listed in model.safetensors.index.json (weight_map).

import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { parseConfig, type LlamaConfig } from './config.js';
import { readSafetensorsHeader, readTensors, shapeSize, writeSafetensors, type Tensor } from './safetensors.js';
import { PROJECTION_NAMES, projectionShape, projectionWeightName } from './projections.js';

/** JSON side files (config, index) larger than this are rejected before reading. */
const MAX_JSON_BYTES = 64 * 1024 * 1024;
/** Default shard size of writeModelFolder, as transformers' save_pretrained (5 GB). */
export const DEFAULT_SHARD_BYTES = 5_000_000_000;

const SINGLE_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';
const SHARD_RE = /^model-\d{5}-of-\d{5}\.safetensors$/;

export function readJsonFile(path: string, what: string): unknown {
  if (!existsSync(path)) throw new Error(`helora: ${what} not found: ${path}`);
  const size = statSync(path).size;
  if (size > MAX_JSON_BYTES) throw new Error(`helora: ${what} ${path} is ${size} bytes (cap ${MAX_JSON_BYTES})`);
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`helora: ${what} ${path} is not valid JSON (${(e as Error).message})`);
  }
}

/** Every tensor a Llama-family checkpoint of this config must hold, with its shape. */
export function expectedTensorShapes(config: LlamaConfig): Map<string, number[]> {
  const { hiddenSize: h, numHeads, numKvHeads, headDim, vocabSize: v } = config;
  const qDim = numHeads * headDim;
  const kvDim = numKvHeads * headDim;
  const shapes = new Map<string, number[]>();
  shapes.set('model.embed_tokens.weight', [v, h]);
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}.`;
    for (const name of PROJECTION_NAMES) shapes.set(projectionWeightName(i, name), projectionShape(config, name));
    if (config.attentionBias) {
      shapes.set(p + 'self_attn.q_proj.bias', [qDim]);
      shapes.set(p + 'self_attn.k_proj.bias', [kvDim]);
      shapes.set(p + 'self_attn.v_proj.bias', [kvDim]);
    }
    shapes.set(p + 'input_layernorm.weight', [h]);
    shapes.set(p + 'post_attention_layernorm.weight', [h]);
  }
  shapes.set('model.norm.weight', [h]);
  if (!config.tieWordEmbeddings) shapes.set('lm_head.weight', [v, h]);
  return shapes;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Map file name -> tensor names stored in it, from the index or the single file. */
function locateTensors(dir: string): Map<string, Set<string> | null> {
  const indexPath = join(dir, INDEX_FILE);
  if (existsSync(indexPath)) {
    const index = readJsonFile(indexPath, 'safetensors index') as Record<string, unknown>;
    const wm = index?.weight_map;
    if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) throw new Error(`helora: ${indexPath}: "weight_map" must be an object`);
    const files = new Map<string, Set<string>>();
    for (const [name, file] of Object.entries(wm)) {
      // Shard names come from an untrusted file: plain file names only, no paths.
      if (typeof file !== 'string' || file !== basename(file) || file === '..' || file.includes('\\') || !file.endsWith('.safetensors')) {
        throw new Error(`helora: ${indexPath}: weight_map["${name}"] must be a .safetensors file name in the same folder, got ${JSON.stringify(file)}`);
      }
      if (!files.has(file)) files.set(file, new Set());
      files.get(file)!.add(name);
    }
    return files;
  }
  if (existsSync(join(dir, SINGLE_FILE))) return new Map([[SINGLE_FILE, null]]);
  throw new Error(`helora: ${dir} holds neither ${SINGLE_FILE} nor ${INDEX_FILE}`);
}

/**
 * Load config.json and the expected weights of a model folder as Float32Arrays. Only tensors that
 * the architecture uses (expectedTensorShapes) and that pass `filter` are read; others in the
 * files (e.g. a redundant lm_head.weight in a tied checkpoint) are ignored.
 */
export function loadModelFolder(dir: string, filter?: (name: string) => boolean): { config: LlamaConfig; tensors: Map<string, Tensor> } {
  const config = parseConfig(readJsonFile(join(dir, 'config.json'), 'config.json'));
  const expected = expectedTensorShapes(config);
  const wanted = (name: string): boolean => expected.has(name) && (!filter || filter(name));
  const tensors = new Map<string, Tensor>();
  for (const [file, listed] of locateTensors(dir)) {
    if (listed !== null && ![...listed].some(wanted)) continue;
    const path = join(dir, file);
    if (!existsSync(path)) throw new Error(`helora: shard ${file} named in ${INDEX_FILE} is missing from ${dir}`);
    const header = readSafetensorsHeader(path);
    // Check shapes from the header first so a wrong checkpoint fails before gigabytes are read.
    for (const [name, info] of header) {
      if (!wanted(name) || (listed !== null && !listed.has(name))) continue;
      const want = expected.get(name)!;
      if (!sameShape(info.shape, want)) {
        throw new Error(`helora: tensor ${name} in ${file} has shape [${info.shape.join(', ')}], expected [${want.join(', ')}] for this config.json`);
      }
      if (tensors.has(name)) throw new Error(`helora: tensor ${name} appears in more than one file of ${dir}`);
    }
    if (listed !== null) {
      for (const name of listed) if (wanted(name) && !header.has(name)) throw new Error(`helora: ${INDEX_FILE} places ${name} in ${file}, but that file does not hold it`);
    }
    for (const [name, t] of readTensors(path, (n) => wanted(n) && (listed === null || listed.has(n)))) tensors.set(name, t);
  }
  const missing = [...expected.keys()].filter((n) => (!filter || filter(n)) && !tensors.has(n));
  if (missing.length > 0) {
    const more = missing.length > 5 ? ` and ${missing.length - 5} more` : '';
    throw new Error(`helora: ${dir} is missing ${missing.length} tensor(s) the config requires: ${missing.slice(0, 5).join(', ')}${more}`);
  }
  return { config, tensors };
}

/**
 * Write config.json and the weights: one model.safetensors, or shards of at most `shardBytes`
 * (one tensor larger than that gets a shard of its own) plus model.safetensors.index.json.
 * Weight files of an earlier save in the same folder are removed first so no stale index survives.
 */
export function writeModelFolder(
  dir: string,
  configJson: Record<string, unknown>,
  tensors: Map<string, Tensor>,
  opts: { shardBytes?: number; dtype?: 'F32' | 'BF16' } = {},
): void {
  const dtype = opts.dtype ?? 'F32';
  const shardBytes = opts.shardBytes ?? DEFAULT_SHARD_BYTES;
  if (!(shardBytes > 0)) throw new Error(`helora: shardBytes must be positive, got ${shardBytes}`);
  const elemBytes = dtype === 'F32' ? 4 : 2;
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(dir)) if (f === SINGLE_FILE || f === INDEX_FILE || SHARD_RE.test(f)) unlinkSync(join(dir, f));

  const shards: Array<Array<[string, Tensor]>> = [[]];
  let current = 0;
  let total = 0;
  for (const [name, t] of tensors) {
    const bytes = shapeSize(t.shape) * elemBytes;
    if (current > 0 && current + bytes > shardBytes) {
      shards.push([]);
      current = 0;
    }
    shards[shards.length - 1].push([name, t]);
    current += bytes;
    total += bytes;
  }
  const metadata = { format: 'pt' }; // transformers checks for this key when loading
  if (shards.length === 1) {
    writeSafetensors(join(dir, SINGLE_FILE), shards[0].map(([name, t]) => ({ name, ...t })), { dtype, metadata });
  } else {
    const pad = (i: number): string => String(i).padStart(5, '0');
    const weightMap: Record<string, string> = {};
    shards.forEach((shard, i) => {
      const file = `model-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`;
      writeSafetensors(join(dir, file), shard.map(([name, t]) => ({ name, ...t })), { dtype, metadata });
      for (const [name] of shard) weightMap[name] = file;
    });
    writeFileSync(join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n');
  }
  writeFileSync(join(dir, 'config.json'), JSON.stringify(configJson, null, 2) + '\n');
}
