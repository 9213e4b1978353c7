/**
 * KernelPool: worker_threads running the WebAssembly kernels on every core.
 *
 * Weights are sharded by output rows and sent to the workers once at registration (they stay
 * resident in each worker's linear memory); per call only the inputs travel, copied once into a
 * SharedArrayBuffer that all workers read; for the integer products the workers write their rows
 * straight into one shared result (copied out for the caller, or lent to it: zqMatmulShared), the
 * fp32 rows come back as transferred buffers. Shared memory is reused across calls and never
 * dropped (util/shared-buffers.ts).
 * Idle workers are unref'd, so an open pool never keeps the process alive; close() ends them.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { checkF32Shapes } from './gemm-f32.js';
import { checkInt8Shapes } from './gemm-int8.js';
import { SharedBuffers } from '../util/shared-buffers.js';
import { settleAll } from '../util/settle.js';
import type { PoolReply, PoolRequest, PoolResult } from './pool-protocol.js';
import { WorkerChannel } from '../util/worker-channel.js';
import { checkWeights, checkZqCall, kernelLayout, type ZqModulus } from './zq-matmul.js';

/** Row range [r0, r1) of one worker's shard. */
interface Shard { worker: number; r0: number; r1: number }
interface Registered { kind: 'int8' | 'f32'; rows: number; cols: number; shards: Shard[] }

/** Tile height of the kernels: shard boundaries on multiples of it avoid padded tiles. */
const ROW_ALIGN = 4;

function shardRows(rows: number, threads: number): Shard[] {
  const shards: Shard[] = [];
  const blocks = Math.ceil(rows / ROW_ALIGN);
  let b0 = 0;
  for (let w = 0; w < threads; w++) {
    const b1 = Math.round((blocks * (w + 1)) / threads);
    const r0 = Math.min(rows, b0 * ROW_ALIGN);
    const r1 = Math.min(rows, b1 * ROW_ALIGN);
    if (r1 > r0) shards.push({ worker: w, r0, r1 });
    b0 = b1;
  }
  return shards;
}

type SharedCtor<T> = new (b: SharedArrayBuffer, byteOffset: number, length: number) => T;

export class KernelPool {
  private readonly workers: WorkerChannel<PoolRequest, PoolReply>[];
  /**
   * Shared scratch for per-call inputs and results (see util/shared-buffers.ts for why it is reused),
   * taken with acquireAtLeast and viewed with explicit lengths, and never dropped (the workers keep
   * dropped ones alive): its size is the largest working set of one call.
   */
  private readonly buffers = new SharedBuffers(Number.POSITIVE_INFINITY);
  private readonly registry = new Map<number, Registered>();
  private nextHandle = 1;
  private closed = false;

  private constructor(workers: WorkerChannel<PoolRequest, PoolReply>[]) {
    this.workers = workers;
  }

  private async call(worker: number, req: PoolRequest, transfer?: ArrayBuffer[]): Promise<PoolResult> {
    return (await this.workers[worker]!.call(req, transfer)).result!;
  }

  /**
   * The same values in shared memory that every worker reads without a copy of its own (copied once
   * into reused scratch unless already shared); release() returns the scratch after the call.
   */
  private share<T extends Uint8Array | Int8Array | Float32Array>(a: T, ctor: SharedCtor<T>): { view: T; release: () => void } {
    if (a.buffer instanceof SharedArrayBuffer && a.constructor === ctor) return { view: a, release: () => undefined };
    const buf = this.buffers.acquireAtLeast(a.byteLength);
    const view = new ctor(buf, 0, a.length);
    view.set(a as never);
    return { view, release: () => this.buffers.release(buf) };
  }

  /**
   * Bytes of this pool's reused shared scratch for the caller to fill and pass to a call (which then
   * reads them without a copy); release() once that call has finished.
   */
  sharedScratch(bytes: number): { view: Uint8Array; release: () => void } {
    this.live();
    const buf = this.buffers.acquireAtLeast(bytes);
    let released = false;
    return { view: new Uint8Array(buf, 0, bytes), release: () => { if (!released) { released = true; this.buffers.release(buf); } } };
  }

  get threads(): number {
    return this.workers.length;
  }

  /**
   * Starts `threads` workers (default: one per core) and warms them up. backend: the kernels the
   * workers run (default: as HELORA_KERNELS selects, see native.ts); benchmarks compare both.
   */
  static async create(threads: number = availableParallelism(), backend?: 'native' | 'wasm'): Promise<KernelPool> {
    if (!Number.isInteger(threads) || threads < 1 || threads > 256) throw new Error(`helora: KernelPool threads must be an integer in [1, 256], got ${threads}`);
    const url = new URL('./pool-worker.js', import.meta.url);
    const opts = backend ? { env: { ...process.env, HELORA_KERNELS: backend } } : {};
    const workers = Array.from({ length: threads }, () => new WorkerChannel<PoolRequest, PoolReply>(new Worker(url, opts), 'kernel worker'));
    const pool = new KernelPool(workers);
    try {
      await Promise.all(workers.map((_, i) => pool.call(i, { op: 'warm' })));
    } catch (e) {
      await pool.close();
      throw e;
    }
    return pool;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }

  private live(): void {
    if (this.closed) throw new Error('helora: KernelPool is closed');
  }

  private get(handle: number, kind: 'int8' | 'f32'): Registered {
    const r = this.registry.get(handle);
    if (!r || r.kind !== kind) throw new Error(`helora: KernelPool has no ${kind} weights with handle ${handle}`);
    return r;
  }

  private async registerInt8Rows(w: Int8Array, rows: number, cols: number): Promise<number> {
    const handle = this.nextHandle++;
    const shards = shardRows(rows, this.threads);
    await Promise.all(shards.map((s) => {
      const part = w.slice(s.r0 * cols, s.r1 * cols);
      return this.call(s.worker, { op: 'regInt8', handle, w: part, rows: s.r1 - s.r0, cols }, [part.buffer]);
    }));
    this.registry.set(handle, { kind: 'int8', rows, cols, shards });
    return handle;
  }

  /** Registers public int8 weights (rows x cols, |W| <= 127) for zqMatmul; returns a handle. */
  async registerZq(w: Int8Array, rows: number, cols: number): Promise<number> {
    this.live();
    checkWeights(w, rows, cols);
    return this.registerInt8Rows(w, rows, cols);
  }

  /** The encrypted product (see zq-matmul.ts) over registered weights, rows sharded over the workers. */
  async zqMatmul(modulus: ZqModulus, handle: number, aBytes: Uint8Array, bBytes: Uint8Array, N: number): Promise<{ aOut: Uint32Array; bOut: Uint32Array }> {
    const shared = await this.zqMatmulShared(modulus, handle, aBytes, bBytes, N);
    try {
      return { aOut: new Uint32Array(shared.aOut), bOut: new Uint32Array(shared.bOut) };
    } finally {
      shared.release();
    }
  }

  /**
   * zqMatmul without the copy out: the result stays in the pool's shared scratch, where the workers
   * wrote it. Read it, then call release() once (the memory is reused by later calls).
   */
  async zqMatmulShared(modulus: ZqModulus, handle: number, aBytes: Uint8Array, bBytes: Uint8Array, N: number): Promise<{ aOut: Uint32Array; bOut: Uint32Array; release: () => void }> {
    this.live();
    const r = this.get(handle, 'int8');
    checkZqCall(kernelLayout(modulus), r.rows, r.cols, aBytes, bBytes, N);
    const a = this.share(aBytes, Uint8Array);
    const b = this.share(bBytes, Uint8Array);
    // The workers write their rows straight into shared scratch, which the caller releases.
    const outBytes = r.rows * N * 4;
    const aBuf = this.buffers.acquireAtLeast(outBytes), bBuf = this.buffers.acquireAtLeast(outBytes);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.buffers.release(aBuf);
      this.buffers.release(bBuf);
    };
    try {
      const aShared = new Uint32Array(aBuf, 0, r.rows * N), bShared = new Uint32Array(bBuf, 0, r.rows * N);
      await settleAll(r.shards.map(async (s) => {
        const res = await this.call(s.worker, { op: 'zq', handle, a: a.view, b: b.view, N, aOut: aShared, bOut: bShared, offset: s.r0 * N });
        if (res.kind !== 'none') throw new Error('helora: kernel worker sent an unexpected result');
      }));
      return { aOut: aShared, bOut: bShared, release };
    } catch (e) {
      release();
      throw e;
    } finally {
      a.release();
      b.release();
    }
  }

  /**
   * One part of the encrypted product over registered weights: 'a' = W·A from the 48-bit mask
   * words, 'b' = W·(B << 4) from the 40-bit body words (all a public mask table leaves to the
   * server), rounded as in zq-matmul.ts. The native kernels compute only that part.
   */
  async zqMatmulPart(modulus: ZqModulus, handle: number, part: 'a' | 'b', bytes: Uint8Array, N: number): Promise<Uint32Array> {
    this.live();
    const r = this.get(handle, 'int8');
    if (part !== 'a' && part !== 'b') throw new Error(`helora: zqMatmulPart part must be 'a' or 'b', got ${String(part)}`);
    const layout = kernelLayout(modulus);
    const width = part === 'a' ? layout.aBytes : layout.bBytes;
    if (!Number.isInteger(N) || N <= 0 || N % 8 !== 0) throw new Error(`helora: zqMatmulPart N must be a positive multiple of 8, got ${N}`);
    if (bytes.length !== r.cols * N * width) throw new Error(`helora: zqMatmulPart ${part} has ${bytes.length} bytes, expected cols*N*${width} = ${r.cols * N * width}`);
    const v = this.share(bytes, Uint8Array);
    const outBuf = this.buffers.acquire(r.rows * N * 4);
    try {
      const out = new Uint32Array(outBuf);
      await settleAll(r.shards.map(async (s) => {
        const res = await this.call(s.worker, { op: 'zqPart', handle, part, v: v.view, N, out, offset: s.r0 * N });
        if (res.kind !== 'none') throw new Error('helora: kernel worker sent an unexpected result');
      }));
      return new Uint32Array(out);
    } finally {
      v.release();
      this.buffers.release(outBuf);
    }
  }

  /**
   * Fills each piece's dst (shared memory) with the AES-128-CTR key stream of (key, iv), the pieces
   * spread over the workers: the server's public masks, expanded on every core.
   */
  async aesCtrInto(key: Uint8Array, pieces: readonly { iv: Uint8Array; dst: Uint8Array }[]): Promise<void> {
    this.live();
    if (!(key instanceof Uint8Array) || key.length !== 16) throw new Error('helora: aesCtrInto needs a 16-byte key');
    for (const p of pieces) {
      if (!(p.iv instanceof Uint8Array) || p.iv.length !== 16) throw new Error('helora: aesCtrInto needs 16-byte IVs');
      if (!(p.dst instanceof Uint8Array) || !(p.dst.buffer instanceof SharedArrayBuffer)) throw new Error('helora: aesCtrInto writes only into shared memory (sharedScratch)');
    }
    await settleAll(pieces.map(async (p, i) => {
      const res = await this.call(i % this.workers.length, { op: 'keystream', key, iv: p.iv, dst: p.dst });
      if (res.kind !== 'none') throw new Error('helora: kernel worker sent an unexpected result');
    }));
  }

  /** Registers int8 weights w[M][K] for gemmInt8; returns a handle. */
  async registerInt8(w: Int8Array, M: number, K: number): Promise<number> {
    this.live();
    checkInt8Shapes(w, new Int8Array(K), M, K, 1);
    return this.registerInt8Rows(w, M, K);
  }

  /** out[M][N] = W · x[K][N], exact int32. */
  async gemmInt8(handle: number, x: Int8Array, N: number): Promise<Int32Array> {
    this.live();
    const r = this.get(handle, 'int8');
    if (!Number.isInteger(N) || N <= 0) throw new Error(`helora: gemmInt8 N must be a positive integer, got ${N}`);
    if (x.length !== r.cols * N) throw new Error(`helora: gemmInt8 x has ${x.length} values, expected K*N = ${r.cols * N}`);
    const xs = this.share(x, Int8Array);
    // The workers write their rows straight into shared scratch; the caller gets ordinary memory.
    const outBuf = this.buffers.acquireAtLeast(r.rows * N * 4);
    try {
      const out = new Int32Array(outBuf, 0, r.rows * N);
      await settleAll(r.shards.map(async (s) => {
        const res = await this.call(s.worker, { op: 'int8', handle, x: xs.view, N, out, offset: s.r0 * N });
        if (res.kind !== 'none') throw new Error('helora: kernel worker sent an unexpected result');
      }));
      return new Int32Array(out);
    } finally {
      xs.release();
      this.buffers.release(outBuf);
    }
  }

  /** Registers fp32 weights w[M][K] (for gemmF32, matmulForward, matmulBackwardInput); returns a handle. */
  async registerF32(w: Float32Array, M: number, K: number): Promise<number> {
    this.live();
    checkF32Shapes(w, new Float32Array(K), M, K, 1);
    const handle = this.nextHandle++;
    const shards = shardRows(M, this.threads);
    await Promise.all(shards.map((s) => {
      const part = w.slice(s.r0 * K, s.r1 * K);
      return this.call(s.worker, { op: 'regF32', handle, w: part, rows: s.r1 - s.r0, cols: K }, [part.buffer]);
    }));
    this.registry.set(handle, { kind: 'f32', rows: M, cols: K, shards });
    return handle;
  }

  /** out[M][N] = W · x[K][N] (fp32). */
  async gemmF32(handle: number, x: Float32Array, N: number): Promise<Float32Array> {
    this.live();
    const r = this.get(handle, 'f32');
    if (!Number.isInteger(N) || N <= 0) throw new Error(`helora: gemmF32 N must be a positive integer, got ${N}`);
    if (x.length !== r.cols * N) throw new Error(`helora: gemmF32 x has ${x.length} values, expected K*N = ${r.cols * N}`);
    const xs = this.share(x, Float32Array);
    try {
      const out = new Float32Array(r.rows * N);
      await settleAll(r.shards.map(async (s) => {
        const res = await this.call(s.worker, { op: 'f32', handle, x: xs.view, N });
        if (res.kind !== 'f32') throw new Error('helora: kernel worker sent an unexpected result');
        out.set(res.v, s.r0 * N);
      }));
      return out;
    } finally {
      xs.release();
    }
  }

  /** out[T][OC] = inp[T][C] · W^T for registered W[OC][C] (llm.c matmul_forward without bias). */
  async matmulForward(handle: number, inp: Float32Array, T: number): Promise<Float32Array> {
    this.live();
    const r = this.get(handle, 'f32');
    const OC = r.rows, C = r.cols;
    if (!Number.isInteger(T) || T <= 0) throw new Error(`helora: matmulForward T must be a positive integer, got ${T}`);
    if (inp.length !== T * C) throw new Error(`helora: matmulForward inp has ${inp.length} values, expected T*C = ${T * C}`);
    const xs = this.share(inp, Float32Array);
    try {
      const out = new Float32Array(T * OC);
      await settleAll(r.shards.map(async (s) => {
        const res = await this.call(s.worker, { op: 'fwd', handle, inp: xs.view, T });
        if (res.kind !== 'f32') throw new Error('helora: kernel worker sent an unexpected result');
        const n = s.r1 - s.r0;
        for (let t = 0; t < T; t++) out.set(res.v.subarray(t * n, (t + 1) * n), t * OC + s.r0);
      }));
      return out;
    } finally {
      xs.release();
    }
  }

  /** dinp[T][C] = dout[T][OC] · W for registered W[OC][C] (a fresh array; add it to yours). */
  async matmulBackwardInput(handle: number, dout: Float32Array, T: number): Promise<Float32Array> {
    this.live();
    const r = this.get(handle, 'f32');
    const OC = r.rows, C = r.cols;
    if (!Number.isInteger(T) || T <= 0) throw new Error(`helora: matmulBackwardInput T must be a positive integer, got ${T}`);
    if (dout.length !== T * OC) throw new Error(`helora: matmulBackwardInput dout has ${dout.length} values, expected T*OC = ${T * OC}`);
    const ds = this.share(dout, Float32Array);
    const parts = await settleAll(r.shards.map(async (s) => {
      const res = await this.call(s.worker, { op: 'bwdIn', handle, dout: ds.view, T, OC, r0: s.r0 });
      if (res.kind !== 'f32') throw new Error('helora: kernel worker sent an unexpected result');
      return res.v;
    })).finally(ds.release);
    // Each worker holds a slice of the reduction dimension OC: sum the partial products.
    const out = parts[0]!;
    for (let p = 1; p < parts.length; p++) {
      const v = parts[p]!;
      for (let i = 0; i < out.length; i++) out[i]! += v[i]!;
    }
    return out;
  }
}
