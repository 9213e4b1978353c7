// The client's Freivalds check of results (issue 12, item 12): a server that computes one
// projection with other weights, while announcing the right model hash and scales, is caught and
// named; an honest server passes every check.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeModelFolder } from '../model/loader.js';
import type { LlamaConfig } from '../model/config.js';
import { groupShapes, PROJECTION_GROUPS } from '../model/projections.js';
import { tinyModel } from '../train/test-fixtures.js';
import type { RemoteEncryptedProvider } from './client.js';
import { ModelServer } from './model-server.js';
import { RemoteTraining } from './remote-training.js';
import { startServer, type RunningServer } from './server.js';
import { removeDir, writeTinyModel } from './test-support.js';

let root = '';
let dir = '';
let config: LlamaConfig;
let honest: ModelServer;
let evil: ModelServer;
let srv: RunningServer;

before(async () => {
  const tiny = writeTinyModel();
  root = tiny.root;
  dir = tiny.dir;
  config = tiny.config;
  honest = await ModelServer.fromFolder(dir, { threads: 0, maxTokens: 64 });
  // The same model with layer 1's down projection changed (as a backdoored copy would be).
  const { configJson, tensors } = tinyModel();
  const down = tensors.get('model.layers.1.mlp.down_proj.weight')!;
  const changed = new Float32Array(down.data.length);
  for (let i = 0; i < changed.length; i++) changed[i] = down.data[i] * (i % 7 === 0 ? -1 : 1.05);
  tensors.set('model.layers.1.mlp.down_proj.weight', { ...down, data: changed });
  const evilDir = join(root, 'evil');
  writeModelFolder(evilDir, configJson, tensors);
  evil = await ModelServer.fromFolder(evilDir, { threads: 0, maxTokens: 64 });
  assert.notEqual(evil.hash, honest.hash);
  // The malicious server: the honest model's hash and scales, the changed weights for (layer 1, down).
  const product = honest.productInPlace.bind(honest);
  honest.productInPlace = ((direction, layer, group, input, consume) => (layer === 1 && group === 'down'
    ? evil.productInPlace(direction, layer, group, input, consume)
    : product(direction, layer, group, input, consume))) as ModelServer['productInPlace'];
  srv = await startServer({ model: honest, log: () => {} });
});
after(async () => {
  await srv.close();
  await honest.close();
  await evil.close();
  removeDir(root);
});

function randomActivations(n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => (Math.random() * 2 - 1) * scale);
}

async function connect(): Promise<{ provider: RemoteEncryptedProvider; close(): Promise<void> }> {
  const training = new RemoteTraining({ url: srv.url });
  const c = await training.connect(config, dir);
  assert.equal(training.resultsVerified, true, 'the folder has the projections: results are checked');
  return { provider: c.provider as RemoteEncryptedProvider, close: c.close };
}

test('item 12: every honest product passes the integrity check (forward and backward, every layer and group)', async (t) => {
  const { provider, close } = await connect();
  try {
    for (let layer = 0; layer < config.numLayers; layer++) {
      for (const g of PROJECTION_GROUPS) {
        if (layer === 1 && g === 'down') continue;
        const dims = groupShapes(config, g);
        const T = 37;
        await provider.forward(layer, g, randomActivations(T * dims[0][1], 3), T);
        await provider.backward(layer, g, dims.map(([rows]) => randomActivations(T * rows, 0.01)), T);
      }
    }
    const s = provider.stats();
    assert.equal(s.integrityChecks, 2 * (config.numLayers * PROJECTION_GROUPS.length - 1));
    t.diagnostic(`integrity checks ${s.integrityChecks}: ${s.integrityMs.toFixed(1)} ms, client crypto ${s.cryptoMs.toFixed(1)} ms (${(100 * s.integrityMs / s.cryptoMs).toFixed(2)}%)`);
  } finally {
    await close();
  }
});

test('item 12: a server that substitutes one projection is caught, naming the layer and group', async () => {
  const { provider, close } = await connect();
  try {
    const T = 5;
    await assert.rejects(provider.forward(1, 'down', randomActivations(T * config.intermediateSize), T),
      /integrity check failed: the server's forward result for layer 1 group down \(token \d+\) does not match the public weights/);
    await assert.rejects(provider.backward(1, 'down', [randomActivations(T * config.hiddenSize, 0.01)], T),
      /integrity check failed: the server's backward result for layer 1 group down/);
    // the other projections still pass
    await provider.forward(0, 'down', randomActivations(T * config.intermediateSize), T);
  } finally {
    await close();
  }
});

test('item 12: without the projections locally the check cannot run (and says so); --no-verify-results turns it off', async () => {
  const lines: string[] = [];
  const off = new RemoteTraining({ url: srv.url, verifyResults: false, say: (l) => lines.push(l) });
  const c = await off.connect(config, dir);
  assert.equal(off.resultsVerified, false);
  assert.ok(lines.some((l) => /results are NOT checked against the weights \(--no-verify-results\)/.test(l)));
  await c.close();
});

test('item 12: --check-tokens sets how many tokens of each request are checked (0: every token) and the run says so', async () => {
  const lines: string[] = [];
  const all = new RemoteTraining({ url: srv.url, checkTokens: 0, say: (l) => lines.push(l) });
  const c = await all.connect(config, dir);
  try {
    assert.equal(all.resultsVerified, true);
    assert.ok(lines.some((l) => /Freivalds check on every token of every request/.test(l)), lines.join('\n'));
    // every token checked: a forward over layer 1's changed down projection fails whatever the draw
    const T = 40;
    await assert.rejects((c.provider as RemoteEncryptedProvider).forward(1, 'down', randomActivations(T * config.intermediateSize), T), /integrity check failed/);
  } finally {
    await c.close();
  }
  await assert.rejects(new RemoteTraining({ url: srv.url, checkTokens: -1 }).connect(config, dir), /--check-tokens must be a whole number >= 0/);
});
