// The RLWE client's kernel (AssemblyScript -> WebAssembly SIMD), built into
// build/wasm/client-crypto.wasm; its TypeScript side is src/kernels/client-crypto.ts.
//
// Ring Z[X]/(X^N + 1). Encryption and decryption need products a*s of a (< 2^44, or < 2^32) with
// a ternary secret s. They run by double-precision FFT (two transforms per 32-bit operand, exact
// after rounding); the two-prime NTT is the exact reference the tests compare them with, bit for bit.
// One file per job in client-crypto/; this file only lists the exports.
export { heapBase, setup, setupFft } from './client-crypto/setup';
export { fftForwardPoly, fftProductRaw } from './client-crypto/fft';
export { encryptPolys } from './client-crypto/encrypt';
export { decryptRowsFft, decryptRows } from './client-crypto/decrypt';
export { transposeI32 } from './client-crypto/transpose';
export { featureMajorI8, featureMajorI16 } from './client-crypto/feature-major';
export { nttForward, nttInverse, productExact44, productExact32 } from './client-crypto/ntt';
