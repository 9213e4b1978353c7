import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModelFolder, writeModelFolder } from '../model/loader.js';
import { modelInfoToJson, parseModelInfo, checkShapeMatches } from './model-info.js';
import { loadQuantizedModel, ModelServer, modelHash } from './model-server.js';
import { removeDir, writeTinyModel } from './test-support.js';

test('model info survives JSON exactly, and the parser rejects hostile documents', async (t) => {
  const { dir, config, root } = writeTinyModel();
  t.after(() => removeDir(root));
  const server = await ModelServer.fromFolder(dir, { threads: 0, maxTokens: 100 });
  const json = modelInfoToJson(server.info);
  const info = parseModelInfo(json);
  assert.equal(info.hash, server.hash);
  assert.equal(info.maxTokens, 100);
  assert.equal(info.actBits, 8);
  assert.equal(info.shape.numLayers, 2);
  assert.equal(info.scales.length, 2);
  assert.equal(info.scales[1].qkv.length, 3);
  assert.equal(info.scales[1].qkv[1].length, config.numKvHeads * config.headDim);
  assert.deepEqual(info.scales, server.info.scales); // bit-exact floats
  checkShapeMatches(info, config);
  assert.throws(() => checkShapeMatches(info, { ...config, intermediateSize: 256 }), /intermediateSize = 128, the local config.json says 256/);

  const doc = JSON.parse(json);
  const mutate = (f: (d: any) => void): string => { const d = structuredClone(doc); f(d); return JSON.stringify(d); };
  const cases: [string, RegExp][] = [
    ['not json', /not JSON/],
    [mutate((d) => { d.format = 'x'; }), /format/],
    [mutate((d) => { d.version = 2; }), /version/],
    [mutate((d) => { d.hash = 'AB'.repeat(32); }), /hash/],
    [mutate((d) => { d.params_id = 0; }), /params_id/],
    [mutate((d) => { d.act_bits = 1.5; }), /act_bits/],
    [mutate((d) => { d.config.hidden_size = 2 ** 40; }), /hidden_size/],
    [mutate((d) => { d.config.num_layers = 3; }), /3 layers/],
    [mutate((d) => { d.scales[0].qkv.pop(); }), /must list 3 matrices/],
    [mutate((d) => { d.scales[0].o[0] = d.scales[0].o[0].slice(4); }), /base64 of 64 float32/],
    [mutate((d) => { d.scales[1].down[0] = '!' + d.scales[1].down[0].slice(1); }), /base64/],
    [mutate((d) => { d.scales[1].down[0] = Buffer.from(new Float32Array(64).fill(-1).buffer).toString('base64'); }), /not a positive finite scale/],
    [mutate((d) => { d.scales[1].down[0] = Buffer.from(new Float32Array(64).fill(NaN).buffer).toString('base64'); }), /not a positive finite scale/],
  ];
  for (const [text, re] of cases) assert.throws(() => parseModelInfo(text), (e: Error) => /model info from the server is invalid/.test(e.message) && re.test(e.message), re.source);
});

test('the model hash covers every quantized weight and scale', (t) => {
  const { dir, root, configJson } = writeTinyModel();
  t.after(() => removeDir(root));
  const base = loadQuantizedModel(dir);
  assert.match(base.hash, /^[0-9a-f]{64}$/);
  assert.equal(loadQuantizedModel(dir).hash, base.hash, 'deterministic');
  // One weight changed in the last layer's down projection: a different hash.
  const { tensors } = loadModelFolder(dir);
  const w = tensors.get('model.layers.1.mlp.down_proj.weight')!;
  w.data[w.data.length - 1] += 0.05;
  const dir2 = `${root}/changed`;
  writeModelFolder(dir2, configJson, tensors);
  assert.notEqual(loadQuantizedModel(dir2).hash, base.hash);
  // A scale alone changed (values equal): a different hash.
  const layers = base.layers.map((l) => ({ ...l, o: l.o.map((q) => ({ ...q, scales: q.scales.slice() })) }));
  layers[0].o[0].scales[0] *= 2;
  assert.notEqual(modelHash(layers), base.hash);
  assert.equal(modelHash(base.layers), base.hash);
});
