/**
 * The RLWE client's WebAssembly kernel: TypeScript side of build/wasm/client-crypto.wasm
 * (src/kernels/assembly/client-crypto.entry.ts). One instance per thread and ring degree holds one
 * secret and runs the client's whole share of the encrypted products: encryption and decryption,
 * with every negacyclic product a*s by double-precision FFT (exact after rounding, see
 * fft-product.ts), the feature-major encoding of the inputs and the transposes of the results.
 * The two-prime NTT runs beside the FFT as the exact reference (exactNtt options and
 * exactNttProduct*; its primes and tables are in ntt-reference.ts).
 *
 * With the native kernels (src/kernels/native.ts: HELORA_KERNELS, HELORA_NATIVE_LEVEL) the hot
 * loops (encryption and decryption by FFT, the results' transpose) run in the addon's C twins
 * (src/kernels/native/client-crypto.c), on this instance's memory and tables: bit for bit the same
 * results. Setup, secret loading, the NTT reference and the encoding stay in WebAssembly.
 */
import { ENCRYPT_PAIR_MAX, fftProductErrorBound, fftTables } from './fft-product.js';
import { NTT_MAX_N, NTT_PRIMES, nttSecretTables, nttSetupConstants, nttTables } from './ntt-reference.js';
import { nativeKernels, type NativeKernels } from './native.js';
import { instantiateWasm, WasmHeap } from './wasm.js';

interface ClientCryptoExports {
  memory: WebAssembly.Memory;
  heapBase(): number;
  setup(n: number, p0: number, p1: number, t0: number, t1: number, c0: number, c0s: number, c1: number, c1s: number,
    pinv: number, pinvs: number, buf0: number, buf1: number): void;
  nttForward(k: number): void;
  nttInverse(k: number): void;
  productExact44(src: number, dst: number): void;
  productExact32(src: number, dst: number): void;
  encryptPolys(nPolys: number, aSrc: number, m: number, rnd: number, cdt: number, nCdt: number,
    deltaShift: number, upShift: number, outBytes: number, out: number, mLimit: number, exactNtt: number, mBytes: number,
    pairHigh: number): number;
  decryptRows(nRows: number, a: number, b: number, sh: number, y: number): void;
  setupFft(n2: number, twist: number, untwist: number, fw: number, iw: number, fw4: number, iw4: number, secret: number, buf: number, wide: number, split: number): void;
  fftForwardPoly(src: number, dst: number): void;
  decryptRowsFft(nRows: number, a: number, b: number, sh: number, y: number, accumulate: number): void;
  transposeI32(src: number, rows: number, cols: number, dst: number): void;
  featureMajorI8(src: number, T: number, K: number, dst: number, l1: number): void;
  featureMajorI16(src: number, T: number, K: number, dst: number, l1: number): void;
  fftProductRaw(x: number, y: number, dst: number): void;
}

/** Message element types the encryption kernel reads (widened to 32 bits inside). */
export type MessageArray = Int8Array | Int16Array | Int32Array;
/** The constructor of one of them (Int8Array, Int16Array or Int32Array). */
export type MessageType<M extends MessageArray> = { new (buffer: ArrayBufferLike, byteOffset: number, length: number): M; readonly BYTES_PER_ELEMENT: number };

/** One WebAssembly instance running the client's crypto with one secret at a time, ring degree n. */
export class ClientCryptoKernel {
  readonly n: number;
  private readonly ex: ClientCryptoExports;
  private readonly heap: WasmHeap;
  private readonly tables: [number, number];
  private readonly bufs: [number, number];
  private readonly cdtPtr: number;
  private cdtLen = 0;
  /** Identity of the secret currently loaded (set by the caller via loadSecret). */
  private secretOwner: object | null = null;
  /** The loaded secret's coefficients (n int8), kept for its NTT form. */
  private readonly secretRaw: number;
  /** Whether the NTT form of the loaded secret is in the tables (only the exact reference paths use it). */
  private nttSecretReady = false;

  /** The native twins of the hot loops, or null: WebAssembly throughout. */
  readonly native: NativeKernels | null;
  /** The FFT state's offsets for the native twins (see NativeKernels.ccEncrypt). */
  private readonly layout: Uint32Array;

  /**
   * module: the build/wasm file to run (another build of client-crypto.entry.ts, for kernel
   * comparisons); native: the native kernels for the hot loops (default: this thread's backend
   * choice, null for WebAssembly throughout).
   */
  constructor(n: number, module = 'client-crypto', native: NativeKernels | null = nativeKernels()) {
    this.native = native;
    if (!Number.isInteger(n) || n < 16 || n > NTT_MAX_N || (n & (n - 1)) !== 0) {
      throw new Error(`helora: client kernel ring degree must be a power of two in [16, ${NTT_MAX_N}], got ${n}`);
    }
    if (!(fftProductErrorBound(n) < 0.5)) throw new Error(`helora: ring degree ${n} is too large for exact FFT products`);
    this.n = n;
    this.ex = instantiateWasm(module).exports as unknown as ClientCryptoExports;
    this.heap = new WasmHeap(this.ex.memory, this.ex.heapBase());
    const tableWords = 8 * n;
    this.tables = [this.heap.allocPermanent(tableWords * 4), this.heap.allocPermanent(tableWords * 4)];
    this.bufs = [this.heap.allocPermanent(n * 4), this.heap.allocPermanent(n * 4)];
    this.cdtPtr = this.heap.allocPermanent(64 * 4);
    this.secretRaw = this.heap.allocPermanent(n);
    for (let k = 0; k < 2; k++) {
      let off = this.tables[k];
      for (const t of nttTables(NTT_PRIMES[k], n)) {
        this.heap.u32(off, t.length).set(t);
        off += t.length * 4;
      }
    }
    this.ex.setup(n, NTT_PRIMES[0], NTT_PRIMES[1], this.tables[0], this.tables[1], ...nttSetupConstants(),
      this.bufs[0], this.bufs[1]);
    const n2 = n / 2;
    const fft = fftTables(n);
    const put = (t: Float64Array): number => {
      const ptr = this.heap.allocPermanent(t.length * 8);
      new Float64Array(this.ex.memory.buffer, ptr, t.length).set(t);
      return ptr;
    };
    const [twist, untwist, fw, iw, fw4, iw4] = fft.map(put);
    this.fftSecret = this.heap.allocPermanent(n2 * 32);
    const [fbuf, wide, split] = [this.heap.allocPermanent(n2 * 16), this.heap.allocPermanent(2 * n * 8), this.heap.allocPermanent(6 * n * 4)];
    this.ex.setupFft(n2, twist, untwist, fw, iw, fw4, iw4, this.fftSecret, fbuf, wide, split);
    this.layout = Uint32Array.from([n2, twist, untwist, fw, iw, fw4, iw4, this.fftSecret, fbuf, wide, split]);
    this.pairHigh = fftProductErrorBound(n, ENCRYPT_PAIR_MAX) < 0.5;
  }

  /** Whether encryption may pair polynomials (three FFT products per two; exact only for n <= 2048). */
  readonly pairHigh: boolean;

  /** The secret's FFT table (n/2 entries of 32 bytes, 1/(n/2) folded in). */
  private readonly fftSecret: number;

  /** True when the secret of `owner` is the one loaded. */
  hasSecret(owner: object): boolean {
    return this.secretOwner === owner;
  }

  /**
   * Loads a secret with coefficients in [-1, 1], stored in FFT form; its form for the reference NTT
   * (1/N folded in) is made when an exact path first needs it (a single-use secret per request
   * block never does: that work was ~8% of a table-mode request's client time).
   */
  loadSecret(s: Int8Array, owner: object): void {
    const n = this.n;
    if (s.length !== n) throw new Error(`helora: secret has ${s.length} coefficients, expected ${n}`);
    for (let i = 0; i < n; i++) {
      const c = s[i];
      if (c < -1 || c > 1) throw new Error(`helora: secret coefficient ${c} at ${i} is not ternary`);
    }
    this.heap.i8(this.secretRaw, n).set(s);
    this.nttSecretReady = false;
    // The decryption FFT's copy: the transform of s with the inverse's 1/(n/2) folded in.
    const n2 = n / 2;
    this.heap.resetScratch();
    const src = this.heap.alloc(n * 4);
    const dst = this.heap.alloc(n2 * 16);
    const coeffs = this.heap.i32(src, n);
    for (let i = 0; i < n; i++) coeffs[i] = s[i];
    this.ex.fftForwardPoly(src, dst);
    coeffs.fill(0);
    const hat = new Float64Array(this.ex.memory.buffer, dst, 2 * n2);
    const table = new Float64Array(this.ex.memory.buffer, this.fftSecret, 4 * n2);
    for (let k = 0; k < n2; k++) {
      const re = hat[2 * k] / n2, im = hat[2 * k + 1] / n2;
      table[4 * k] = re; table[4 * k + 1] = re; table[4 * k + 2] = -im; table[4 * k + 3] = im;
    }
    hat.fill(0);
    this.secretOwner = owner;
  }

  /** Magnitude thresholds of the noise sampler (|e| = #{k : u32 >= cdt[k]}), at most 64. */
  loadNoiseTable(cdt: Uint32Array): void {
    if (cdt.length > 64) throw new Error('helora: noise table too long');
    this.heap.u32(this.cdtPtr, cdt.length).set(cdt);
    this.cdtLen = cdt.length;
  }

  private requireSecret(): void {
    if (this.secretOwner === null) throw new Error('helora: no secret loaded in the client kernel');
  }

  /** The loaded secret in the reference NTT's form, in both primes' tables. */
  private requireNttSecret(): void {
    this.requireSecret();
    if (this.nttSecretReady) return;
    const n = this.n;
    const s = this.heap.i8(this.secretRaw, n);
    for (let k = 0; k < 2; k++) {
      const p = NTT_PRIMES[k];
      const buf = this.heap.u32(this.bufs[k], n);
      for (let i = 0; i < n; i++) buf[i] = s[i] < 0 ? p + s[i] : s[i];
      this.ex.nttForward(k);
      const [sh, shs] = nttSecretTables(this.heap.u32(this.bufs[k], n), p);
      const shOff = this.tables[k] + 6 * n * 4; // after fw, fws, fw2, fw2s, iw, iws, iw2, iw2s (6n words)
      this.heap.u32(shOff, n).set(sh);
      this.heap.u32(shOff + n * 4, n).set(shs);
    }
    this.nttSecretReady = true;
  }

  /** Exact integers a*s by the reference NTT for a with coefficients in [0, 2^44) (tests, reference checks). */
  exactNttProduct44(a: ArrayLike<number>): BigInt64Array {
    this.requireNttSecret();
    const n = this.n;
    if (a.length !== n) throw new Error(`helora: operand has ${a.length} coefficients, expected ${n}`);
    this.heap.resetScratch();
    const src = this.heap.alloc(n * 6, 16);
    const dst = this.heap.alloc(n * 8);
    const bytes = this.heap.u8(src, n * 6);
    for (let i = 0; i < n; i++) {
      const v = a[i];
      if (!(Number.isInteger(v) && v >= 0 && v < 2 ** 44)) throw new Error(`helora: coefficient ${v} is not in [0, 2^44)`);
      let x = v;
      for (let b = 0; b < 6; b++) { bytes[i * 6 + b] = x % 256; x = Math.floor(x / 256); }
    }
    this.ex.productExact44(src, dst);
    return new BigInt64Array(this.ex.memory.buffer.slice(dst, dst + n * 8));
  }

  /** Exact integers a*s by the reference NTT for u32 a (tests, reference checks). */
  exactNttProduct32(a: Uint32Array): BigInt64Array {
    this.requireNttSecret();
    return new BigInt64Array(this.productRun([a], (p, dst) => this.ex.productExact32(p[0], dst)));
  }

  /** a*s by the FFT before rounding, for integer a (|a_i| < 2^53): tests measure the FFT error with it. */
  fftProductRaw(a: ArrayLike<number>): Float64Array {
    // a = x + 2^32 y with x the low word read signed
    const x = Int32Array.from(a, (v) => v % 2 ** 32 | 0);
    const y = Int32Array.from(a, (v, i) => (v - x[i]) / 2 ** 32);
    return new Float64Array(this.productRun([x, y], (p, dst) => this.ex.fftProductRaw(p[0], p[1], dst)));
  }

  /** Runs a test product kernel on operands of n 32-bit coefficients; returns its n 8-byte results. */
  private productRun(operands: (Uint32Array | Int32Array)[], kernel: (ptrs: number[], dst: number) => void): ArrayBuffer {
    this.requireSecret();
    const n = this.n;
    this.heap.resetScratch();
    const ptrs = operands.map((a) => {
      if (a.length !== n) throw new Error(`helora: operand has ${a.length} coefficients, expected ${n}`);
      const ptr = this.heap.alloc(n * 4);
      this.heap.u8(ptr, n * 4).set(new Uint8Array(a.buffer, a.byteOffset, n * 4));
      return ptr;
    });
    const dst = this.heap.alloc(n * 8);
    kernel(ptrs, dst);
    return this.ex.memory.buffer.slice(dst, dst + n * 8);
  }

  /**
   * Scratch views for encrypting nPolys polynomials; fill a (6-byte mask values), m (messages of
   * the given element type) and rnd, then call encrypt(). The views stay valid until the next
   * begin*() call on this kernel.
   */
  beginEncrypt<M extends MessageArray>(nPolys: number, outBytes: number, messages: MessageType<M>):
    { a: Uint8Array; m: M; rnd: Uint8Array; out: Uint8Array } {
    const n = this.n;
    this.heap.resetScratch();
    this.pendingDec = null;
    const count = nPolys * n;
    const mBytes = messages.BYTES_PER_ELEMENT;
    const a = this.heap.alloc(count * 6, 16);
    const m = this.heap.alloc(count * mBytes);
    const rndBytes = count * 4 + count / 4;
    const rnd = this.heap.alloc(rndBytes);
    const out = this.heap.alloc(count * outBytes, 8);
    this.pending = { nPolys, a, m, mBytes, rnd, out, outBytes };
    return {
      a: this.heap.u8(a, count * 6),
      m: new messages(this.ex.memory.buffer, m, count),
      rnd: this.heap.u8(rnd, rndBytes),
      out: this.heap.u8(out, count * outBytes),
    };
  }

  private pending: { nPolys: number; a: number; m: number; mBytes: number; rnd: number; out: number; outBytes: number } | null = null;

  /**
   * Runs the encryption prepared by beginEncrypt (see encryptPolys in assembly/client-crypto/encrypt.ts):
   * out = round(((a*s + e + (m << deltaShift)) mod 2^44) / 2^upShift) mod 2^(8 outBytes), a*s by FFT
   * (in pairs of polynomials when pairHigh, unless pairs: false), or with exactNtt by the two-prime
   * NTT, the reference: the same output bit for bit.
   * Returns false (output unusable) if some message value has |m| >= mLimit (mLimit <= 2^30).
   */
  encrypt(deltaShift: number, upShift: number, mLimit: number, opts: { exactNtt?: boolean; pairs?: boolean } = {}): boolean {
    this.requireSecret();
    const p = this.pending;
    if (p === null) throw new Error('helora: encrypt() without beginEncrypt()');
    if (this.cdtLen === 0) throw new Error('helora: no noise table loaded');
    if (!(Number.isInteger(mLimit) && mLimit >= 1 && mLimit <= 2 ** 30)) throw new Error(`helora: bad message limit ${mLimit}`);
    const pairs = this.pairHigh && opts.pairs !== false;
    if (opts.exactNtt) this.requireNttSecret();
    const bad = this.native && !opts.exactNtt
      ? this.native.ccEncrypt(this.memory(), this.layout, p.nPolys, p.a, p.m, p.rnd, this.cdtPtr, this.cdtLen, deltaShift, upShift, p.outBytes,
        p.out, mLimit, p.mBytes, pairs)
      : this.ex.encryptPolys(p.nPolys, p.a, p.m, p.rnd, this.cdtPtr, this.cdtLen, deltaShift, upShift, p.outBytes, p.out, mLimit,
        opts.exactNtt ? 1 : 0, p.mBytes, pairs ? 1 : 0);
    this.pending = null;
    return bad === 0;
  }

  private pendingDec: { nRows: number; a: number; b: number; y: number; yT: number } | null = null;

  /**
   * Scratch views for decrypting nRows rows; fill a and b, then call decrypt() (again with new a
   * and b to accumulate). yT is where transpose() puts the token-major copy of y. The views stay
   * valid until the next begin*() call on this kernel.
   */
  beginDecrypt(nRows: number): { a: Uint32Array; b: Uint32Array; y: Int32Array; yT: Int32Array } {
    const count = nRows * this.n;
    this.heap.resetScratch();
    const a = this.heap.alloc(count * 4);
    const b = this.heap.alloc(count * 4);
    const y = this.heap.alloc(count * 4);
    const yT = this.heap.alloc(count * 4);
    this.pendingDec = { nRows, a, b, y, yT };
    this.pending = null;
    return { a: this.heap.u32(a, count), b: this.heap.u32(b, count), y: this.heap.i32(y, count), yT: this.heap.i32(yT, count) };
  }

  /**
   * y = centered round((b - a*s mod 2^32) / 2^sh) for the rows prepared by beginDecrypt, by the
   * double-precision FFT (exact: see fftProductErrorBound). accumulate: y += instead of y = (y
   * keeps its values until the next begin*(); for summing the K-chunk terms of one output).
   * exactNtt: by the two-prime NTT instead (the reference; no accumulate).
   */
  decrypt(sh: number, opts: { accumulate?: boolean; exactNtt?: boolean } = {}): void {
    this.requireSecret();
    const p = this.pendingDec;
    if (p === null) throw new Error('helora: decrypt() without beginDecrypt()');
    if (!(sh >= 1 && sh <= 31)) throw new Error(`helora: bad decryption shift ${sh}`);
    if (opts.exactNtt) {
      if (opts.accumulate) throw new Error('helora: the NTT decryption does not accumulate');
      this.requireNttSecret();
      this.ex.decryptRows(p.nRows, p.a, p.b, sh, p.y);
    } else if (this.native) {
      this.native.ccDecrypt(this.memory(), this.layout, p.nRows, p.a, p.b, sh, p.y, opts.accumulate === true);
    } else {
      this.ex.decryptRowsFft(p.nRows, p.a, p.b, sh, p.y, opts.accumulate ? 1 : 0);
    }
  }

  /**
   * decrypt() for the rows prepared by beginDecrypt with a and b taken from the given arrays
   * (nRows*N values each; the views' contents are ignored): the native kernel reads them in place,
   * WebAssembly copies them into its memory first. Same results as filling the views.
   */
  decryptFrom(a: Uint32Array, b: Uint32Array, sh: number, opts: { accumulate?: boolean } = {}): void {
    const p = this.pendingDec;
    if (p === null) throw new Error('helora: decryptFrom() without beginDecrypt()');
    const count = p.nRows * this.n;
    if (a.length !== count || b.length !== count) throw new Error(`helora: decryptFrom needs ${count} values of a and b, got ${a.length} and ${b.length}`);
    if (!this.native) {
      this.heap.u32(p.a, count).set(a);
      this.heap.u32(p.b, count).set(b);
      this.decrypt(sh, opts);
      return;
    }
    this.requireSecret();
    if (!(sh >= 1 && sh <= 31)) throw new Error(`helora: bad decryption shift ${sh}`);
    this.native.ccDecryptFrom(this.memory(), this.layout, p.nRows, a, b, sh, p.y, opts.accumulate === true);
  }

  /**
   * The pending decryption's first tn tokens, token-major, into acc: acc[(t0 + t)*rows + r0 + r] =
   * y[r][t] (the transpose() and copy a worker does into its share of the result).
   */
  transposeInto(acc: Int32Array | Float64Array, rows: number, r0: number, t0: number, tn: number): void {
    const p = this.pendingDec;
    if (p === null) throw new Error('helora: transposeInto() without beginDecrypt()');
    if (!(Number.isInteger(tn) && tn >= 1 && tn <= this.n && r0 >= 0 && r0 + p.nRows <= rows && (t0 + tn) * rows <= acc.length)) {
      throw new Error('helora: transposeInto target outside the result');
    }
    if (this.native) {
      this.native.ccTransposeInto(this.memory(), p.y, p.nRows, this.n, acc, rows, r0, t0, tn);
      return;
    }
    this.transpose();
    const yT = this.heap.i32(p.yT, p.nRows * this.n);
    for (let t = 0; t < tn; t++) acc.set(yT.subarray(t * p.nRows, (t + 1) * p.nRows), (t0 + t) * rows + r0);
  }

  /**
   * Token-major values (T x K) into out as feature-major rows (out[i*T + t] = values[t*K + i], same
   * element type: the order the encryption's polynomials take them) and each token's L1 norm into
   * tokenL1, for the tokens t0 .. t0 + tn - 1. The kernel's copies are wiped before returning.
   */
  featureMajor(values: Int8Array | Int16Array, T: number, K: number, out: Int8Array | Int16Array, tokenL1: Float64Array,
    t0 = 0, tn = T): void {
    const count = T * K;
    const wide = values instanceof Int16Array;
    if (values.length !== count || out.length !== count || (out instanceof Int16Array) !== wide || tokenL1.length !== T) {
      throw new Error(`helora: featureMajor needs ${T} x ${K} values, an output of the same type and size and ${T} norms`);
    }
    if (!(Number.isInteger(t0) && Number.isInteger(tn) && t0 >= 0 && tn >= 1 && t0 + tn <= T)) throw new Error(`helora: token range [${t0}, ${t0 + tn}) outside [0, ${T})`);
    this.heap.resetScratch();
    this.pending = null;
    this.pendingDec = null;
    const size = wide ? 2 : 1;
    const bytes = tn * K * size;
    const src = this.heap.alloc(bytes, 16), dst = this.heap.alloc(bytes, 16), l1 = this.heap.alloc(tn * 8);
    const inBytes = this.heap.u8(src, bytes), outBytes = this.heap.u8(dst, bytes);
    inBytes.set(new Uint8Array(values.buffer, values.byteOffset + t0 * K * size, bytes));
    (wide ? this.ex.featureMajorI16 : this.ex.featureMajorI8)(src, tn, K, dst, l1);
    // feature i's tokens are contiguous here (stride tn) and at i*T + t0 in out
    const local = wide ? this.heap.i16(dst, tn * K) : this.heap.i8(dst, tn * K);
    if (tn === T) out.set(local);
    else for (let i = 0; i < K; i++) out.set(local.subarray(i * tn, (i + 1) * tn), i * T + t0);
    tokenL1.set(new Float64Array(this.ex.memory.buffer, l1, tn), t0);
    inBytes.fill(0);
    outBytes.fill(0);
  }

  /** yT = the token-major transpose of y (yT[t*nRows + r] = y[r*N + t]) of the pending decryption. */
  transpose(): void {
    const p = this.pendingDec;
    if (p === null) throw new Error('helora: transpose() without beginDecrypt()');
    if (this.native) this.native.ccTranspose(this.memory(), p.y, p.nRows, this.n, p.yT);
    else this.ex.transposeI32(p.y, p.nRows, this.n, p.yT);
  }

  /** A view of the whole WebAssembly memory (a new one: the memory's buffer changes when it grows). */
  private memory(): Uint8Array {
    return new Uint8Array(this.ex.memory.buffer);
  }
}

const kernels = new Map<number, ClientCryptoKernel>();

/** The client kernel of this thread for ring degree n (created on first use). */
export function clientCryptoKernel(n: number): ClientCryptoKernel {
  let k = kernels.get(n);
  if (!k) {
    k = new ClientCryptoKernel(n);
    kernels.set(n, k);
  }
  return k;
}
