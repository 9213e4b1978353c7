/** The RLWE core of helora: parameter sets, sampling, keys, encryption, decryption, noise. */
export { RLWE_N2048_Q44, DEFAULT_PARAMS, PARAMETER_SETS, paramsById, maxInnerDim, logDelta, maskBytes, uploadBytes, downloadBytes, type RlweParams } from './params.js';
export { randomSeed, expandMask, sampleTernary, sampleGaussian, gaussianMagnitudeCdt, gaussianTablePmf, MaskStream, maskStreamPieces, MASK_STREAM_ALIGN, SEED_BYTES, type MaskStreamPiece } from './sampling.js';
export { SecretKey } from './keys.js';
export { encryptBlock, encryptFresh, decryptBlock } from './rlwe.js';
export { resultNoiseStd, resultErrorBound, resultErrorBoundFailure, choosePlaintextBits, MIN_PLAINTEXT_BITS, PLAINTEXT_MARGIN } from './noise.js';
export { CryptoPool } from './pool.js';
export { serverProductReference } from './server-reference.js';
export { encodeFeatures } from './encode.js';
