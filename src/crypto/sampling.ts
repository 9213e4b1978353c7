/**
 * Secret randomness for RLWE, all from node:crypto (CSPRNG): seeds, ternary secrets, discrete
 * Gaussian errors, and the AES-128-CTR mask expansion.
 */
import { createCipheriv, randomBytes, randomFillSync } from 'node:crypto';
import { maskBytes, type RlweParams } from './params.js';

/**
 * Bytes of a mask seed (the AES-128 key). The seed travels in the clear: the mask only has to be
 * uniform, so AES-128 (about 1.7x faster than AES-256 here) loses nothing. 128 random bits make
 * an accidental repeat negligible; SecretKey.claimSeed refuses any repeat with the same key.
 */
export const SEED_BYTES = 16;

/** A fresh 16-byte seed from the CSPRNG. */
export function randomSeed(): Uint8Array {
  return new Uint8Array(randomBytes(SEED_BYTES));
}

/** n coefficients uniform in {-1, 0, 1} (rejection sampling on bytes: 255 is dropped). */
export function sampleTernary(n: number): Int8Array {
  const s = new Int8Array(n);
  const buf = new Uint8Array(Math.max(64, n + (n >> 2)));
  let filled = 0;
  while (filled < n) {
    randomFillSync(buf);
    for (let i = 0; i < buf.length && filled < n; i++) {
      const b = buf[i];
      if (b < 255) s[filled++] = (b % 3) - 1;
    }
  }
  buf.fill(0);
  return s;
}

/**
 * CDT of the error magnitude for inversion sampling with a uniform 32-bit u:
 * |e| = #{k : u >= T[k]}, T[k] = round(2^32 P(|e| <= k)), k = 0 .. tailCut - 1, where e is the
 * centered discrete Gaussian rho(x) = exp(-x^2 / (2 sigma^2)) restricted to [-tailCut, tailCut].
 * A separate random bit gives the sign (|e| = 0 ignores it), so P(e = +-k) = P(|e| = k) / 2.
 */
export function gaussianMagnitudeCdt(sigma: number, tailCut: number): Uint32Array {
  if (!(sigma > 0 && Number.isInteger(tailCut) && tailCut >= 1 && tailCut <= 64)) {
    throw new Error(`helora: bad Gaussian parameters sigma=${sigma} tailCut=${tailCut}`);
  }
  const rho = (x: number): number => Math.exp(-(x * x) / (2 * sigma * sigma));
  let total = rho(0);
  for (let k = 1; k <= tailCut; k++) total += 2 * rho(k);
  const t = new Uint32Array(tailCut);
  let cum = 0;
  for (let k = 0; k < tailCut; k++) {
    cum += (k === 0 ? rho(0) : 2 * rho(k)) / total;
    t[k] = Math.min(2 ** 32 - 1, Math.round(cum * 2 ** 32));
  }
  return t;
}

/** Probability of each value e in [-tailCut, tailCut] under the sampler's table (index e + tailCut). */
export function gaussianTablePmf(cdt: Uint32Array): Float64Array {
  const tail = cdt.length;
  const pmf = new Float64Array(2 * tail + 1);
  let prev = 0;
  for (let k = 0; k <= tail; k++) {
    const next = k < tail ? cdt[k] : 2 ** 32;
    const p = (next - prev) / 2 ** 32;
    prev = next;
    if (k === 0) pmf[tail] = p;
    else { pmf[tail + k] = p / 2; pmf[tail - k] = p / 2; }
  }
  return pmf;
}

/** count discrete Gaussian errors (plain TS, same CDT as the WASM encryptor; for tests and tools). */
export function sampleGaussian(params: RlweParams, count: number): Int32Array {
  const cdt = gaussianMagnitudeCdt(params.errorStd, params.errorTailCut);
  const u = new Uint32Array(count);
  randomFillSync(u);
  const signs = new Uint8Array(Math.ceil(count / 8));
  randomFillSync(signs);
  const e = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    let mag = 0;
    for (let k = 0; k < cdt.length; k++) mag += u[i] >= cdt[k] ? 1 : 0;
    e[i] = (signs[i >> 3] >> (i & 7)) & 1 ? -mag : mag;
  }
  u.fill(0);
  return e;
}

/**
 * The AES-128-CTR IV of block blockIndex at key-stream byte byteOffset: blockIndex big-endian in
 * bytes 0..3, zeros in 4..7, the 64-bit big-endian counter byteOffset / 16 in bytes 8..15.
 */
function maskIv(blockIndex: number, byteOffset: number): Uint8Array {
  if (!(Number.isInteger(blockIndex) && blockIndex >= 0 && blockIndex < 2 ** 32)) {
    throw new Error(`helora: blockIndex must be an integer in [0, 2^32), got ${blockIndex}`);
  }
  if (!(Number.isSafeInteger(byteOffset) && byteOffset >= 0 && byteOffset % MASK_STREAM_ALIGN === 0)) {
    throw new Error(`helora: mask stream offset must be a non-negative multiple of ${MASK_STREAM_ALIGN}, got ${byteOffset}`);
  }
  const iv = new Uint8Array(16);
  const dv = new DataView(iv.buffer);
  dv.setUint32(0, blockIndex, false);
  dv.setBigUint64(8, BigInt(byteOffset / MASK_STREAM_ALIGN), false);
  return iv;
}

/** AES block size: a mask stream can start at any multiple of it. */
export const MASK_STREAM_ALIGN = 16;

/** One piece of a mask stream: `length` bytes at `start` (relative to the range), from AES-128-CTR(seed, iv). */
export interface MaskStreamPiece {
  iv: Uint8Array;
  start: number;
  length: number;
}

/**
 * The bytes [byteOffset, byteOffset + bytes) of block blockIndex's mask stream cut into at most
 * `pieces` parts that start at multiples of 16 bytes, each with the IV that starts the stream there:
 * expanded independently (in parallel), they give exactly MaskStream's bytes.
 */
export function maskStreamPieces(blockIndex: number, byteOffset: number, bytes: number, pieces: number): MaskStreamPiece[] {
  if (!(Number.isSafeInteger(bytes) && bytes >= 0)) throw new Error(`helora: mask range must be a non-negative byte count, got ${bytes}`);
  if (!(Number.isInteger(pieces) && pieces >= 1)) throw new Error(`helora: piece count must be a positive integer, got ${pieces}`);
  const per = Math.max(MASK_STREAM_ALIGN, Math.ceil(bytes / pieces / MASK_STREAM_ALIGN) * MASK_STREAM_ALIGN);
  const out: MaskStreamPiece[] = [];
  for (let start = 0; start < bytes; start += per) {
    out.push({ iv: maskIv(blockIndex, byteOffset + start), start, length: Math.min(per, bytes - start) });
  }
  return out;
}

function checkSeed(seed: Uint8Array): void {
  if (!(seed instanceof Uint8Array) || seed.length !== SEED_BYTES) {
    throw new Error(`helora: mask seed must be ${SEED_BYTES} bytes, got ${seed instanceof Uint8Array ? seed.length : typeof seed}`);
  }
}

/**
 * Streams the mask bytes of one block in order (callers take them chunk by chunk). The key stream
 * is AES-128-CTR(key = seed, IV = blockIndex || 0^32 || counter64 from 0): the 64-bit counter can
 * never carry into the block index, so different blocks never share key stream. The stream is
 * seekable: starting at byteOffset (a multiple of 16) sets the counter to byteOffset / 16, which
 * gives exactly the bytes a stream from 0 would produce there (workers encrypt polynomial ranges).
 */
/** Largest key-stream piece nextInto asks the cipher for. */
const MASK_PIECE_BYTES = 1 << 20;

export class MaskStream {
  private readonly cipher;
  private zeros = new Uint8Array(0);

  constructor(seed: Uint8Array, blockIndex: number, byteOffset = 0) {
    checkSeed(seed);
    this.cipher = createCipheriv('aes-128-ctr', seed, maskIv(blockIndex, byteOffset));
  }

  /** The next `bytes` bytes of key stream (a new array). */
  next(bytes: number): Uint8Array {
    if (this.zeros.length < bytes) this.zeros = new Uint8Array(bytes);
    const out = this.cipher.update(this.zeros.subarray(0, bytes));
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  }

  /**
   * Fills dst with the next dst.length bytes of key stream, a piece of at most 1 MiB at a time, so
   * filling a large buffer (the server's masks, straight into shared memory) makes no copy of its size.
   */
  nextInto(dst: Uint8Array): void {
    for (let off = 0; off < dst.length; off += MASK_PIECE_BYTES) dst.set(this.next(Math.min(MASK_PIECE_BYTES, dst.length - off)), off);
  }
}

/**
 * The masks a_i (i < d) of one column block: d*N*maskBytes bytes; coefficient (i, t) at byte
 * maskBytes*(i*N + t) is the little-endian integer there (48 bits for logQ 44), masked to its low logQ bits by the reader.
 * This is exactly what the server expands from the seed.
 */
export function expandMask(params: RlweParams, seed: Uint8Array, blockIndex: number, d: number): Uint8Array {
  if (!(Number.isInteger(d) && d >= 1 && d <= 1 << 20)) throw new Error(`helora: mask row count d must be in [1, 2^20], got ${d}`);
  return new MaskStream(seed, blockIndex).next(d * params.ringDegree * maskBytes(params));
}
