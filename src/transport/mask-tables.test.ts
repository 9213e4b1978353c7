import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RLWE_N2048_Q44 } from '../crypto/index.js';
import { RemoteEncryptedProvider, RemoteSession } from './client.js';
import { layerTableLayout, tableFolder, tableMaskSeed } from './mask-tables.js';
import { ModelServer } from './model-server.js';
import { startServer } from './server.js';
import { removeDir, writeTinyModel } from './test-support.js';

test('mask tables: computed once per model, downloaded once, resumed from a partial file, checked against the published hash', async (t) => {
  const { dir, config, root } = writeTinyModel();
  const serverTables = join(root, 'server-tables');
  const model = await ModelServer.fromFolder(dir, { threads: 0, maskTables: serverTables });
  const srv = await startServer({ model, log: () => {} });
  t.after(async () => { await srv.close(); await model.close(); removeDir(root); });
  const layout = layerTableLayout(config, RLWE_N2048_Q44, 8);
  const info = model.info.maskTables!;
  assert.equal(info.layers.length, config.numLayers);
  assert.ok(info.layers.every((l) => l.bytes === layout.bytes));

  // A server restarted on the same folder reads the tables back instead of computing them.
  const serverFolder = tableFolder(serverTables, model.hash, RLWE_N2048_Q44);
  const stamp = readdirSync(serverFolder).map((f) => readFileSync(join(serverFolder, f)));
  const again = await ModelServer.fromFolder(dir, { threads: 0, maskTables: serverTables });
  assert.deepEqual(again.info.maskTables, info);
  await again.close();
  assert.deepEqual(readdirSync(serverFolder).map((f) => readFileSync(join(serverFolder, f))), stamp);

  const cache = join(root, 'client-tables');
  const folder = tableFolder(cache, model.hash, RLWE_N2048_Q44);
  const first = await RemoteEncryptedProvider.connect({ url: srv.url, masks: 'table', tableCache: cache });
  await first.close();
  assert.equal(first.tableBytesDown, layout.bytes * config.numLayers);
  for (let l = 0; l < config.numLayers; l++) assert.deepEqual(readFileSync(join(folder, `layer-${l}.bin`)), readFileSync(join(serverFolder, `layer-${l}.bin`)));
  // Cached: nothing to download.
  const second = await RemoteEncryptedProvider.connect({ url: srv.url, masks: 'table', tableCache: cache });
  await second.close();
  assert.equal(second.tableBytesDown, 0);

  // An interrupted download resumes where the partial file ends and ends with the same table.
  const l1 = join(folder, 'layer-1.bin');
  const whole = readFileSync(l1);
  writeFileSync(`${l1}.part`, whole.subarray(0, 1000));
  writeFileSync(l1, new Uint8Array(0)); // (a damaged cache file is fetched again)
  const resumed = await RemoteEncryptedProvider.connect({ url: srv.url, masks: 'table', tableCache: cache });
  await resumed.close();
  assert.equal(resumed.tableBytesDown, layout.bytes - 1000);
  assert.deepEqual(readFileSync(l1), whole);
  assert.ok(!existsSync(`${l1}.part`) || readFileSync(`${l1}.part`).length === 0);

  // A partial file that does not match the server's table is refused before any product is sent.
  const wrong = Buffer.from(whole.subarray(0, 1000));
  wrong[10] ^= 1;
  writeFileSync(l1, new Uint8Array(0));
  writeFileSync(`${l1}.part`, wrong);
  const sent: number[] = [];
  await assert.rejects(RemoteEncryptedProvider.connect({ url: srv.url, masks: 'table', tableCache: cache, capture: (_b, ch) => { if (ch === 'ws') sent.push(1); } }),
    /mask table of layer 1 .* does not match the size and hash the server published; refused/);
  assert.equal(sent.length, 0, 'no product was sent');
  // The next attempt starts over and succeeds.
  const retried = await RemoteEncryptedProvider.connect({ url: srv.url, masks: 'table', tableCache: cache });
  await retried.close();
  assert.deepEqual(readFileSync(l1), whole);

  // The public seeds differ per product and per model.
  const seeds = new Set<string>();
  for (const d of ['forward', 'backward'] as const) for (const g of ['qkv', 'o'] as const) for (const l of [0, 1]) seeds.add(Buffer.from(tableMaskSeed(RLWE_N2048_Q44, model.hash, l, g, d)).toString('hex'));
  seeds.add(Buffer.from(tableMaskSeed(RLWE_N2048_Q44, 'ab'.repeat(32), 0, 'qkv', 'forward')).toString('hex'));
  assert.equal(seeds.size, 9);
});

test('a client asking for tables from a server that offers none gets a clear error; fresh masks still work', async (t) => {
  const { dir, root } = writeTinyModel();
  const model = await ModelServer.fromFolder(dir, { threads: 0, maskTables: false });
  const srv = await startServer({ model, log: () => {} });
  t.after(async () => { await srv.close(); await model.close(); removeDir(root); });
  assert.equal(model.info.maskTables, null);
  await assert.rejects(RemoteEncryptedProvider.connect({ url: srv.url, masks: 'table' }), /offers no mask tables/);
  const auto = await RemoteEncryptedProvider.connect({ url: srv.url });
  assert.equal(auto.masks, 'fresh');
  await auto.close();
  // The table endpoint answers 404 without tables.
  const s = await RemoteSession.connect({ url: srv.url });
  await assert.rejects(s.httpGetBytes('/v1/mask-table/0', 100), /HTTP 404/);
  await s.close();
});
