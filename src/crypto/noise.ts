/**
 * Noise of one decrypted result coefficient, in units of the integer result y.
 *
 * Derivation (q = 2^logQ, Delta = 2^(logQ - P), upload step U = 2^(logQ - uploadBits),
 * download step D = 2^(logQ - downloadBits), s with h = hammingWeight nonzero coefficients):
 *   upload:   U b'_i = b_i + u_i = a_i s + e_i + Delta m_i + u_i, u_i the rounding error. b_i is
 *             uniform mod U (a_i is), and ties are broken by a fresh random bit, so u_i is uniform
 *             on {-U/2+1, .., U/2-1} plus +-U/2 with probability 1/(2U) each: mean 0,
 *             Var = (U^2 + 2) / 12.
 *   server:   A_o = sum_i W[o,i] a_i, B_o = sum_i W[o,i] U b'_i (mod q), each rounded to step D:
 *             D aOut = A_o + da, D bOut = B_o + db with da, db uniform on D consecutive integers
 *             (A_o, B_o are uniform mod D): Var = (D^2 - 1) / 12.
 *   decrypt:  D (bOut - aOut s) = Delta sum_i W m_i + sum_i W[o,i] (e_i + u_i) + db - da*s, so
 *             y = round(v / (Delta / D)) = sum_i W m_i + round(E) with
 *             E = [ sum_i W[o,i] (e_i + u_i) + db - (da*s) ] / Delta.
 *             Each coefficient of da*s sums h independent +-da terms.
 *   Var(E) = [ ||W_o||^2 (sigma^2 + (U^2 + 2)/12) + (1 + h) (D^2 - 1)/12 ] / Delta^2.
 * All terms are independent, centered (up to the server's round-half-up bias of 1/2 per part,
 * i.e. 2^-16 y units) and sub-Gaussian with their standard deviation as parameter (discrete
 * Gaussian; symmetric uniform rounding errors are strictly sub-Gaussian), so
 * P(|E| > k std) <= 2 exp(-k^2 / 2): 2.5e-14 per coefficient for k = 8, so by a union bound at
 * most 1.1e-7 that any of the 2048 x 2048 results of one layer product exceeds the bound (E is
 * a sum of thousands of terms, so the Gaussian tail, 1.2e-15 per coefficient, is the realistic figure).
 * The decrypted integer error is round(E), so |y - W m| <= floor(k std + 1/2).
 *
 * Adaptive scale: a request encrypted with P' < P plaintext bits (Delta' = 2^(logQ - P'), see
 * rlwe.ts) has the same raw noise in units of q, so its error in y units is 2^(P' - P) times the
 * figure above: both functions take the P' used (default: params.plaintextBits).
 */
import type { RlweParams } from './params.js';

/** Variance of E (see above) times Delta^2, in units of the modulus q. */
function rawVariance(params: RlweParams, weightRowSqNorm: number, hammingWeight: number): number {
  if (!(weightRowSqNorm >= 0) || !(hammingWeight >= 0 && hammingWeight <= params.ringDegree)) {
    throw new Error(`helora: bad noise inputs ||W||^2=${weightRowSqNorm} h=${hammingWeight}`);
  }
  const U = 2 ** (params.logQ - params.uploadBits);
  const D = 2 ** (params.logQ - params.downloadBits);
  const sigma2 = params.errorStd * params.errorStd;
  return weightRowSqNorm * (sigma2 + (U * U + 2) / 12) + (1 + hammingWeight) * (D * D - 1) / 12;
}

/** Checks a per-request plaintext bit count P' (1 <= P' <= P) and returns log2 Delta' = logQ - P'. */
export function logDeltaFor(params: RlweParams, plaintextBits: number): number {
  if (!(Number.isInteger(plaintextBits) && plaintextBits >= MIN_PLAINTEXT_BITS && plaintextBits <= params.plaintextBits)) {
    throw new Error(`helora: plaintext bits must be an integer in [${MIN_PLAINTEXT_BITS}, ${params.plaintextBits}], got ${plaintextBits}`);
  }
  return params.logQ - plaintextBits;
}

/** Smallest per-request plaintext width: one sign bit and one magnitude bit. */
export const MIN_PLAINTEXT_BITS = 2;

/**
 * Standard deviation of the (continuous, pre-rounding) error E of one result, in y units, for a
 * request encrypted with plaintextBits P' (Delta' = 2^(logQ - P')).
 */
export function resultNoiseStd(params: RlweParams, weightRowSqNorm: number, hammingWeight: number, plaintextBits = params.plaintextBits): number {
  return Math.sqrt(rawVariance(params, weightRowSqNorm, hammingWeight)) / 2 ** logDeltaFor(params, plaintextBits);
}

/**
 * Bound on |y - W m| for one decrypted coefficient, exceeded with probability at most
 * 2 exp(-tailSigmas^2 / 2) (2.5e-14 for the default 8).
 */
export function resultErrorBound(params: RlweParams, weightRowSqNorm: number, hammingWeight: number, tailSigmas = 8,
  plaintextBits = params.plaintextBits): number {
  if (!(tailSigmas > 0)) throw new Error(`helora: tailSigmas must be positive, got ${tailSigmas}`);
  return Math.floor(tailSigmas * resultNoiseStd(params, weightRowSqNorm, hammingWeight, plaintextBits) + 0.5);
}

/** Failure probability bound of resultErrorBound per coefficient. */
export function resultErrorBoundFailure(tailSigmas = 8): number {
  return 2 * Math.exp(-(tailSigmas * tailSigmas) / 2);
}

/** Extra result units of headroom the plaintext-width rule keeps beyond what its proof needs. */
export const PLAINTEXT_MARGIN = 1;

/**
 * The smallest plaintext width P' (capped at params.plaintextBits) that decodes every result of a
 * block exactly up to the noise, given a proven bound on the results:
 *   maxAbsResult >= |y| for every result y of the block (the client knows its own inputs:
 *     |y[t,o]| = |sum_i W[o,i] x[t,i]| <= maxAbsWeight * ||x_t||_1, max over the block's tokens;
 *     every K-chunk term obeys the same bound, its sum runs over a subset of the features),
 *   maxWeightRowSqNorm >= ||W[o,:]||^2 for every row of every term (maxAbsWeight^2 * K at worst).
 * Rule: smallest P' with  maxAbsResult + resultErrorBound(.., P') + 1 + PLAINTEXT_MARGIN <= 2^(P'-1).
 *
 * Proof. With sh = downloadBits - P', decryption (rlwe.ts) holds the integer V = 2^sh (y + E) as a
 * 32-bit two's complement value v = V mod 2^32 and returns (v + 2^(sh-1)) >> sh (arithmetic). If
 * -2^31 <= V and V + 2^(sh-1) < 2^31, then v = V and no overflow happens, so the result is
 * floor(y + E + 1/2) = y + round(E). Dividing by 2^sh, both hold when |y + E| < 2^(P'-1) - 1/2.
 * With probability >= 1 - resultErrorBoundFailure(), |E| <= 8 std' < bound' + 1/2 (bound' =
 * floor(8 std' + 1/2)), so |y + E| < maxAbsResult + bound' + 1/2 <= 2^(P'-1) - 1/2 - PLAINTEXT_MARGIN.
 * Hence the block decrypts to y + round(E), |round(E)| <= bound', with the same failure
 * probability as at the full width. At the cap the shape-based K-chunk split (maxInnerDim) is
 * what guarantees |y| < 2^(P-1), as before.
 */
export function choosePlaintextBits(params: RlweParams, maxAbsResult: number, maxWeightRowSqNorm: number, hammingWeight: number): number {
  if (!(maxAbsResult >= 0 && Number.isFinite(maxAbsResult))) throw new Error(`helora: bad result bound ${maxAbsResult}`);
  for (let p = MIN_PLAINTEXT_BITS; p < params.plaintextBits; p++) {
    const bound = resultErrorBound(params, maxWeightRowSqNorm, hammingWeight, 8, p);
    if (maxAbsResult + bound + 1 + PLAINTEXT_MARGIN <= 2 ** (p - 1)) return p;
  }
  return params.plaintextBits;
}
