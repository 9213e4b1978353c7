/**
 * Client-side RLWE encryption of column blocks and decryption of the server's results.
 *
 * Block layout (feature-major): message m has d*N coefficients, (feature i, token t) at i*N + t.
 *   a_i = expandMask(seed, blockIndex, d)  (never uploaded: the server expands the same seed)
 *   b_i = a_i*s + e_i + Delta*m_i mod 2^logQ, uploaded as round(b_i / 2^(logQ-uploadBits)) mod
 *         2^uploadBits, uploadBytes little-endian bytes per coefficient, same (i, t) order.
 * The rounding adds 2^(upShift-1) - 1 plus a fresh random bit (ties go either way with probability
 * 1/2), so the upload rounding error has mean 0 (a plain round-half-up would add a bias of 1/2 per
 * input, summed through W).
 * Server results: aOut, bOut (rows*N u32, (o, t) at o*N + t) with 2^(logQ-downloadBits)*aOut ~ sum_o W a,
 * same for b; decryption y = round((bOut - aOut*s mod 2^32) / (Delta / 2^(logQ-downloadBits))),
 * centered into [-2^(P-1), 2^(P-1)).
 *
 * Plaintext width: encryptBlock/decryptBlock take an optional P' <= params.plaintextBits
 * (Delta' = 2^(logQ - P')); the client picks the smallest safe P' per block from its own inputs
 * (noise.ts choosePlaintextBits) and keeps it: the server never needs Delta, so P' is never sent.
 *
 * The a*s products run in src/kernels/client-crypto.ts (WebAssembly) by double-precision FFT, exact
 * after rounding (fftProductErrorBound). Encryption: the 44-bit masks of two polynomials split into
 * three products (six transforms), fused with noise sampling, rounding and byte packing.
 * Decryption: a has 32 bits, two transforms per row. A two-prime NTT is the exact reference.
 */
import { randomFillSync } from 'node:crypto';
import { clientCryptoKernel, type ClientCryptoKernel, type MessageArray, type MessageType } from '../kernels/client-crypto.js';
import { NTT_MAX_A_BITS, NTT_MAX_N } from '../kernels/ntt-reference.js';
import { SecretKey } from './keys.js';
import { logDeltaFor } from './noise.js';
import { logDelta, maskBytes, uploadBytes, type RlweParams } from './params.js';
import { gaussianMagnitudeCdt, MaskStream, randomSeed, SEED_BYTES } from './sampling.js';

/** Polynomials per kernel call (scratch ~1.4 MB at N = 2048: stays in L2/L3); even, for the kernel's pairs. */
const ENCRYPT_CHUNK_POLYS = 16;
const DECRYPT_CHUNK_ROWS = 256;
/** The client kernel reads every mask coefficient as one 6-byte little-endian word. */
const MASK_WORD_BYTES = 6;

function checkParams(params: RlweParams, key: SecretKey): void {
  if (key.params.id !== params.id) throw new Error(`helora: key belongs to parameter set ${key.params.name}, not ${params.name}`);
  if (params.ringDegree > NTT_MAX_N || params.logQ > NTT_MAX_A_BITS || maskBytes(params) !== MASK_WORD_BYTES) {
    throw new Error(`helora: parameter set ${params.name} is outside what the client kernel supports`);
  }
  if (params.downloadBits !== 32) throw new Error(`helora: decryption kernel needs downloadBits = 32, set ${params.name} has ${params.downloadBits}`);
  if (params.uploadBits >= params.logQ || params.uploadBits % 8 !== 0 || params.uploadBits > 56) throw new Error(`helora: unsupported uploadBits ${params.uploadBits}`);
  if (logDelta(params) - (params.logQ - params.downloadBits) < 1) throw new Error(`helora: ${params.name} leaves no room below Delta after download rounding`);
}

/** The kernel for this key's ring with the key (and the noise table) loaded. */
function kernelFor(params: RlweParams, key: SecretKey): ClientCryptoKernel {
  const k = clientCryptoKernel(params.ringDegree);
  if (!k.hasSecret(key)) {
    k.loadSecret(SecretKey.coefficients(key), key);
    k.loadNoiseTable(gaussianMagnitudeCdt(params.errorStd, params.errorTailCut));
  }
  return k;
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/**
 * Encrypts one column block of d features x N tokens with the mask of (seed, blockIndex).
 * Returns the upload: d*N*uploadBytes bytes. The (seed, blockIndex) pair is claimed on the key:
 * a second use with the same key throws (mask reuse would leak message differences). Draw the
 * seed with randomSeed() for every request (or use encryptFresh).
 */
export function encryptBlock(params: RlweParams, key: SecretKey, m: Int32Array, d: number, seed: Uint8Array, blockIndex: number,
  plaintextBits = params.plaintextBits): Uint8Array {
  checkEncryptArgs(params, key, m, d, seed, blockIndex, 0, plaintextBits);
  SecretKey.claimSeed(key, hex(seed), blockIndex);
  return encryptPolyRange(params, key, m, d, seed, blockIndex, 0, plaintextBits);
}

/** @internal Validation shared by encryptBlock and the worker pool (before the seed is claimed). */
export function checkEncryptArgs(params: RlweParams, key: SecretKey, m: Int32Array, d: number, seed: Uint8Array, blockIndex: number,
  polyStart: number, plaintextBits: number): void {
  checkParams(params, key);
  logDeltaFor(params, plaintextBits);
  const n = params.ringDegree;
  if (!(Number.isInteger(d) && d >= 1 && d <= 1 << 20)) throw new Error(`helora: feature count d must be in [1, 2^20], got ${d}`);
  if (!(Number.isInteger(polyStart) && polyStart >= 0 && polyStart < 1 << 20)) throw new Error(`helora: polynomial offset must be in [0, 2^20), got ${polyStart}`);
  if (!(m instanceof Int32Array) || m.length !== d * n) throw new Error(`helora: message must be an Int32Array of d*N = ${d * n} values, got ${m?.length}`);
  if (!(seed instanceof Uint8Array) || seed.length !== SEED_BYTES) throw new Error(`helora: seed must be ${SEED_BYTES} bytes`);
  maskIvCheck(blockIndex);
}

function maskIvCheck(blockIndex: number): void {
  if (!(Number.isInteger(blockIndex) && blockIndex >= 0 && blockIndex < 2 ** 32)) {
    throw new Error(`helora: blockIndex must be an integer in [0, 2^32), got ${blockIndex}`);
  }
}

/**
 * @internal Encrypts polynomials polyStart .. polyStart + d - 1 of block (seed, blockIndex) WITHOUT
 * claiming the seed: only for encryptBlock and for pool workers, whose caller claimed the
 * (seed, blockIndex) pair on the key in the main thread. m holds the d polynomials of the range.
 */
export function encryptPolyRange(params: RlweParams, key: SecretKey, m: Int32Array, d: number, seed: Uint8Array, blockIndex: number,
  polyStart: number, plaintextBits: number): Uint8Array {
  checkEncryptArgs(params, key, m, d, seed, blockIndex, polyStart, plaintextBits);
  const n = params.ringDegree;
  const out = new Uint8Array(d * n * uploadBytes(params));
  encryptRangeInto(params, key, Int32Array, (dst, p0, np) => dst.set(m.subarray(p0 * n, (p0 + np) * n)), d, seed, blockIndex, polyStart, plaintextBits, out);
  return out;
}

/**
 * @internal encryptPolyRange writing into out (d*N*uploadBytes bytes, e.g. a range of a shared
 * upload) with the messages written by fill(dst, p0, np) straight into the kernel's input
 * (dst = polynomials p0 .. p0 + np - 1 of the range, of element type `messages`: the kernel
 * widens int8 and int16 itself): no message or output copies. The caller has validated the
 * arguments and claimed (seed, blockIndex).
 */
export function encryptRangeInto<M extends MessageArray>(params: RlweParams, key: SecretKey, messages: MessageType<M>,
  fill: (dst: M, p0: number, np: number) => void,
  d: number, seed: Uint8Array, blockIndex: number, polyStart: number, plaintextBits: number, out: Uint8Array): void {
  checkParams(params, key);
  const deltaShift = logDeltaFor(params, plaintextBits);
  const n = params.ringDegree;
  const ob = uploadBytes(params);
  if (out.length !== d * n * ob) throw new Error(`helora: upload buffer has ${out.length} bytes, expected ${d * n * ob}`);
  // |m| < 2^(P'-1) (checked inside the kernel, which is free there)
  const lim = 2 ** (plaintextBits - 1);
  const stream = new MaskStream(seed, blockIndex, polyStart * n * maskBytes(params));
  const k = kernelFor(params, key);
  const upShift = params.logQ - params.uploadBits;
  // The messages left in the kernel scratch are cleared at the end: the first chunk's view covers
  // every full chunk (same layout each time), the last one a shorter tail.
  const used: M[] = [];
  try {
    for (let p0 = 0; p0 < d; p0 += ENCRYPT_CHUNK_POLYS) {
      const np = Math.min(ENCRYPT_CHUNK_POLYS, d - p0);
      const v = k.beginEncrypt(np, ob, messages);
      if (p0 === 0 || p0 + np === d) used.push(v.m);
      stream.nextInto(v.a);
      fill(v.m, p0, np);
      randomFillSync(v.rnd);
      const ok = k.encrypt(deltaShift, upShift, lim);
      v.rnd.fill(0);
      if (!ok) {
        const i = v.m.findIndex((x) => x >= lim || x < -lim);
        throw new Error(`helora: message value ${v.m[i]} at ${p0 * n + i} is outside [-2^${plaintextBits - 1}, 2^${plaintextBits - 1})`);
      }
      out.set(v.out, p0 * n * ob);
    }
  } finally {
    for (const m of used) m.fill(0);
  }
}

/** encryptBlock with a seed drawn here (the seed must be sent to the server with the upload). */
export function encryptFresh(params: RlweParams, key: SecretKey, m: Int32Array, d: number, blockIndex = 0): { seed: Uint8Array; b: Uint8Array } {
  const seed = randomSeed();
  return { seed, b: encryptBlock(params, key, m, d, seed, blockIndex) };
}

/**
 * Decrypts rows result ciphertexts: aOut, bOut are rows*N u32 ((o, t) at o*N + t). Returns
 * rows*N centered integers y[o*N + t] = sum_i W[o,i] m_i[t] + error (see noise.ts).
 */
export function decryptBlock(params: RlweParams, key: SecretKey, aOut: Uint32Array, bOut: Uint32Array, rows: number,
  plaintextBits = params.plaintextBits): Int32Array {
  checkParams(params, key);
  const deltaShift = logDeltaFor(params, plaintextBits);
  const n = params.ringDegree;
  if (!(Number.isInteger(rows) && rows >= 1)) throw new Error(`helora: row count must be a positive integer, got ${rows}`);
  if (!(aOut instanceof Uint32Array) || !(bOut instanceof Uint32Array) || aOut.length !== rows * n || bOut.length !== rows * n) {
    throw new Error(`helora: result parts must be Uint32Array of rows*N = ${rows * n} values, got ${aOut?.length} and ${bOut?.length}`);
  }
  const k = kernelFor(params, key);
  const sh = deltaShift - (params.logQ - params.downloadBits);
  const y = new Int32Array(rows * n);
  for (let r0 = 0; r0 < rows; r0 += DECRYPT_CHUNK_ROWS) {
    const nr = Math.min(DECRYPT_CHUNK_ROWS, rows - r0);
    const v = k.beginDecrypt(nr);
    v.a.set(aOut.subarray(r0 * n, (r0 + nr) * n));
    v.b.set(bOut.subarray(r0 * n, (r0 + nr) * n));
    k.decrypt(sh);
    y.set(v.y, r0 * n);
  }
  return y;
}

/**
 * @internal Decrypts rows r0 .. r0 + nr - 1 of every term (aOut[k], bOut[k]: rows*N u32 each, or
 * just those nr rows when `sliced`) and stores the sum of the terms for the first tn tokens into
 * the token-major acc (acc[(t0 + t)*rows + r] = sum_k y_k[r][t]): the pool workers' path, straight
 * from the shared input to the shared result without intermediate arrays.
 */
export function decryptAccumulate(params: RlweParams, key: SecretKey, aOut: readonly Uint32Array[], bOut: readonly Uint32Array[],
  rows: number, r0: number, nr: number, sliced: boolean, plaintextBits: number, acc: Int32Array | Float64Array, t0: number, tn: number): void {
  checkParams(params, key);
  const deltaShift = logDeltaFor(params, plaintextBits);
  const n = params.ringDegree;
  if (!(Number.isInteger(rows) && rows >= 1 && Number.isInteger(r0) && Number.isInteger(nr) && r0 >= 0 && nr >= 1 && r0 + nr <= rows)) {
    throw new Error(`helora: row range [${r0}, ${r0 + nr}) outside [0, ${rows})`);
  }
  const want = (sliced ? nr : rows) * n;
  if (aOut.length !== bOut.length || aOut.some((a, i) => a.length !== want || bOut[i].length !== want)) {
    throw new Error(`helora: result parts must be Uint32Array of ${want} values`);
  }
  const k = kernelFor(params, key);
  const sh = deltaShift - (params.logQ - params.downloadBits);
  const base = sliced ? 0 : r0;
  for (let c0 = 0; c0 < nr; c0 += DECRYPT_CHUNK_ROWS) {
    const cn = Math.min(DECRYPT_CHUNK_ROWS, nr - c0);
    k.beginDecrypt(cn);
    const off = (base + c0) * n;
    // The terms sum in the kernel's rows (read in place by the native kernel); their token-major
    // transpose lands in acc.
    for (let term = 0; term < aOut.length; term++) {
      k.decryptFrom(aOut[term].subarray(off, off + cn * n), bOut[term].subarray(off, off + cn * n), sh, { accumulate: term > 0 });
    }
    k.transposeInto(acc, rows, r0 + c0, t0, tn);
    // y and yT stay in the kernel's scratch until the next task overwrites them, like acc in the
    // caller's reused result memory: process memory only, never sent (no extra wipe pass here).
  }
}
