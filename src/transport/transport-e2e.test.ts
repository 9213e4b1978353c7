import { test } from 'node:test';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { RLWE_N2048_Q44, SecretKey, resultErrorBound } from '../crypto/index.js';
import { QuantizedGroup } from '../linear/plain.js';
import { stackBackwardInput } from '../linear/client.js';
import { rowSqNorms, stackedColSqNorms } from '../linear/layout.js';
import { groupMembers, groupShapes, PROJECTION_GROUPS, projectionWeightName, type ProjectionGroup } from '../model/projections.js';
import { loadModelFolder } from '../model/loader.js';
import { prepareBackwardInput, quantizePerToken, quantizeWeightsPerChannel, type QuantizedWeights } from '../quant/quantize.js';
import { RemoteEncryptedProvider } from './client.js';
import { modelHashOfFolder } from './model-server.js';
import { forkServer, removeDir, writeTinyModel } from './test-support.js';

const params = RLWE_N2048_Q44;

function randomActs(n: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (Math.random() * 2 - 1) * scale * (1 + (i % 5));
  return a;
}

/** The documented canonical encoding, rebuilt here independently of model-server.ts. */
function referenceHash(dir: string): string {
  const { config, tensors } = loadModelFolder(dir);
  const h = createHash('sha256');
  h.update('helora-model-hash-v1\n');
  const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
  h.update(u32(config.numLayers));
  for (let l = 0; l < config.numLayers; l++) {
    for (const g of ['qkv', 'o', 'gate_up', 'down'] as const) {
      groupMembers(g).forEach((m, j) => {
        const [rows, cols] = groupShapes(config, g)[j];
        const q = quantizeWeightsPerChannel(tensors.get(projectionWeightName(l, m))!.data, rows, cols);
        h.update(u32(rows)); h.update(u32(cols));
        h.update(Buffer.from(q.values.buffer, q.values.byteOffset, q.values.length));
        const s = Buffer.alloc(rows * 4);
        q.scales.forEach((v, i) => s.writeFloatLE(v, i * 4));
        h.update(s);
      });
    }
  }
  return h.digest('hex');
}

for (const masks of ['table', 'fresh'] as const) test(`a server in another process computes every group forward and backward within the HE error of the quantized path (${masks} masks)`, async (t) => {
  const { dir, config, root } = writeTinyModel();
  const server = await forkServer(['--model', dir, '--threads', '1', '--max-tokens', '2048', '--mask-tables', join(root, 'server-tables')]);
  t.after(() => { server.child.kill('SIGKILL'); removeDir(root); });

  const expectedHash = modelHashOfFolder(dir);
  assert.equal(expectedHash, referenceHash(dir), 'the model hash follows the documented encoding');
  const key = SecretKey.generate(params);
  const provider = await RemoteEncryptedProvider.connect({ url: server.url, key, expectedModelHash: expectedHash, masks, tableCache: join(root, 'client-tables') });
  t.after(() => provider.close());
  assert.equal(provider.info.hash, expectedHash);
  assert.equal(provider.info.maxTokens, 2048);
  assert.equal(provider.masks, masks);
  assert.equal(provider.tableBytesDown > 0, masks === 'table', 'the tables are downloaded in table mode only');

  // Local plaintext quantized reference from the same folder.
  const { tensors } = loadModelFolder(dir);
  const groupOf = (l: number, g: ProjectionGroup): QuantizedWeights[] => groupMembers(g).map((m, j) => {
    const [rows, cols] = groupShapes(config, g)[j];
    return quantizeWeightsPerChannel(tensors.get(projectionWeightName(l, m))!.data, rows, cols);
  });
  // The public scales the server published are the ones we compute.
  for (let l = 0; l < config.numLayers; l++) {
    for (const g of PROJECTION_GROUPS) groupOf(l, g).forEach((w, j) => assert.deepEqual(provider.info.scales[l][g][j], w.scales));
  }

  let worst = 0;
  const check = async (l: number, g: ProjectionGroup, T: number): Promise<void> => {
    const parts = groupOf(l, g);
    const plain = new QuantizedGroup(parts);
    const C = parts[0].cols;
    const x = randomActs(T * C, 0.7);
    const ys = await provider.forward(l, g, x, T);
    const want = plain.forward(x, T);
    const xs = quantizePerToken(x, T, C, 8).scales;
    assert.equal(ys.length, parts.length);
    parts.forEach((p, j) => {
      assert.equal(ys[j].length, T * p.rows);
      const norms = rowSqNorms(p);
      for (let tt = 0; tt < T; tt++) {
        for (let o = 0; o < p.rows; o++) {
          const i = tt * p.rows + o;
          const bound = resultErrorBound(params, norms[o], key.hammingWeight) * xs[tt] * p.scales[o] + 1e-6 * Math.abs(want[j][i]);
          const err = Math.abs(ys[j][i] - want[j][i]);
          assert.ok(err <= bound, `layer ${l} ${g} forward part ${j} [${tt},${o}]: |${ys[j][i]} - ${want[j][i]}| > ${bound}`);
          worst = Math.max(worst, err / bound);
        }
      }
    });

    const dys = parts.map((p) => randomActs(T * p.rows, 1e-3));
    const dx = await provider.backward(l, g, dys, T);
    const dxWant = plain.backward(dys, T);
    const { stacked, scales, cols } = stackBackwardInput(dys, T, parts.map((p) => p.scales));
    const ds = prepareBackwardInput(stacked, T, cols.reduce((s, c) => s + c, 0), scales, 8).scales;
    const norms = stackedColSqNorms(parts);
    assert.equal(dx.length, T * C);
    for (let tt = 0; tt < T; tt++) {
      for (let i = 0; i < C; i++) {
        const bound = resultErrorBound(params, norms[i], key.hammingWeight) * ds[tt] + 1e-6 * Math.abs(dxWant[tt * C + i]);
        const err = Math.abs(dx[tt * C + i] - dxWant[tt * C + i]);
        assert.ok(err <= bound, `layer ${l} ${g} backward [${tt},${i}]: |${dx[tt * C + i]} - ${dxWant[tt * C + i]}| > ${bound}`);
      }
    }
  };
  const jobs: Promise<void>[] = [];
  for (let l = 0; l < config.numLayers; l++) for (const g of PROJECTION_GROUPS) jobs.push(check(l, g, 7));
  await Promise.all(jobs); // concurrent requests multiplexed on one connection
  // More tokens than one request may carry: split into two requests of 2048 + 2 tokens.
  const before = provider.stats().requests;
  await check(1, 'gate_up', 2050);
  assert.equal(provider.stats().requests - before, 4, 'forward and backward each split into two requests');

  const st = provider.stats();
  assert.equal(st.requests, 2 * 4 * 2 + 4);
  assert.ok(st.bytesUp > 0 && st.bytesDown > 0 && st.cryptoMs > 0 && st.serverWaitMs > 0);
  // The server logged one line per request with the documented fields and no payload.
  for (let i = 0; i < 100 && server.logs.filter((e) => e.event === 'request').length < st.requests; i++) await new Promise((r) => setTimeout(r, 20));
  const reqLogs = server.logs.filter((e) => e.event === 'request');
  assert.equal(reqLogs.length, st.requests);
  for (const e of reqLogs) {
    for (const k of ['conn', 'request_id', 'op', 'layer', 'group', 'tokens', 'bytes_in', 'bytes_out', 'ms']) assert.ok(k in e, `log field ${k}`);
    assert.ok(JSON.stringify(e).length < 400);
  }
  t.diagnostic(`${masks} masks: worst forward error / bound ${worst.toFixed(3)}; up ${st.bytesUp} B, down ${st.bytesDown} B, tables ${provider.tableBytesDown} B, crypto ${st.cryptoMs.toFixed(0)} ms, wait ${st.serverWaitMs.toFixed(0)} ms`);
});

test('a client refuses a server whose model hash differs from the expected one', async (t) => {
  const { dir, root } = writeTinyModel();
  const server = await forkServer(['--model', dir, '--threads', '0']);
  t.after(() => { server.child.kill('SIGKILL'); removeDir(root); });
  await assert.rejects(RemoteEncryptedProvider.connect({ url: server.url, expectedModelHash: 'ab'.repeat(32) }), /model hash .* differs from the expected/);
});
