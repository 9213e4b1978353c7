// Random test inputs for the kernel tests (Math.random: test data only, never anything secret).
import type { ZqModulus } from './zq-matmul.js';

/** int8 weights uniform in [-127, 127] (the kernels' weight range). */
export function randW(n: number): Int8Array {
  const a = new Int8Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.floor(Math.random() * 255) - 127;
  return a;
}

/** Uniform bytes (mask / upload streams). */
export function randBytes(n: number): Uint8Array {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.floor(Math.random() * 256);
  return a;
}

/** The widths of the parameter set the Z_q kernel implements (src/crypto/params.ts RLWE_N2048_Q44). */
export const TEST_MODULUS: ZqModulus = Object.freeze({ name: 'test q = 2^44', logQ: 44, uploadBits: 40, downloadBits: 32, maxAbsWeight: 127 });
