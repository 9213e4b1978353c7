// PEFT LoRA adapter folders (adapter_config.json + adapter_model.safetensors), the format
// Hugging Face PEFT saves and loads (PeftModel.from_pretrained).

import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LlamaConfig } from './config.js';
import { isProjectionName, PROJECTION_NAMES, PROJECTIONS, projectionShape, type ProjectionName } from './projections.js';
import { readSafetensorsHeader, readTensors, writeSafetensors, type Tensor } from './safetensors.js';

export interface LoraLayer {
  /** [r, inDim] row-major */
  A: Float32Array;
  /** [outDim, r] row-major */
  B: Float32Array;
  inDim: number;
  outDim: number;
}

export interface LoraTensors {
  rank: number;
  alpha: number;
  dropout: number;
  /** Module kinds adapted, as PEFT names them: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj. */
  targetModules: string[];
  /** PEFT layers_to_transform: the adapted decoder layers, ascending; null: every layer. */
  layersToTransform: number[] | null;
  /** Key e.g. 'layers.3.self_attn.q_proj' or 'layers.3.mlp.down_proj'. */
  layers: Map<string, LoraLayer>;
}

/** Prefix PEFT gives every key of a causal-LM adapter (PeftModel -> LlamaForCausalLM -> LlamaModel). */
const KEY_PREFIX = 'base_model.model.model.';
const LAYER_KEY_RE = /^layers\.(0|[1-9]\d{0,5})\.(self_attn|mlp)\.([a-z_]+)$/;
const FILE_KEY_RE = /^base_model\.model\.model\.(layers\.\d+\.(?:self_attn|mlp)\.[a-z_]+)\.lora_(A|B)\.weight$/;
/** adapter_config.json is a few hundred bytes; refuse absurd ones before reading. */
const MAX_CONFIG_BYTES = 1024 * 1024;

function fail(msg: string): never {
  throw new Error('helora: adapter: ' + msg);
}

/** Parse 'layers.3.self_attn.q_proj' -> { layer: 3, module: 'q_proj' }, checking the block matches the module. */
export function parseLoraKey(key: string): { layer: number; module: ProjectionName } {
  const m = LAYER_KEY_RE.exec(key);
  if (!m) fail(`bad LoRA layer key ${JSON.stringify(key)} (expected layers.<i>.self_attn.<q|k|v|o>_proj or layers.<i>.mlp.<gate|up|down>_proj)`);
  const [, layer, block, module] = m;
  if (!isProjectionName(module)) fail(`unsupported LoRA target module ${JSON.stringify(module)} in ${key}`);
  if (PROJECTIONS[module].block !== block) fail(`module ${module} does not belong to block ${block} in ${key}`);
  return { layer: Number(layer), module };
}

function validate(adapter: LoraTensors, config?: LlamaConfig): void {
  const { rank, alpha, dropout, targetModules } = adapter;
  if (!Number.isSafeInteger(rank) || rank <= 0) fail(`rank must be a positive integer, got ${rank}`);
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0) fail(`alpha must be a positive finite number, got ${alpha}`);
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) fail(`dropout must be in [0, 1), got ${dropout}`);
  if (!Array.isArray(targetModules) || targetModules.length === 0) fail('targetModules must be a non-empty list');
  for (const t of targetModules) if (!isProjectionName(t)) fail(`unsupported target module ${JSON.stringify(t)} (supported: ${PROJECTION_NAMES.join(', ')})`);
  if (new Set(targetModules).size !== targetModules.length) fail('targetModules has duplicates');
  if (adapter.layers.size === 0) fail('no LoRA layers');
  const only = adapter.layersToTransform;
  if (only !== null) {
    if (!Array.isArray(only) || only.length === 0) fail('layersToTransform must be a non-empty list of layer indices or null');
    only.forEach((l, i) => {
      if (!Number.isSafeInteger(l) || l < 0 || (i > 0 && l <= only[i - 1]!)) fail(`layers_to_transform must be ascending non-negative integers without repeats, got ${JSON.stringify(only)}`);
      if (config && l >= config.numLayers) fail(`layers_to_transform names layer ${l}, the model has ${config.numLayers}`);
    });
  }
  for (const [key, l] of adapter.layers) {
    const { layer, module } = parseLoraKey(key);
    if (!targetModules.includes(module)) fail(`layer ${key} adapts ${module}, which is not in target_modules [${targetModules.join(', ')}]`);
    if (only !== null && !only.includes(layer)) fail(`layer ${key} is not in layers_to_transform [${only.join(', ')}]`);
    if (!Number.isSafeInteger(l.inDim) || l.inDim <= 0 || !Number.isSafeInteger(l.outDim) || l.outDim <= 0) fail(`${key}: bad dims ${l.inDim}x${l.outDim}`);
    if (!(l.A instanceof Float32Array) || l.A.length !== rank * l.inDim) fail(`${key}: A must be a Float32Array of [r=${rank}, in=${l.inDim}]`);
    if (!(l.B instanceof Float32Array) || l.B.length !== l.outDim * rank) fail(`${key}: B must be a Float32Array of [out=${l.outDim}, r=${rank}]`);
    if (config) {
      if (layer >= config.numLayers) fail(`${key}: layer ${layer} does not exist (model has ${config.numLayers})`);
      const [outDim, inDim] = projectionShape(config, module);
      if (l.inDim !== inDim || l.outDim !== outDim) fail(`${key}: dims ${l.inDim} -> ${l.outDim} do not match the model's ${inDim} -> ${outDim}`);
    }
  }
}

/** Write a PEFT adapter folder. Weights are stored as F32, so a save/load round trip is bit-exact. */
export function saveAdapter(dir: string, adapter: LoraTensors, baseModel: string): void {
  validate(adapter);
  if (typeof baseModel !== 'string') fail('baseModel must be a string');
  mkdirSync(dir, { recursive: true });
  const tensors: Array<{ name: string } & Tensor> = [];
  const keys = [...adapter.layers.keys()].sort(compareKeys);
  for (const key of keys) {
    const l = adapter.layers.get(key)!;
    tensors.push({ name: `${KEY_PREFIX}${key}.lora_A.weight`, shape: [adapter.rank, l.inDim], data: l.A });
    tensors.push({ name: `${KEY_PREFIX}${key}.lora_B.weight`, shape: [l.outDim, adapter.rank], data: l.B });
  }
  writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { dtype: 'F32', metadata: { format: 'pt' } });
  const cfg = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    r: adapter.rank,
    lora_alpha: adapter.alpha,
    lora_dropout: adapter.dropout,
    target_modules: [...adapter.targetModules],
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    base_model_name_or_path: baseModel,
    modules_to_save: null,
    init_lora_weights: true,
    layers_to_transform: adapter.layersToTransform ? [...adapter.layersToTransform] : null,
    // PEFT finds the decoder layers of a Llama under `model.layers`
    layers_pattern: adapter.layersToTransform ? 'layers' : null,
    rank_pattern: {},
    alpha_pattern: {},
    use_rslora: false,
    use_dora: false,
    revision: null,
  };
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(cfg, null, 2) + '\n');
}

function compareKeys(a: string, b: string): number {
  const pa = parseLoraKey(a);
  const pb = parseLoraKey(b);
  return pa.layer - pb.layer || PROJECTION_NAMES.indexOf(pa.module) - PROJECTION_NAMES.indexOf(pb.module);
}

/** PEFT's layers_to_transform: null, one index, or a list (returned ascending); the pattern must name Llama's `layers`. */
function parseLayersToTransform(v: unknown, pattern: unknown): number[] | null {
  if (v === undefined || v === null) return null;
  const list = typeof v === 'number' ? [v] : v;
  if (!Array.isArray(list) || list.length === 0 || list.length > 100_000 || list.some((l) => !Number.isSafeInteger(l) || (l as number) < 0)) {
    fail(`layers_to_transform must be a non-negative integer or a non-empty list of them, got ${JSON.stringify(v).slice(0, 200)}`);
  }
  const okPattern = pattern === undefined || pattern === null || pattern === 'layers' || (Array.isArray(pattern) && pattern.length === 1 && pattern[0] === 'layers');
  if (!okPattern) fail(`layers_pattern ${JSON.stringify(pattern).slice(0, 200)} is not supported (Llama-family decoder layers are "layers")`);
  const sorted = [...new Set(list as number[])].sort((a, b) => a - b);
  return sorted;
}

function isEmptyish(v: unknown): boolean {
  return v === undefined || v === null || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && v !== null && Object.keys(v).length === 0);
}

/**
 * Load and validate a PEFT LoRA adapter folder. With `config`, layer indices and projection dims
 * are also checked against the base model.
 */
export function loadAdapter(dir: string, config?: LlamaConfig): LoraTensors {
  const cfgPath = join(dir, 'adapter_config.json');
  if (!existsSync(cfgPath)) fail(`no adapter_config.json in ${dir}`);
  if (statSync(cfgPath).size > MAX_CONFIG_BYTES) fail(`${cfgPath} is larger than ${MAX_CONFIG_BYTES} bytes`);
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
  } catch (e) {
    fail(`${cfgPath} is not valid JSON (${(e as Error).message})`);
  }
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) fail('adapter_config.json must hold a JSON object');
  if (cfg.peft_type !== 'LORA') fail(`peft_type must be "LORA", got ${JSON.stringify(cfg.peft_type)}`);
  if (cfg.task_type !== undefined && cfg.task_type !== null && cfg.task_type !== 'CAUSAL_LM') fail(`task_type must be "CAUSAL_LM", got ${JSON.stringify(cfg.task_type)}`);
  const rank = cfg.r;
  if (typeof rank !== 'number' || !Number.isSafeInteger(rank) || rank <= 0) fail(`r must be a positive integer, got ${JSON.stringify(rank)}`);
  const alpha = cfg.lora_alpha;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0) fail(`lora_alpha must be a positive number, got ${JSON.stringify(alpha)}`);
  const dropout = cfg.lora_dropout ?? 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) fail(`lora_dropout must be a number in [0, 1), got ${JSON.stringify(dropout)}`);
  const tm = cfg.target_modules;
  if (!Array.isArray(tm) || tm.some((t) => typeof t !== 'string')) fail(`target_modules must be a list of module names (a regex string or "all-linear" is not supported), got ${JSON.stringify(tm)}`);
  if ((cfg.bias ?? 'none') !== 'none') fail(`bias ${JSON.stringify(cfg.bias)} is not supported (only "none")`);
  if (cfg.fan_in_fan_out === true) fail('fan_in_fan_out=true is not supported (Llama projections are nn.Linear)');
  if (cfg.use_dora === true) fail('use_dora=true (DoRA) is not supported');
  if (cfg.use_rslora === true) fail('use_rslora=true (scaling alpha/sqrt(r)) is not supported');
  if (!isEmptyish(cfg.rank_pattern)) fail('per-module rank_pattern is not supported');
  if (!isEmptyish(cfg.alpha_pattern)) fail('per-module alpha_pattern is not supported');
  if (!isEmptyish(cfg.modules_to_save)) fail('modules_to_save (fully trained extra modules) is not supported');
  const layersToTransform = parseLayersToTransform(cfg.layers_to_transform, cfg.layers_pattern);

  const weightsPath = join(dir, 'adapter_model.safetensors');
  if (!existsSync(weightsPath)) {
    if (existsSync(join(dir, 'adapter_model.bin'))) fail(`${dir} holds adapter_model.bin (a pickle, which is never loaded); convert it to adapter_model.safetensors`);
    fail(`no adapter_model.safetensors in ${dir}`);
  }
  // Check names and shapes from the header before reading any data.
  const header = readSafetensorsHeader(weightsPath);
  const dims = new Map<string, { inDim?: number; outDim?: number }>();
  for (const [name, info] of header) {
    const m = FILE_KEY_RE.exec(name);
    if (!m) fail(`unexpected tensor ${JSON.stringify(name)} in adapter_model.safetensors (expected ${KEY_PREFIX}layers.<i>.<block>.<proj>.lora_<A|B>.weight)`);
    const [, key, which] = m;
    parseLoraKey(key);
    if (info.shape.length !== 2) fail(`${name} must be 2-D, got shape [${info.shape.join(', ')}]`);
    const d = dims.get(key) ?? {};
    if (which === 'A') {
      if (info.shape[0] !== rank) fail(`${name} has shape [${info.shape.join(', ')}], expected [r=${rank}, in]`);
      d.inDim = info.shape[1];
    } else {
      if (info.shape[1] !== rank) fail(`${name} has shape [${info.shape.join(', ')}], expected [out, r=${rank}]`);
      d.outDim = info.shape[0];
    }
    dims.set(key, d);
  }
  for (const [key, d] of dims) {
    if (d.inDim === undefined) fail(`${key} has lora_B but no lora_A`);
    if (d.outDim === undefined) fail(`${key} has lora_A but no lora_B`);
  }
  const tensors = readTensors(weightsPath);
  const layers = new Map<string, LoraLayer>();
  for (const [key, d] of dims) {
    layers.set(key, {
      A: tensors.get(`${KEY_PREFIX}${key}.lora_A.weight`)!.data,
      B: tensors.get(`${KEY_PREFIX}${key}.lora_B.weight`)!.data,
      inDim: d.inDim!,
      outDim: d.outDim!,
    });
  }
  const adapter: LoraTensors = { rank, alpha, dropout, targetModules: [...(tm as string[])], layersToTransform, layers };
  validate(adapter, config);
  return adapter;
}
