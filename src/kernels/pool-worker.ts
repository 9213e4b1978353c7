/**
 * A KernelPool worker: its own WebAssembly instance, with the row shards of the registered
 * weights resident in its linear memory; computes its rows of each product.
 */
import { parentPort } from 'node:worker_threads';
import { KernelEngine } from './engine.js';
import type { PoolEnvelope, PoolReply, PoolRequest, PoolResult } from './pool-protocol.js';
import { ZQ_KERNEL_LAYOUT } from './zq-matmul.js';

interface Int8Shard { kind: 'int8'; ptr: number; rows: number; cols: number }
interface F32Shard { kind: 'f32'; w: Float32Array; rows: number; cols: number; aForm: number; bForm: number }

const engine = new KernelEngine();
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
      const ptr = req.rows > 0 ? engine.packInt8(req.w, req.rows, req.cols, true) : 0;
      shards.set(req.handle, { kind: 'int8', ptr, rows: req.rows, cols: req.cols });
      return { result: { kind: 'none' }, transfer: [] };
    }
    case 'regF32': {
      shards.set(req.handle, { kind: 'f32', w: req.w, rows: req.rows, cols: req.cols, aForm: 0, bForm: 0 });
      return { result: { kind: 'none' }, transfer: [] };
    }
    case 'zq': {
      const s = int8Shard(req.handle);
      const len = s.rows * req.N;
      engine.zqPacked(s.ptr, s.rows, s.cols, req.a, req.b, req.N, req.aOut.subarray(req.offset, req.offset + len), req.bOut.subarray(req.offset, req.offset + len));
      return { result: { kind: 'none' }, transfer: [] };
    }
    case 'int8': {
      const s = int8Shard(req.handle);
      engine.gemmInt8Packed(s.ptr, s.rows, s.cols, req.x, req.N, req.out, req.offset);
      return { result: { kind: 'none' }, transfer: [] };
    }
    case 'f32': {
      const s = f32Shard(req.handle);
      const ap = aForm(s);
      engine.heap.resetScratch();
      const bp = engine.packF32B({ data: req.x, offset: 0, si: req.N, sj: 1 }, s.cols, req.N, false);
      const v = new Float32Array(s.rows * req.N);
      engine.gemmF32Packed(ap, bp, s.rows, s.cols, req.N, { data: v, offset: 0, si: req.N, sj: 1 }, false, null);
      return { result: { kind: 'f32', v }, transfer: [v.buffer] };
    }
    case 'fwd': {
      // out[t][o] for this shard's outputs o: (W_shard · inp^T)^T, written transposed.
      const s = f32Shard(req.handle);
      const ap = aForm(s);
      engine.heap.resetScratch();
      const bp = engine.packF32B({ data: req.inp, offset: 0, si: 1, sj: s.cols }, s.cols, req.T, false);
      const v = new Float32Array(req.T * s.rows);
      engine.gemmF32Packed(ap, bp, s.rows, s.cols, req.T, { data: v, offset: 0, si: 1, sj: s.rows }, false, null);
      return { result: { kind: 'f32', v }, transfer: [v.buffer] };
    }
    case 'bwdIn': {
      // Partial dinp[T][C] = dout[:, r0:r0+rows] · W_shard; the pool sums the partials.
      const s = f32Shard(req.handle);
      const bp = bForm(s);
      engine.heap.resetScratch();
      const ap = engine.packF32A({ data: req.dout, offset: req.r0, si: req.OC, sj: 1 }, req.T, s.rows, false);
      const v = new Float32Array(req.T * s.cols);
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
