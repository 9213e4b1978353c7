/** Public surface of the compute kernels. */
export { gemmInt8, gemmInt8Reference } from './gemm-int8.js';
export { gemmF32, gemmF32Reference } from './gemm-f32.js';
export {
  matmulForward, matmulBackwardInput, matmulBackwardWeight,
  matmulForwardReference, matmulBackwardInputReference, matmulBackwardWeightReference,
} from './matmul-f32.js';
export {
  ZqWeights, zqMatmul, zqMatmulReference,
  ZQ_LOG_Q, ZQ_B_SHIFT, ZQ_DROP_BITS, ZQ_A_BYTES, ZQ_B_BYTES, ZQ_MAX_ABS_W,
} from './zq-matmul.js';
export { KernelPool } from './pool.js';
export { loadWasmModule, instantiateWasm, wasmPath, WasmHeap } from './wasm.js';
export { kernelBackend, nativeKernels, loadNativeKernels, NativeKernels } from './native.js';
