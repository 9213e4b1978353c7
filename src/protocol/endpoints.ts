// The server's HTTP endpoints (both sides of the protocol name them from here).

/** WebSocket upgrade for the binary wire messages (wire.ts). */
export const WS_PATH = '/v1/ws';
/** GET: public model information, JSON (src/transport/model-info.ts). */
export const MODEL_INFO_PATH = '/v1/model-info';
/** GET: liveness and the served model's hash. */
export const HEALTH_PATH = '/health';
/** GET <MASK_TABLE_PATH>/<layer>: one layer's public mask table (binary; `Range: bytes=N-` resumes). */
export const MASK_TABLE_PATH = '/v1/mask-table';
