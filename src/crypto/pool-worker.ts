/**
 * A CryptoPool worker: its own client kernel instance and its own in-memory copy of the secret key
 * (received from the parent thread of the same process; it never leaves the process). Encrypts
 * polynomial ranges of column blocks whose (seed, blockIndex) the main thread has claimed, and
 * decrypts row ranges.
 */
import { parentPort } from 'node:worker_threads';
import { SecretKey } from './keys.js';
import { paramsById, uploadBytes, type RlweParams } from './params.js';
import { decryptAccumulate, decryptBlock, encryptPolyRange, encryptRangeInto } from './rlwe.js';
import type { CryptoEnvelope, CryptoReply } from './pool-protocol.js';
import { clientCryptoKernel } from '../kernels/client-crypto.js';

if (!parentPort) throw new Error('helora: pool-worker.ts must run in a worker thread');
const port = parentPort;
let params: RlweParams | null = null;
let key: SecretKey | null = null;

function ready(secret?: Int8Array): { params: RlweParams; key: SecretKey } {
  if (!params || !key) throw new Error('helora: crypto worker used before init');
  // A block's single-use secret (public-mask-table mode), claimed by the calling thread.
  return { params, key: secret ? SecretKey.fromCoefficients(params, secret) : key };
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
        const c = ready(req.secret);
        const n = c.params.ringDegree;
        const ob = uploadBytes(c.params);
        const { values, T, blockIndex, polyStart } = req;
        const t0 = blockIndex * n;
        const tn = Math.min(n, T - t0);
        const dst = req.out.subarray(polyStart * n * ob, (polyStart + req.d) * n * ob);
        // Each polynomial is one feature's tokens of this block: one contiguous copy (the kernel
        // widens the values).
        const type = values instanceof Int8Array ? Int8Array : Int16Array;
        encryptRangeInto<Int8Array | Int16Array>(c.params, c.key, type, (m, p0, np) => {
          for (let i = 0; i < np; i++) {
            const row = (polyStart + p0 + i) * T + t0;
            const slice = values.subarray(row, row + tn);
            m.set(slice, i * n);
            slice.fill(0); // read once: wiped here instead of by the calling thread
            if (tn < n) m.fill(0, i * n + tn, (i + 1) * n);
          }
        }, req.d, req.seed, req.maskBlock ?? blockIndex, polyStart, req.plaintextBits, dst);
        req.secret?.fill(0);
        reply = { id: env.id, ok: true };
        break;
      }
      case 'featureMajor': {
        const c = ready();
        const { values, T, K, t0, tn } = req;
        clientCryptoKernel(c.params.ringDegree).featureMajor(values, T, K, req.out, req.tokenL1, t0, tn);
        if (req.wipeSource) values.subarray(t0 * K, (t0 + tn) * K).fill(0);
        reply = { id: env.id, ok: true };
        break;
      }
      case 'decryptSum': {
        const c = ready(req.secret);
        decryptAccumulate(c.params, c.key, req.a, req.b, req.rows, req.r0, req.nr, req.sliced, req.plaintextBits, req.acc, req.t0, req.tn);
        req.secret?.fill(0);
        reply = { id: env.id, ok: true };
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
