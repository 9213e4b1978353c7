/** Network server and client of helora (WebSocket + HTTP, wire messages from src/protocol). */
export { startServer, maxRequestBytes, jsonLineLogger, type ServerOptions, type RunningServer, type RateLimit, type Logger, type LogEvent } from './server.js';
export { RemoteSession, RemoteEncryptedProvider, RemoteError, maxAnswerBytes, type RemoteSessionOptions, type RemoteProviderOptions, type RemoteStats, type CaptureHook } from './client.js';
export {
  ModelServer, BadRequestError, loadQuantizedModel, quantizeModel, quantizeLayer, modelHash, modelHashOfFolder, MODEL_HASH_DOMAIN, DEFAULT_MAX_TOKENS,
  type QuantizedModel, type ModelServerOptions,
} from './model-server.js';
export { parseModelInfo, modelInfoToJson, checkShapeMatches, shapeOf, MAX_MODEL_INFO_BYTES, type ModelInfo, type ModelShape } from './model-info.js';
