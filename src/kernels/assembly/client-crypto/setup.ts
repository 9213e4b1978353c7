// The kernel's state: the ring degree, the NTT's constants and the offsets of every table and
// buffer, recorded once per instance by setup() and setupFft(). Memory is owned by the TypeScript
// wrapper (src/kernels/client-crypto.ts): it writes the tables, calls both with their offsets, and
// passes buffer offsets to every call. Nothing in this kernel allocates.

/** The ring degree (setupFft's n2 is N/2). */
export let N: i32 = 0;

// The two-prime NTT (its table layout is described in ntt.ts).
/** The primes p0, p1. */
export let P0: u32 = 0;
export let P1: u32 = 0;
/** Per-prime table bases: [fw, fws, fw2, fw2s, iw, iws, iw2, iw2s, sh, shs] offsets. */
export let T0: usize = 0;
export let T1: usize = 0;
/** 2^32 mod p_k and its Shoup companion (residue of the high word of a 44-bit value). */
export let C0: u32 = 0;
export let C0S: u32 = 0;
export let C1: u32 = 0;
export let C1S: u32 = 0;
/** p0^-1 mod p1 and its Shoup companion (CRT). */
export let PINV: u32 = 0;
export let PINVS: u32 = 0;
/** Work buffers: N u32 residues for each prime. */
export let BUF0: usize = 0;
export let BUF1: usize = 0;

export function heapBase(): usize {
  return __heap_base;
}

/**
 * Records the ring degree, the primes, table bases and scratch buffers. Each table base points at
 * 10 consecutive u32 arrays (see the layout in ntt.ts; sizes N, N, N/2, N/2, N, N, N/2, N/2, N, N).
 */
export function setup(n: i32, p0: u32, p1: u32, t0: usize, t1: usize, c0: u32, c0s: u32, c1: u32, c1s: u32,
  pinv: u32, pinvs: u32, buf0: usize, buf1: usize): void {
  N = n; P0 = p0; P1 = p1; T0 = t0; T1 = t1;
  C0 = c0; C0S = c0s; C1 = c1; C1S = c1s; PINV = pinv; PINVS = pinvs;
  BUF0 = buf0; BUF1 = buf1;
}

// The FFT (its tables are described in fft.ts) and the encryption's buffers.
export let FN2: i32 = 0;
export let FTWIST: usize = 0;
export let FUNTWIST: usize = 0;
export let FFW: usize = 0;
export let FIW: usize = 0;
export let FFW4: usize = 0;
export let FIW4: usize = 0;
export let FSECRET: usize = 0;
export let FBUF: usize = 0;
/** 2N i64: the encryption's a*s for up to two polynomials (see gatherProduct). */
export let WIDE: usize = 0;
/** 6N i32: the encryption's split masks when polynomials go in pairs (splitMask34). */
export let SPLIT: usize = 0;

export function setupFft(n2: i32, twist: usize, untwist: usize, fw: usize, iw: usize, fw4: usize, iw4: usize, secret: usize, buf: usize, wide: usize, split: usize): void {
  FN2 = n2; FTWIST = twist; FUNTWIST = untwist; FFW = fw; FIW = iw; FFW4 = fw4; FIW4 = iw4; FSECRET = secret; FBUF = buf; WIDE = wide; SPLIT = split;
}
