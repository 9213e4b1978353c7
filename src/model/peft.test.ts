import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, cpSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from './config.js';
import { loadAdapter, saveAdapter, type LoraTensors } from './peft.js';
import { readSafetensorsHeader, readTensors, writeSafetensors } from './safetensors.js';

const root = mkdtempSync(join(tmpdir(), 'helora-peft-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

const CONFIG = parseConfig({ model_type: 'llama', hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 50 });
// [in, out] per module for CONFIG, written out by hand.
const DIMS: Record<string, [number, number]> = { q_proj: [16, 16], k_proj: [16, 8], v_proj: [16, 8], o_proj: [16, 16], gate_proj: [16, 24], up_proj: [16, 24], down_proj: [24, 16] };

function randomBits(n: number): Float32Array {
  // Random bit patterns (finite ones), so a lossy path anywhere would show.
  const u = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    do u[i] = (Math.random() * 2 ** 32) >>> 0; while (((u[i] >>> 23) & 0xff) === 0xff);
  }
  return new Float32Array(u.buffer);
}

function makeAdapter(rank = 4): LoraTensors {
  const layers = new Map();
  for (let l = 0; l < 2; l++) {
    for (const [mod, [inDim, outDim]] of Object.entries(DIMS)) {
      const block = mod.endsWith('_proj') && ['gate_proj', 'up_proj', 'down_proj'].includes(mod) ? 'mlp' : 'self_attn';
      layers.set(`layers.${l}.${block}.${mod}`, { A: randomBits(rank * inDim), B: randomBits(outDim * rank), inDim, outDim });
    }
  }
  return { rank, alpha: 8, dropout: 0.05, targetModules: Object.keys(DIMS), layersToTransform: null, layers };
}

test('save -> load round trip is bit-exact, in the PEFT layout', () => {
  const dir = join(root, 'rt');
  const ad = makeAdapter();
  saveAdapter(dir, ad, 'HuggingFaceTB/SmolLM2-135M');
  const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.peft_type, 'LORA');
  assert.equal(cfg.task_type, 'CAUSAL_LM');
  assert.equal(cfg.r, 4);
  assert.equal(cfg.lora_alpha, 8);
  assert.equal(cfg.bias, 'none');
  assert.equal(cfg.base_model_name_or_path, 'HuggingFaceTB/SmolLM2-135M');
  const header = readSafetensorsHeader(join(dir, 'adapter_model.safetensors'));
  assert.deepEqual(header.get('base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight')?.shape, [4, 16]);
  assert.deepEqual(header.get('base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight')?.shape, [8, 4]);
  assert.deepEqual(header.get('base_model.model.model.layers.0.mlp.down_proj.lora_A.weight')?.shape, [4, 24]);
  assert.equal(header.size, 2 * 7 * 2);

  const back = loadAdapter(dir, CONFIG);
  assert.equal(back.rank, 4);
  assert.equal(back.alpha, 8);
  assert.equal(back.dropout, 0.05);
  assert.deepEqual(back.targetModules, ad.targetModules);
  assert.deepEqual([...back.layers.keys()].sort(), [...ad.layers.keys()].sort());
  for (const [k, l] of ad.layers) {
    const b = back.layers.get(k)!;
    assert.equal(b.inDim, l.inDim);
    assert.equal(b.outDim, l.outDim);
    assert.deepEqual(new Uint32Array(b.A.buffer), new Uint32Array(l.A.buffer), k + ' A');
    assert.deepEqual(new Uint32Array(b.B.buffer), new Uint32Array(l.B.buffer), k + ' B');
  }
  // A partial adapter (q and v only, as PEFT's default for Llama) also loads.
  const qv: LoraTensors = { ...ad, targetModules: ['q_proj', 'v_proj'], layers: new Map([...ad.layers].filter(([k]) => /q_proj|v_proj/.test(k))) };
  saveAdapter(join(root, 'qv'), qv, 'x');
  assert.equal(loadAdapter(join(root, 'qv'), CONFIG).layers.size, 4);
});

test('saveAdapter refuses inconsistent adapters', () => {
  const ad = makeAdapter();
  const bad = (mut: (a: LoraTensors) => void, re: RegExp): void => {
    const a = makeAdapter();
    mut(a);
    assert.throws(() => saveAdapter(join(root, 'bad-save'), a, 'x'), re);
  };
  bad((a) => { a.rank = 0; }, /rank must be a positive integer/);
  bad((a) => { a.rank = 3; }, /A must be a Float32Array of \[r=3/);
  bad((a) => { a.alpha = NaN; }, /alpha/);
  bad((a) => { a.dropout = 1; }, /dropout/);
  bad((a) => { a.targetModules = ['q_proj']; }, /not in target_modules/);
  bad((a) => { a.targetModules = [...a.targetModules, 'lm_head']; }, /unsupported target module "lm_head"/);
  bad((a) => { a.layers.set('layers.0.mlp.q_proj', a.layers.get('layers.0.self_attn.q_proj')!); }, /does not belong to block mlp/);
  bad((a) => { a.layers.set('model.layers.0.self_attn.q_proj', a.layers.get('layers.0.self_attn.q_proj')!); }, /bad LoRA layer key/);
  bad((a) => { a.layers.get('layers.1.mlp.up_proj')!.B = new Float32Array(5); }, /layers\.1\.mlp\.up_proj: B must be/);
  assert.ok(ad.layers.size > 0);
});

test('hostile or malformed adapter folders are rejected', () => {
  const good = join(root, 'good');
  saveAdapter(good, makeAdapter(), 'x');
  const goodCfg = JSON.parse(readFileSync(join(good, 'adapter_config.json'), 'utf8'));
  const weights = readTensors(join(good, 'adapter_model.safetensors'));
  let n = 0;
  const variant = (cfg: unknown, tensors: Map<string, { shape: number[]; data: Float32Array }> | null): string => {
    const d = join(root, `v${n++}`);
    cpSync(good, d, { recursive: true });
    if (cfg !== undefined) writeFileSync(join(d, 'adapter_config.json'), typeof cfg === 'string' ? cfg : JSON.stringify(cfg));
    if (tensors) writeSafetensors(join(d, 'adapter_model.safetensors'), tensors);
    return d;
  };
  const withT = (edit: (m: Map<string, { shape: number[]; data: Float32Array }>) => void): Map<string, { shape: number[]; data: Float32Array }> => {
    const m = new Map(weights);
    edit(m);
    return m;
  };
  const A0 = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight';
  const B0 = 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight';
  const cases: Array<[string, RegExp, LlamaCfg?]> = [
    [variant('{oops', null), /adapter_config\.json.* is not valid JSON/],
    [variant([], null), /must hold a JSON object/],
    [variant({ ...goodCfg, peft_type: 'IA3' }, null), /peft_type must be "LORA"/],
    [variant({ ...goodCfg, task_type: 'SEQ_CLS' }, null), /task_type must be "CAUSAL_LM"/],
    [variant({ ...goodCfg, r: 4.5 }, null), /r must be a positive integer/],
    [variant({ ...goodCfg, r: '4' }, null), /r must be a positive integer/],
    [variant({ ...goodCfg, r: 8 }, null), /expected \[r=8, in\]/],
    [variant({ ...goodCfg, lora_alpha: -1 }, null), /lora_alpha/],
    [variant({ ...goodCfg, lora_dropout: 2 }, null), /lora_dropout/],
    [variant({ ...goodCfg, target_modules: '.*proj' }, null), /target_modules must be a list/],
    [variant({ ...goodCfg, target_modules: ['q_proj'] }, null), /not in target_modules/],
    [variant({ ...goodCfg, bias: 'all' }, null), /bias "all" is not supported/],
    [variant({ ...goodCfg, use_dora: true }, null), /DoRA/],
    [variant({ ...goodCfg, use_rslora: true }, null), /use_rslora/],
    [variant({ ...goodCfg, fan_in_fan_out: true }, null), /fan_in_fan_out/],
    [variant({ ...goodCfg, rank_pattern: { q_proj: 8 } }, null), /rank_pattern/],
    [variant({ ...goodCfg, modules_to_save: ['lm_head'] }, null), /modules_to_save/],
    [variant(undefined, withT((m) => m.delete(B0))), /layers\.0\.self_attn\.q_proj has lora_A but no lora_B/],
    [variant(undefined, withT((m) => m.delete(A0))), /has lora_B but no lora_A/],
    [variant(undefined, withT((m) => m.set(A0, { shape: [5, 16], data: new Float32Array(80) }))), /expected \[r=4, in\]/],
    [variant(undefined, withT((m) => m.set(B0, { shape: [16, 3], data: new Float32Array(48) }))), /expected \[out, r=4\]/],
    [variant(undefined, withT((m) => m.set(A0, { shape: [4, 4, 4], data: new Float32Array(64) }))), /must be 2-D/],
    [variant(undefined, withT((m) => m.set('base_model.model.lm_head.weight', { shape: [1], data: new Float32Array(1) }))), /unexpected tensor "base_model\.model\.lm_head\.weight"/],
    [variant(undefined, withT((m) => m.set('base_model.model.model.layers.0.self_attn.rotary.lora_A.weight', { shape: [4, 16], data: new Float32Array(64) }))), /unsupported LoRA target module "rotary"/],
    // Consistent in itself but not for the base model: wrong in-dim, and a layer the model lacks.
    [variant(undefined, withT((m) => { m.set(A0, { shape: [4, 12], data: new Float32Array(48) }); })), /dims 12 -> 16 do not match the model's 16 -> 16/, CONFIG],
    [variant(undefined, withT((m) => {
      m.set(A0.replace('layers.0', 'layers.7'), weights.get(A0)!);
      m.set(B0.replace('layers.0', 'layers.7'), weights.get(B0)!);
    })), /layer 7 does not exist/, CONFIG],
  ];
  for (const [d, re, cfg] of cases) assert.throws(() => loadAdapter(d, cfg), (e: Error) => re.test(e.message) && e.message.startsWith('helora:'), `${d}: expected ${re}`);

  const noWeights = variant(undefined, null);
  unlinkSync(join(noWeights, 'adapter_model.safetensors'));
  assert.throws(() => loadAdapter(noWeights), /no adapter_model\.safetensors/);
  writeFileSync(join(noWeights, 'adapter_model.bin'), 'pickle');
  assert.throws(() => loadAdapter(noWeights), /adapter_model\.bin \(a pickle/);
  assert.throws(() => loadAdapter(join(root, 'nowhere')), /no adapter_config\.json/);
  // The good folder itself passes, so the failures above are due to the edits.
  assert.equal(loadAdapter(variant(undefined, null), CONFIG).layers.size, 14);
});

type LlamaCfg = typeof CONFIG;
