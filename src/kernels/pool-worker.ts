/**
 * A KernelPool worker: its own WebAssembly instance, with the row shards of the registered
 * weights resident in its linear memory (with the native kernels: packed int8 weights in a JS
 * array, fp32 weights as given); computes its rows of each product.
 */
import { createCipheriv } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { KernelEngine } from './engine.js';
import { nativeKernels } from './native.js';
import type { PoolEnvelope, PoolReply, PoolRequest, PoolResult } from './pool-protocol.js';
import { ZQ_KERNEL_LAYOUT } from './zq-matmul.js';

/** ptr: the packed weights in wasm memory; packed: the same layout for the native kernels. */
interface Int8Shard { kind: 'int8'; ptr: number; packed: Uint8Array | null; rows: number; cols: number }
interface F32Shard { kind: 'f32'; w: Float32Array; rows: number; cols: number; aForm: number; bForm: number }

const KEYSTREAM_PIECE_BYTES = 1 << 20;
const engine = new KernelEngine();
const native = nativeKernels();
const shards = new Map<number, Int8Shard | F32Shard>();

function int8Shard(handle: number): Int8Shard {
  const s = shards.get(handle);
  if (!s || s.kind !== 'int8') throw new Error(`helora: pool worker has no int8 weights with handle ${handle}`);
  return s;
}
function f32Shard(handle: number): F32Shard {
  const s = shards.get(handle);
  if (!s || s.kind !== 'f32') throw new Error(`helora: pool worker has no f32 weights with handle ${handle}`);
  return s;
}
/** W shard rows x cols packed as 4-row blocks (for W·x and the forward op), kept resident. */
function aForm(s: F32Shard): number {
  if (!s.aForm) s.aForm = engine.packF32A({ data: s.w, offset: 0, si: s.cols, sj: 1 }, s.rows, s.cols, true);
  return s.aForm;
}
/** W shard as the right operand (K = rows, N = cols) for dout·W, kept resident. */
function bForm(s: F32Shard): number {
  if (!s.bForm) s.bForm = engine.packF32B({ data: s.w, offset: 0, si: s.cols, sj: 1 }, s.rows, s.cols, true);
  return s.bForm;
}

function handle(req: PoolRequest): { result: PoolResult; transfer: ArrayBuffer[] } {
  engine.heap.resetScratch();
  switch (req.op) {
    case 'warm': {
      // Instantiate and exercise every hot path once so the first real call runs at full speed.
      const M = 16, K = 64, N = 16;
      if (native) {
        const p = native.packI8(new Int8Array(M * K).fill(1), M, K);
        native.zq(p, M, K, new Uint8Array(K * N * 6), new Uint8Array(K * N * 5), N, new Uint32Array(M * N), new Uint32Array(M * N));
        native.gemmI8(p, M, K, new Int8Array(K * N).fill(1), N);
        const f = new Float32Array(M * K).fill(1);
        native.sgemm(M, M, K, { data: f, offset: 0, si: K, sj: 1 }, { data: f, offset: 0, si: 1, sj: K }, { data: new Float32Array(M * M), offset: 0, si: M, sj: 1 }, false, null);
        return { result: { kind: 'none' }, transfer: [] };
      }
      const w = new Int8Array(M * K).fill(1);
      const wp = engine.packInt8(w, M, K, false);
      engine.gemmInt8Packed(wp, M, K, new Int8Array(K * N).fill(1), N);
      engine.zqPacked(wp, M, K, new Uint8Array(K * N * ZQ_KERNEL_LAYOUT.aBytes), new Uint8Array(K * N * ZQ_KERNEL_LAYOUT.bBytes), N, new Uint32Array(M * N), new Uint32Array(M * N));
      const f = new Float32Array(M * K).fill(1);
      const ap = engine.packF32A({ data: f, offset: 0, si: K, sj: 1 }, M, K, false);
      const bp = engine.packF32B({ data: f, offset: 0, si: 1, sj: K }, K, M, false);
      engine.gemmF32Packed(ap, bp, M, K, M, { data: new Float32Array(M * M), offset: 0, si: M, sj: 1 }, false, null);
      return { result: { kind: 'none' }, transfer: [] };
    }
    case 'regInt8': {
      const packed = native && req.rows > 0 ? native.packI8(req.w, req.rows, req.cols) : null;
      const ptr = !native && req.rows > 0 ? engine.packInt8(req.w, req.rows, req.cols, true) : 0;
      shards.set(req.handle, { kind: 'int8', ptr, packed, rows: req.rows, cols: req.cols });
      return { result: { kind: 'none' }, transfer: [] };
    }
    case 'regF32': {
      shards.set(req.handle, { kind: 'f32', w: req.w, rows: req.rows, cols: req.cols, aForm: 0, bForm: 0 });
      return { result: { kind: 'none' }, transfer: [] };
    }
    case 'keystream': {
      // AES-128-CTR key stream (a public mask's bytes) straight into shared memory, 1 MiB at a time.
      const cipher = createCipheriv('aes-128-ctr', req.key, req.iv);
      const zeros = new Uint8Array(Math.min(KEYSTREAM_PIECE_BYTES, req.dst.length));
      for (let off = 0; off < req.dst.length; off += zeros.length) {
        req.dst.set(cipher.update(zeros.subarray(0, Math.min(zeros.length, req.dst.length - off))), off);
      }
      return { result: { kind: 'none' }, transfer: [] };
    }
    case 'zq': {
      const s = int8Shard(req.handle);
      const len = s.rows * req.N;
      const aOut = req.aOut.subarray(req.offset, req.offset + len), bOut = req.bOut.subarray(req.offset, req.offset + len);
      if (native) native.zq(s.packed!, s.rows, s.cols, req.a, req.b, req.N, aOut, bOut);
      else engine.zqPacked(s.ptr, s.rows, s.cols, req.a, req.b, req.N, aOut, bOut);
      return { result: { kind: 'none' }, transfer: [] };
    }
    case 'zqPart': {
      const s = int8Shard(req.handle);
      const len = s.rows * req.N;
      const out = req.out.subarray(req.offset, req.offset + len);
      const isA = req.part === 'a';
      if (native) {
        if (isA) native.zqA(s.packed!, s.rows, s.cols, req.v, req.N, out);
        else native.zqB(s.packed!, s.rows, s.cols, req.v, req.N, out);
      } else {
        // The WebAssembly kernel computes both parts in one pass: the other part runs on zeros.
        const other = new Uint8Array(s.cols * req.N * (isA ? ZQ_KERNEL_LAYOUT.bBytes : ZQ_KERNEL_LAYOUT.aBytes));
        const scratch = new Uint32Array(len);
        if (isA) engine.zqPacked(s.ptr, s.rows, s.cols, req.v, other, req.N, out, scratch);
        else engine.zqPacked(s.ptr, s.rows, s.cols, other, req.v, req.N, scratch, out);
      }
      return { result: { kind: 'none' }, transfer: [] };
    }
    case 'int8': {
      const s = int8Shard(req.handle);
      if (native) native.gemmI8(s.packed!, s.rows, s.cols, req.x, req.N, req.out.subarray(req.offset, req.offset + s.rows * req.N));
      else engine.gemmInt8Packed(s.ptr, s.rows, s.cols, req.x, req.N, req.out, req.offset);
      return { result: { kind: 'none' }, transfer: [] };
    }
    case 'f32': {
      const s = f32Shard(req.handle);
      const v = new Float32Array(s.rows * req.N);
      if (native) {
        native.sgemm(s.rows, req.N, s.cols, { data: s.w, offset: 0, si: s.cols, sj: 1 }, { data: req.x, offset: 0, si: req.N, sj: 1 }, { data: v, offset: 0, si: req.N, sj: 1 }, false, null);
        return { result: { kind: 'f32', v }, transfer: [v.buffer] };
      }
      const ap = aForm(s);
      engine.heap.resetScratch();
      const bp = engine.packF32B({ data: req.x, offset: 0, si: req.N, sj: 1 }, s.cols, req.N, false);
      engine.gemmF32Packed(ap, bp, s.rows, s.cols, req.N, { data: v, offset: 0, si: req.N, sj: 1 }, false, null);
      return { result: { kind: 'f32', v }, transfer: [v.buffer] };
    }
    case 'fwd': {
      // out[t][o] for this shard's outputs o: (W_shard · inp^T)^T, written transposed.
      const s = f32Shard(req.handle);
      const v = new Float32Array(req.T * s.rows);
      if (native) {
        // As inp · W_shard^T, so the result rows are written whole.
        native.sgemm(req.T, s.rows, s.cols, { data: req.inp, offset: 0, si: s.cols, sj: 1 }, { data: s.w, offset: 0, si: 1, sj: s.cols }, { data: v, offset: 0, si: s.rows, sj: 1 }, false, null);
        return { result: { kind: 'f32', v }, transfer: [v.buffer] };
      }
      const ap = aForm(s);
      engine.heap.resetScratch();
      const bp = engine.packF32B({ data: req.inp, offset: 0, si: 1, sj: s.cols }, s.cols, req.T, false);
      engine.gemmF32Packed(ap, bp, s.rows, s.cols, req.T, { data: v, offset: 0, si: 1, sj: s.rows }, false, null);
      return { result: { kind: 'f32', v }, transfer: [v.buffer] };
    }
    case 'bwdIn': {
      // Partial dinp[T][C] = dout[:, r0:r0+rows] · W_shard; the pool sums the partials.
      const s = f32Shard(req.handle);
      const v = new Float32Array(req.T * s.cols);
      if (native) {
        native.sgemm(req.T, s.cols, s.rows, { data: req.dout, offset: req.r0, si: req.OC, sj: 1 }, { data: s.w, offset: 0, si: s.cols, sj: 1 }, { data: v, offset: 0, si: s.cols, sj: 1 }, false, null);
        return { result: { kind: 'f32', v }, transfer: [v.buffer] };
      }
      const bp = bForm(s);
      engine.heap.resetScratch();
      const ap = engine.packF32A({ data: req.dout, offset: req.r0, si: req.OC, sj: 1 }, req.T, s.rows, false);
      engine.gemmF32Packed(ap, bp, req.T, s.rows, s.cols, { data: v, offset: 0, si: s.cols, sj: 1 }, false, null);
      return { result: { kind: 'f32', v }, transfer: [v.buffer] };
    }
  }
}

const port = parentPort;
if (!port) throw new Error('helora: pool-worker.js must run as a worker thread');
port.on('message', (msg: PoolEnvelope) => {
  let reply: PoolReply;
  let transfer: ArrayBuffer[] = [];
  try {
    const r = handle(msg.req);
    reply = { id: msg.id, ok: true, result: r.result };
    transfer = r.transfer;
  } catch (e) {
    reply = { id: msg.id, ok: false, error: e instanceof Error ? e.message : String(e) };
  }
  port.postMessage(reply, transfer);
});
