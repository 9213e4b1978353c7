import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RLWE_N2048_Q44, SecretKey } from '../crypto/index.js';
import { PROJECTION_GROUPS } from '../model/projections.js';
import { RemoteEncryptedProvider, RemoteSession } from './client.js';
import { layerTableLayout, MaskTableCache, tableEntry, tableFolder, tableMaskSeed } from './mask-tables.js';
import { ModelServer } from './model-server.js';
import { startServer } from './server.js';
import { removeDir, writeTinyModel } from './test-support.js';

/** A tiny model served with mask tables (torn down after the test), its table layout and the client's cache folders. */
async function tableServer(t: TestContext) {
  const { dir, config, root } = writeTinyModel();
  const serverTables = join(root, 'server-tables');
  const model = await ModelServer.fromFolder(dir, { threads: 0, maskTables: serverTables });
  const srv = await startServer({ model, log: () => {} });
  t.after(async () => { await srv.close(); await model.close(); removeDir(root); });
  const cache = join(root, 'client-tables');
  return {
    dir, config, model, srv, serverTables, cache,
    layout: layerTableLayout(config, RLWE_N2048_Q44, 8),
    folder: tableFolder(cache, model.hash, RLWE_N2048_Q44),
    serverFolder: tableFolder(serverTables, model.hash, RLWE_N2048_Q44),
  };
}

test('mask tables: computed once per model, downloaded once, resumed from a partial file, checked against the published hash', async (t) => {
  const { dir, config, model, srv, serverTables, cache, layout, folder, serverFolder } = await tableServer(t);
  const info = model.info.maskTables!;
  assert.equal(info.layers.length, config.numLayers);
  assert.ok(info.layers.every((l) => l.bytes === layout.bytes));

  // A server restarted on the same folder reads the tables back instead of computing them.
  const stamp = readdirSync(serverFolder).map((f) => readFileSync(join(serverFolder, f)));
  const again = await ModelServer.fromFolder(dir, { threads: 0, maskTables: serverTables });
  assert.deepEqual(again.info.maskTables, info);
  await again.close();
  assert.deepEqual(readdirSync(serverFolder).map((f) => readFileSync(join(serverFolder, f))), stamp);

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

test('cached tables: verified once (a marker), trusted while unchanged, hashed again and refetched when changed behind the same size and mtime', async (t) => {
  const { config, srv, layout, cache, folder, serverFolder } = await tableServer(t);

  const first = await RemoteEncryptedProvider.connect({ url: srv.url, masks: 'table', tableCache: cache });
  await first.close();
  assert.equal(first.maskTables!.rehashedBytes, 0, 'a fresh download is hashed as it is kept, not again');
  for (let l = 0; l < config.numLayers; l++) assert.ok(existsSync(join(folder, `layer-${l}.bin.ok`)), `marker of layer ${l}`);
  const second = await RemoteEncryptedProvider.connect({ url: srv.url, masks: 'table', tableCache: cache });
  await second.close();
  assert.equal(second.tableBytesDown, 0);
  assert.equal(second.maskTables!.rehashedBytes, 0, 'an unchanged verified file is not hashed again');

  // A metadata change (mtime set to a whole second, exactly restorable below) costs a hash, not a download.
  const l0 = join(folder, 'layer-0.bin');
  const whole = Math.floor(Date.now() / 1000) - 3600;
  utimesSync(l0, whole, whole);
  const touched = await RemoteEncryptedProvider.connect({ url: srv.url, masks: 'table', tableCache: cache });
  await touched.close();
  assert.equal(touched.maskTables!.rehashedBytes, layout.bytes);
  assert.equal(touched.tableBytesDown, 0);

  // One byte changed in place, then size and mtime put back exactly as they were: ctime still tells.
  const st = statSync(l0);
  const bytes = readFileSync(l0);
  bytes[12345 % bytes.length] ^= 0x40;
  writeFileSync(l0, bytes);
  utimesSync(l0, whole, whole);
  assert.equal(statSync(l0).mtimeMs, st.mtimeMs);
  assert.equal(statSync(l0).size, st.size);
  const third = await RemoteEncryptedProvider.connect({ url: srv.url, masks: 'table', tableCache: cache });
  await third.close();
  assert.equal(third.maskTables!.rehashedBytes, layout.bytes, 'the changed file (and only it) was hashed again');
  assert.equal(third.tableBytesDown, layout.bytes, 'and fetched again');
  assert.deepEqual(readFileSync(l0), readFileSync(join(serverFolder, 'layer-0.bin')));

  // A marker naming another hash (a forged or stale marker) does not vouch for the file.
  const mark = JSON.parse(readFileSync(`${l0}.ok`, 'utf8')) as { sha256: string };
  writeFileSync(`${l0}.ok`, JSON.stringify({ ...mark, sha256: 'ab'.repeat(32) }));
  const fourth = await RemoteEncryptedProvider.connect({ url: srv.url, masks: 'table', tableCache: cache });
  await fourth.close();
  assert.equal(fourth.maskTables!.rehashedBytes, layout.bytes);
  assert.equal(fourth.tableBytesDown, 0, 'the file itself was good: kept, and marked again');
});

test('product tables: read per product (only its rows), kept in memory up to the budget, the same words either way', async (t) => {
  const { config, model, srv, layout, cache, folder } = await tableServer(t);
  const key = SecretKey.generate(RLWE_N2048_Q44);
  const kept = await RemoteEncryptedProvider.connect({ url: srv.url, masks: 'table', tableCache: cache, key, tableMemoryBytes: 1 << 30 });
  const streamed = await RemoteEncryptedProvider.connect({ url: srv.url, masks: 'table', tableCache: cache, key });
  t.after(async () => { await kept.close(); await streamed.close(); });

  const file = (l: number): Uint32Array => {
    const b = readFileSync(join(folder, `layer-${l}.bin`));
    return new Uint32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
  };
  const tables = streamed.maskTables!;
  for (let l = 0; l < config.numLayers; l++) {
    const words = file(l);
    for (const group of PROJECTION_GROUPS) for (const direction of ['forward', 'backward'] as const) {
      const e = tableEntry(layout, group, direction);
      const want = words.subarray(e.offsetWords, e.offsetWords + e.terms * e.rows * layout.ringDegree);
      const before = tables.readBytes;
      assert.deepEqual(tables.product(l, group, direction), want);
      assert.equal(tables.readBytes - before, want.length * 4, 'only the product\'s own rows are read');
      // No budget: read again on every use; a budget that holds it: read once, then the same words.
      assert.notEqual(tables.product(l, group, direction), tables.product(l, group, direction));
      const k = kept.maskTables!;
      const first = k.product(l, group, direction);
      const readAfter = k.readBytes;
      assert.equal(k.product(l, group, direction), first);
      assert.equal(k.readBytes, readAfter);
      assert.deepEqual(first, want);
    }
  }
  const small = new MaskTableCache(folder, layout, model.info.maskTables!.layers, 1);
  small.product(0, 'qkv', 'forward');
  small.product(0, 'qkv', 'forward');
  assert.equal(small.readBytes, 2 * tableEntry(layout, 'qkv', 'forward').terms * tableEntry(layout, 'qkv', 'forward').rows * layout.ringDegree * 4, 'nothing kept beyond the budget');

  // Products through both give the same (exact) results.
  const x = new Float32Array(5 * config.hiddenSize).map((_, i) => Math.sin(i * 0.37));
  const a = await kept.forward(1, 'gate_up', x, 5);
  const b = await streamed.forward(1, 'gate_up', x, 5);
  assert.deepEqual(a, b);
  const dy = a.map((y) => y.map((v) => v * 1e-3));
  assert.deepEqual(await kept.backward(1, 'gate_up', dy, 5), await streamed.backward(1, 'gate_up', dy, 5));
});
