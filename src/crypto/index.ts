/** The RLWE core of helora: parameter sets, sampling, keys, encryption, decryption, noise. */
export { RLWE_N2048_Q44, paramsById, maxInnerDim, logDelta, uploadBytes, MASK_BYTES, type RlweParams } from './params.js';
export { randomSeed, expandMask, sampleTernary, sampleGaussian, gaussianMagnitudeCdt, gaussianTablePmf, MaskStream, SEED_BYTES } from './sampling.js';
export { SecretKey } from './keys.js';
export { encryptBlock, encryptFresh, decryptBlock } from './rlwe.js';
export { resultNoiseStd, resultErrorBound, resultErrorBoundFailure } from './noise.js';
export { serverProductReference } from './server-reference.js';
