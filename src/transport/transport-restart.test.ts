import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RLWE_N2048_Q44, SecretKey, resultErrorBound } from '../crypto/index.js';
import { QuantizedGroup } from '../linear/plain.js';
import { groupMembers, groupShapes, projectionWeightName } from '../model/projections.js';
import { loadModelFolder } from '../model/loader.js';
import { quantizePerToken, quantizeWeightsPerChannel } from '../quant/quantize.js';
import { RemoteEncryptedProvider } from './client.js';
import { forkServer, removeDir, writeTinyModel, type ChildServer } from './test-support.js';

test('server SIGKILLed with a request in flight and restarted on the same port: the request is re-sent and completes', async (t) => {
  const { dir, config, root } = writeTinyModel();
  const servers: ChildServer[] = [];
  t.after(() => { for (const s of servers) s.child.kill('SIGKILL'); removeDir(root); });
  const first = await forkServer(['--model', dir, '--threads', '0']);
  servers.push(first);

  const key = SecretKey.generate(RLWE_N2048_Q44);
  const patient = await RemoteEncryptedProvider.connect({ url: first.url, key, retryDeadlineMs: 20_000, initialBackoffMs: 50, maxBackoffMs: 400 });
  const impatient = await RemoteEncryptedProvider.connect({ url: first.url, retryDeadlineMs: 300, initialBackoffMs: 50 });
  t.after(async () => { await patient.close(); await impatient.close(); });

  const T = 6;
  const C = config.hiddenSize;
  const x = new Float32Array(T * C).map((_, i) => Math.sin(i * 0.3));
  // Freeze the server so the request is certainly in flight (sent, unanswered) when it dies.
  first.child.kill('SIGSTOP');
  const inFlight = patient.forward(1, 'gate_up', x, T);
  // (encryption runs first: on a loaded machine the request leaves after a while)
  for (let i = 0; i < 250 && patient.session.pendingCount === 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(patient.session.pendingCount, 1);
  first.child.kill('SIGKILL');
  await first.exited;

  // A session with a short deadline gives up with a clear error while the server is down.
  await assert.rejects(impatient.forward(0, 'o', x, T), /lost the connection to ws:\/\/127\.0\.0\.1:\d+ and could not reconnect/);

  const second = await forkServer(['--model', dir, '--threads', '0', '--port', String(first.port)]);
  servers.push(second);
  const ys = await inFlight;
  assert.ok(patient.stats().reconnects >= 1);
  assert.ok(patient.stats().resentBytesUp > 0, 'the re-sent request is counted apart');
  // (the log line may reach us a moment after the answer)
  for (let i = 0; i < 100 && !second.logs.some((e) => e.event === 'request'); i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(second.logs.filter((e) => e.event === 'request').length, 1, 'the restarted server answered the re-sent request');

  // The answer is right (within the HE error of the plaintext quantized path).
  const { tensors } = loadModelFolder(dir);
  const parts = groupMembers('gate_up').map((m, j) => {
    const [rows, cols] = groupShapes(config, 'gate_up')[j];
    return quantizeWeightsPerChannel(tensors.get(projectionWeightName(1, m))!.data, rows, cols);
  });
  const want = new QuantizedGroup(parts).forward(x, T);
  const xs = quantizePerToken(x, T, C, 8).scales;
  parts.forEach((p, j) => {
    for (let i = 0; i < ys[j].length; i++) {
      const o = i % p.rows;
      let norm = 0;
      for (let k = 0; k < C; k++) norm += p.values[o * C + k] ** 2;
      const bound = resultErrorBound(RLWE_N2048_Q44, norm, key.hammingWeight) * xs[Math.floor(i / p.rows)] * p.scales[o] + 1e-6 * Math.abs(want[j][i]);
      assert.ok(Math.abs(ys[j][i] - want[j][i]) <= bound, `part ${j} value ${i}`);
    }
  });
  // and the session keeps working
  const again = await patient.backward(0, 'down', [new Float32Array(T * C).fill(0.01)], T);
  assert.equal(again.length, T * config.intermediateSize);
});
