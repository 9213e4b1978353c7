/**
 * The exact references for the client kernel's products a*s (s ternary) in Z[X]/(X^N + 1):
 * the two-prime NTT, which the kernel runs beside its FFT (src/kernels/assembly/client-crypto/ntt.ts)
 * so that the tests can compare the FFT paths with it bit for bit, and a schoolbook BigInt product
 * that the NTT itself is tested against. Here: the NTT's primes, limits and tables.
 *
 * The NTT computes a*s modulo two NTT-friendly ~30-bit primes and recombines by CRT. Exactness
 * needs |a*s| < P/2 (P = p0 p1 ~ 2^60): with |s_i| <= 1 and a < 2^44 the product is below
 * 2^44 N <= 2^56, so N <= 4096 and 44-bit a are safe.
 */

/** The two primes, p = 1 mod 8192 (so N <= 4096), 2^32/6 < p < 2^30 (lazy-reduction ranges). */
export const NTT_PRIMES: readonly [number, number] = [1073692673, 1073668097];
/** Largest ring degree the primes support (p - 1 divisible by 2N). */
export const NTT_MAX_N = 4096;
/** Largest coefficient size (bits) of a for which a*s (s ternary) is exact for N = NTT_MAX_N. */
export const NTT_MAX_A_BITS = 44;

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

/** Per-prime twiddle tables, in the order the kernel expects (see assembly/client-crypto/ntt.ts). */
export function nttTables(p: number, n: number): Uint32Array[] {
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

/**
 * The kernel's setup() constants after the primes: 2^32 mod p0 and mod p1 (the high word of a
 * 44-bit value), then p0^-1 mod p1 (CRT), each followed by its Shoup companion.
 */
export function nttSetupConstants(): [number, number, number, number, number, number] {
  const [p0, p1] = NTT_PRIMES.map(BigInt) as [bigint, bigint];
  const c0 = (1n << 32n) % p0, c1 = (1n << 32n) % p1;
  const pinv = powMod(p0 % p1, p1 - 2n, p1);
  return [Number(c0), shoupOf(c0, p0), Number(c1), shoupOf(c1, p1), Number(pinv), shoupOf(pinv, p1)];
}

/**
 * The secret's tables for prime p from its forward NTT (n residues): NTT(s) * n^-1 mod p, the
 * inverse's 1/n folded in, and the Shoup companions.
 */
export function nttSecretTables(transformed: Uint32Array, p: number): [Uint32Array, Uint32Array] {
  const n = transformed.length;
  const P = BigInt(p);
  const nInv = powMod(BigInt(n), P - 2n, P);
  const sh = new Uint32Array(n), shs = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const w = ((BigInt(transformed[i]) % P) * nInv) % P;
    sh[i] = Number(w);
    shs[i] = shoupOf(w, P);
  }
  return [sh, shs];
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
