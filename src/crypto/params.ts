/**
 * RLWE parameter sets (one named, documented constant each, Lattigo / tfhe-rs style).
 *
 * Scheme (design-notes section 2): batch-packed RLWE over R_q = Z_q[X]/(X^N + 1), q = 2^logQ.
 * One ciphertext per input feature i holds that feature for N tokens in its coefficients:
 *   b_i = a_i * s + e_i + Delta * m_i  (mod q),  Delta = 2^(logQ - plaintextBits),
 * with a_i uniform, expanded from a 16-byte seed (AES-128-CTR), so only b_i is uploaded,
 * rounded to its top uploadBits bits. The server returns sum_i W[o,i] (a_i, b_i), both parts
 * rounded to downloadBits bits.
 */

export interface RlweParams {
  /** Wire identifier of the set (protocol messages carry it). */
  readonly id: number;
  readonly name: string;
  /** N: ring degree, tokens per ciphertext. */
  readonly ringDegree: number;
  /** q = 2^logQ (a power of two: no modular reduction costs on the server). */
  readonly logQ: number;
  /** Secret distribution: uniform ternary {-1, 0, 1}. */
  readonly secret: 'uniform-ternary';
  /** Standard deviation sigma of the centered discrete Gaussian error. */
  readonly errorStd: number;
  /** Tail cut: errors are sampled on [-errorTailCut, errorTailCut] (renormalized). */
  readonly errorTailCut: number;
  /** P: plaintext bits; results live in [-2^(P-1), 2^(P-1)), Delta = 2^(logQ - P). */
  readonly plaintextBits: number;
  /** b is rounded to its top uploadBits bits before upload (a is never sent: seeded). */
  readonly uploadBits: number;
  /** The server rounds both result parts to downloadBits bits. */
  readonly downloadBits: number;
  /** Default bound on |activation| and |weight| (8-bit symmetric quantization). */
  readonly maxAbsActivation: number;
  readonly maxAbsWeight: number;
  /** Classical security level claimed (bits), see the constant's comment. */
  readonly securityBits: number;
}

/**
 * N = 2048, q = 2^44, ternary secret, sigma = 3.2, P = 28, 40-bit upload, 32-bit download.
 *
 * Security (128-bit classical). The HomomorphicEncryption.org security standard (Albrecht et al.,
 * 2018, table for the uniform ternary secret, error sigma ~ 3.2) allows log2 q <= 54 at N = 2048
 * for 128-bit classical security (lattice estimator, uSVP / dec / dual attacks); log2 q = 44 is
 * well inside (smaller q = harder RLWE). The public samples are (a_i, b_i) with fresh uniform a_i
 * (AES-128-CTR keyed with a fresh 16-byte seed), a fixed
 * secret and fresh errors: plain RLWE samples. Everything else the server sees is computed from
 * RLWE samples without the secret: rounding b to 40 bits before upload and rounding a_out and
 * b_out to 32 bits on download are public post-processing (they can only lose information), and
 * the products sum_i W[o,i] (a_i, b_i) are public linear maps of the uploads. So the server's view
 * is as hard to distinguish from uniform as the underlying RLWE instance.
 *
 * The masks a_i: the seed is public (it travels with the request), so "AES-CTR is a pseudo-random
 * function" says nothing here (a PRF's security needs a secret key). As Kyber-90s does for its
 * AES-expanded public matrix, the analysis models AES-128 under a public key as an ideal cipher
 * (a random permutation per key), under which the CTR output of a fresh seed is uniform; the
 * claim above holds in that model. A longer AES key would add nothing (the secret is s).
 *
 * Error: centered discrete Gaussian, sigma = 3.2, tail cut at 19 (about 6 sigma, SEAL's choice:
 * P(|e| > 19) ~ 5e-9 for the untruncated distribution), sampled by CDT inversion from
 * node:crypto randomness with 2^-32 threshold resolution (each probability within 2^-32 of the
 * tail-cut discrete Gaussian).
 *
 * Public mask tables (the 'table' mask mode, src/transport/mask-tables.ts). The masks a_i of each
 * product (model, layer, projection group, direction) are fixed and public: expanded by AES-128-CTR
 * from a seed that both sides derive by SHA-256 from the model hash and the product's name (the
 * server cannot pick it). The client draws a fresh uniform ternary secret s_r for every column block
 * of every request (SecretKey.generateSingleUse, which refuses a second block), so the uploads are
 * (a_i, a_i s_r + e_{r,i} + Delta m_{r,i}) for one public matrix (a_1..a_d) and independent secrets:
 * RLWE with a matrix secret, the form Lindner-Peikert encryption and FrodoKEM use with one public A.
 * A hybrid over the secrets reduces it to the RLWE assumption above: in step r, the samples of
 * secret s_r are replaced by uniform ones; a distinguisher between steps r-1 and r breaks RLWE
 * with d samples under s_r, because the reduction, given those d samples with the public a_i,
 * makes the samples of every other secret itself (it knows a_i and picks s_{r'}, e_{r'}). d samples
 * per secret is what fresh-mask requests give out too. What must never happen is one (a, s) pair
 * used twice: a reused secret with the fixed masks would leak the difference of two messages.
 * The masks are modelled as uniform, with AES-128 under a public key as an ideal cipher (above).
 * W·A is then a public function of public data: the server may compute and
 * publish it, and the client decrypts W·B - (W·A) s_r.
 *
 * Capacity: |sum_i W[o,i] m_i| must stay below 2^27 (centered decoding with P = 28), which holds
 * for 8-bit inputs and weights (|x| <= 127) with K <= maxInnerDim(params, 8, 8) inputs.
 * Noise: see noise.ts (std about 0.8 in result units for K = 2048 at full-scale weights).
 */
export const RLWE_N2048_Q44: RlweParams = Object.freeze({
  id: 1,
  name: 'RLWE_N2048_Q44',
  ringDegree: 2048,
  logQ: 44,
  secret: 'uniform-ternary',
  errorStd: 3.2,
  errorTailCut: 19,
  plaintextBits: 28,
  uploadBits: 40,
  downloadBits: 32,
  maxAbsActivation: 127,
  maxAbsWeight: 127,
  securityBits: 128,
});

/** Every parameter set this build knows (the wire accepts exactly these ids). */
export const PARAMETER_SETS: readonly RlweParams[] = Object.freeze([RLWE_N2048_Q44]);

/** The set servers run and clients expect unless told otherwise. */
export const DEFAULT_PARAMS: RlweParams = RLWE_N2048_Q44;

const PARAMS_BY_ID: ReadonlyMap<number, RlweParams> = new Map(PARAMETER_SETS.map((p) => [p.id, p]));

/** The parameter set with this wire id; throws on an unknown id. */
export function paramsById(id: number): RlweParams {
  const p = PARAMS_BY_ID.get(id);
  if (!p) throw new Error(`helora: unknown RLWE parameter set id ${id} (known: ${[...PARAMS_BY_ID.keys()].join(', ')})`);
  return p;
}

/** log2 Delta: the message scale exponent. */
export function logDelta(params: RlweParams): number {
  return params.logQ - params.plaintextBits;
}

/** Bytes per coefficient of an expanded mask a (little endian, low logQ bits used): 6 for logQ 44. */
export function maskBytes(params: RlweParams): number {
  return Math.ceil(params.logQ / 8);
}

/** Bytes per uploaded coefficient of b (uploadBits rounded up to bytes). */
export function uploadBytes(params: RlweParams): number {
  return Math.ceil(params.uploadBits / 8);
}

/** Bytes per downloaded coefficient of each result part (downloadBits rounded up to bytes). */
export function downloadBytes(params: RlweParams): number {
  return Math.ceil(params.downloadBits / 8);
}

/**
 * Largest inner dimension K with 2 * (2^(actBits-1) - 1) * (2^(weightBits-1) - 1) * K < 2^P,
 * i.e. every exact result |sum_i W[o,i] x_i| < 2^(P-1) fits the centered plaintext range (the HE
 * error bound, ~10, is far below the remaining slack). 8321 for 8/8-bit; 8192 is the largest power
 * of two below it.
 */
export function maxInnerDim(params: RlweParams, actBits = 8, weightBits = 8): number {
  if (!(Number.isInteger(actBits) && actBits >= 2 && actBits <= 16 && Number.isInteger(weightBits) && weightBits >= 2 && weightBits <= 16)) {
    throw new Error(`helora: bit widths must be integers in [2, 16], got ${actBits}/${weightBits}`);
  }
  const per = 2 * (2 ** (actBits - 1) - 1) * (2 ** (weightBits - 1) - 1);
  return Math.ceil(2 ** params.plaintextBits / per) - 1;
}
