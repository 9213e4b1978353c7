/**
 * The client kernel's products a*s by double-precision FFT (src/kernels/assembly/client-crypto/fft.ts):
 * their error bound, which makes them exact after rounding, and the tables the kernel's FFT reads.
 */

/**
 * Bound on |FFT value - exact a*s| for |a_i| <= aMax and ternary s, ring degree n:
 * Percival's bound for a floating-point FFT convolution of size 2^k (here k = log2(n/2), unit
 * roundoff u = 2^-53, twiddles within one ulp), to first order ||a||_2 ||s||_2 (6k + sqrt(5)(3k + 1)) u
 * with ||a||_2 <= aMax sqrt(n), ||s||_2 <= sqrt(n). Below 1/2, rounding recovers the exact product.
 * Decryption's int32 a (aMax = 2^31): about 0.06 for n = 2048, 0.14 for n = 4096. Encryption splits
 * its 44-bit a into 32 + 12 bits (the same 2^31), or at n = 2048 into a 34-bit signed part and a
 * packed pair of 10-bit parts (aMax = 2^33 + 2^10: 0.25; ENCRYPT_PAIR_MAX). client-crypto.test.ts
 * measures the real error (~2e-4 at 2^31).
 */
export function fftProductErrorBound(n: number, aMax = 2 ** 31): number {
  const k = Math.log2(n / 2);
  return aMax * n * (6 * k + Math.sqrt(5) * (3 * k + 1)) * 2 ** -53;
}

/** Largest operand of the paired encryption products (see encryptPolys in assembly/client-crypto/encrypt.ts). */
export const ENCRYPT_PAIR_MAX = 2 ** 33 + 2 ** 10;

/** Writes the constant e^{i theta} as the kernel's pair of vectors (cos, cos), (-sin, sin) at entry i. */
function putComplexConstant(t: Float64Array, i: number, theta: number): void {
  const c = Math.cos(theta), s = Math.sin(theta);
  t[4 * i] = c; t[4 * i + 1] = c; t[4 * i + 2] = -s; t[4 * i + 3] = s;
}

/**
 * Tables of the kernel's FFT (see assembly/client-crypto/fft.ts): twist zeta^j, untwist
 * zeta^-j (zeta = e^{i pi/n}) for j < n/2, the twiddles e^{+-2 pi i j/(n/2)} (j < n/4) of the one
 * radix-2 stage and the radix-4 passes' w^{+-j}, w^{+-2j}, w^{+-3j} (w = e^{2 pi i/(2h)}, j < h/2).
 */
export function fftTables(n: number): Float64Array[] {
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
