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
 */
import { logDelta, type RlweParams } from './params.js';

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

/** Standard deviation of the (continuous, pre-rounding) error E of one result, in y units. */
export function resultNoiseStd(params: RlweParams, weightRowSqNorm: number, hammingWeight: number): number {
  return Math.sqrt(rawVariance(params, weightRowSqNorm, hammingWeight)) / 2 ** logDelta(params);
}

/**
 * Bound on |y - W m| for one decrypted coefficient, exceeded with probability at most
 * 2 exp(-tailSigmas^2 / 2) (2.5e-14 for the default 8).
 */
export function resultErrorBound(params: RlweParams, weightRowSqNorm: number, hammingWeight: number, tailSigmas = 8): number {
  if (!(tailSigmas > 0)) throw new Error(`helora: tailSigmas must be positive, got ${tailSigmas}`);
  return Math.floor(tailSigmas * resultNoiseStd(params, weightRowSqNorm, hammingWeight) + 0.5);
}

/** Failure probability bound of resultErrorBound per coefficient. */
export function resultErrorBoundFailure(tailSigmas = 8): number {
  return 2 * Math.exp(-(tailSigmas * tailSigmas) / 2);
}
