/**
 * A CryptoPool worker: its own NTT kernel instance and its own in-memory copy of the secret key
 * (received from the parent thread of the same process; it never leaves the process). Encrypts
 * polynomial ranges of column blocks whose (seed, blockIndex) the main thread has claimed, and
 * decrypts row ranges.
 */
import { parentPort } from 'node:worker_threads';
import { encodeFeatures, maxTokenL1 } from './encode.js';
import { SecretKey } from './keys.js';
import { paramsById, uploadBytes, type RlweParams } from './params.js';
import { decryptAccumulate, decryptBlock, encryptPolyRange, encryptRangeInto } from './rlwe.js';
import type { CryptoEnvelope, CryptoReply } from './pool-protocol.js';

if (!parentPort) throw new Error('helora: pool-worker.ts must run in a worker thread');
const port = parentPort;
let params: RlweParams | null = null;
let key: SecretKey | null = null;

function ready(): { params: RlweParams; key: SecretKey } {
  if (!params || !key) throw new Error('helora: crypto worker used before init');
  return { params, key };
}

port.on('message', (env: CryptoEnvelope) => {
  const req = env.req;
  let reply: CryptoReply;
  const transfer: ArrayBuffer[] = [];
  try {
    switch (req.op) {
      case 'init': {
        params = paramsById(req.paramsId);
        key = SecretKey.fromFileBytes(req.keyFile);
        req.keyFile.fill(0);
        reply = { id: env.id, ok: true };
        break;
      }
      case 'encrypt': {
        const c = ready();
        const out = encryptPolyRange(c.params, c.key, req.m, req.d, req.seed, req.blockIndex, req.polyStart, req.plaintextBits);
        req.m.fill(0);
        transfer.push(out.buffer as ArrayBuffer);
        reply = { id: env.id, ok: true, bytes: out };
        break;
      }
      case 'decrypt': {
        const c = ready();
        const y = decryptBlock(c.params, c.key, req.a, req.b, req.rows, req.plaintextBits);
        transfer.push(y.buffer as ArrayBuffer);
        reply = { id: env.id, ok: true, y };
        break;
      }
      case 'encryptValues': {
        const c = ready();
        if (req.out) {
          const n = c.params.ringDegree;
          const ob = uploadBytes(c.params);
          const { values, T, K, blockIndex, polyStart } = req;
          const dst = req.out.subarray(polyStart * n * ob, (polyStart + req.d) * n * ob);
          encryptRangeInto(c.params, c.key, (m, p0, np) => encodeFeatures(values, T, K, n, blockIndex, polyStart + p0, np, m),
            req.d, req.seed, blockIndex, polyStart, req.plaintextBits, dst);
          reply = { id: env.id, ok: true };
          break;
        }
        const n = c.params.ringDegree;
        const m = encodeFeatures(req.values, req.T, req.K, n, req.blockIndex, req.polyStart, req.d);
        const out = encryptPolyRange(c.params, c.key, m, req.d, req.seed, req.blockIndex, req.polyStart, req.plaintextBits);
        m.fill(0);
        transfer.push(out.buffer as ArrayBuffer);
        reply = { id: env.id, ok: true, bytes: out };
        break;
      }
      case 'decryptSum': {
        const c = ready();
        decryptAccumulate(c.params, c.key, req.a, req.b, req.rows, req.r0, req.nr, req.sliced, req.plaintextBits, req.acc, req.t0, req.tn);
        reply = { id: env.id, ok: true };
        break;
      }
      case 'maxL1': {
        reply = { id: env.id, ok: true, value: maxTokenL1(req.values, req.K, req.t0, req.t1) };
        break;
      }
      case 'close': {
        key = null;
        port.postMessage({ id: env.id, ok: true } satisfies CryptoReply);
        port.close();
        return;
      }
    }
  } catch (e) {
    reply = { id: env.id, ok: false, error: e instanceof Error ? e.message : String(e) };
  }
  port.postMessage(reply, transfer);
});
