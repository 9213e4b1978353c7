// The network server: WebSocket (binary frames carrying src/protocol/wire.ts messages) on an HTTP
// or HTTPS server.
//
//   GET /health          JSON { ok, model_hash }; with the bearer token (when one is set) also
//                        { params_id, uptime_s, connections, requests, queued, queued_bytes }
//   GET /v1/model-info   JSON model info (model-info.ts), bearer token required when one is set
//   GET /v1/ws           WebSocket upgrade, bearer token required when one is set
//
// Every frame from a client is untrusted: it is size-limited by the WebSocket layer (maxPayload,
// derived from the largest legal request), charged to the connection's rate limit before anything
// else is done with it, and validated by the wire decoder; content errors are answered with an
// ERROR message and the connection keeps working. Text frames are a protocol violation (close
// 1003), as is a long run of undecodable frames (close 1008). Requests of all connections go
// through one FIFO queue onto the kernel pool (each product already uses every core).
// Logs: one JSON object per event, never any payload bytes.
//
// What bounds the memory and the time one client can take (ServerLimits, defaults in
// DEFAULT_SERVER_LIMITS): requests in flight per connection (admitted and not yet answered, the
// answer counted until it has left for the socket), request bytes queued per connection and in all,
// connections in all and per remote address (counted before the WebSocket upgrade, released when the
// socket closes), answers that do not leave for the socket within sendTimeoutMs or error answers
// piling up unread (a client that never reads is dropped), a ping every pingIntervalMs (no pong by
// the next one: dropped), idleTimeoutMs without a frame (closed), frameTimeoutMs for a frame to
// arrive whole once its first byte came (slow senders dropped). A closed connection's queued
// requests are cancelled, not computed.
//
// The pieces: Admission (bearer token, connection slots, per-connection rate), RequestQueue,
// dispatch (a request's product on the ModelServer, encoded as the answer), Connection (charge,
// decode, admit, dispatch, answer one client's frames; its timers) and Endpoints (the HTTP paths and
// the upgrade).

import { createReadStream, statSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import { uploadBytes } from '../crypto/index.js';
import type { EncryptedInput } from '../linear/types.js';
import { PROJECTION_GROUPS, type ProjectionGroup } from '../model/projections.js';
import { HEALTH_PATH, MASK_TABLE_PATH, MODEL_INFO_PATH, WS_PATH } from '../protocol/endpoints.js';
import {
  decodeMessage, encodeEncryptedOutput, encodeError, encryptedInputBytes, MessageType, NO_PARAMS_ID, Op, peekHeader,
  ServerErrorCode, serverCodeFor, WIRE_VERSION, WireError, type EncryptedInputMessage,
} from '../protocol/wire.js';
import { modelInfoToJson } from './model-info.js';
import { BadRequestError, type ModelServer } from './model-server.js';
import { checkTokenStrength, tokenFingerprint } from './token.js';
import { AUDIT_FORMAT, exchangeFields, frameSha256 } from './audit.js';
import type { AuditFields, AuditLog } from '../util/audit-log.js';

/** Slack above the largest legal request for the WebSocket frame limit. */
const MAX_PAYLOAD_MARGIN = 64 * 1024;
/** Undecodable frames in a row after which a connection is closed as a protocol violation. */
const MAX_CONSECUTIVE_MALFORMED = 32;
/** ERROR answers (bytes) that may wait unread in a connection's send buffer before it is dropped. */
const MAX_UNREAD_ERROR_BYTES = 1 << 20;
/** The message every internal failure is answered with (the details go to the server's log only). */
const INTERNAL_ERROR_MESSAGE = 'helora: internal error while computing the product';

export type LogEvent = Record<string, string | number | boolean | null>;
export type Logger = (event: LogEvent) => void;

/** Default logger: one JSON line per event on stdout. */
export const jsonLineLogger: Logger = (e) => {
  process.stdout.write(JSON.stringify({ time: new Date().toISOString(), ...e }) + '\n');
};

export interface RateLimit {
  /** Sustained frames per second per connection (every frame is charged, malformed ones too). */
  perSecond: number;
  /** Frames a connection may send at once. */
  burst: number;
}

/** What bounds one client's share of the server (see the header comment). */
export interface ServerLimits {
  /** Simultaneous WebSocket connections; more are refused with HTTP 503. */
  maxConnections: number;
  /** Simultaneous WebSocket connections from one remote address; more are refused with HTTP 503. */
  maxConnectionsPerAddress: number;
  /** Requests of one connection admitted and not yet answered; more are answered Busy. */
  maxInFlightPerConnection: number;
  /** Requests waiting for the kernels (all connections); more are answered Busy. */
  maxQueue: number;
  /** Bytes of requests admitted and not yet computed, all connections (null: 1 GiB, at least one largest request). */
  maxQueuedBytes: number | null;
  /** Bytes of requests admitted and not yet computed, one connection (null: two largest requests, at most maxQueuedBytes). */
  maxQueuedBytesPerConnection: number | null;
  /** An answer that has not left for the socket this long after it was sent drops the connection. */
  sendTimeoutMs: number;
  /** A ping this often; a connection that has not answered the previous one is dropped. */
  pingIntervalMs: number;
  /** A connection that sends no frame this long is closed. */
  idleTimeoutMs: number;
  /** A frame must arrive whole this long after its first byte, or the connection is dropped. */
  frameTimeoutMs: number;
}

export const DEFAULT_SERVER_LIMITS: ServerLimits = {
  maxConnections: 64,
  maxConnectionsPerAddress: 8,
  maxInFlightPerConnection: 2,
  maxQueue: 64,
  maxQueuedBytes: null,
  maxQueuedBytesPerConnection: null,
  sendTimeoutMs: 60_000,
  pingIntervalMs: 30_000,
  idleTimeoutMs: 600_000,
  frameTimeoutMs: 120_000,
};

/** Default rate: 20 frames/s, burst 40 (at most the default queue). */
export const DEFAULT_RATE_LIMIT: RateLimit = { perSecond: 20, burst: 40 };

export interface ServerOptions extends Partial<ServerLimits> {
  model: ModelServer;
  /** Default 127.0.0.1 (use 0.0.0.0 to listen on every interface: needs tls and token, or insecure). */
  host?: string;
  /** Default 0: a free port. */
  port?: number;
  /** Bearer token clients must present (constant-time compared; at least 128 bits, token.ts); none: open server. */
  token?: string;
  /** PEM certificate chain and key: serve https/wss. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Listen on a non-loopback address without TLS or without a token (refused otherwise). */
  insecure?: boolean;
  /** Default DEFAULT_RATE_LIMIT. */
  rateLimit?: RateLimit;
  log?: Logger;
  /**
   * The audit log (transport/audit.ts): server start and stop, connections, and one record per
   * answered request with the SHA-256 of its request and answer frames; never a payload or the token.
   * The caller opens and closes it.
   */
  audit?: AuditLog;
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

/** Whether a listen address only accepts connections from this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h);
  return mapped !== null && mapped[1].startsWith('127.');
}

/**
 * Refuses a non-loopback listen address unless the server has both TLS and a bearer token (without
 * TLS the token and the traffic travel in the clear; without a token anyone can use the server), or
 * the user said --insecure.
 */
export function checkListenSecurity(host: string, tls: boolean, token: boolean, insecure: boolean): void {
  if (isLoopbackHost(host) || insecure || (tls && token)) return;
  throw new Error(`helora: refusing to listen on ${host} (not a loopback address) without ${!tls ? 'TLS' : 'a bearer token'}: `
    + (tls ? 'anyone who can reach it could use the server' : 'the token and the traffic would cross the network in the clear')
    + '; give --tls-cert/--tls-key and a token (--token-file or HELORA_TOKEN), or --insecure');
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

function positiveInteger(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 1) throw new Error(`helora: ${name} must be a positive integer, got ${v}`);
  return v;
}

/**
 * Who gets in and how often: the bearer token (HTTP model info, health details and WebSocket
 * upgrade), the connection slots (in all and per address, taken before the upgrade) and each
 * connection's frame rate. Refusals are logged here.
 */
class Admission {
  readonly rate: RateLimit;
  private readonly tokenDigest: Buffer | null;
  private connections = 0;
  private readonly perAddress = new Map<string, number>();

  constructor(opts: ServerOptions, readonly limits: ServerLimits, private readonly log: Logger) {
    const rate = opts.rateLimit ?? DEFAULT_RATE_LIMIT;
    if (!(rate.perSecond > 0 && rate.burst >= 1)) throw new Error(`helora: rate limit must be positive, got ${rate.perSecond}/s burst ${rate.burst}`);
    positiveInteger('maxConnections', limits.maxConnections);
    positiveInteger('maxConnectionsPerAddress', limits.maxConnectionsPerAddress);
    if (opts.token !== undefined) checkTokenStrength(opts.token);
    this.rate = rate;
    this.tokenDigest = opts.token !== undefined ? digest(opts.token) : null;
  }

  get authRequired(): boolean {
    return this.tokenDigest !== null;
  }

  get connectionCount(): number {
    return this.connections;
  }

  /** Whether the request carries the bearer token (always true on an open server). */
  hasBearer(req: IncomingMessage): boolean {
    return bearerMatches(req, this.tokenDigest);
  }

  /** The bearer check of a request for `path`; a refusal is logged. */
  checkBearer(req: IncomingMessage, path: string): boolean {
    if (bearerMatches(req, this.tokenDigest)) return true;
    this.log({ event: 'auth_refused', path, remote: req.socket.remoteAddress ?? null });
    return false;
  }

  /**
   * Why a WebSocket upgrade is refused, or null when it is let in: then a connection slot (in all
   * and for the remote address) is taken at once, and given back when `socket` closes, so that
   * upgrades in progress count and a failed upgrade frees its slot.
   */
  admitUpgrade(req: IncomingMessage, path: string, socket: Duplex): UpgradeRefusal | null {
    if (path !== WS_PATH) return { status: 404, reason: `helora: no WebSocket endpoint at ${path} (use ${WS_PATH})` };
    if (!this.checkBearer(req, path)) return { status: 401, reason: 'helora: missing or wrong bearer token', headers: 'www-authenticate: Bearer\r\n' };
    const remote = req.socket.remoteAddress ?? 'unknown';
    const { maxConnections, maxConnectionsPerAddress } = this.limits;
    if (this.connections >= maxConnections) {
      this.log({ event: 'connection_refused', reason: 'max_connections', limit: maxConnections, remote });
      return { status: 503, reason: `helora: the server is at its limit of ${maxConnections} connections` };
    }
    const fromAddress = this.perAddress.get(remote) ?? 0;
    if (fromAddress >= maxConnectionsPerAddress) {
      this.log({ event: 'connection_refused', reason: 'max_connections_per_address', limit: maxConnectionsPerAddress, remote });
      return { status: 503, reason: `helora: the server is at its limit of ${maxConnectionsPerAddress} connections per address` };
    }
    this.connections++;
    this.perAddress.set(remote, fromAddress + 1);
    socket.once('close', () => {
      this.connections--;
      const left = (this.perAddress.get(remote) ?? 1) - 1;
      if (left <= 0) this.perAddress.delete(remote); else this.perAddress.set(remote, left);
    });
    return null;
  }

  /** The frame budget of a new connection. */
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

/** Thrown into a queued job whose connection closed before its turn. */
class CancelledError extends Error {}

/**
 * The one FIFO of every connection's requests onto the kernel pool, run one at a time (each
 * product already uses every core). Bounded in requests and in bytes; a job whose connection has
 * closed by its turn is cancelled (never computed).
 */
class RequestQueue {
  waiting = 0;
  /** Bytes of the requests admitted and not yet computed. */
  bytes = 0;
  /** Requests computed (failed and cancelled ones not counted). */
  served = 0;
  cancelled = 0;
  private tail: Promise<void> = Promise.resolve();

  constructor(readonly maxQueue: number, readonly maxBytes: number) {}

  /** Whether one more request of `bytes` fits. */
  fits(bytes: number): boolean {
    return this.waiting < this.maxQueue && this.bytes + bytes <= this.maxBytes;
  }

  run<T>(bytes: number, isCancelled: () => boolean, job: () => Promise<T>): Promise<T> {
    this.waiting++;
    this.bytes += bytes;
    const p = this.tail.then(() => {
      this.waiting--;
      if (isCancelled()) {
        this.cancelled++;
        throw new CancelledError('helora: the connection closed before its request was computed');
      }
      return job();
    }).finally(() => {
      this.bytes -= bytes;
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
  return { masks: m.masks, paramsId: m.paramsId, T: m.tokens, partCols: m.cols, seed: m.seed, blocks };
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
  /** Size of the frame (what the request holds in memory while it waits). */
  bytes: number;
  /** What the request log records about it (no payload). */
  fields: LogEvent;
  /** The frame itself (its message's blocks are views into it). */
  frame: Uint8Array;
  /** SHA-256 of the frame, taken once the request is admitted (only when there is an audit log). */
  upSha256: string | null;
}

/** The model server's product for one request, encoded as the answer, run through the queue. */
function dispatch(model: ModelServer, queue: RequestQueue, isCancelled: () => boolean, { msg, op, group, requestId, bytes }: Request): Promise<{ bytesOut: Uint8Array; queueMs: number; computeMs: number }> {
  const t0 = performance.now();
  return queue.run(bytes, isCancelled, async () => {
    const t1 = performance.now();
    const input = toEncryptedInput(msg, uploadBytes(model.params), model.params.ringDegree);
    // Encoded straight from the kernels' shared result memory (no intermediate copy).
    const bytesOut = await model.productInPlace(op, msg.layer, group, input, (out) => encodeEncryptedOutput({
      masks: out.masks, paramsId: out.paramsId, requestId, op: msg.op, layer: msg.layer, group: msg.group,
      rows: out.outputRows, tokens: out.T, terms: out.terms, blocks: out.blocks,
    }));
    return { bytesOut, queueMs: t1 - t0, computeMs: performance.now() - t1 };
  });
}

/**
 * One WebSocket client: each binary frame is charged to the rate limit, decoded, admitted
 * (in-flight and byte caps, queue bound), dispatched, and answered with the result or an ERROR
 * message; the connection keeps working after content errors. Its timers (ping, idle, frame
 * arrival, unflushed answers) drop a client that stops taking part.
 */
class Connection {
  /** Requests admitted on this connection. */
  requests = 0;
  closed = false;
  private malformedRun = 0;
  private rateLimited = 0;
  /** Requests admitted and not yet answered (an answer counts until it has left for the socket). */
  private inFlight = 0;
  /** Bytes of this connection's requests admitted and not yet computed. */
  private queuedBytes = 0;
  /** Answer bytes handed to the WebSocket whose write has not completed. */
  private unflushedAnswerBytes = 0;
  /** Send times of the answers not yet flushed, oldest first. */
  private readonly unflushedSince: number[] = [];
  private lastFrameAt = performance.now();
  private awaitingPong = false;
  private frameTimer: NodeJS.Timeout | null = null;
  private readonly ticker: NodeJS.Timeout;
  private readonly bucket: TokenBucket;

  constructor(readonly id: number, private readonly ws: WebSocket, socket: Duplex, private readonly endpoints: Endpoints) {
    this.bucket = endpoints.admission.rateLimiter();
    const { limits } = endpoints.admission;
    // The frame-arrival clock: started by the first byte after a complete frame (this listener
    // runs before the WebSocket parser's), stopped by the frame it completes.
    socket.prependListener('data', () => {
      this.frameTimer ??= setTimeout(() => this.drop('frame_timeout', `a frame did not arrive whole within ${limits.frameTimeoutMs} ms`), limits.frameTimeoutMs);
    });
    const frameDone = (): void => {
      if (this.frameTimer) clearTimeout(this.frameTimer);
      this.frameTimer = null;
      this.lastFrameAt = performance.now();
    };
    ws.on('message', frameDone);
    ws.on('ping', frameDone);
    ws.on('pong', () => { frameDone(); this.awaitingPong = false; });
    // One clock for the other timers; each check runs after pending input is read (setImmediate),
    // so a server thread that was busy for a while does not mistake unread pongs for silence.
    const tick = Math.max(10, Math.min(1000, limits.pingIntervalMs, limits.sendTimeoutMs, limits.idleTimeoutMs));
    let lastPing = performance.now();
    this.ticker = setInterval(() => setImmediate(() => {
      if (this.closed) return;
      const now = performance.now();
      if (this.unflushedSince.length > 0 && now - this.unflushedSince[0] > limits.sendTimeoutMs) {
        return this.drop('not_reading', `an answer did not leave for the socket within ${limits.sendTimeoutMs} ms`);
      }
      if (now - this.lastFrameAt > limits.idleTimeoutMs && this.inFlight === 0) {
        this.endpoints.log({ event: 'connection_idle', conn: this.id, idle_ms: Math.round(now - this.lastFrameAt) });
        this.ws.close(1001, 'helora: idle');
        return;
      }
      if (now - lastPing >= limits.pingIntervalMs) {
        if (this.awaitingPong) return this.drop('no_pong', `no pong within ${limits.pingIntervalMs} ms`);
        lastPing = now;
        this.awaitingPong = true;
        this.ws.ping();
      }
    }), tick);
  }

  /** The connection closed: stop its timers; its queued requests will be cancelled. */
  onClose(): void {
    this.closed = true;
    clearInterval(this.ticker);
    if (this.frameTimer) clearTimeout(this.frameTimer);
    this.frameTimer = null;
  }

  get rateLimitedFrames(): number {
    return this.rateLimited;
  }

  private drop(reason: string, detail: string): void {
    if (this.closed) return;
    this.endpoints.log({ event: 'connection_dropped', conn: this.id, reason, detail });
    this.onClose();
    this.ws.terminate();
  }

  receive(bytes: Uint8Array, isBinary: boolean): void {
    if (this.closed) return;
    if (!isBinary) {
      this.endpoints.log({ event: 'protocol_violation', conn: this.id, reason: 'text frame', bytes: bytes.length });
      this.ws.close(1003, 'helora: binary frames only');
      return;
    }
    if (!this.charge(bytes)) return;
    const request = this.decode(bytes);
    if (request && this.admit(request)) this.compute(request);
  }

  /**
   * Every frame, well-formed or not, costs one unit of the rate limit before anything else is done
   * with it. Over the limit, a frame whose header is readable is answered RateLimited (the client
   * retries it later); the refusals are counted, not logged one by one.
   */
  private charge(bytes: Uint8Array): boolean {
    if (this.bucket.take()) return true;
    if (this.rateLimited++ === 0) this.endpoints.log({ event: 'rate_limited', conn: this.id });
    let header: { requestId: bigint; paramsId: number } | null = null;
    try { header = peekHeader(bytes); } catch { /* nothing to answer to */ }
    if (header) {
      const { rate } = this.endpoints.admission;
      this.sendError(header.requestId, header.paramsId, ServerErrorCode.RateLimited,
        `helora: rate limit exceeded (${rate.perSecond} requests/s, burst ${rate.burst} per connection); retry later`);
    }
    return false;
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
      return {
        msg, op, group, requestId, paramsId, bytes: bytes.length, fields: { op, layer: msg.layer, group, tokens: msg.tokens, bytes_in: bytes.length },
        frame: bytes, upSha256: null,
      };
    } catch (e) {
      // Decoder messages describe the client's own bytes (no server state), so they are sent back.
      const we = e instanceof WireError ? e : new WireError('bad_field', 'undecodable message');
      this.answerError(requestId, we.code === 'unknown_params' ? NO_PARAMS_ID : paramsId, serverCodeFor(we), we.message, { wire: we.code, bytes: bytes.length });
      if (++this.malformedRun >= MAX_CONSECUTIVE_MALFORMED) {
        this.endpoints.log({ event: 'protocol_violation', conn: this.id, reason: 'too many malformed messages' });
        this.ws.close(1008, 'helora: too many malformed messages');
      }
      return null;
    }
  }

  /** Whether the request may go to the queue: within this connection's in-flight and byte caps, and the queue's. */
  private admit({ requestId, paramsId, bytes, fields }: Request): boolean {
    const { queue, admission: { limits } } = this.endpoints;
    const busy = (why: string): false => {
      this.answerError(requestId, paramsId, ServerErrorCode.Busy, `helora: ${why}; retry later`, fields);
      return false;
    };
    if (this.inFlight >= limits.maxInFlightPerConnection) return busy(`this connection already has ${this.inFlight} requests in flight (limit ${limits.maxInFlightPerConnection})`);
    if (this.queuedBytes + bytes > this.endpoints.maxQueuedBytesPerConnection) return busy('this connection has too many request bytes queued');
    if (!queue.fits(bytes)) return busy('the server queue is full');
    return true;
  }

  private compute(request: Request): void {
    const { requestId, paramsId, fields, bytes } = request;
    this.requests++;
    this.inFlight++;
    this.queuedBytes += bytes;
    // Hashed before the kernels see the request, and only once it is admitted (refused frames cost no hash).
    if (this.endpoints.audit) request.upSha256 = frameSha256(request.frame);
    dispatch(this.endpoints.model, this.endpoints.queue, () => this.closed, request).then(({ bytesOut, queueMs, computeMs }) => {
      this.queuedBytes -= bytes;
      try {
        this.auditExchange(request, bytesOut, computeMs);
      } catch (e) {
        // An answer the audit log cannot record is not sent (the client gets an internal error).
        this.inFlight--;
        this.endpoints.log({ event: 'audit_error', conn: this.id, request_id: requestId.toString(), error: e instanceof Error ? e.message : String(e) });
        this.answerError(requestId, paramsId, ServerErrorCode.Internal, INTERNAL_ERROR_MESSAGE, fields);
        return;
      }
      this.sendAnswer(bytesOut);
      this.endpoints.log({ event: 'request', conn: this.id, request_id: requestId.toString(), ...fields, bytes_out: bytesOut.length, queue_ms: Math.round(queueMs), ms: Math.round(computeMs) });
    }, (e: unknown) => {
      this.queuedBytes -= bytes;
      this.inFlight--;
      if (e instanceof CancelledError) {
        this.endpoints.log({ event: 'request_cancelled', conn: this.id, request_id: requestId.toString(), ...fields });
        return;
      }
      if (e instanceof BadRequestError) return this.answerError(requestId, paramsId, ServerErrorCode.BadRequest, e.message, fields);
      // Internal failures: the details stay in the log, the client gets a generic message.
      this.endpoints.log({ event: 'internal_error', conn: this.id, request_id: requestId.toString(), error: e instanceof Error ? e.message : String(e) });
      this.answerError(requestId, paramsId, ServerErrorCode.Internal, INTERNAL_ERROR_MESSAGE, fields);
    });
  }

  /** The audit record of an answered request (before the answer leaves: an unrecorded answer is not sent). */
  private auditExchange(request: Request, bytesOut: Uint8Array, computeMs: number): void {
    const audit = this.endpoints.audit;
    if (!audit) return;
    const { msg } = request;
    audit.append('request', {
      conn: this.id, token_id: this.endpoints.tokenId,
      ...exchangeFields({
        direction: request.op, layer: msg.layer, group: msg.group, tokens: msg.tokens, masks: msg.masks, requestId: request.requestId,
        bytesUp: request.bytes, bytesDown: bytesOut.length, upSha256: request.upSha256!, downSha256: frameSha256(bytesOut), ms: computeMs,
      }),
    });
  }

  private answerError(requestId: bigint, paramsId: number, code: number, message: string, extra: LogEvent = {}): void {
    this.endpoints.log({ event: 'request_error', conn: this.id, request_id: requestId.toString(), code, error: message, ...extra });
    this.sendError(requestId, paramsId, code, message);
  }

  /** An ERROR answer; a client that leaves them unread piles them up and is dropped. */
  private sendError(requestId: bigint, paramsId: number, code: number, message: string): void {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    if (this.ws.bufferedAmount - this.unflushedAnswerBytes > MAX_UNREAD_ERROR_BYTES) {
      return this.drop('not_reading', `more than ${MAX_UNREAD_ERROR_BYTES} bytes of error answers unread`);
    }
    this.ws.send(encodeError({ paramsId, requestId, code, message }), { binary: true });
  }

  /** A computed answer: it stays in flight until its bytes have left for the socket. */
  private sendAnswer(bytes: Uint8Array): void {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) {
      this.inFlight--;
      return;
    }
    this.unflushedAnswerBytes += bytes.length;
    this.unflushedSince.push(performance.now());
    this.ws.send(bytes, { binary: true }, () => {
      this.unflushedAnswerBytes -= bytes.length;
      this.unflushedSince.shift();
      this.inFlight--;
    });
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
  readonly maxQueuedBytesPerConnection: number;
  private readonly connections = new Map<WebSocket, Connection>();
  private readonly wss: WebSocketServer;
  private readonly infoJson: string;
  private readonly started = Date.now();
  private nextConn = 1;

  constructor(readonly model: ModelServer, readonly admission: Admission, readonly log: Logger, readonly audit: AuditLog | null, readonly tokenId: string | null) {
    const { limits } = admission;
    const maxBytes = maxRequestBytes(model);
    this.maxPayload = maxBytes + MAX_PAYLOAD_MARGIN;
    this.decodeLimits = { maxBytes, maxTokens: model.maxTokens, maxCols: 1 << 20 };
    this.infoJson = modelInfoToJson(model.info);
    const maxQueuedBytes = limits.maxQueuedBytes ?? Math.max(1 << 30, this.maxPayload);
    this.maxQueuedBytesPerConnection = Math.min(limits.maxQueuedBytesPerConnection ?? 2 * this.maxPayload, maxQueuedBytes);
    this.queue = new RequestQueue(positiveInteger('maxQueue', limits.maxQueue), positiveInteger('maxQueuedBytes', maxQueuedBytes));
    positiveInteger('maxQueuedBytesPerConnection', this.maxQueuedBytesPerConnection);
    positiveInteger('maxInFlightPerConnection', limits.maxInFlightPerConnection);
    for (const k of ['sendTimeoutMs', 'pingIntervalMs', 'idleTimeoutMs', 'frameTimeoutMs'] as const) positiveInteger(k, limits[k]);
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
      const health: Record<string, unknown> = { ok: true, model_hash: model.hash };
      // The counts describe other clients' use: only for holders of the token, never on an open server.
      if (this.admission.authRequired && this.admission.hasBearer(req)) {
        Object.assign(health, {
          params_id: model.params.id, uptime_s: Math.round((Date.now() - this.started) / 1000),
          connections: this.admission.connectionCount, requests: queue.served, queued: queue.waiting, queued_bytes: queue.bytes,
        });
      }
      return send(200, JSON.stringify(health));
    }
    if (path === MODEL_INFO_PATH) {
      if (!this.admission.checkBearer(req, path)) return send(401, JSON.stringify({ error: 'helora: missing or wrong bearer token' }), { 'www-authenticate': 'Bearer' });
      return send(200, this.infoJson);
    }
    if (path.startsWith(MASK_TABLE_PATH + '/')) {
      if (!this.admission.checkBearer(req, path)) return send(401, JSON.stringify({ error: 'helora: missing or wrong bearer token' }), { 'www-authenticate': 'Bearer' });
      return this.sendMaskTable(path.slice(MASK_TABLE_PATH.length + 1), req, res, send);
    }
    send(404, JSON.stringify({ error: 'helora: no such path' }));
  };

  /** One layer's mask table file, whole or from the `Range: bytes=N-` offset (a resumed download). */
  private sendMaskTable(layerText: string, req: IncomingMessage, res: ServerResponse, send: (status: number, body: string, extra?: Record<string, string>) => void): void {
    const layer = /^(0|[1-9]\d{0,5})$/.test(layerText) ? Number(layerText) : -1;
    const file = this.model.maskTablePath(layer);
    if (!file) return send(404, JSON.stringify({ error: `helora: no mask table ${JSON.stringify(layerText.slice(0, 32))}` }));
    const size = statSync(file).size;
    const range = req.headers.range;
    let start = 0;
    if (range !== undefined) {
      const m = /^bytes=(\d{1,15})-$/.exec(range);
      if (!m || Number(m[1]) >= size) return send(416, JSON.stringify({ error: 'helora: only "Range: bytes=N-" with N below the file size is served' }), { 'content-range': `bytes */${size}` });
      start = Number(m[1]);
    }
    res.writeHead(range === undefined ? 200 : 206, {
      'content-type': 'application/octet-stream', 'cache-control': 'no-store', 'content-length': String(size - start),
      ...(range === undefined ? {} : { 'content-range': `bytes ${start}-${size - 1}/${size}` }),
    });
    createReadStream(file, { start }).on('error', () => res.destroy()).pipe(res);
    this.log({ event: 'mask_table', layer, from: start, bytes: size - start });
  }

  readonly handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => socket.destroy());
    const path = (req.url ?? '').split('?')[0];
    const refusal = this.admission.admitUpgrade(req, path, socket);
    if (refusal) return refuseUpgrade(socket, refusal);
    const remote = req.socket.remoteAddress ?? null;
    this.wss.handleUpgrade(req, socket, head, (ws) => this.open(ws, socket, remote));
  };

  private open(ws: WebSocket, socket: Duplex, remote: string | null): void {
    const conn = new Connection(this.nextConn++, ws, socket, this);
    this.connections.set(ws, conn);
    this.log({ event: 'connection_open', conn: conn.id, remote, connections: this.admission.connectionCount });
    this.auditAppend('connection_open', { conn: conn.id, remote, token_id: this.tokenId });
    ws.on('message', (data: RawData, isBinary: boolean) => conn.receive(rawToBytes(data), isBinary));
    ws.on('error', (e) => this.log({ event: 'connection_error', conn: conn.id, error: e.message }));
    ws.on('close', (code) => {
      conn.onClose();
      this.connections.delete(ws);
      this.log({ event: 'connection_close', conn: conn.id, code, requests: conn.requests, rate_limited: conn.rateLimitedFrames, connections: this.connections.size });
      this.auditAppend('connection_close', { conn: conn.id, code, requests: conn.requests });
    });
  }

  /** An audit record outside a request; a failing log is reported in the server log (the request path fails the answer instead). */
  auditAppend(kind: string, fields: AuditFields, milestone = false): void {
    if (!this.audit) return;
    try {
      this.audit.append(kind, fields, milestone);
    } catch (e) {
      this.log({ event: 'audit_error', kind, error: e instanceof Error ? e.message : String(e) });
    }
  }

  /** Drops every connection and stops accepting new ones. */
  closeConnections(): void {
    for (const [ws, conn] of this.connections) {
      conn.onClose();
      ws.terminate();
    }
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
  checkListenSecurity(host, !!opts.tls, opts.token !== undefined, !!opts.insecure);
  const limits: ServerLimits = { ...DEFAULT_SERVER_LIMITS };
  for (const k of Object.keys(DEFAULT_SERVER_LIMITS) as (keyof ServerLimits)[]) {
    if (opts[k] !== undefined) (limits as unknown as Record<string, number | null>)[k] = opts[k] as number | null;
  }
  const admission = new Admission(opts, limits, log);
  const endpoints = new Endpoints(model, admission, log, opts.audit ?? null, opts.token !== undefined ? tokenFingerprint(opts.token) : null);

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
  log({ event: 'listening', url, model_hash: model.hash, max_payload: endpoints.maxPayload, max_tokens: model.maxTokens, auth: admission.authRequired, tls: !!opts.tls, insecure: !!opts.insecure });
  endpoints.auditAppend('server_start', {
    format: AUDIT_FORMAT, side: 'server', wire_version: WIRE_VERSION, model_hash: model.hash, params_id: model.params.id, act_bits: model.info.actBits,
    max_tokens: model.maxTokens, mask_tables: model.info.maskTables !== null, url, tls: !!opts.tls, token_id: endpoints.tokenId,
  }, true);

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
        endpoints.auditAppend('server_stop', {}, true);
      });
      return closing;
    },
  };
}
