/**
 * Negacyclic products a*s in Z[X]/(X^N + 1) with a small (ternary) secret s, for the RLWE client:
 * TypeScript side of build/wasm/client-crypto.wasm (src/kernels/assembly/client-crypto.entry.ts) plus a schoolbook
 * BigInt reference.
 *
 * Encryption and decryption compute a*s by double-precision FFT, exact after rounding (see
 * fftProductErrorBound). The exact reference they are tested against (exactNtt) computes a*s
 * modulo two NTT-friendly ~30-bit primes and recombines by CRT. Exactness needs |a*s| < P/2
 * (P = p0 p1 ~ 2^60): with |s_i| <= 1 and a < 2^44 the product is below 2^44 N <= 2^56, so
 * N <= 4096 and 44-bit a are safe (checked below).
 */
import { instantiateWasm, WasmHeap } from './wasm.js';

/** The two primes, p = 1 mod 8192 (so N <= 4096), 2^32/6 < p < 2^30 (lazy-reduction ranges). */
export const NTT_PRIMES: readonly [number, number] = [1073692673, 1073668097];
/** Largest ring degree the primes support (p - 1 divisible by 2N). */
export const NTT_MAX_N = 4096;
/** Largest coefficient size (bits) of a for which a*s (s ternary) is exact for N = NTT_MAX_N. */
export const NTT_MAX_A_BITS = 44;

/**
 * Bound on |FFT value - exact a*s| for |a_i| <= aMax and ternary s, ring degree n:
 * Percival's bound for a floating-point FFT convolution of size 2^k (here k = log2(n/2), unit
 * roundoff u = 2^-53, twiddles within one ulp), to first order ||a||_2 ||s||_2 (6k + sqrt(5)(3k + 1)) u
 * with ||a||_2 <= aMax sqrt(n), ||s||_2 <= sqrt(n). Below 1/2, rounding recovers the exact product.
 * Decryption's int32 a (aMax = 2^31): about 0.06 for n = 2048, 0.14 for n = 4096. Encryption splits
 * its 44-bit a into 32 + 12 bits (the same 2^31), or at n = 2048 into a 34-bit signed part and a
 * packed pair of 10-bit parts (aMax = 2^33 + 2^10: 0.25; ENCRYPT_PAIR_MAX). ntt.test.ts measures
 * the real error (~2e-4 at 2^31).
 */
export function fftProductErrorBound(n: number, aMax = 2 ** 31): number {
  const k = Math.log2(n / 2);
  return aMax * n * (6 * k + Math.sqrt(5) * (3 * k + 1)) * 2 ** -53;
}

/** Largest operand of the paired encryption products (see encryptPolys in assembly/client-crypto/encrypt.ts). */
export const ENCRYPT_PAIR_MAX = 2 ** 33 + 2 ** 10;

interface NttExports {
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

function powMod(b: bigint, e: bigint, m: bigint): bigint {
  let r = 1n;
  b %= m;
  while (e > 0n) {
    if (e & 1n) r = (r * b) % m;
    b = (b * b) % m;
    e >>= 1n;
  }
  return r;
}

/** A primitive 2n-th root of unity mod p (psi^n = -1). */
function primitiveRoot2n(p: number, n: number): bigint {
  const P = BigInt(p);
  for (let g = 2n; g < 1000n; g++) {
    const psi = powMod(g, (P - 1n) / BigInt(2 * n), P);
    if (powMod(psi, BigInt(n), P) === P - 1n) return psi;
  }
  throw new Error('helora: no primitive root found (internal)');
}

function bitReverse(i: number, logN: number): number {
  let r = 0;
  for (let k = 0; k < logN; k++) r |= ((i >> k) & 1) << (logN - 1 - k);
  return r;
}

/** floor(w 2^32 / p): Shoup's companion of the constant w. */
function shoupOf(w: bigint, p: bigint): number {
  return Number((w << 32n) / p);
}

/** Per-prime tables, in the order the kernel expects (see assembly/client-crypto/ntt.ts). */
function buildTables(p: number, n: number): Uint32Array[] {
  const P = BigInt(p);
  const logN = Math.log2(n);
  const psi = primitiveRoot2n(p, n);
  const psiInv = powMod(psi, P - 2n, P);
  const fw = new Uint32Array(n), fws = new Uint32Array(n), iw = new Uint32Array(n), iws = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const e = BigInt(bitReverse(i, logN));
    const w = powMod(psi, e, P);
    const wi = powMod(psiInv, e, P);
    fw[i] = Number(w); fws[i] = shoupOf(w, P);
    iw[i] = Number(wi); iws[i] = shoupOf(wi, P);
  }
  // stage t = 2 uses twiddle index N/4 + g for the 4-element group g: expand to 2 lanes each
  const expand = (src: Uint32Array): Uint32Array => {
    const out = new Uint32Array(n / 2);
    for (let g = 0; g < n / 4; g++) { out[2 * g] = src[n / 4 + g]; out[2 * g + 1] = src[n / 4 + g]; }
    return out;
  };
  return [fw, fws, expand(fw), expand(fws), iw, iws, expand(iw), expand(iws)];
}

/** Writes the constant e^{i theta} as the kernel's pair of vectors (cos, cos), (-sin, sin) at entry i. */
function putComplexConstant(t: Float64Array, i: number, theta: number): void {
  const c = Math.cos(theta), s = Math.sin(theta);
  t[4 * i] = c; t[4 * i + 1] = c; t[4 * i + 2] = -s; t[4 * i + 3] = s;
}

/**
 * Tables of the decryption FFT (see assembly/client-crypto/fft.ts): twist zeta^j, untwist
 * zeta^-j (zeta = e^{i pi/n}) for j < n/2, the twiddles e^{+-2 pi i j/(n/2)} (j < n/4) of the one
 * radix-2 stage and the radix-4 passes' w^{+-j}, w^{+-2j}, w^{+-3j} (w = e^{2 pi i/(2h)}, j < h/2).
 */
function buildFftTables(n: number): Float64Array[] {
  const n2 = n / 2;
  const twist = new Float64Array(4 * n2), untwist = new Float64Array(4 * n2);
  for (let j = 0; j < n2; j++) {
    putComplexConstant(twist, j, (Math.PI * j) / n);
    putComplexConstant(untwist, j, (-Math.PI * j) / n);
  }
  const fw = new Float64Array(4 * (n2 / 2)), iw = new Float64Array(4 * (n2 / 2));
  for (let j = 0; j < n2 / 2; j++) {
    putComplexConstant(fw, j, (2 * Math.PI * j) / n2);
    putComplexConstant(iw, j, (-2 * Math.PI * j) / n2);
  }
  const fw4 = new Float64Array(4 * 3 * n2), iw4 = new Float64Array(4 * 3 * n2);
  for (let q = 2; q <= n2 / 4; q <<= 1) {
    for (let j = 0; j < q; j++) {
      for (let m = 0; m < 3; m++) {
        const angle = (2 * Math.PI * (m + 1) * j) / (4 * q);
        putComplexConstant(fw4, 3 * (q - 1) + 3 * j + m, angle);
        putComplexConstant(iw4, 3 * (q - 1) + 3 * j + m, -angle);
      }
    }
  }
  return [twist, untwist, fw, iw, fw4, iw4];
}

/** Message element types the encryption kernel reads (widened to 32 bits inside). */
export type MessageArray = Int8Array | Int16Array | Int32Array;
/** The constructor of one of them (Int8Array, Int16Array or Int32Array). */
export type MessageType<M extends MessageArray> = { new (buffer: ArrayBufferLike, byteOffset: number, length: number): M; readonly BYTES_PER_ELEMENT: number };

/** One WebAssembly instance doing negacyclic products with one secret at a time, ring degree n. */
export class NttKernel {
  readonly n: number;
  private readonly ex: NttExports;
  private readonly heap: WasmHeap;
  private readonly tables: [number, number];
  private readonly bufs: [number, number];
  private readonly cdtPtr: number;
  private cdtLen = 0;
  /** Identity of the secret currently loaded (set by the caller via loadSecret). */
  private secretOwner: object | null = null;

  /** module: the build/wasm file to run (another build of client-crypto.entry.ts, for kernel comparisons). */
  constructor(n: number, module = 'client-crypto') {
    if (!Number.isInteger(n) || n < 16 || n > NTT_MAX_N || (n & (n - 1)) !== 0) {
      throw new Error(`helora: NTT ring degree must be a power of two in [16, ${NTT_MAX_N}], got ${n}`);
    }
    if (!(fftProductErrorBound(n) < 0.5)) throw new Error(`helora: ring degree ${n} is too large for exact FFT products`);
    this.n = n;
    this.ex = instantiateWasm(module).exports as unknown as NttExports;
    this.heap = new WasmHeap(this.ex.memory, this.ex.heapBase());
    const tableWords = 8 * n;
    this.tables = [this.heap.allocPermanent(tableWords * 4), this.heap.allocPermanent(tableWords * 4)];
    this.bufs = [this.heap.allocPermanent(n * 4), this.heap.allocPermanent(n * 4)];
    this.cdtPtr = this.heap.allocPermanent(64 * 4);
    for (let k = 0; k < 2; k++) {
      let off = this.tables[k];
      for (const t of buildTables(NTT_PRIMES[k], n)) {
        this.heap.u32(off, t.length).set(t);
        off += t.length * 4;
      }
    }
    const [p0, p1] = NTT_PRIMES.map(BigInt) as [bigint, bigint];
    const c0 = (1n << 32n) % p0, c1 = (1n << 32n) % p1;
    const pinv = powMod(p0 % p1, p1 - 2n, p1);
    this.ex.setup(n, NTT_PRIMES[0], NTT_PRIMES[1], this.tables[0], this.tables[1],
      Number(c0), shoupOf(c0, p0), Number(c1), shoupOf(c1, p1), Number(pinv), shoupOf(pinv, p1),
      this.bufs[0], this.bufs[1]);
    const n2 = n / 2;
    const fft = buildFftTables(n);
    const put = (t: Float64Array): number => {
      const ptr = this.heap.allocPermanent(t.length * 8);
      new Float64Array(this.ex.memory.buffer, ptr, t.length).set(t);
      return ptr;
    };
    const [twist, untwist, fw, iw, fw4, iw4] = fft.map(put);
    this.fftSecret = this.heap.allocPermanent(n2 * 32);
    this.ex.setupFft(n2, twist, untwist, fw, iw, fw4, iw4, this.fftSecret,
      this.heap.allocPermanent(n2 * 16), this.heap.allocPermanent(2 * n * 8), this.heap.allocPermanent(6 * n * 4));
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

  /** Loads a secret with coefficients in [-1, 1] (stored in NTT form, 1/N folded in). */
  loadSecret(s: Int8Array, owner: object): void {
    const n = this.n;
    if (s.length !== n) throw new Error(`helora: secret has ${s.length} coefficients, expected ${n}`);
    for (let k = 0; k < 2; k++) {
      const p = NTT_PRIMES[k];
      const P = BigInt(p);
      const buf = this.heap.u32(this.bufs[k], n);
      for (let i = 0; i < n; i++) {
        const c = s[i];
        if (c < -1 || c > 1) throw new Error(`helora: secret coefficient ${c} at ${i} is not ternary`);
        buf[i] = c < 0 ? p + c : c;
      }
      this.ex.nttForward(k);
      const nInv = powMod(BigInt(n), P - 2n, P);
      const out = this.heap.u32(this.bufs[k], n);
      const sh = new Uint32Array(n), shs = new Uint32Array(n);
      for (let i = 0; i < n; i++) {
        const w = ((BigInt(out[i]) % P) * nInv) % P;
        sh[i] = Number(w);
        shs[i] = shoupOf(w, P);
      }
      const shOff = this.tables[k] + 6 * n * 4; // after fw, fws, fw2, fw2s, iw, iws, iw2, iw2s (6n words)
      this.heap.u32(shOff, n).set(sh);
      this.heap.u32(shOff + n * 4, n).set(shs);
    }
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
    if (this.secretOwner === null) throw new Error('helora: no secret loaded in the NTT kernel');
  }

  /** Exact integers a*s for a with coefficients in [0, 2^44) (tests, reference checks). */
  productExact44(a: ArrayLike<number>): BigInt64Array {
    this.requireSecret();
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

  /** Exact integers a*s for u32 a (tests, reference checks). */
  productExact32(a: Uint32Array): BigInt64Array {
    return new BigInt64Array(this.productRun([a], (p, dst) => this.ex.productExact32(p[0], dst)));
  }

  /** a*s by the FFT before rounding, for integer a (|a_i| < 2^53): tests measure the FFT error with it. */
  productFftRaw(a: ArrayLike<number>): Float64Array {
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
    const bad = this.ex.encryptPolys(p.nPolys, p.a, p.m, p.rnd, this.cdtPtr, this.cdtLen, deltaShift, upShift, p.outBytes, p.out, mLimit,
      opts.exactNtt ? 1 : 0, p.mBytes, this.pairHigh && opts.pairs !== false ? 1 : 0);
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
      this.ex.decryptRows(p.nRows, p.a, p.b, sh, p.y);
    } else {
      this.ex.decryptRowsFft(p.nRows, p.a, p.b, sh, p.y, opts.accumulate ? 1 : 0);
    }
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
    this.ex.transposeI32(p.y, p.nRows, this.n, p.yT);
  }
}

const kernels = new Map<number, NttKernel>();

/** The NTT kernel of this thread for ring degree n (created on first use). */
export function nttKernel(n: number): NttKernel {
  let k = kernels.get(n);
  if (!k) {
    k = new NttKernel(n);
    kernels.set(n, k);
  }
  return k;
}

/** Schoolbook negacyclic product in Z[X]/(X^N + 1) (reference for tests; O(N^2) BigInt). */
export function negacyclicMulRef(a: readonly bigint[], b: readonly bigint[]): bigint[] {
  const n = a.length;
  if (b.length !== n) throw new Error('helora: negacyclicMulRef operands differ in length');
  const c = new Array<bigint>(n).fill(0n);
  for (let j = 0; j < n; j++) {
    const bj = b[j];
    if (bj === 0n) continue;
    for (let i = 0; i < n; i++) {
      const k = i + j;
      const prod = bj === 1n ? a[i] : bj === -1n ? -a[i] : a[i] * bj;
      if (k < n) c[k] += prod;
      else c[k - n] -= prod;
    }
  }
  return c;
}
