// The network server: WebSocket (binary frames carrying src/protocol/wire.ts messages) on an HTTP
// or HTTPS server.
//
//   GET /health          JSON { ok, model_hash, params_id, uptime_s, connections, requests, queued }
//   GET /v1/model-info   JSON model info (model-info.ts), bearer token required when one is set
//   GET /v1/ws           WebSocket upgrade, bearer token required when one is set
//
// Every frame from a client is untrusted: it is size-limited by the WebSocket layer (maxPayload,
// derived from the largest legal request) and validated by the wire decoder; content errors are
// answered with an ERROR message and the connection keeps working. Text frames are a protocol
// violation (close 1003), as is a long run of undecodable frames (close 1008). Requests of all
// connections go through one FIFO queue onto the kernel pool (each product already uses every core).
// Logs: one JSON object per event, never any payload bytes.
//
// The pieces: Admission (bearer token, connection limit, per-connection rate), RequestQueue,
// dispatch (a request's product on the ModelServer, encoded as the answer), Connection (decode,
// admit, dispatch, answer one client's frames) and Endpoints (the HTTP paths and the upgrade).

import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import { uploadBytes } from '../crypto/index.js';
import type { EncryptedInput } from '../linear/types.js';
import { PROJECTION_GROUPS, type ProjectionGroup } from '../model/projections.js';
import { HEALTH_PATH, MODEL_INFO_PATH, WS_PATH } from '../protocol/endpoints.js';
import {
  decodeMessage, encodeEncryptedOutput, encodeError, encryptedInputBytes, MessageType, NO_PARAMS_ID, Op, peekHeader,
  ServerErrorCode, serverCodeFor, WireError, type EncryptedInputMessage,
} from '../protocol/wire.js';
import { modelInfoToJson } from './model-info.js';
import { BadRequestError, type ModelServer } from './model-server.js';

/** Slack above the largest legal request for the WebSocket frame limit. */
const MAX_PAYLOAD_MARGIN = 64 * 1024;
/** Undecodable frames in a row after which a connection is closed as a protocol violation. */
const MAX_CONSECUTIVE_MALFORMED = 32;

export type LogEvent = Record<string, string | number | boolean | null>;
export type Logger = (event: LogEvent) => void;

/** Default logger: one JSON line per event on stdout. */
export const jsonLineLogger: Logger = (e) => {
  process.stdout.write(JSON.stringify({ time: new Date().toISOString(), ...e }) + '\n');
};

export interface RateLimit {
  /** Sustained requests per second per connection. */
  perSecond: number;
  /** Requests a connection may send at once. */
  burst: number;
}

export interface ServerOptions {
  model: ModelServer;
  /** Default 127.0.0.1 (use 0.0.0.0 to listen on every interface). */
  host?: string;
  /** Default 0: a free port. */
  port?: number;
  /** Bearer token clients must present (constant-time compared); none: open server. */
  token?: string;
  /** PEM certificate chain and key: serve https/wss. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Simultaneous WebSocket connections (default 16); more are refused with HTTP 503. */
  maxConnections?: number;
  /** Default 20 requests/s, burst 40. */
  rateLimit?: RateLimit;
  /** Requests waiting for the kernels (all connections); more are answered with Busy (default 256). */
  maxQueue?: number;
  log?: Logger;
}

export interface RunningServer {
  /** ws://host:port or wss://host:port (the client appends the paths). */
  url: string;
  port: number;
  /** Largest WebSocket frame accepted. */
  maxPayload: number;
  close(): Promise<void>;
}

/** Largest legal ENCRYPTED_INPUT for this model: the widest stacked input at maxTokens. */
export function maxRequestBytes(model: ModelServer): number {
  let most = 0;
  for (const g of PROJECTION_GROUPS) {
    for (const dir of ['forward', 'backward'] as const) {
      most = Math.max(most, encryptedInputBytes(model.params.id, model.inputCols(dir, g), model.maxTokens));
    }
  }
  return most;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** Constant-time bearer check (hashing first makes the compared lengths equal). */
function bearerMatches(req: IncomingMessage, tokenDigest: Buffer | null): boolean {
  if (!tokenDigest) return true;
  const h = req.headers.authorization;
  if (typeof h !== 'string' || !/^bearer /i.test(h)) return false;
  return timingSafeEqual(digest(h.slice(7)), tokenDigest);
}

class TokenBucket {
  private tokens: number;
  private last = performance.now();
  constructor(private readonly limit: RateLimit) {
    this.tokens = limit.burst;
  }
  take(): boolean {
    const now = performance.now();
    this.tokens = Math.min(this.limit.burst, this.tokens + ((now - this.last) / 1000) * this.limit.perSecond);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/**
 * Who gets in and how often: the bearer token (HTTP model info and WebSocket upgrade), the limit on
 * simultaneous connections, and each connection's request rate. Refusals are logged here.
 */
class Admission {
  readonly rate: RateLimit;
  private readonly maxConnections: number;
  private readonly tokenDigest: Buffer | null;

  constructor(opts: ServerOptions, private readonly log: Logger) {
    const rate = opts.rateLimit ?? { perSecond: 20, burst: 40 };
    const maxConnections = opts.maxConnections ?? 16;
    if (!(rate.perSecond > 0 && rate.burst >= 1)) throw new Error(`helora: rate limit must be positive, got ${rate.perSecond}/s burst ${rate.burst}`);
    if (!Number.isInteger(maxConnections) || maxConnections < 1) throw new Error(`helora: maxConnections must be a positive integer, got ${maxConnections}`);
    if (opts.token !== undefined && opts.token.length === 0) throw new Error('helora: the bearer token must not be empty');
    this.rate = rate;
    this.maxConnections = maxConnections;
    this.tokenDigest = opts.token !== undefined ? digest(opts.token) : null;
  }

  get authRequired(): boolean {
    return this.tokenDigest !== null;
  }

  /** The bearer check of a request for `path`; a refusal is logged. */
  checkBearer(req: IncomingMessage, path: string): boolean {
    if (bearerMatches(req, this.tokenDigest)) return true;
    this.log({ event: 'auth_refused', path, remote: req.socket.remoteAddress ?? null });
    return false;
  }

  /** Why a WebSocket upgrade is refused, or null when it is let in. */
  upgradeRefusal(req: IncomingMessage, path: string, connections: number): UpgradeRefusal | null {
    if (path !== WS_PATH) return { status: 404, reason: `helora: no WebSocket endpoint at ${path} (use ${WS_PATH})` };
    if (!this.checkBearer(req, path)) return { status: 401, reason: 'helora: missing or wrong bearer token', headers: 'www-authenticate: Bearer\r\n' };
    if (connections >= this.maxConnections) {
      this.log({ event: 'connection_refused', reason: 'max_connections', limit: this.maxConnections, remote: req.socket.remoteAddress ?? null });
      return { status: 503, reason: `helora: the server is at its limit of ${this.maxConnections} connections` };
    }
    return null;
  }

  /** The request budget of a new connection. */
  rateLimiter(): TokenBucket {
    return new TokenBucket(this.rate);
  }
}

interface UpgradeRefusal {
  status: 401 | 404 | 503;
  reason: string;
  /** Extra header lines, each ending in CRLF. */
  headers?: string;
}

/** Answers a refused WebSocket upgrade with a plain HTTP response and closes the socket. */
function refuseUpgrade(socket: Duplex, { status, reason, headers = '' }: UpgradeRefusal): void {
  const body = JSON.stringify({ error: reason });
  socket.end(`HTTP/1.1 ${status} ${status === 401 ? 'Unauthorized' : status === 503 ? 'Service Unavailable' : 'Not Found'}\r\n`
    + `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n${headers}\r\n${body}`);
}

/**
 * The one FIFO of every connection's requests onto the kernel pool, run one at a time (each
 * product already uses every core). Bounded: a full queue is answered with Busy.
 */
class RequestQueue {
  waiting = 0;
  /** Requests computed (failed ones not counted). */
  served = 0;
  private tail: Promise<void> = Promise.resolve();

  constructor(private readonly maxQueue: number) {}

  get full(): boolean {
    return this.waiting >= this.maxQueue;
  }

  run<T>(job: () => Promise<T>): Promise<T> {
    this.waiting++;
    const p = this.tail.then(() => {
      this.waiting--;
      return job();
    });
    this.tail = p.then(() => { this.served++; }, () => undefined);
    return p;
  }
}

function toEncryptedInput(m: EncryptedInputMessage, upBytes: number, N: number): EncryptedInput {
  // The parts of a block are adjacent in the message, so one view spans them all.
  const K = m.cols.reduce((s, c) => s + c, 0);
  const blocks = m.blocks.map((parts) => {
    const first = parts[0];
    return new Uint8Array(first.buffer, first.byteOffset, K * N * upBytes);
  });
  return { paramsId: m.paramsId, T: m.tokens, partCols: m.cols, seed: m.seed, blocks };
}

function rawToBytes(data: RawData): Uint8Array {
  if (Array.isArray(data)) return Buffer.concat(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return data;
}

/** A decoded request with the header fields its answer (or error) echoes. */
interface Request {
  msg: EncryptedInputMessage;
  op: 'forward' | 'backward';
  group: ProjectionGroup;
  requestId: bigint;
  paramsId: number;
  /** What the request log records about it (no payload). */
  fields: LogEvent;
}

/** The model server's product for one request, encoded as the answer, run through the queue. */
function dispatch(model: ModelServer, queue: RequestQueue, { msg, op, group, requestId }: Request): Promise<{ bytesOut: Uint8Array; queueMs: number; computeMs: number }> {
  const t0 = performance.now();
  return queue.run(async () => {
    const t1 = performance.now();
    const input = toEncryptedInput(msg, uploadBytes(model.params), model.params.ringDegree);
    // Encoded straight from the kernels' shared result memory (no intermediate copy).
    const bytesOut = await model.productInPlace(op, msg.layer, group, input, (out) => encodeEncryptedOutput({
      paramsId: out.paramsId, requestId, op: msg.op, layer: msg.layer, group: msg.group,
      rows: out.outputRows, tokens: out.T, terms: out.terms, blocks: out.blocks,
    }));
    return { bytesOut, queueMs: t1 - t0, computeMs: performance.now() - t1 };
  });
}

/**
 * One WebSocket client: each binary frame is decoded, admitted (rate limit, queue bound),
 * dispatched, and answered with the result or an ERROR message; the connection keeps working
 * after content errors.
 */
class Connection {
  /** Requests admitted on this connection. */
  requests = 0;
  private malformedRun = 0;
  private readonly bucket: TokenBucket;

  constructor(readonly id: number, private readonly ws: WebSocket, private readonly endpoints: Endpoints) {
    this.bucket = endpoints.admission.rateLimiter();
  }

  receive(bytes: Uint8Array, isBinary: boolean): void {
    if (!isBinary) {
      this.endpoints.log({ event: 'protocol_violation', conn: this.id, reason: 'text frame', bytes: bytes.length });
      this.ws.close(1003, 'helora: binary frames only');
      return;
    }
    const request = this.decode(bytes);
    if (request && this.admit(request)) this.compute(request);
  }

  /** The request in a frame; a frame that is not one is answered with an error (null). */
  private decode(bytes: Uint8Array): Request | null {
    let requestId = 0n;
    let paramsId = NO_PARAMS_ID;
    try {
      try {
        const h = peekHeader(bytes);
        requestId = h.requestId;
        paramsId = h.paramsId;
      } catch { /* answered below with the decoder's own error */ }
      const d = decodeMessage(bytes, this.endpoints.decodeLimits);
      if (d.type !== MessageType.EncryptedInput) {
        throw new WireError('bad_type', `a client may only send ENCRYPTED_INPUT (type 1), got type ${d.type}`);
      }
      this.malformedRun = 0;
      const msg = d.message;
      const op = msg.op === Op.Forward ? 'forward' : 'backward';
      const group = msg.group;
      return { msg, op, group, requestId, paramsId, fields: { op, layer: msg.layer, group, tokens: msg.tokens, bytes_in: bytes.length } };
    } catch (e) {
      const we = e instanceof WireError ? e : new WireError('bad_field', String(e));
      this.answerError(requestId, we.code === 'unknown_params' ? NO_PARAMS_ID : paramsId, serverCodeFor(we), we.message, { wire: we.code, bytes: bytes.length });
      if (++this.malformedRun >= MAX_CONSECUTIVE_MALFORMED) {
        this.endpoints.log({ event: 'protocol_violation', conn: this.id, reason: 'too many malformed messages' });
        this.ws.close(1008, 'helora: too many malformed messages');
      }
      return null;
    }
  }

  /** Whether the request may go to the queue: within this connection's rate, and the queue not full. */
  private admit({ requestId, paramsId, fields }: Request): boolean {
    const { rate } = this.endpoints.admission;
    if (!this.bucket.take()) {
      this.answerError(requestId, paramsId, ServerErrorCode.RateLimited,
        `helora: rate limit exceeded (${rate.perSecond} requests/s, burst ${rate.burst} per connection); retry later`, fields);
      return false;
    }
    const { queue } = this.endpoints;
    if (queue.full) {
      this.answerError(requestId, paramsId, ServerErrorCode.Busy, `helora: the server has ${queue.waiting} requests queued; retry later`, fields);
      return false;
    }
    return true;
  }

  private compute(request: Request): void {
    const { requestId, paramsId, fields } = request;
    this.requests++;
    dispatch(this.endpoints.model, this.endpoints.queue, request).then(({ bytesOut, queueMs, computeMs }) => {
      this.send(bytesOut);
      this.endpoints.log({ event: 'request', conn: this.id, request_id: requestId.toString(), ...fields, bytes_out: bytesOut.length, queue_ms: Math.round(queueMs), ms: Math.round(computeMs) });
    }, (e: unknown) => {
      const bad = e instanceof BadRequestError;
      const message = e instanceof Error ? e.message : String(e);
      this.answerError(requestId, paramsId, bad ? ServerErrorCode.BadRequest : ServerErrorCode.Internal,
        bad ? message : `helora: internal error while computing the product (${message})`, fields);
    });
  }

  private answerError(requestId: bigint, paramsId: number, code: number, message: string, extra: LogEvent = {}): void {
    this.endpoints.log({ event: 'request_error', conn: this.id, request_id: requestId.toString(), code, error: message, ...extra });
    this.send(encodeError({ paramsId, requestId, code, message }));
  }

  private send(bytes: Uint8Array): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(bytes, { binary: true });
  }
}

/**
 * The HTTP paths and the WebSocket endpoint, with what they share: the model server, the
 * admission rules, the request queue and the open connections.
 */
class Endpoints {
  readonly queue: RequestQueue;
  readonly decodeLimits: { maxBytes: number; maxTokens: number; maxCols: number };
  /** Largest WebSocket frame accepted. */
  readonly maxPayload: number;
  private readonly sockets = new Set<WebSocket>();
  private readonly wss: WebSocketServer;
  private readonly infoJson: string;
  private readonly started = Date.now();
  private nextConn = 1;

  constructor(readonly model: ModelServer, readonly admission: Admission, maxQueue: number, readonly log: Logger) {
    const maxBytes = maxRequestBytes(model);
    this.maxPayload = maxBytes + MAX_PAYLOAD_MARGIN;
    this.decodeLimits = { maxBytes, maxTokens: model.maxTokens, maxCols: 1 << 20 };
    this.infoJson = modelInfoToJson(model.info);
    this.queue = new RequestQueue(maxQueue);
    this.wss = new WebSocketServer({ noServer: true, maxPayload: this.maxPayload, perMessageDeflate: false });
  }

  readonly handleHttp = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '').split('?')[0];
    const send = (status: number, body: string, extra: Record<string, string> = {}): void => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...extra });
      res.end(body);
    };
    if (req.method !== 'GET') return send(405, JSON.stringify({ error: 'helora: only GET is served' }), { allow: 'GET' });
    if (path === HEALTH_PATH) {
      const { model, queue } = this;
      return send(200, JSON.stringify({
        ok: true, model_hash: model.hash, params_id: model.params.id, uptime_s: Math.round((Date.now() - this.started) / 1000),
        connections: this.sockets.size, requests: queue.served, queued: queue.waiting,
      }));
    }
    if (path === MODEL_INFO_PATH) {
      if (!this.admission.checkBearer(req, path)) return send(401, JSON.stringify({ error: 'helora: missing or wrong bearer token' }), { 'www-authenticate': 'Bearer' });
      return send(200, this.infoJson);
    }
    send(404, JSON.stringify({ error: `helora: no such path ${path}` }));
  };

  readonly handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => socket.destroy());
    const path = (req.url ?? '').split('?')[0];
    const refusal = this.admission.upgradeRefusal(req, path, this.sockets.size);
    if (refusal) return refuseUpgrade(socket, refusal);
    const remote = req.socket.remoteAddress ?? null;
    this.wss.handleUpgrade(req, socket, head, (ws) => this.open(ws, remote));
  };

  private open(ws: WebSocket, remote: string | null): void {
    const conn = new Connection(this.nextConn++, ws, this);
    this.sockets.add(ws);
    this.log({ event: 'connection_open', conn: conn.id, remote, connections: this.sockets.size });
    ws.on('message', (data: RawData, isBinary: boolean) => conn.receive(rawToBytes(data), isBinary));
    ws.on('error', (e) => this.log({ event: 'connection_error', conn: conn.id, error: e.message }));
    ws.on('close', (code) => {
      this.sockets.delete(ws);
      this.log({ event: 'connection_close', conn: conn.id, code, requests: conn.requests, connections: this.sockets.size });
    });
  }

  /** Drops every connection and stops accepting new ones. */
  closeConnections(): void {
    for (const ws of this.sockets) ws.terminate();
    this.wss.close();
  }
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const model = opts.model;
  const log = opts.log ?? jsonLineLogger;
  const host = opts.host ?? '127.0.0.1';
  const admission = new Admission(opts, log);
  const endpoints = new Endpoints(model, admission, opts.maxQueue ?? 256, log);

  const server: Server = opts.tls
    ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, endpoints.handleHttp)
    : createHttpServer(endpoints.handleHttp);
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    else socket.destroy();
  });
  server.on('upgrade', endpoints.handleUpgrade);

  await listen(server, opts.port ?? 0, host);
  server.on('error', (e) => log({ event: 'server_error', error: e.message }));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : (opts.port ?? 0);
  const urlHost = host.includes(':') ? `[${host}]` : host;
  const url = `${opts.tls ? 'wss' : 'ws'}://${urlHost}:${port}`;
  log({ event: 'listening', url, model_hash: model.hash, max_payload: endpoints.maxPayload, max_tokens: model.maxTokens, auth: admission.authRequired, tls: !!opts.tls });

  let closing: Promise<void> | null = null;
  return {
    url,
    port,
    maxPayload: endpoints.maxPayload,
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        endpoints.closeConnections();
        server.close(() => resolve());
        server.closeAllConnections();
        log({ event: 'closed' });
      });
      return closing;
    },
  };
}
