export { HeLinearClient, stackBackwardInput, accumulateBlock, type PendingProduct, type HeClientOptions, type IntegerResult } from './client.js';
export { HeLinearServer, localBackend, poolBackend, type ZqBackend, type HeServerOptions } from './server.js';
export { QuantizedGroup } from './plain.js';
export { featureChunks, blockCount, rowSqNorms, stackedColSqNorms, type FeatureChunk } from './layout.js';
export type { EncryptedInput, EncryptedOutput, CipherMatrix, Int8Matrix, ProductDirection } from './types.js';
