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

import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import { uploadBytes } from '../crypto/index.js';
import type { EncryptedInput } from '../linear/types.js';
import { PROJECTION_GROUPS } from '../model/projections.js';
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
function authorized(req: IncomingMessage, tokenDigest: Buffer | null): boolean {
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

/** One FIFO of jobs, run one at a time. */
class JobQueue {
  private tail: Promise<void> = Promise.resolve();
  waiting = 0;
  run<T>(job: () => Promise<T>): Promise<T> {
    this.waiting++;
    const p = this.tail.then(() => {
      this.waiting--;
      return job();
    });
    this.tail = p.then(() => undefined, () => undefined);
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

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const model = opts.model;
  const log = opts.log ?? jsonLineLogger;
  const host = opts.host ?? '127.0.0.1';
  const maxConnections = opts.maxConnections ?? 16;
  const rate = opts.rateLimit ?? { perSecond: 20, burst: 40 };
  const maxQueue = opts.maxQueue ?? 256;
  if (!(rate.perSecond > 0 && rate.burst >= 1)) throw new Error(`helora: rate limit must be positive, got ${rate.perSecond}/s burst ${rate.burst}`);
  if (!Number.isInteger(maxConnections) || maxConnections < 1) throw new Error(`helora: maxConnections must be a positive integer, got ${maxConnections}`);
  if (opts.token !== undefined && opts.token.length === 0) throw new Error('helora: the bearer token must not be empty');
  const tokenDigest = opts.token !== undefined ? digest(opts.token) : null;
  const maxBytes = maxRequestBytes(model);
  const maxPayload = maxBytes + MAX_PAYLOAD_MARGIN;
  const limits = { maxBytes, maxTokens: model.maxTokens, maxCols: 1 << 20 };
  const infoJson = modelInfoToJson(model.info);
  const N = model.params.ringDegree;
  const upBytes = uploadBytes(model.params);
  const started = Date.now();
  const queue = new JobQueue();
  let requestsServed = 0;
  let nextConn = 1;
  const sockets = new Set<WebSocket>();

  const handleHttp = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '').split('?')[0];
    const send = (status: number, body: string, extra: Record<string, string> = {}): void => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...extra });
      res.end(body);
    };
    if (req.method !== 'GET') return send(405, JSON.stringify({ error: 'helora: only GET is served' }), { allow: 'GET' });
    if (path === HEALTH_PATH) {
      return send(200, JSON.stringify({
        ok: true, model_hash: model.hash, params_id: model.params.id, uptime_s: Math.round((Date.now() - started) / 1000),
        connections: sockets.size, requests: requestsServed, queued: queue.waiting,
      }));
    }
    if (path === MODEL_INFO_PATH) {
      if (!authorized(req, tokenDigest)) {
        log({ event: 'auth_refused', path, remote: req.socket.remoteAddress ?? null });
        return send(401, JSON.stringify({ error: 'helora: missing or wrong bearer token' }), { 'www-authenticate': 'Bearer' });
      }
      return send(200, infoJson);
    }
    send(404, JSON.stringify({ error: `helora: no such path ${path}` }));
  };

  const server: Server = opts.tls
    ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, handleHttp)
    : createHttpServer(handleHttp);
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    else socket.destroy();
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload, perMessageDeflate: false });

  const refuse = (socket: Duplex, status: number, reason: string, extra = ''): void => {
    const body = JSON.stringify({ error: reason });
    socket.end(`HTTP/1.1 ${status} ${status === 401 ? 'Unauthorized' : status === 503 ? 'Service Unavailable' : 'Not Found'}\r\n`
      + `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n${extra}\r\n${body}`);
  };

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const path = (req.url ?? '').split('?')[0];
    const remote = req.socket.remoteAddress ?? null;
    if (path !== WS_PATH) return refuse(socket, 404, `helora: no WebSocket endpoint at ${path} (use ${WS_PATH})`);
    if (!authorized(req, tokenDigest)) {
      log({ event: 'auth_refused', path, remote });
      return refuse(socket, 401, 'helora: missing or wrong bearer token', 'www-authenticate: Bearer\r\n');
    }
    if (sockets.size >= maxConnections) {
      log({ event: 'connection_refused', reason: 'max_connections', limit: maxConnections, remote });
      return refuse(socket, 503, `helora: the server is at its limit of ${maxConnections} connections`);
    }
    wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, remote));
  });

  const onConnection = (ws: WebSocket, remote: string | null): void => {
    const conn = nextConn++;
    sockets.add(ws);
    const bucket = new TokenBucket(rate);
    let malformedRun = 0;
    let requests = 0;
    log({ event: 'connection_open', conn, remote, connections: sockets.size });

    const reply = (bytes: Uint8Array): void => {
      if (ws.readyState === ws.OPEN) ws.send(bytes, { binary: true });
    };
    const replyError = (requestId: bigint, paramsId: number, code: number, message: string, extra: LogEvent = {}): void => {
      log({ event: 'request_error', conn, request_id: requestId.toString(), code, error: message, ...extra });
      reply(encodeError({ paramsId, requestId, code, message }));
    };

    ws.on('message', (data: RawData, isBinary: boolean) => {
      const bytes = rawToBytes(data);
      if (!isBinary) {
        log({ event: 'protocol_violation', conn, reason: 'text frame', bytes: bytes.length });
        ws.close(1003, 'helora: binary frames only');
        return;
      }
      let msg: EncryptedInputMessage;
      let requestId = 0n;
      let paramsId = NO_PARAMS_ID;
      try {
        try {
          const h = peekHeader(bytes);
          requestId = h.requestId;
          paramsId = h.paramsId;
        } catch { /* answered below with the decoder's own error */ }
        const d = decodeMessage(bytes, limits);
        if (d.type !== MessageType.EncryptedInput) {
          throw new WireError('bad_type', `a client may only send ENCRYPTED_INPUT (type 1), got type ${d.type}`);
        }
        msg = d.message;
        malformedRun = 0;
      } catch (e) {
        const we = e instanceof WireError ? e : new WireError('bad_field', String(e));
        replyError(requestId, we.code === 'unknown_params' ? NO_PARAMS_ID : paramsId, serverCodeFor(we), we.message, { wire: we.code, bytes: bytes.length });
        if (++malformedRun >= MAX_CONSECUTIVE_MALFORMED) {
          log({ event: 'protocol_violation', conn, reason: 'too many malformed messages' });
          ws.close(1008, 'helora: too many malformed messages');
        }
        return;
      }
      const op = msg.op === Op.Forward ? 'forward' : 'backward';
      const group = msg.group;
      const fields: LogEvent = { op, layer: msg.layer, group, tokens: msg.tokens, bytes_in: bytes.length };
      if (!bucket.take()) {
        replyError(requestId, paramsId, ServerErrorCode.RateLimited,
          `helora: rate limit exceeded (${rate.perSecond} requests/s, burst ${rate.burst} per connection); retry later`, fields);
        return;
      }
      if (queue.waiting >= maxQueue) {
        replyError(requestId, paramsId, ServerErrorCode.Busy, `helora: the server has ${queue.waiting} requests queued; retry later`, fields);
        return;
      }
      requests++;
      const t0 = performance.now();
      queue.run(async () => {
        const t1 = performance.now();
        const out = await model.product(op, msg.layer, group, toEncryptedInput(msg, upBytes, N));
        const bytesOut = encodeEncryptedOutput({
          paramsId: out.paramsId, requestId, op: msg.op, layer: msg.layer, group: msg.group,
          rows: out.outputRows, tokens: out.T, terms: out.terms, blocks: out.blocks,
        });
        return { bytesOut, queueMs: t1 - t0, computeMs: performance.now() - t1 };
      }).then(({ bytesOut, queueMs, computeMs }) => {
        requestsServed++;
        reply(bytesOut);
        log({ event: 'request', conn, request_id: requestId.toString(), ...fields, bytes_out: bytesOut.length, queue_ms: Math.round(queueMs), ms: Math.round(computeMs) });
      }, (e: unknown) => {
        const bad = e instanceof BadRequestError;
        const message = e instanceof Error ? e.message : String(e);
        replyError(requestId, paramsId, bad ? ServerErrorCode.BadRequest : ServerErrorCode.Internal,
          bad ? message : `helora: internal error while computing the product (${message})`, fields);
      });
    });
    ws.on('error', (e) => log({ event: 'connection_error', conn, error: e.message }));
    ws.on('close', (code) => {
      sockets.delete(ws);
      log({ event: 'connection_close', conn, code, requests, connections: sockets.size });
    });
  };

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (e) => log({ event: 'server_error', error: e.message }));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : (opts.port ?? 0);
  const urlHost = host.includes(':') ? `[${host}]` : host;
  const url = `${opts.tls ? 'wss' : 'ws'}://${urlHost}:${port}`;
  log({ event: 'listening', url, model_hash: model.hash, max_payload: maxPayload, max_tokens: model.maxTokens, auth: tokenDigest !== null, tls: !!opts.tls });

  let closing: Promise<void> | null = null;
  return {
    url,
    port,
    maxPayload,
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        for (const ws of sockets) ws.terminate();
        wss.close();
        server.close(() => resolve());
        server.closeAllConnections();
        log({ event: 'closed' });
      });
      return closing;
    },
  };
}
