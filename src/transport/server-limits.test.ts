// The server's limits against abusive clients (issue 12, server items 1-8): each test drives a real
// server over loopback with raw WebSocket frames or a real client and checks that the abuse is
// refused or the abuser dropped, while the server keeps serving.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import WebSocket from 'ws';
import { HeLinearClient } from '../linear/client.js';
import type { ProjectionGroup } from '../model/projections.js';
import { decodeMessage, encodeEncryptedInput, MessageType, Op, ServerErrorCode, type DecodedMessage, type EncryptedInputMessage } from '../protocol/wire.js';
import { ModelServer } from './model-server.js';
import { startServer, type LogEvent, type RunningServer, type ServerOptions } from './server.js';
import { httpGet, removeDir, writeTinyModel } from './test-support.js';

const TOKEN = '3f9a1c7e5b2d4f608a9c1e3b5d7f9a1c'; // 32 hex characters: 128 bits
const he = new HeLinearClient();
let root = '';
let model: ModelServer;
// The server computes through productInPlace (answers encoded from the kernels' memory): the tests hook it.
const originalProduct = (): ModelServer['productInPlace'] => ModelServer.prototype.productInPlace;

before(async () => {
  const tiny = writeTinyModel();
  root = tiny.root;
  model = await ModelServer.fromFolder(tiny.dir, { threads: 0, maxTokens: 64 });
});
after(async () => {
  await model.close();
  removeDir(root);
});

/** A well-formed ENCRYPTED_INPUT for a forward product of (layer, group) with C input features. */
function forwardRequest(layer: number, group: ProjectionGroup, C: number, T = 3, requestId = 1n): EncryptedInputMessage {
  const x = new Int8Array(T * C).map((_, i) => (i % 17) - 8);
  const r = he.encryptIntegersReference(x, T, [C]);
  return { masks: 'fresh', paramsId: 1, requestId, op: Op.Forward, layer, group, cols: [C], tokens: T, seed: r.seed, blocks: r.blocks.map((b) => [b]) };
}

/** Polls `cond` (never a fixed sleep: the machine is shared and slow) until it holds or `ms` pass. */
async function waitFor(cond: () => boolean, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Every gate opened by withServer at the end of a test (a failed test must not leave products waiting). */
const openGates: (() => void)[] = [];

/** The model's products wait for open() (a product in progress holds the queue). */
function gateProducts(): { open(): void; calls(): number; restore(): void } {
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  openGates.push(release);
  let calls = 0;
  const product = originalProduct();
  model.productInPlace = async function (this: ModelServer, ...args: Parameters<ModelServer['productInPlace']>) {
    calls++;
    await gate;
    return product.apply(this, args);
  } as ModelServer['productInPlace'];
  return { open: release, calls: () => calls, restore: () => { model.productInPlace = product; } };
}

async function withServer(opts: Partial<ServerOptions>, body: (srv: RunningServer, logs: LogEvent[]) => Promise<void>): Promise<void> {
  const logs: LogEvent[] = [];
  const srv = await startServer({ model, rateLimit: { perSecond: 1000, burst: 1000 }, log: (e) => logs.push(e), ...opts });
  try {
    await body(srv, logs);
  } finally {
    for (const release of openGates.splice(0)) release();
    model.productInPlace = originalProduct();
    await srv.close();
  }
}

class WsClient {
  readonly answers: DecodedMessage[] = [];
  readonly closed: Promise<number>;
  constructor(readonly ws: WebSocket) {
    ws.on('message', (d: Buffer) => this.answers.push(decodeMessage(new Uint8Array(d))));
    this.closed = new Promise((r) => ws.on('close', (code) => r(code)));
  }
  static open(srv: RunningServer, token?: string): Promise<WsClient> {
    const ws = new WebSocket(`${srv.url}/v1/ws`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new WsClient(ws)));
      ws.once('unexpected-response', (_q, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode })));
      ws.once('error', reject);
    });
  }
  count(pred: (m: DecodedMessage) => boolean): number {
    return this.answers.filter(pred).length;
  }
}

const isBusy = (m: DecodedMessage): boolean => m.type === MessageType.Error && m.message.code === ServerErrorCode.Busy;
const isOutput = (m: DecodedMessage): boolean => m.type === MessageType.EncryptedOutput;

/** A WebSocket upgrade by hand on a plain TCP socket (so the test controls every byte, reads and pongs). */
function rawUpgrade(srv: RunningServer, token?: string): Promise<{ socket: Socket; status: number }> {
  const socket = connect(srv.port, '127.0.0.1');
  socket.write(`GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:${srv.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
    + `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${token ? `Authorization: Bearer ${token}\r\n` : ''}\r\n`);
  return new Promise((resolve, reject) => {
    let head = '';
    const onData = (c: Buffer): void => {
      head += c.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      resolve({ socket, status: Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1] ?? 0) });
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

/** One client-to-server WebSocket frame (FIN, masked with a zero key, so the payload goes as is). */
function frame(payload: Uint8Array, opcode = 2): Buffer {
  const n = payload.length;
  const len = n < 126 ? Buffer.from([0x80 | n]) : n < 65536 ? Buffer.from([0x80 | 126, n >> 8, n & 255]) : (() => {
    const b = Buffer.alloc(9); b[0] = 0x80 | 127; b.writeBigUInt64BE(BigInt(n), 1); return b;
  })();
  return Buffer.concat([Buffer.from([0x80 | opcode]), len, Buffer.alloc(4), payload]);
}

test('item 1: a connection gets at most maxInFlightPerConnection requests in flight (default 2); more are answered Busy at once', async () => {
  await withServer({}, async (srv) => {
    const gate = gateProducts();
    const c = await WsClient.open(srv);
    for (let i = 1; i <= 4; i++) c.ws.send(encodeEncryptedInput(forwardRequest(0, 'o', 64, 2, BigInt(i))));
    await waitFor(() => c.count(isBusy) === 2, 'two Busy answers while two requests are in flight');
    assert.equal(c.count(isOutput), 0);
    gate.open();
    await waitFor(() => c.count(isOutput) === 2, 'the two admitted requests answered');
    const busyIds = c.answers.filter(isBusy).map((m) => m.message.requestId).sort();
    assert.deepEqual(busyIds, [3n, 4n]);
    c.ws.close();
  });
});

test('item 1: request bytes queued are capped per connection and over all connections', async () => {
  const one = encodeEncryptedInput(forwardRequest(0, 'o', 64, 2)).length;
  await withServer({ maxInFlightPerConnection: 16, maxQueuedBytesPerConnection: Math.floor(2.5 * one), maxQueuedBytes: Math.floor(3.5 * one) }, async (srv) => {
    const gate = gateProducts();
    const a = await WsClient.open(srv);
    for (let i = 1; i <= 4; i++) a.ws.send(encodeEncryptedInput(forwardRequest(0, 'o', 64, 2, BigInt(i))));
    await waitFor(() => a.count(isBusy) === 2, 'the per-connection byte cap (2 of 4 requests fit)');
    const b = await WsClient.open(srv);
    for (let i = 1; i <= 2; i++) b.ws.send(encodeEncryptedInput(forwardRequest(0, 'o', 64, 2, BigInt(i))));
    await waitFor(() => b.count(isBusy) === 1, 'the global byte cap (3 of 6 requests fit)');
    gate.open();
    await waitFor(() => a.count(isOutput) === 2 && b.count(isOutput) === 1, 'the admitted requests answered');
    a.ws.close();
    b.ws.close();
  });
});

test('item 3: the queued requests of a connection that closes are cancelled, not computed', async () => {
  await withServer({ maxInFlightPerConnection: 8 }, async (srv, logs) => {
    const gate = gateProducts();
    const c = await WsClient.open(srv);
    for (let i = 1; i <= 3; i++) c.ws.send(encodeEncryptedInput(forwardRequest(0, 'o', 64, 2, BigInt(i))));
    await waitFor(() => gate.calls() === 1, 'the first product to start');
    c.ws.terminate();
    await waitFor(() => logs.some((e) => e.event === 'connection_close'), 'the server to see the close');
    gate.open();
    await waitFor(() => logs.filter((e) => e.event === 'request_cancelled').length === 2, 'two cancelled requests');
    assert.equal(gate.calls(), 1, 'only the product already running was computed');
  });
});

test('item 4: every frame, malformed ones too, is charged to the rate limit before it is answered', async () => {
  await withServer({ rateLimit: { perSecond: 0.001, burst: 3 } }, async (srv, logs) => {
    const c = await WsClient.open(srv);
    const good = encodeEncryptedInput(forwardRequest(0, 'o', 64, 2, 5n));
    const truncated = good.subarray(0, good.length - 9); // readable header, broken payload
    for (let i = 0; i < 10; i++) c.ws.send(truncated);
    await waitFor(() => c.answers.length === 10, 'ten answers');
    const malformed = c.count((m) => m.type === MessageType.Error && m.message.code === ServerErrorCode.Malformed);
    const limited = c.count((m) => m.type === MessageType.Error && m.message.code === ServerErrorCode.RateLimited);
    assert.deepEqual([malformed, limited], [3, 7]);
    assert.equal(logs.filter((e) => e.event === 'request_error' && e.code === ServerErrorCode.Malformed).length, 3, 'only charged frames are decoded and logged');
    c.ws.close();
  });
});

test('item 5: /health tells only ok and the model hash without the token; the counts need the token', async () => {
  await withServer({ token: TOKEN }, async (srv) => {
    const open = await httpGet(srv.url, '/health');
    assert.equal(open.status, 200);
    assert.deepEqual(JSON.parse(open.body), { ok: true, model_hash: model.hash });
    assert.deepEqual(JSON.parse((await httpGet(srv.url, '/health', 'wrong-' + TOKEN)).body), { ok: true, model_hash: model.hash });
    const full = JSON.parse((await httpGet(srv.url, '/health', TOKEN)).body) as Record<string, unknown>;
    assert.equal(full.model_hash, model.hash);
    assert.equal(typeof full.connections, 'number');
    assert.equal(typeof full.queued, 'number');
  });
  await withServer({}, async (srv) => {
    assert.deepEqual(JSON.parse((await httpGet(srv.url, '/health')).body), { ok: true, model_hash: model.hash });
  });
});

test('item 6: an internal failure is answered with a generic message; the details stay in the server log', async () => {
  await withServer({}, async (srv, logs) => {
    model.productInPlace = async () => { throw new Error('secret detail /srv/helora/internal/path'); };
    const c = await WsClient.open(srv);
    c.ws.send(encodeEncryptedInput(forwardRequest(0, 'o', 64, 2, 9n)));
    await waitFor(() => c.answers.length === 1, 'the answer');
    const m = c.answers[0];
    assert.ok(m.type === MessageType.Error);
    assert.equal(m.message.code, ServerErrorCode.Internal);
    assert.doesNotMatch(m.message.message, /secret|\/srv/);
    assert.ok(logs.some((e) => e.event === 'internal_error' && /secret detail/.test(String(e.error))));
    c.ws.close();
  });
});

test('item 2: a client that never reads its answers is dropped; the server does not buffer for it without limit', async () => {
  await withServer({ sendTimeoutMs: 300 }, async (srv, logs) => {
    const { socket, status } = await rawUpgrade(srv);
    assert.equal(status, 101);
    socket.pause(); // never reads again
    const req = frame(encodeEncryptedInput(forwardRequest(0, 'gate_up', 64, 64, 1n)));
    for (let i = 0; i < 200 && !logs.some((e) => e.event === 'connection_dropped'); i++) {
      if (!socket.destroyed) socket.write(req);
      await new Promise((r) => setTimeout(r, 25));
    }
    await waitFor(() => logs.some((e) => e.event === 'connection_dropped' && e.reason === 'not_reading'), 'the non-reading client to be dropped');
    const answered = logs.filter((e) => e.event === 'request').length;
    assert.ok(answered < 50, `${answered} answers computed for a client that reads none`);
    socket.destroy();
    // still serving
    const c = await WsClient.open(srv);
    c.ws.send(encodeEncryptedInput(forwardRequest(0, 'o', 64, 2, 2n)));
    await waitFor(() => c.count(isOutput) === 1, 'an honest answer');
    c.ws.close();
  });
});

test('item 3: a client that never answers pings is dropped; an idle one is closed', async () => {
  await withServer({ pingIntervalMs: 150 }, async (srv, logs) => {
    const { socket, status } = await rawUpgrade(srv);
    assert.equal(status, 101);
    socket.on('data', () => {}); // reads, never pongs
    await waitFor(() => logs.some((e) => e.event === 'connection_dropped' && e.reason === 'no_pong'), 'the silent client to be dropped');
    socket.destroy();
  });
  await withServer({ idleTimeoutMs: 300 }, async (srv) => {
    const c = await WsClient.open(srv); // answers pings (ws does), sends nothing
    assert.equal(await Promise.race([c.closed, new Promise<number>((r) => setTimeout(() => r(-1), 20_000))]), 1001);
  });
});

test('item 3: a frame that arrives too slowly drops its connection', async () => {
  await withServer({ frameTimeoutMs: 300 }, async (srv, logs) => {
    const { socket, status } = await rawUpgrade(srv);
    assert.equal(status, 101);
    const bytes = frame(encodeEncryptedInput(forwardRequest(0, 'o', 64, 2, 1n)));
    for (let i = 0; i < 400 && !socket.destroyed && !logs.some((e) => e.event === 'connection_dropped'); i++) {
      socket.write(bytes.subarray(i * 8, i * 8 + 8)); // 8 bytes every 25 ms
      await new Promise((r) => setTimeout(r, 25));
    }
    await waitFor(() => logs.some((e) => e.event === 'connection_dropped' && e.reason === 'frame_timeout'), 'the slow sender to be dropped');
    socket.destroy();
  });
});

test('item 3: connections are capped per remote address, and upgrades in progress count', async () => {
  await withServer({ maxConnectionsPerAddress: 2 }, async (srv) => {
    const a = await WsClient.open(srv);
    const b = await WsClient.open(srv);
    await assert.rejects(WsClient.open(srv), (e: Error & { status?: number }) => e.status === 503);
    b.ws.close();
    await b.closed;
    // the slot is given back when the socket closes (polled: the close reaches the server a little later)
    let c: WsClient | null = null;
    for (let i = 0; i < 500 && !c; i++) {
      try { c = await WsClient.open(srv); } catch { await new Promise((r) => setTimeout(r, 20)); }
    }
    assert.ok(c, 'a new connection once one closed');
    a.ws.close();
    c.ws.close();
  });
  await withServer({ maxConnections: 2 }, async (srv) => {
    const attempts = await Promise.all(Array.from({ length: 6 }, () => rawUpgrade(srv)));
    assert.deepEqual(attempts.map((x) => x.status).sort(), [101, 101, 503, 503, 503, 503]);
    for (const x of attempts) x.socket.destroy();
  });
});

test('item 7: a non-loopback listen address needs TLS and a token, unless insecure', async () => {
  await assert.rejects(startServer({ model, host: '0.0.0.0', log: () => {} }), /refusing to listen on 0\.0\.0\.0.*without TLS/);
  await assert.rejects(startServer({ model, host: '0.0.0.0', token: TOKEN, log: () => {} }), /without TLS/);
  const open = await startServer({ model, host: '0.0.0.0', insecure: true, log: () => {} });
  await open.close();
});

test('item 8: a bearer token under 128 bits is refused', async () => {
  for (const weak of ['s3cret', 'test-token-7f3a9c', '3f9a1c7e5b2d4f608a9c1e3b5d7f9a1']) {
    await assert.rejects(startServer({ model, token: weak, log: () => {} }), /too weak/);
  }
});
