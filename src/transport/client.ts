// The client side of the network: a RemoteSession (one WebSocket, requests multiplexed by request id,
// reconnect-and-resend after a connection loss) and RemoteEncryptedProvider, the FrozenLinearProvider
// that runs every projection product on the server over RLWE ciphertexts.
//
// Re-sending a request after a loss is safe: the bytes are the same ciphertext (same seed, same b),
// so the server learns nothing it could not have learned from the first copy. A fresh encryption of
// the same data would NOT be equivalent (two noise samples of one message), which is why the
// encoded bytes are kept and re-sent verbatim.
//
// Nothing the server sends is trusted: the WebSocket frame limit comes from the client's own
// largest request (its own token cap per request, and its local shapes when it has them), every
// answer must have exactly the size its request implies, every request has a deadline, reconnects
// are bounded, and server-supplied text is stripped of control characters before it reaches an
// error message (and so a terminal).

import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { homedir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { maxInnerDim, paramsById, type SecretKey } from '../crypto/index.js';
import { featureChunks } from '../linear/layout.js';
import { HeLinearClient, type MaskChoice } from '../linear/client.js';
import type { EncryptedInput, EncryptedOutput, MaskMode, ProductDirection } from '../linear/types.js';
import type { FrozenLinearProvider } from '../model/frozen.js';
import { groupShapes, PROJECTION_GROUPS, type ProjectionGroup } from '../model/projections.js';
import { WEIGHT_BITS } from '../quant/quantize.js';
import {
  decodeMessage, encodeEncryptedInput, encryptedOutputBytes, MessageType, peekHeader, Op, ServerErrorCode, WIRE_PARAMS, type EncryptedInputMessage, type EncryptedOutputMessage,
} from '../protocol/wire.js';
import { checkShapesEqual, MAX_MODEL_INFO_BYTES, parseModelInfo, type ModelInfo, type ModelShape } from './model-info.js';
import { HEALTH_PATH, MASK_TABLE_PATH, MODEL_INFO_PATH, WS_PATH } from '../protocol/endpoints.js';
import type { ResultIntegrity } from './integrity.js';
import { frameSha256, type Exchange, type FailedRequest } from './audit.js';
import { layerTableLayout, MASK_TABLE_VERSION, MaskTableCache, tableEntry, tableFolder, tableMaskSeed } from './mask-tables.js';

/** What the capture hook sees: every byte string the client hands to the network, before framing. */
export type CaptureHook = (bytes: Uint8Array, channel: 'ws' | 'http') => void;

export interface RemoteSessionOptions {
  /** ws://host:port or wss://host:port (http:// and https:// are accepted as aliases). */
  url: string;
  /** Bearer token, if the server requires one. */
  token?: string;
  /** Refuse a server whose model hash differs (checked at connect and after every reconnect). */
  expectedModelHash?: string;
  /** Extra trusted CA certificate(s), PEM (for a server with a self-signed certificate). */
  ca?: string | Buffer;
  /** After a connection loss, keep trying to reconnect this long before failing the pending requests (default 120 s). */
  retryDeadlineMs?: number;
  /** Reconnect backoff: first wait, doubled up to maxBackoffMs (defaults 100 ms, 5 s). */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Per attempt of an HTTP GET or WebSocket handshake (default 10 s). */
  connectTimeoutMs?: number;
  /** Liveness: a ping this often; a connection that has not answered the previous ping is dropped and reconnected (default 30 s). */
  pingIntervalMs?: number;
  /** Most tokens this client puts in one request (its own cap; the server's max_tokens can only lower it). Default 4096. */
  maxTokensPerRequest?: number;
  /**
   * The local model's shapes: the server's must match before the socket is opened, and the frame
   * limit is computed from them (not from the server's). Without them the server's validated
   * shapes are used.
   */
  localShape?: ModelShape;
  /** An answer must arrive this long after its request was (last) sent, or the request fails (default 600 s). */
  requestTimeoutMs?: number;
  /** Reconnects in a row without an answer in between after which the session gives up (default 8). */
  maxReconnects?: number;
  /** Test hook: called with every byte string the client sends. */
  capture?: CaptureHook;
  /**
   * Called once per answered request with its sizes and the SHA-256 of the request frame and of
   * the answer frame (the audit log, transport/audit.ts); the hashing is done only when this is set.
   */
  onExchange?: (e: Exchange) => void;
  /** Called once per request that was sent and then failed without an accepted answer (the audit log). */
  onFailedRequest?: (e: FailedRequest) => void;
}

/** An ERROR answer from the server. */
export class RemoteError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
    this.name = 'RemoteError';
  }
}

interface PendingRequest {
  id: bigint;
  bytes: Uint8Array;
  op: number;
  layer: number;
  group: ProjectionGroup;
  resolve: (m: EncryptedOutputMessage) => void;
  reject: (e: Error) => void;
  /** Tokens and masks of the request (the answer's size follows from them). */
  tokens: number;
  masks: MaskMode;
  /** When a rate-limited / busy request is retried, give up after this time. */
  deadline: number;
  retries: number;
  timer: NodeJS.Timeout | null;
  /** Fails the request when no answer came within requestTimeoutMs of its (last) sending. */
  answerTimer: NodeJS.Timeout | null;
  /** SHA-256 of `bytes` (only with an onExchange hook) and when they were last sent. */
  upSha256: string | null;
  sentAt: number;
}

/** What the audit log records of a request that went out (audit.ts Exchange without its answer). */
function sentRequestFacts(p: PendingRequest): Omit<Exchange, 'bytesDown' | 'downSha256' | 'ms'> {
  return {
    direction: p.op === Op.Forward ? 'forward' : 'backward', layer: p.layer, group: p.group, tokens: p.tokens, masks: p.masks, requestId: p.id,
    bytesUp: p.bytes.length, upSha256: p.upSha256!,
  };
}

function normalizeBase(url: string): { ws: string; http: string; tls: boolean } {
  const m = /^(wss?|https?):\/\/([^/]+)\/?$/.exec(url.trim());
  if (!m) throw new Error(`helora: server URL must look like ws://host:port or wss://host:port, got ${JSON.stringify(url)}`);
  const tls = m[1] === 'wss' || m[1] === 'https';
  return { ws: `${tls ? 'wss' : 'ws'}://${m[2]}`, http: `${tls ? 'https' : 'http'}://${m[2]}`, tls };
}

/** Default most tokens per request on the client's side. */
export const CLIENT_MAX_TOKENS_PER_REQUEST = 4096;

/** The exact size of the answer to a request of T tokens for (op, group) of a model of this shape. */
export function answerBytes(paramsId: number, actBits: number, shape: ModelShape, op: number, group: ProjectionGroup, T: number, masks: MaskMode = 'fresh'): number {
  const maxK = maxInnerDim(paramsById(paramsId), actBits, WEIGHT_BITS);
  const dims = groupShapes(shape, group);
  const C = dims[0][1];
  const rows = dims.map(([r]) => r);
  const K = rows.reduce((s, r) => s + r, 0);
  return op === Op.Forward
    ? encryptedOutputBytes(paramsId, rows, T, featureChunks(C, maxK).length, masks)
    : encryptedOutputBytes(paramsId, [C], T, featureChunks(K, maxK).length, masks);
}

/** The largest answer a request of at most `tokens` tokens can get (the WebSocket frame limit). */
export function maxAnswerBytes(paramsId: number, actBits: number, shape: ModelShape, tokens: number): number {
  let most = 0;
  for (const g of PROJECTION_GROUPS) {
    for (const op of [Op.Forward, Op.Backward]) most = Math.max(most, answerBytes(paramsId, actBits, shape, op, g, tokens));
  }
  return most + 1024;
}

/**
 * Server-supplied text made safe to print: control characters (C0, DEL, C1) and Unicode bidi and
 * zero-width controls become '?', and the text is cut to `max` characters.
 */
export function printableRemoteText(text: string, max = 300): string {
  const cut = text.length > max ? text.slice(0, max) + '...' : text;
  return cut.replace(/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g, '?');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class RemoteSession {
  /** Payload bytes sent / received (WebSocket messages and HTTP bodies/headers we wrote). */
  bytesUp = 0;
  bytesDown = 0;
  reconnects = 0;
  /** Of those: request bytes sent again (after a reconnect or an overload answer), and the overload answers. */
  resentBytesUp = 0;
  overloadBytesDown = 0;
  info!: ModelInfo;

  private readonly base: { ws: string; http: string; tls: boolean };
  private readonly pending = new Map<bigint, PendingRequest>();
  private nextId = 1n;
  private ws: WebSocket | null = null;
  private closed = false;
  private reconnecting: Promise<void> | null = null;
  private fatal: Error | null = null;
  /** Reconnects since the last answer: a server that keeps dropping us without answering is given up on. */
  private reconnectsWithoutAnswer = 0;
  /** Largest WebSocket frame accepted from the server. */
  maxFrameBytes = 0;
  /** Most tokens per request: the client's own cap, lowered to the server's max_tokens. */
  tokensPerRequest = 0;

  private constructor(readonly opts: RemoteSessionOptions) {
    this.base = normalizeBase(opts.url);
  }

  /** Connects, fetches the model info and checks the model hash. */
  static async connect(opts: RemoteSessionOptions): Promise<RemoteSession> {
    const s = new RemoteSession(opts);
    const text = await s.httpGet(MODEL_INFO_PATH);
    s.info = parseModelInfo(text);
    if (!WIRE_PARAMS.has(s.info.paramsId)) throw new Error(`helora: the server uses parameter set ${s.info.paramsId}, this client knows ${[...WIRE_PARAMS.keys()].join(', ')}`);
    s.checkHash(s.info.hash);
    if (opts.localShape) checkShapesEqual(s.info.shape, opts.localShape);
    const ownCap = opts.maxTokensPerRequest ?? CLIENT_MAX_TOKENS_PER_REQUEST;
    if (!Number.isSafeInteger(ownCap) || ownCap < 1) throw new Error(`helora: maxTokensPerRequest must be a positive integer, got ${ownCap}`);
    s.tokensPerRequest = Math.min(ownCap, s.info.maxTokens);
    s.maxFrameBytes = maxAnswerBytes(s.info.paramsId, s.info.actBits, opts.localShape ?? s.info.shape, s.tokensPerRequest);
    await s.openSocket();
    return s;
  }

  get url(): string {
    return this.base.ws;
  }

  private checkHash(hash: string): void {
    const want = this.opts.expectedModelHash;
    if (want !== undefined && hash !== want.toLowerCase()) {
      throw new Error(`helora: the server's model hash ${hash} differs from the expected ${want}: refusing to send data to a different model`);
    }
    if (this.info && hash !== this.info.hash) {
      throw new Error(`helora: after reconnecting, the server's model hash is ${hash}, the session started with ${this.info.hash}`);
    }
  }

  private headers(): Record<string, string> {
    return this.opts.token !== undefined ? { authorization: `Bearer ${this.opts.token}` } : {};
  }

  /** GET a small JSON document; the body is size-limited before it is buffered. */
  async httpGet(path: string): Promise<string> {
    const body = await this.httpGetBytes(path, MAX_MODEL_INFO_BYTES);
    this.bytesDown += body.length;
    return body.toString('utf8');
  }

  /**
   * GET a binary body of at most maxBytes (checked as it arrives), from byte `from` on (a Range
   * request, for a resumed download). With onChunk the body is handed over as it arrives instead
   * of being kept. The caller counts the bytes.
   */
  httpGetBytes(path: string, maxBytes: number, from = 0, onChunk?: (chunk: Buffer) => void): Promise<Buffer> {
    const timeout = this.opts.connectTimeoutMs ?? 10_000;
    const url = new URL(path, this.base.http);
    const headers: Record<string, string> = { ...this.headers(), ...(from > 0 ? { range: `bytes=${from}-` } : {}) };
    // What goes on the wire for a GET: the request line and our headers (no body).
    const head = Buffer.from(`GET ${url.pathname} HTTP/1.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`);
    this.opts.capture?.(head, 'http');
    this.bytesUp += head.length;
    return new Promise<Buffer>((resolve, reject) => {
      const done = (res: IncomingMessage): void => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > maxBytes) {
            req.destroy(new Error(`helora: ${path} answered more than ${maxBytes} bytes`));
            return;
          }
          const ok = res.statusCode === (from > 0 ? 206 : 200);
          if (!onChunk || !ok) return void chunks.push(c);
          try {
            onChunk(c);
          } catch (e) {
            req.destroy(e instanceof Error ? e : new Error(String(e)));
          }
        });
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          if (res.statusCode === (from > 0 ? 206 : 200)) return resolve(body);
          let why = body.toString('utf8').slice(0, 300);
          try { why = String((JSON.parse(why) as { error?: unknown }).error ?? why); } catch { /* keep the raw text */ }
          const err = new Error(`helora: GET ${url.href} failed with HTTP ${res.statusCode}: ${printableRemoteText(why)}`);
          (err as Error & { status?: number }).status = res.statusCode;
          reject(err);
        });
        res.on('error', reject);
      };
      const req = this.base.tls
        ? httpsRequest(url, { headers, ca: this.opts.ca, timeout }, done)
        : httpRequest(url, { headers, timeout }, done);
      req.on('timeout', () => req.destroy(new Error(`helora: GET ${url.href} timed out after ${timeout} ms`)));
      req.on('error', reject);
      req.end();
    });
  }

  private openSocket(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const ws = new WebSocket(this.base.ws + WS_PATH, {
        headers: this.headers(),
        ca: this.opts.ca,
        handshakeTimeout: this.opts.connectTimeoutMs ?? 10_000,
        perMessageDeflate: false,
        maxPayload: this.maxFrameBytes,
        // RFC 6455 masking (an XOR of every uploaded byte, here and again at the server, ~30% of a loopback step's
        // CPU) guards proxies against attacker-chosen bytes from browser scripts; our frames are ciphertexts that
        // this client writes itself, and off loopback they travel inside TLS. A zero key makes ws skip the pass.
        generateMask: (mask: Buffer) => { mask.fill(0); },
      });
      ws.binaryType = 'nodebuffer';
      let opened = false;
      ws.on('unexpected-response', (_req, res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => { if (chunks.length < 16) chunks.push(c); });
        res.on('end', () => {
          let why = Buffer.concat(chunks).toString('utf8').slice(0, 300);
          try { why = String((JSON.parse(why) as { error?: unknown }).error ?? why); } catch { /* raw */ }
          const err = new Error(`helora: the server refused the WebSocket connection with HTTP ${res.statusCode}: ${printableRemoteText(why)}`);
          (err as Error & { status?: number }).status = res.statusCode;
          reject(err);
        });
        ws.terminate();
      });
      let alive = true;
      let pinger: NodeJS.Timeout | null = null;
      ws.on('pong', () => { alive = true; });
      ws.on('open', () => {
        opened = true;
        this.ws = ws;
        pinger = setInterval(() => {
          // Only a connection with work outstanding needs to be proven alive.
          if (this.pending.size === 0) { alive = true; return; }
          if (!alive) { ws.terminate(); return; }
          alive = false;
          ws.ping();
        }, this.opts.pingIntervalMs ?? 30_000);
        pinger.unref();
        resolve();
        // Requests that were waiting for this connection go out now.
        for (const p of this.pending.values()) if (!p.timer) this.sendRequest(p);
      });
      ws.on('message', (data: Buffer) => this.onMessage(data));
      ws.on('error', (e) => {
        if (!opened) reject(e);
      });
      ws.on('close', () => {
        if (pinger) clearInterval(pinger);
        if (this.ws === ws) this.ws = null;
        // Reconnect now when requests wait for an answer; an idle session reconnects on its next request.
        if (opened && !this.closed && this.pending.size > 0) void this.recover();
      });
    });
  }

  /** Sends (or re-sends) a pending request and restarts its answer deadline. */
  private sendRequest(p: PendingRequest): void {
    if (p.answerTimer) clearTimeout(p.answerTimer);
    const timeout = this.opts.requestTimeoutMs ?? 600_000;
    p.answerTimer = setTimeout(() => {
      if (this.pending.get(p.id) !== p) return;
      this.settle(p);
      p.reject(new Error(`helora: no answer from ${this.base.ws} to request ${p.id} (op ${p.op}, layer ${p.layer}, ${p.group}) within ${timeout} ms`));
    }, timeout);
    p.answerTimer.unref();
    const resend = p.sentAt > 0;
    if (this.sendBytes(p.bytes)) {
      p.sentAt = performance.now();
      if (resend) this.resentBytesUp += p.bytes.length;
    }
  }

  /** Removes a request from the pending ones and stops its timers. */
  private settle(p: PendingRequest): void {
    this.pending.delete(p.id);
    if (p.timer) clearTimeout(p.timer);
    if (p.answerTimer) clearTimeout(p.answerTimer);
    p.timer = null;
    p.answerTimer = null;
  }

  /** Whether the bytes went to an open socket (else they are sent on reconnect). */
  private sendBytes(bytes: Uint8Array): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    this.opts.capture?.(bytes, 'ws');
    this.bytesUp += bytes.length;
    ws.send(bytes, { binary: true });
    return true;
  }

  /**
   * Reconnects with exponential backoff until the deadline, then re-sends every pending request.
   * A server that drops the connection maxReconnects times in a row without answering anything is
   * given up on.
   */
  private recover(): Promise<void> {
    this.reconnecting ??= (async () => {
      const maxReconnects = this.opts.maxReconnects ?? 8;
      if (this.reconnectsWithoutAnswer >= maxReconnects) {
        this.failAll(new Error(`helora: gave up on ${this.base.ws}: it dropped the connection ${maxReconnects + 1} times in a row without answering`));
        return;
      }
      const deadline = Date.now() + (this.opts.retryDeadlineMs ?? 120_000);
      let wait = this.opts.initialBackoffMs ?? 100;
      const maxWait = this.opts.maxBackoffMs ?? 5_000;
      let last: unknown = null;
      while (!this.closed && Date.now() < deadline) {
        await sleep(Math.min(wait, Math.max(0, deadline - Date.now())));
        wait = Math.min(maxWait, wait * 2);
        if (this.closed) break;
        try {
          const health = JSON.parse(await this.httpGet(HEALTH_PATH)) as { model_hash?: unknown };
          this.checkHash(String(health.model_hash));
          await this.openSocket();
          this.reconnects++;
          this.reconnectsWithoutAnswer++;
          return;
        } catch (e) {
          last = e;
          const status = (e as { status?: number }).status;
          // A different model or a refused token will not fix itself.
          if (status === 401 || /model hash/.test((e as Error).message)) break;
        }
      }
      const why = last instanceof Error ? last.message : 'session closed';
      this.failAll(new Error(`helora: lost the connection to ${this.base.ws} and could not reconnect within ${this.opts.retryDeadlineMs ?? 120_000} ms: ${why}`));
    })().finally(() => {
      this.reconnecting = null;
    });
    return this.reconnecting;
  }

  private failAll(e: Error): void {
    this.fatal = e;
    for (const p of [...this.pending.values()]) {
      this.settle(p);
      p.reject(e);
    }
  }

  private onMessage(data: Buffer): void {
    this.bytesDown += data.length;
    let header;
    try {
      header = peekHeader(data);
    } catch {
      return; // not even a header: no request to fail, the frame is ignored
    }
    const p = this.pending.get(header.requestId);
    if (!p) return;
    // An answer's size follows from its request: checked before anything is decoded.
    if (header.type === MessageType.EncryptedOutput) {
      const expected = answerBytes(this.info.paramsId, this.info.actBits, this.opts.localShape ?? this.info.shape, p.op, p.group, p.tokens, p.masks);
      if (data.length !== expected) {
        this.settle(p);
        p.reject(new Error(`helora: the server's answer to request ${p.id} has ${data.length} bytes, a request of ${p.tokens} tokens gets exactly ${expected}`));
        return;
      }
    }
    let d;
    try {
      d = decodeMessage(data);
    } catch (e) {
      this.settle(p);
      p.reject(new Error(`helora: the server's answer to request ${p.id} is malformed: ${printableRemoteText((e as Error).message)}`));
      return;
    }
    this.reconnectsWithoutAnswer = 0;
    if (d.type === MessageType.Error) {
      const { code, message } = d.message;
      // Overload answers are retried after a pause (same bytes), until the request's deadline.
      if ((code === ServerErrorCode.RateLimited || code === ServerErrorCode.Busy) && Date.now() < p.deadline) {
        this.overloadBytesDown += data.length;
        if (p.answerTimer) clearTimeout(p.answerTimer);
        p.answerTimer = null;
        const delay = Math.min(this.opts.maxBackoffMs ?? 5_000, (this.opts.initialBackoffMs ?? 100) * 2 ** Math.min(p.retries++, 10));
        p.timer = setTimeout(() => {
          p.timer = null;
          this.sendRequest(p);
        }, delay);
        return;
      }
      this.settle(p);
      p.reject(new RemoteError(code, `helora: the server answered error ${code}: ${printableRemoteText(message)}`));
      return;
    }
    this.settle(p);
    if (d.type !== MessageType.EncryptedOutput) {
      p.reject(new Error(`helora: the server answered message type ${d.type} to request ${p.id}`));
      return;
    }
    const m = d.message;
    if (m.op !== p.op || m.layer !== p.layer || m.group !== p.group || m.tokens !== p.tokens) {
      p.reject(new Error(`helora: the answer to request ${p.id} is for op ${m.op} layer ${m.layer} group ${m.group} (${m.tokens} tokens), asked op ${p.op} layer ${p.layer} group ${p.group} (${p.tokens} tokens)`));
      return;
    }
    if (this.opts.onExchange) {
      try {
        this.opts.onExchange({ ...sentRequestFacts(p), bytesDown: data.length, downSha256: frameSha256(data), ms: performance.now() - p.sentAt });
      } catch (e) {
        // An exchange the audit log cannot record fails the run rather than going unrecorded.
        p.reject(e instanceof Error ? e : new Error(String(e)));
        return;
      }
    }
    p.resolve(m);
  }

  /** Sends one ENCRYPTED_INPUT (its request id is assigned here) and waits for the answer. */
  request(msg: Omit<EncryptedInputMessage, 'requestId'>): Promise<EncryptedOutputMessage> {
    if (this.closed) return Promise.reject(new Error('helora: the remote session is closed'));
    if (this.fatal) return Promise.reject(this.fatal);
    const id = this.nextId++;
    const bytes = encodeEncryptedInput({ ...msg, requestId: id });
    if (msg.tokens > this.tokensPerRequest) return Promise.reject(new Error(`helora: a request of ${msg.tokens} tokens exceeds this session's ${this.tokensPerRequest} per request`));
    const audited = this.opts.onExchange !== undefined || this.opts.onFailedRequest !== undefined;
    return new Promise<EncryptedOutputMessage>((resolve, rejectPromise) => {
      // A request that went out and failed is recorded too: its bytes reached the server.
      const reject = (e: Error): void => {
        const hook = this.opts.onFailedRequest;
        if (hook && p.sentAt > 0) {
          try {
            hook({ ...sentRequestFacts(p), reason: e instanceof RemoteError ? 'error_answer' : 'no_valid_answer', code: e instanceof RemoteError ? e.code : null });
          } catch { /* the log failed: the request's own error is the one reported */ }
        }
        rejectPromise(e);
      };
      const p: PendingRequest = {
        id, bytes, op: msg.op, layer: msg.layer, group: msg.group, tokens: msg.tokens, masks: msg.masks, resolve, reject,
        deadline: Date.now() + (this.opts.retryDeadlineMs ?? 120_000), retries: 0, timer: null, answerTimer: null,
        upSha256: audited ? frameSha256(bytes) : null, sentAt: 0,
      };
      this.pending.set(id, p);
      this.sendRequest(p);
      if (!this.ws && !this.reconnecting) void this.recover();
    });
  }

  /** Sends raw bytes as one binary frame (tests of the server's validation). */
  sendRaw(bytes: Uint8Array): void {
    this.sendBytes(bytes);
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.failAll(new Error('helora: the remote session was closed'));
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState !== WebSocket.CLOSED) {
      await new Promise<void>((resolve) => {
        ws.once('close', () => resolve());
        ws.close(1000);
        setTimeout(() => { ws.terminate(); resolve(); }, 1000).unref();
      });
    }
  }
}

/** Traffic and time split of a RemoteEncryptedProvider. */
export interface RemoteStats {
  requests: number;
  bytesUp: number;
  bytesDown: number;
  /** Quantize + encrypt + decrypt + dequantize on this machine. */
  cryptoMs: number;
  /** From sending a request to its answer (network + server queue + server compute). */
  serverWaitMs: number;
  reconnects: number;
  /** Bytes of requests sent again (after a reconnect or a Busy / RateLimited answer) and of those overload answers: in bytesUp / bytesDown, not in an estimate. */
  resentBytesUp: number;
  overloadBytesDown: number;
  /** Mask-table bytes downloaded (a one-time cost, not in bytesDown). */
  tableBytesDown: number;
  /** Results checked against the public weights (integrity.ts) and the time the checks took. */
  integrityChecks: number;
  integrityMs: number;
}

export interface RemoteProviderOptions extends RemoteSessionOptions {
  /** The RLWE secret key (default: a fresh one). It never leaves this process. */
  key?: SecretKey;
  /**
   * 'table': the server's public mask tables (downloaded once into tableCache; half the download
   * and half the server work per product); 'fresh': fresh masks per request; default: 'table' when
   * the server offers tables, else 'fresh'.
   */
  masks?: MaskMode;
  /** Folder for the downloaded mask tables (default: $XDG_CACHE_HOME or ~/.cache, then helora/mask-tables). */
  tableCache?: string;
  /**
   * Bytes of mask tables kept in memory between steps (default DEFAULT_TABLE_MEMORY_BYTES: none);
   * the products beyond it are read from the cache folder (only their rows) when used.
   */
  tableMemoryBytes?: number;
  /** Called after each downloaded table layer (progress). */
  onTableLayer?: (layer: number, bytes: number, layers: number) => void;
  /** Checks every result against the public weights (needs the quantized projections locally). */
  integrity?: ResultIntegrity;
  /** Client crypto worker threads (default: one per core). */
  threads?: number;
  /**
   * Bits the client quantizes activations and gradients to (default: the server's act_bits, an
   * upper bound; never sent). More than the server's is refused.
   */
  actBits?: number;
}

/** What a provider on an open session is made with (RemoteProviderOptions without the connection). */
export type ProviderOptions = Pick<RemoteProviderOptions, 'key' | 'masks' | 'tableCache' | 'tableMemoryBytes' | 'onTableLayer' | 'integrity' | 'threads' | 'actBits'>;

/** Where downloaded mask tables are kept unless told otherwise. */
export function defaultTableCache(): string {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'helora', 'mask-tables');
}

/** FrozenLinearProvider whose products run on a helora server over encrypted activations. */
export class RemoteEncryptedProvider implements FrozenLinearProvider {
  readonly he: HeLinearClient;
  readonly masks: MaskMode;
  private cryptoMs = 0;
  private serverWaitMs = 0;
  private requests = 0;
  /** The public mask tables ('table' mode), downloaded before the first product. */
  private tables: MaskTableCache | null = null;

  /** The mask tables in use ('table' mode; null before they are loaded or in 'fresh' mode). */
  get maskTables(): MaskTableCache | null {
    return this.tables;
  }
  /** Bytes of mask tables downloaded (a one-time cost, kept apart from the per-product traffic). */
  tableBytesDown = 0;

  private readonly integrity: ResultIntegrity | null;

  constructor(readonly session: RemoteSession, opts: ProviderOptions = {}) {
    const info = session.info;
    this.integrity = opts.integrity ?? null;
    // Client crypto on every core (worker pool, started on first use; the key stays in this process).
    if (opts.actBits !== undefined && opts.actBits > info.actBits) {
      throw new Error(`helora: --act-bits ${opts.actBits} is more than the server's ${info.actBits} bits (its K-splits and noise are sized for at most that): use --act-bits ${info.actBits} or fewer`);
    }
    this.he = new HeLinearClient({ params: paramsById(info.paramsId), key: opts.key, actBits: info.actBits, quantBits: opts.actBits, threads: opts.threads });
    this.masks = opts.masks ?? (info.maskTables ? 'table' : 'fresh');
    if (this.masks === 'table' && !info.maskTables) throw new Error('helora: the server offers no mask tables (use --masks fresh)');
  }

  static async connect(opts: RemoteProviderOptions): Promise<RemoteEncryptedProvider> {
    const session = await RemoteSession.connect(opts);
    try {
      return await RemoteEncryptedProvider.open(session, opts);
    } catch (e) {
      await session.close();
      throw e;
    }
  }

  /** A provider on an open session; in table mode the missing mask tables are downloaded first. */
  static async open(session: RemoteSession, opts: ProviderOptions = {}): Promise<RemoteEncryptedProvider> {
    const p = new RemoteEncryptedProvider(session, opts);
    if (p.masks === 'table') await p.loadTables(opts.tableCache ?? defaultTableCache(), opts.tableMemoryBytes, opts.onTableLayer);
    return p;
  }

  /** Downloads the layers of the mask tables missing from the cache (resuming partial files), checked against the model info. */
  private async loadTables(root: string, memoryBytes: number | undefined, onLayer?: (layer: number, bytes: number, layers: number) => void): Promise<void> {
    const info = this.session.info;
    const listed = info.maskTables!;
    if (listed.version !== MASK_TABLE_VERSION) throw new Error(`helora: the server's mask tables are version ${listed.version}, this client reads version ${MASK_TABLE_VERSION}`);
    const params = this.he.params;
    const cache = new MaskTableCache(tableFolder(root, info.hash, params), layerTableLayout(info.shape, params, info.actBits), listed.layers, memoryBytes);
    await cache.download(async (layer, from, write) => {
      const want = listed.layers[layer]!.bytes - from;
      await this.session.httpGetBytes(`${MASK_TABLE_PATH}/${layer}`, want, from, (chunk) => {
        this.tableBytesDown += chunk.length;
        write(chunk);
      });
    }, (layer, bytes) => onLayer?.(layer, bytes, listed.layers.length));
    this.tables = cache;
  }

  get info(): ModelInfo {
    return this.session.info;
  }

  stats(): RemoteStats {
    return {
      requests: this.requests, bytesUp: this.session.bytesUp, bytesDown: this.session.bytesDown,
      cryptoMs: this.cryptoMs, serverWaitMs: this.serverWaitMs, reconnects: this.session.reconnects,
      resentBytesUp: this.session.resentBytesUp, overloadBytesDown: this.session.overloadBytesDown, tableBytesDown: this.tableBytesDown,
      integrityChecks: this.integrity?.checks ?? 0, integrityMs: this.integrity?.checkMs ?? 0,
    };
  }

  private scales(layer: number, group: ProjectionGroup): Float32Array[] {
    const info = this.session.info;
    if (!Number.isInteger(layer) || layer < 0 || layer >= info.shape.numLayers) throw new Error(`helora: layer ${layer} is outside 0..${info.shape.numLayers - 1}`);
    const s = info.scales[layer][group];
    if (!s) throw new Error(`helora: unknown projection group ${String(group)}`);
    return s;
  }

  /** Token ranges of at most maxTokens (a multiple of N when possible, so no extra padding). */
  private tokenChunks(T: number): [number, number][] {
    const N = this.he.params.ringDegree;
    let step = this.session.tokensPerRequest;
    if (step >= N) step -= step % N;
    const out: [number, number][] = [];
    for (let t0 = 0; t0 < T; t0 += step) out.push([t0, Math.min(T, t0 + step)]);
    return out;
  }

  /** The masks of one product: the public ones in table mode, else fresh ones. */
  private maskChoice(direction: ProductDirection, layer: number, group: ProjectionGroup): MaskChoice {
    return this.masks === 'table' ? { tableSeed: tableMaskSeed(this.he.params, this.session.info.hash, layer, group, direction) } : {};
  }

  /** A public-mask answer carries only b: its a parts come from the table (W·A of the same masks). */
  private fillFromTable(res: EncryptedOutput, direction: ProductDirection, layer: number, group: ProjectionGroup): void {
    if (res.masks !== 'table') return;
    const N = this.he.params.ringDegree;
    const tables = this.tables!;
    // One read (or memory hit) per answer: every block of a table request uses the same masks.
    const words = tables.product(layer, group, direction);
    const entry = tableEntry(tables.layout, group, direction);
    for (const row of res.blocks) {
      let r0 = 0;
      res.outputRows.forEach((rows, j) => {
        for (let t = 0; t < res.terms; t++) {
          const c = row[j * res.terms + t];
          if (c) c.a = MaskTableCache.termRows(words, entry, t, r0, rows, N);
        }
        r0 += rows;
      });
    }
  }

  private async roundTrip(direction: 'forward' | 'backward', layer: number, group: ProjectionGroup, req: EncryptedInput): Promise<EncryptedOutput> {
    const N = this.he.params.ringDegree;
    const up = WIRE_PARAMS.get(req.paramsId)!.uploadBytes;
    const offsets: number[] = [0];
    for (const c of req.partCols) offsets.push(offsets[offsets.length - 1] + c * N * up);
    const blocks = req.blocks.map((b) => req.partCols.map((_, j) => b.subarray(offsets[j], offsets[j + 1])));
    const t0 = performance.now();
    const m = await this.session.request({
      masks: req.masks, paramsId: req.paramsId, op: direction === 'forward' ? Op.Forward : Op.Backward, layer, group,
      cols: req.partCols, tokens: req.T, seed: req.seed, blocks,
    });
    this.serverWaitMs += performance.now() - t0;
    this.requests++;
    if (m.masks !== req.masks) throw new Error(`helora: the server answered a ${req.masks}-mask request with ${m.masks} masks`);
    const res: EncryptedOutput = { masks: m.masks, paramsId: m.paramsId, T: m.tokens, outputRows: m.rows, terms: m.terms, blocks: m.blocks };
    this.fillFromTable(res, direction, layer, group);
    return res;
  }

  async forward(layer: number, group: ProjectionGroup, x: Float32Array, T: number): Promise<Float32Array[]> {
    const wScales = this.scales(layer, group);
    const dims = groupShapes(this.session.info.shape, group);
    const C = dims[0][1];
    if (!Number.isInteger(T) || T < 1 || x.length !== T * C) throw new Error(`helora: ${group} input has ${x.length} values, expected T*${C} with T = ${T}`);
    const parts = await Promise.all(this.tokenChunks(T).map(async ([t0, t1]) => {
      let c0 = performance.now();
      const pending = await this.he.encryptForward(x.subarray(t0 * C, t1 * C), t1 - t0, C, this.maskChoice('forward', layer, group));
      this.cryptoMs += performance.now() - c0;
      const res = await this.roundTrip('forward', layer, group, pending.request);
      this.he.releaseRequest(pending.request); // sent and answered: its upload memory serves the next one
      c0 = performance.now();
      const ys = await this.he.decryptForward(pending, res, wScales);
      this.cryptoMs += performance.now() - c0;
      if (this.integrity) this.integrity.checkForward(layer, group, pending.values!, pending.scales, t1 - t0, ys);
      return ys;
    }));
    if (parts.length === 1) return parts[0];
    return dims.map(([rows], j) => {
      const y = new Float32Array(T * rows);
      let off = 0;
      for (const p of parts) { y.set(p[j], off); off += p[j].length; }
      return y;
    });
  }

  async backward(layer: number, group: ProjectionGroup, dys: Float32Array[], T: number): Promise<Float32Array> {
    const wScales = this.scales(layer, group);
    const dims = groupShapes(this.session.info.shape, group);
    const C = dims[0][1];
    if (dys.length !== dims.length) throw new Error(`helora: ${group} backward takes ${dims.length} gradients, got ${dys.length}`);
    dys.forEach((dy, j) => {
      if (dy.length !== T * dims[j][0]) throw new Error(`helora: ${group} gradient ${j} has ${dy.length} values, expected ${T} x ${dims[j][0]}`);
    });
    const parts = await Promise.all(this.tokenChunks(T).map(async ([t0, t1]) => {
      let c0 = performance.now();
      const slice = dys.map((dy, j) => dy.subarray(t0 * dims[j][0], t1 * dims[j][0]));
      const pending = await this.he.encryptBackward(slice, t1 - t0, wScales, this.maskChoice('backward', layer, group));
      this.cryptoMs += performance.now() - c0;
      const res = await this.roundTrip('backward', layer, group, pending.request);
      this.he.releaseRequest(pending.request);
      c0 = performance.now();
      const dx = await this.he.decryptBackward(pending, res, C);
      this.cryptoMs += performance.now() - c0;
      if (this.integrity) this.integrity.checkBackward(layer, group, pending.values!, pending.scales, t1 - t0, dx);
      return dx;
    }));
    if (parts.length === 1) return parts[0];
    const dx = new Float32Array(T * C);
    let off = 0;
    for (const p of parts) { dx.set(p, off); off += p.length; }
    return dx;
  }

  /** Closes the connection and the client's crypto workers. */
  async close(): Promise<void> {
    await Promise.all([this.session.close(), this.he.close()]);
  }
}
