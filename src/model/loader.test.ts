import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from './config.js';
import { expectedTensorShapes, loadModelFolder, writeModelFolder } from './loader.js';
import type { Tensor } from './safetensors.js';

const root = mkdtempSync(join(tmpdir(), 'helora-loader-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

const TINY = {
  model_type: 'llama', hidden_size: 16, intermediate_size: 24, num_hidden_layers: 3, num_attention_heads: 4,
  num_key_value_heads: 2, vocab_size: 50, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false, torch_dtype: 'float32',
};

/** Tensors for a config, shapes written out here independently of expectedTensorShapes. */
function tinyTensors(cfg: typeof TINY & { model_type: string }, bias: boolean): Map<string, Tensor> {
  const h = cfg.hidden_size, m = cfg.intermediate_size, hd = h / cfg.num_attention_heads;
  const q = cfg.num_attention_heads * hd, kv = cfg.num_key_value_heads * hd;
  const t = new Map<string, Tensor>();
  const add = (name: string, shape: number[]): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = (Math.random() - 0.5) * 4;
    t.set(name, { shape, data });
  };
  add('model.embed_tokens.weight', [cfg.vocab_size, h]);
  for (let i = 0; i < cfg.num_hidden_layers; i++) {
    const p = `model.layers.${i}.`;
    add(p + 'self_attn.q_proj.weight', [q, h]);
    add(p + 'self_attn.k_proj.weight', [kv, h]);
    add(p + 'self_attn.v_proj.weight', [kv, h]);
    add(p + 'self_attn.o_proj.weight', [h, q]);
    if (bias) {
      add(p + 'self_attn.q_proj.bias', [q]);
      add(p + 'self_attn.k_proj.bias', [kv]);
      add(p + 'self_attn.v_proj.bias', [kv]);
    }
    add(p + 'mlp.gate_proj.weight', [m, h]);
    add(p + 'mlp.up_proj.weight', [m, h]);
    add(p + 'mlp.down_proj.weight', [h, m]);
    add(p + 'input_layernorm.weight', [h]);
    add(p + 'post_attention_layernorm.weight', [h]);
  }
  add('model.norm.weight', [h]);
  if (!cfg.tie_word_embeddings) add('lm_head.weight', [cfg.vocab_size, h]);
  return t;
}

test('expectedTensorShapes matches the published checkpoints', () => {
  const llama = expectedTensorShapes(parseConfig({ model_type: 'llama', hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 64, vocab_size: 128256, tie_word_embeddings: true }));
  assert.equal(llama.size, 146); // Llama-3.2-1B model.safetensors holds 146 tensors
  assert.deepEqual(llama.get('model.layers.15.self_attn.k_proj.weight'), [512, 2048]);
  assert.deepEqual(llama.get('model.layers.0.mlp.down_proj.weight'), [2048, 8192]);
  assert.equal(llama.has('lm_head.weight'), false);
  const qwen = expectedTensorShapes(parseConfig({ model_type: 'qwen2', hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true }));
  assert.equal(qwen.size, 290); // Qwen2.5-0.5B: 1 + 24 * 12 + 1
  assert.deepEqual(qwen.get('model.layers.3.self_attn.k_proj.bias'), [128]);
  assert.deepEqual(qwen.get('model.layers.3.self_attn.q_proj.bias'), [896]);
  assert.equal(qwen.has('model.layers.3.self_attn.o_proj.bias'), false);
  const tiny = expectedTensorShapes(parseConfig({ model_type: 'llama', hidden_size: 2048, intermediate_size: 5632, num_hidden_layers: 22, num_attention_heads: 32, num_key_value_heads: 4, vocab_size: 32000 }));
  assert.equal(tiny.size, 201); // TinyLlama-1.1B
  assert.deepEqual(tiny.get('lm_head.weight'), [32000, 2048]);
});

test('single-file F32 folder loads bit-exact; filter reads a subset', () => {
  const dir = join(root, 'f32');
  const tensors = tinyTensors(TINY, false);
  writeModelFolder(dir, TINY, tensors);
  assert.deepEqual(readdirSync(dir).sort(), ['config.json', 'model.safetensors']);
  const { config, tensors: back } = loadModelFolder(dir);
  assert.equal(config.numLayers, 3);
  assert.equal(back.size, tensors.size);
  for (const [name, t] of tensors) {
    assert.deepEqual(back.get(name)!.shape, t.shape, name);
    assert.deepEqual(back.get(name)!.data, t.data, name);
  }
  const sub = loadModelFolder(dir, (n) => n.startsWith('model.layers.1.'));
  assert.deepEqual([...sub.tensors.keys()].sort(), [...tensors.keys()].filter((n) => n.startsWith('model.layers.1.')).sort());
});

test('sharded BF16 qwen2 folder (index + shards) loads with bf16 rounding', () => {
  const dir = join(root, 'bf16');
  const cfg = { ...TINY, model_type: 'qwen2', tie_word_embeddings: true, torch_dtype: 'bfloat16' };
  const tensors = tinyTensors(cfg, true);
  // An unused buffer some older checkpoints carry is ignored.
  tensors.set('model.layers.0.self_attn.rotary_emb.inv_freq', { shape: [2], data: new Float32Array([1, 2]) });
  writeModelFolder(dir, cfg, tensors, { shardBytes: 3000, dtype: 'BF16' });
  const files = readdirSync(dir).sort();
  const shards = files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
  assert.ok(shards.length >= 3, `expected several shards, got ${files.join(', ')}`);
  assert.ok(files.includes('model.safetensors.index.json'));
  const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
  assert.equal(Object.keys(index.weight_map).length, tensors.size);

  const { config, tensors: back } = loadModelFolder(dir);
  assert.equal(config.attentionBias, true);
  assert.equal(back.has('lm_head.weight'), false);
  assert.equal(back.has('model.layers.0.self_attn.rotary_emb.inv_freq'), false);
  assert.equal(back.size, tensors.size - 1);
  for (const [name, t] of back) {
    const src = tensors.get(name)!.data;
    const bits = new Uint32Array(t.data.buffer);
    for (let i = 0; i < src.length; i++) {
      assert.equal(bits[i] & 0xffff, 0, `${name}[${i}] is not a bfloat16 value`);
      assert.ok(Math.abs(t.data[i] - src[i]) <= Math.abs(src[i]) * 2 ** -8, `${name}[${i}]: ${t.data[i]} vs ${src[i]}`);
    }
  }
  // Re-saving as a single file replaces the shards and index.
  writeModelFolder(dir, cfg, tensors);
  assert.deepEqual(readdirSync(dir).sort(), ['config.json', 'model.safetensors']);
});

test('missing or misshapen tensors and bad folders give clear errors', () => {
  const tensors = tinyTensors(TINY, false);
  const noDown = new Map(tensors);
  noDown.delete('model.layers.2.mlp.down_proj.weight');
  writeModelFolder(join(root, 'missing'), TINY, noDown);
  assert.throws(() => loadModelFolder(join(root, 'missing')), /missing 1 tensor\(s\).*model\.layers\.2\.mlp\.down_proj\.weight/);
  // ...but a filter that excludes it does not need it.
  assert.equal(loadModelFolder(join(root, 'missing'), (n) => !n.includes('down_proj')).tensors.size, tensors.size - 3);

  const wrong = new Map(tensors);
  wrong.set('model.layers.1.self_attn.k_proj.weight', { shape: [16, 16], data: new Float32Array(256) });
  writeModelFolder(join(root, 'wrong'), TINY, wrong);
  assert.throws(() => loadModelFolder(join(root, 'wrong')), /model\.layers\.1\.self_attn\.k_proj\.weight .*shape \[16, 16\], expected \[8, 16\]/);

  // qwen2 needs q/k/v biases
  writeModelFolder(join(root, 'nobias'), { ...TINY, model_type: 'qwen2' }, tensors);
  assert.throws(() => loadModelFolder(join(root, 'nobias')), /missing 9 tensor\(s\).*q_proj\.bias/);

  const sharded = join(root, 'sharded');
  writeModelFolder(sharded, TINY, tensors, { shardBytes: 4000 });
  const indexPath = join(sharded, 'model.safetensors.index.json');
  const index = JSON.parse(readFileSync(indexPath, 'utf8'));
  const shardNames = [...new Set(Object.values(index.weight_map) as string[])];
  writeFileSync(indexPath, JSON.stringify({ ...index, weight_map: { ...index.weight_map, 'model.norm.weight': '../../etc/passwd.safetensors' } }));
  assert.throws(() => loadModelFolder(sharded), /must be a \.safetensors file name in the same folder/);
  writeFileSync(indexPath, JSON.stringify({ ...index, weight_map: { ...index.weight_map, 'model.norm.weight': shardNames[0] === index.weight_map['model.norm.weight'] ? shardNames[1] : shardNames[0] } }));
  assert.throws(() => loadModelFolder(sharded), /places model\.norm\.weight in .* but that file does not hold it/);
  writeFileSync(indexPath, JSON.stringify(index));
  unlinkSync(join(sharded, shardNames[1]));
  assert.throws(() => loadModelFolder(sharded), /shard model-00002-of-\d{5}\.safetensors named in model\.safetensors\.index\.json is missing/);
  writeFileSync(indexPath, '{"weight_map": [1]}');
  assert.throws(() => loadModelFolder(sharded), /"weight_map" must be an object/);
  writeFileSync(indexPath, '{not json');
  assert.throws(() => loadModelFolder(sharded), /not valid JSON/);

  const empty = join(root, 'empty');
  writeModelFolder(empty, TINY, tensors);
  unlinkSync(join(empty, 'model.safetensors'));
  assert.throws(() => loadModelFolder(empty), /holds neither model\.safetensors nor model\.safetensors\.index\.json/);
  unlinkSync(join(empty, 'config.json'));
  assert.ok(!existsSync(join(empty, 'config.json')));
  assert.throws(() => loadModelFolder(empty), /config\.json not found/);
});
