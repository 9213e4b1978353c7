/**
 * CryptoPool: client-side encryption and decryption on every core (worker_threads).
 *
 * Each worker holds its own client kernel and its own copy of the secret key, posted to it once by
 * this thread (structured clone inside the process: the key never leaves the process). The
 * (seed, blockIndex) pair of a block is claimed on the key here, in the calling thread, exactly as
 * encryptBlock does; the workers then encrypt polynomial ranges of that block, each seeking the
 * AES-CTR mask stream to its first polynomial (MaskStream byte offset), and draw their own noise
 * from node:crypto. The upload is the same function of (seed, messages, noise) as the single
 * thread path. Idle workers are unref'd, so an open pool never keeps the process alive.
 *
 * The client's hot paths (featureMajor + encryptValues, decryptSum) keep the calling thread to
 * copies and dispatching: inputs and outputs live in SharedArrayBuffers that the workers read and
 * write in place (the feature-major transposition, encryption straight from the feature rows,
 * result transposes and K-chunk sums all on the workers), and the server's result rows, when not
 * already shared, are copied once into reused staging buffers just before their task runs.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { WorkerChannel } from '../util/worker-channel.js';
import { SecretKey } from './keys.js';
import { uploadBytes, type RlweParams } from './params.js';
import { checkEncryptArgs } from './rlwe.js';
import type { CryptoReply, CryptoRequest } from './pool-protocol.js';
import { SharedBuffers } from '../util/shared-buffers.js';
import { settleAll } from '../util/settle.js';

/** Client values prepared for encryptValues: feature-major (K x T) in shared memory, plus token L1 norms. */
export interface FeatureMajorValues {
  values: Int8Array | Int16Array;
  T: number;
  K: number;
  tokenL1: Float64Array;
}

/** Polynomials (encrypt) or rows (decrypt) per worker task: ~0.5-2 MB in, small enough to balance. */
const TASK_POLYS = 64;
const TASK_ROWS = 256;
/** Tokens per featureMajor task (at most ~2 MB of int8 values for K = 8192). */
const FEATURE_MAJOR_TOKENS = 256;

interface Job {
  req: CryptoRequest;
  transfer: ArrayBuffer[];
  /** Builds req just before it is needed (copies into a staging buffer); cleared once run. */
  prepare?: () => void;
  /** Called once the worker has answered (returns staging buffers). */
  done?: () => void;
  resolve: (r: CryptoReply) => void;
  reject: (e: Error) => void;
}

function prepareJob(job: Job): void {
  const p = job.prepare;
  if (p) {
    job.prepare = undefined;
    p();
  }
}

/** One worker with at most one job at a time (the pool keeps the queue, so jobs go to idle workers). */
class CryptoWorker {
  busy = false;
  readonly channel: WorkerChannel<CryptoRequest, CryptoReply>;

  constructor(worker: Worker, private readonly onIdle: () => void) {
    this.channel = new WorkerChannel(worker, 'crypto worker');
    // A dead worker takes no more jobs: let the pool fail its queue.
    void this.channel.exited.then(() => this.onIdle());
  }

  get dead(): Error | null {
    return this.channel.dead;
  }

  get exited(): Promise<number> {
    return this.channel.exited;
  }

  start(job: Job): void {
    prepareJob(job);
    this.busy = true;
    const finish = (): void => {
      this.busy = false;
      job.done?.();
    };
    this.channel.call(job.req, job.transfer).then(
      (reply) => { finish(); job.resolve(reply); this.onIdle(); },
      (e: Error) => { finish(); job.reject(e); this.onIdle(); },
    );
  }
}

/** Public-mask-table mode (params.ts): the block's single-use secret and the mask block to expand. */
export interface TableMaskBlock {
  secret: SecretKey;
  maskBlock: number;
}

export class CryptoPool {
  private readonly queue: Job[] = [];
  private closed = false;
  private readonly workers: CryptoWorker[];

  private constructor(readonly params: RlweParams, private readonly key: SecretKey, threads: number) {
    const url = new URL('./pool-worker.js', import.meta.url);
    this.workers = Array.from({ length: threads }, () => new CryptoWorker(new Worker(url), () => this.pump()));
  }

  get threads(): number {
    return this.workers.length;
  }

  /** Starts `threads` workers (default: one per core), each with a copy of the key. */
  static async create(params: RlweParams, key: SecretKey, threads: number = availableParallelism()): Promise<CryptoPool> {
    if (!Number.isInteger(threads) || threads < 1 || threads > 256) throw new Error(`helora: CryptoPool threads must be an integer in [1, 256], got ${threads}`);
    if (key.params.id !== params.id) throw new Error(`helora: key belongs to parameter set ${key.params.name}, not ${params.name}`);
    const pool = new CryptoPool(params, key, threads);
    try {
      await Promise.all(pool.workers.map((w) => {
        const keyFile = key.toFileBytes();
        const p = pool.runOn(w, { op: 'init', paramsId: params.id, keyFile }, []);
        keyFile.fill(0); // the worker got a structured-clone copy
        return p;
      }));
    } catch (e) {
      await pool.close();
      throw e;
    }
    return pool;
  }

  private runOn(w: CryptoWorker, req: CryptoRequest, transfer: ArrayBuffer[]): Promise<CryptoReply> {
    return new Promise((resolve, reject) => w.start({ req, transfer, resolve, reject }));
  }

  private run(req: CryptoRequest, transfer: ArrayBuffer[] = [], prepare?: (job: Job) => void): Promise<CryptoReply> {
    if (this.closed) return Promise.reject(new Error('helora: CryptoPool is closed'));
    return new Promise((resolve, reject) => {
      const job: Job = { req, transfer, resolve, reject };
      if (prepare) job.prepare = () => prepare(job);
      this.queue.push(job);
      this.pump();
    });
  }

  private pump(): void {
    for (const w of this.workers) {
      if (this.queue.length === 0) return;
      if (w.busy) continue;
      if (w.dead) {
        for (const job of this.queue.splice(0)) job.reject(w.dead);
        return;
      }
      w.start(this.queue.shift()!);
    }
    // Stage the next task of each worker now, so that a worker finishing finds its input ready.
    for (let i = 0; i < this.queue.length && i < this.workers.length; i++) prepareJob(this.queue[i]);
  }

  /**
   * Shared scratch (staging copies, feature-major inputs, uploads and results while the workers
   * write them), reused: see util/shared-buffers.ts. Taken with acquireAtLeast and viewed with
   * explicit lengths, and never dropped: a dropped buffer stays alive as long as any worker's
   * isolate still references it from a past message, which for a worker that rarely collects
   * garbage is for ever (measured: the server grew by ~0.8 GB per Llama-3.2-1B layer that way).
   */
  readonly buffers = new SharedBuffers(Number.POSITIVE_INFINITY);

  /**
   * encryptBlock on the workers: same arguments, same upload format, same seed rule (the pair
   * (seed, blockIndex) is claimed on the key here; a reuse throws before anything is encrypted).
   */
  async encryptBlock(m: Int32Array, d: number, seed: Uint8Array, blockIndex: number, plaintextBits = this.params.plaintextBits): Promise<Uint8Array> {
    checkEncryptArgs(this.params, this.key, m, d, seed, blockIndex, 0, plaintextBits);
    if (this.closed) throw new Error('helora: CryptoPool is closed');
    SecretKey.claimSeed(this.key, Buffer.from(seed).toString('hex'), blockIndex);
    return this.encryptClaimed(m, d, seed, blockIndex, plaintextBits);
  }

  /** @internal The polynomial ranges of a block already claimed on the key (tests use it on a key copy). */
  async encryptClaimed(m: Int32Array, d: number, seed: Uint8Array, blockIndex: number, plaintextBits: number): Promise<Uint8Array> {
    const n = this.params.ringDegree;
    const ob = uploadBytes(this.params);
    const per = Math.max(1, Math.min(TASK_POLYS, Math.ceil(d / this.threads)));
    const out = new Uint8Array(d * n * ob);
    const parts: Promise<void>[] = [];
    for (let p0 = 0; p0 < d; p0 += per) {
      const np = Math.min(per, d - p0);
      const mm = m.slice(p0 * n, (p0 + np) * n);
      parts.push(this.run({ op: 'encrypt', m: mm, d: np, seed, blockIndex, polyStart: p0, plaintextBits }, [mm.buffer])
        .then((r) => out.set(r.bytes!, p0 * n * ob)));
    }
    await Promise.all(parts);
    return out;
  }

  /** decryptBlock on the workers (rows split across them); bit-identical to the single-thread result. */
  async decryptBlock(aOut: Uint32Array, bOut: Uint32Array, rows: number, plaintextBits = this.params.plaintextBits): Promise<Int32Array> {
    const n = this.params.ringDegree;
    if (!(Number.isInteger(rows) && rows >= 1)) throw new Error(`helora: row count must be a positive integer, got ${rows}`);
    if (!(aOut instanceof Uint32Array) || !(bOut instanceof Uint32Array) || aOut.length !== rows * n || bOut.length !== rows * n) {
      throw new Error(`helora: result parts must be Uint32Array of rows*N = ${rows * n} values, got ${aOut?.length} and ${bOut?.length}`);
    }
    const per = Math.max(1, Math.min(TASK_ROWS, Math.ceil(rows / this.threads)));
    const y = new Int32Array(rows * n);
    const parts: Promise<void>[] = [];
    for (let r0 = 0; r0 < rows; r0 += per) {
      const nr = Math.min(per, rows - r0);
      const a = aOut.slice(r0 * n, (r0 + nr) * n);
      const b = bOut.slice(r0 * n, (r0 + nr) * n);
      parts.push(this.run({ op: 'decrypt', a, b, rows: nr, plaintextBits }, [a.buffer, b.buffer]).then((r) => y.set(r.y!, r0 * n)));
    }
    await Promise.all(parts);
    return y;
  }

  /**
   * The values (token-major, T x K) feature-major in shared memory, ready for encryptValues, and
   * every token's L1 norm (for the plaintext widths). The workers transpose token ranges in the
   * WebAssembly kernel (one pass instead of a strided gather in every encryption task); this
   * thread only stages the values in shared memory.
   */
  async featureMajor(values: Int8Array | Int16Array, T: number, K: number): Promise<FeatureMajorValues> {
    if (!(Number.isInteger(T) && T >= 1 && Number.isInteger(K) && K >= 1 && K <= 1 << 20) || values.length !== T * K) {
      throw new Error(`helora: input has ${values.length} values, expected ${T} x ${K}`);
    }
    if (this.closed) throw new Error('helora: CryptoPool is closed');
    const wide = values instanceof Int16Array;
    const typed = (b: SharedArrayBuffer, length: number): Int8Array | Int16Array => (wide ? new Int16Array(b, 0, length) : new Int8Array(b, 0, length));
    const staging = this.buffers.acquireAtLeast(values.byteLength);
    const src = typed(staging, T * K);
    src.set(values);
    const out = typed(this.buffers.acquireAtLeast(values.byteLength), T * K);
    const l1 = this.buffers.acquireAtLeast(T * 8);
    const tokenL1 = new Float64Array(l1, 0, T);
    try {
      const per = Math.max(1, Math.min(FEATURE_MAJOR_TOKENS, Math.ceil(T / this.threads)));
      const parts: Promise<unknown>[] = [];
      for (let t0 = 0; t0 < T; t0 += per) {
        parts.push(this.run({ op: 'featureMajor', values: src, T, K, t0, tn: Math.min(per, T - t0), out, tokenL1, wipeSource: true }));
      }
      await settleAll(parts); // the workers have zeroed the staged values
      return { values: out, T, K, tokenL1: Float64Array.from(tokenL1) };
    } catch (e) {
      src.fill(0);
      this.releaseFeatureMajor({ values: out, T, K, tokenL1 });
      throw e;
    } finally {
      this.buffers.release(staging);
      this.buffers.release(l1);
    }
  }

  /**
   * Returns the memory of values from featureMajor for reuse (after the last encryptValues),
   * wiping it first unless every value has been read by encryptValues (which zeroes what it reads).
   */
  releaseFeatureMajor(fm: FeatureMajorValues, consumed = false): void {
    if (!consumed) fm.values.fill(0);
    if (fm.values.buffer instanceof SharedArrayBuffer) this.buffers.release(fm.values.buffer);
  }

  /**
   * Encrypts column block blockIndex of values prepared by featureMajor (reuse them for all blocks
   * of a request): each worker copies its features' token rows straight into its kernel. Same seed
   * rule as encryptBlock. The upload is returned where the workers wrote it, in this pool's shared
   * memory (no copy): give its buffer back with buffers.release once it has been sent.
   */
  async encryptValues(fm: FeatureMajorValues, seed: Uint8Array, blockIndex: number, plaintextBits = this.params.plaintextBits,
    tableMasks?: TableMaskBlock): Promise<Uint8Array> {
    const n = this.params.ringDegree;
    const { T, K, values } = fm;
    if (!(values.buffer instanceof SharedArrayBuffer) || values.length !== T * K) throw new Error('helora: encryptValues needs values from featureMajor()');
    if (!(Number.isInteger(blockIndex) && blockIndex >= 0 && blockIndex * n < T)) throw new Error(`helora: block ${blockIndex} is past the ${T} tokens`);
    const key = tableMasks?.secret ?? this.key;
    const maskBlock = tableMasks?.maskBlock ?? blockIndex;
    if (tableMasks && !key.singleUse) throw new Error('helora: public-mask-table encryption needs a single-use secret per block');
    checkEncryptArgs(this.params, key, new Int32Array(n), 1, seed, maskBlock, 0, plaintextBits);
    if (this.closed) throw new Error('helora: CryptoPool is closed');
    SecretKey.claimSeed(key, Buffer.from(seed).toString('hex'), maskBlock);
    const extra = tableMasks ? { maskBlock } : {};
    const ob = uploadBytes(this.params);
    const per = Math.max(1, Math.min(TASK_POLYS, Math.ceil(K / this.threads)));
    // The workers write their ranges straight into one shared upload.
    const buf = this.buffers.acquireAtLeast(K * n * ob);
    const out = new Uint8Array(buf, 0, K * n * ob);
    const parts: Promise<unknown>[] = [];
    for (let p0 = 0; p0 < K; p0 += per) {
      const np = Math.min(per, K - p0);
      const secret = tableMasks ? SecretKey.coefficients(key).slice() : undefined;
      parts.push(this.run({ op: 'encryptValues', values, T, K, d: np, seed, blockIndex, polyStart: p0, plaintextBits, out, secret, ...extra }));
    }
    try {
      await settleAll(parts);
    } catch (e) {
      this.buffers.release(buf);
      throw e;
    }
    return out;
  }

  /**
   * Decrypts the terms (a[k], b[k]: rows x N each) of one column block and stores the sum of their
   * first tn tokens into acc (token-major, rows values per token, tokens from t0):
   * acc[(t0 + t)*rows + o] = sum_k y_k[o*N + t]. acc must be backed by a SharedArrayBuffer: the
   * workers write their row ranges in place (disjoint ranges; calls for different blocks touch
   * disjoint tokens). Shared a, b are read in place; others are copied once per row range.
   * onRows(r0, nr), if given, runs in this thread as soon as rows [r0, r0 + nr) of those tokens
   * are final (to consume the results while the other ranges are still being decrypted).
   */
  async decryptSum(a: readonly Uint32Array[], b: readonly Uint32Array[], rows: number, plaintextBits: number,
    acc: Int32Array | Float64Array, t0: number, tn: number, onRows?: (r0: number, nr: number) => void, blockSecret?: SecretKey): Promise<void> {
    const n = this.params.ringDegree;
    if (!(Number.isInteger(rows) && rows >= 1)) throw new Error(`helora: row count must be a positive integer, got ${rows}`);
    if (a.length < 1 || a.length !== b.length) throw new Error(`helora: ${a.length} a parts for ${b.length} b parts`);
    for (let k = 0; k < a.length; k++) {
      if (!(a[k] instanceof Uint32Array) || !(b[k] instanceof Uint32Array) || a[k].length !== rows * n || b[k].length !== rows * n) {
        throw new Error(`helora: result parts must be Uint32Array of rows*N = ${rows * n} values, got ${a[k]?.length} and ${b[k]?.length}`);
      }
    }
    if (!(Number.isInteger(tn) && tn >= 1 && tn <= n)) throw new Error(`helora: token count ${tn} outside [1, ${n}]`);
    if (!((acc instanceof Int32Array || acc instanceof Float64Array) && acc.buffer instanceof SharedArrayBuffer) || !(Number.isInteger(t0) && t0 >= 0) || acc.length < (t0 + tn) * rows) {
      throw new Error('helora: decryptSum needs a SharedArrayBuffer-backed Int32Array or Float64Array accumulator covering the tokens');
    }
    if (this.closed) throw new Error('helora: CryptoPool is closed');
    if (blockSecret && blockSecret.params.id !== this.params.id) throw new Error('helora: the block secret belongs to another parameter set');
    // Each task gets its own copy (structured clone), wiped by the worker after use.
    const secretCopy = (): Int8Array | undefined => (blockSecret ? SecretKey.coefficients(blockSecret).slice() : undefined);
    const shared = [...a, ...b].every((x) => x.buffer instanceof SharedArrayBuffer);
    const per = Math.max(1, Math.min(TASK_ROWS, Math.ceil(rows / this.threads)));
    const parts: Promise<unknown>[] = [];
    for (let r0 = 0; r0 < rows; r0 += per) {
      const nr = Math.min(per, rows - r0);
      if (shared) {
        parts.push(this.run({ op: 'decryptSum', a: [...a], b: [...b], rows, r0, nr, sliced: false, plaintextBits, acc, t0, tn, secret: secretCopy() })
          .then(() => onRows?.(r0, nr)));
      } else {
        // Copied into a reused shared staging buffer when the task is about to run.
        const req: CryptoRequest = { op: 'decryptSum', a: [], b: [], rows, r0, nr, sliced: true, plaintextBits, acc, t0, tn, secret: secretCopy() };
        const words = nr * n;
        parts.push(this.run(req, [], (job) => {
          const buf = this.buffers.acquireAtLeast(2 * a.length * words * 4);
          for (let k = 0; k < a.length; k++) {
            const sa = new Uint32Array(buf, 2 * k * words * 4, words);
            const sb = new Uint32Array(buf, (2 * k + 1) * words * 4, words);
            sa.set(a[k].subarray(r0 * n, r0 * n + words));
            sb.set(b[k].subarray(r0 * n, r0 * n + words));
            req.a.push(sa);
            req.b.push(sb);
          }
          job.done = () => this.buffers.release(buf);
        }).then(() => onRows?.(r0, nr)));
      }
    }
    await settleAll(parts);
  }

  /** Ends every worker (each drops its key copy and exits with code 0); resolves to their exit codes. */
  async close(): Promise<number[]> {
    if (this.closed) return Promise.all(this.workers.map((w) => w.exited));
    this.closed = true;
    for (const job of this.queue.splice(0)) job.reject(new Error('helora: CryptoPool is closed'));
    // Wait for running tasks, then ask each worker to exit.
    await Promise.all(this.workers.map(async (w) => {
      while (w.busy && !w.dead) await new Promise((r) => setTimeout(r, 1));
      if (!w.dead) {
        w.channel.worker.ref(); // until its exit event
        await this.runOn(w, { op: 'close' }, []).catch(() => undefined);
        w.channel.worker.ref();
      }
    }));
    return Promise.all(this.workers.map((w) => w.exited));
  }
}
