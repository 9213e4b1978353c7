// The client against a malicious or broken server (issue 12, client items 9-11 and 6): a fake
// server on loopback that lies in its model info, never answers, keeps dropping the connection,
// answers with the wrong size or with terminal control characters.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { parseConfig } from '../model/config.js';
import { writeModelFolder } from '../model/loader.js';
import { parseProjectionWeightName } from '../model/projections.js';
import { decodeMessage, encodeError, MessageType, Op, peekHeader } from '../protocol/wire.js';
import { tinyModel } from '../train/test-fixtures.js';
import { RemoteSession } from './client.js';
import { modelInfoToJson, parseModelInfo } from './model-info.js';
import { ModelServer } from './model-server.js';
import { RemoteTraining } from './remote-training.js';
import { startServer } from './server.js';
import { removeDir, writeTinyModel } from './test-support.js';

let root = '';
let model: ModelServer;
let infoJson = '';

before(async () => {
  const tiny = writeTinyModel();
  root = tiny.root;
  model = await ModelServer.fromFolder(tiny.dir, { threads: 0, maxTokens: 64 });
  infoJson = modelInfoToJson(model.info);
});
after(async () => {
  await model.close();
  removeDir(root);
});

interface FakeServer { url: string; sockets: WebSocket[]; close(): Promise<void> }

/** A fake helora server: model info (edited by `info`), health, and a WebSocket endpoint run by `onSocket`. */
async function fakeServer(onSocket: (ws: WebSocket) => void, info: (j: Record<string, unknown>) => void = () => {}): Promise<FakeServer> {
  const j = JSON.parse(infoJson) as Record<string, unknown>;
  info(j);
  const doc = JSON.stringify(j);
  const sockets: WebSocket[] = [];
  const wss = new WebSocketServer({ noServer: true });
  const http: Server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(req.url === '/health' ? JSON.stringify({ ok: true, model_hash: j.hash }) : doc);
  });
  http.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => { sockets.push(ws); onSocket(ws); }));
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  const port = (http.address() as { port: number }).port;
  return {
    url: `ws://127.0.0.1:${port}`, sockets,
    close: () => new Promise<void>((r) => { for (const ws of sockets) ws.terminate(); wss.close(); http.close(() => r()); http.closeAllConnections(); }),
  };
}

/** Fails when `p` has not settled in `ms` (the behaviour under test must end by itself). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`still waiting after ${ms} ms: ${what}`)), ms).unref())]);
}

const request = (s: RemoteSession, tokens = 2) => s.request({ masks: 'fresh', paramsId: 1, op: Op.Forward, layer: 0, group: 'o', cols: [64], tokens, seed: new Uint8Array(16), blocks: [[new Uint8Array(64 * 2048 * 5)]] });

test('item 9: the frame limit comes from the client\'s own token cap and shapes, not from the server\'s max_tokens', async () => {
  const limits: number[] = [];
  for (const maxTokens of [4096, 1 << 24]) {
    const fake = await fakeServer(() => {}, (j) => { j.max_tokens = maxTokens; });
    try {
      const s = await RemoteSession.connect({ url: fake.url, maxTokensPerRequest: 2048 });
      limits.push(s.maxFrameBytes);
      assert.equal(s.tokensPerRequest, 2048);
      await s.close();
    } finally {
      await fake.close();
    }
  }
  assert.equal(limits[0], limits[1]);
  assert.ok(limits[0] > 0 && limits[0] < 16 << 20, `frame limit ${limits[0]}`);
});

test('item 9: an answer of the wrong size for its request is refused', async () => {
  const fake = await fakeServer((ws) => ws.on('message', (d: Buffer) => {
    const h = peekHeader(new Uint8Array(d));
    // an ERROR-typed header would be valid; send an output-typed frame padded beyond its request's size
    const m = decodeMessage(new Uint8Array(d));
    assert.equal(m.type, MessageType.EncryptedInput);
    const bogus = new Uint8Array(3 << 20);
    bogus.set(encodeError({ paramsId: 1, requestId: h.requestId, code: 5, message: 'x' }).subarray(0, 16));
    bogus[6] = MessageType.EncryptedOutput; // the header's type byte
    ws.send(bogus);
  }));
  try {
    const s = await RemoteSession.connect({ url: fake.url });
    await assert.rejects(within(request(s), 20_000, 'the answer check'), /has 3145728 bytes, a request of 2 tokens gets exactly \d+/);
    await s.close();
  } finally {
    await fake.close();
  }
});

test('item 10: a server that never answers fails the request at its deadline', async () => {
  const fake = await fakeServer(() => {});
  try {
    const s = await RemoteSession.connect({ url: fake.url, requestTimeoutMs: 300 });
    await assert.rejects(within(request(s), 20_000, 'the request deadline'), /no answer from ws:\/\/127\.0\.0\.1:\d+ to request 1 .* within 300 ms/);
    await s.close();
  } finally {
    await fake.close();
  }
});

test('item 10: a server that keeps dropping the connection is given up on after a bounded number of reconnects', async () => {
  const fake = await fakeServer((ws) => setTimeout(() => ws.terminate(), 20));
  try {
    const s = await RemoteSession.connect({ url: fake.url, maxReconnects: 3, initialBackoffMs: 10, maxBackoffMs: 40 });
    await assert.rejects(within(request(s), 20_000, 'the reconnect bound'), /gave up on ws:\/\/127\.0\.0\.1:\d+: it dropped the connection 4 times in a row/);
    assert.equal(s.reconnects, 3);
    await s.close();
  } finally {
    await fake.close();
  }
});

test('item 6: server-supplied error text reaches the client\'s messages without control characters', async () => {
  const evil = '\x1b[2J\x1b]0;owned\x07 fake prompt\r\n$ rm -rf ~ \u202e';
  const fake = await fakeServer((ws) => ws.on('message', (d: Buffer) => {
    ws.send(encodeError({ paramsId: 1, requestId: peekHeader(new Uint8Array(d)).requestId, code: 5, message: evil }));
  }));
  try {
    const s = await RemoteSession.connect({ url: fake.url });
    const e = await within(request(s), 20_000, 'the error answer').then(() => null, (x: Error) => x);
    assert.ok(e);
    assert.doesNotMatch(e.message, /[\u0000-\u001f\u007f-\u009f\u202e]/);
    assert.match(e.message, /fake prompt/);
    await s.close();
  } finally {
    await fake.close();
  }
});

test('item 11: weight scales a server declares must be finite and within [2^-40, 2^20]', () => {
  const j = JSON.parse(infoJson) as { scales: Record<string, string[]>[] };
  for (const bad of [1e30, 1e-30, 2 ** 21, Number.NaN]) {
    const b = Buffer.from(j.scales[0].o[0], 'base64');
    b.writeFloatLE(bad, 4);
    const edited = structuredClone(j);
    edited.scales[0].o[0] = b.toString('base64');
    assert.throws(() => parseModelInfo(JSON.stringify(edited)), /not a positive finite scale in \[2\^-40, 2\^20\]/, String(bad));
  }
  assert.doesNotThrow(() => parseModelInfo(infoJson));
});

test('item 11: training fails closed when the model hash cannot be verified, unless allowed', async () => {
  // The client's folder without the projection weights: nothing to recompute the hash from.
  const { configJson, tensors } = tinyModel();
  const dir = join(root, 'no-projections');
  writeModelFolder(dir, configJson, new Map([...tensors].filter(([name]) => parseProjectionWeightName(name) === null)));
  const config = parseConfig(configJson);
  const srv = await startServer({ model, log: () => {} });
  try {
    await assert.rejects(new RemoteTraining({ url: srv.url }).connect(config, dir), /model hash [0-9a-f]{64} cannot be verified: pass --expect-hash/);
    const allowed = await new RemoteTraining({ url: srv.url, allowUnverified: true }).connect(config, dir);
    await allowed.close();
    const pinned = await new RemoteTraining({ url: srv.url, expectHash: model.hash }).connect(config, dir);
    await pinned.close();
  } finally {
    await srv.close();
  }
});

test('item 10: an idle session does not reconnect in a loop to a server that drops it; it reconnects on its next request', async () => {
  const fake = await fakeServer((ws) => setTimeout(() => ws.terminate(), 20));
  try {
    const s = await RemoteSession.connect({ url: fake.url, maxReconnects: 2, initialBackoffMs: 10, maxBackoffMs: 20, requestTimeoutMs: 10_000 });
    await within(new Promise<void>((r) => { const poll = setInterval(() => { if (fake.sockets[0].readyState === fake.sockets[0].CLOSED) { clearInterval(poll); r(); } }, 10); }), 20_000, 'the drop');
    await new Promise((r) => setTimeout(r, 500)); // a reconnect loop would have opened several sockets by now
    assert.equal(fake.sockets.length, 1, 'no reconnect while idle');
    assert.equal(s.reconnects, 0);
    await assert.rejects(within(request(s), 20_000, 'the request'), /gave up on/);
    assert.ok(fake.sockets.length >= 2, 'the request reconnected');
    await s.close();
  } finally {
    await fake.close();
  }
});

test('uploads go out unmasked: the frame carries a zero mask key and the request bytes verbatim (no XOR pass on either side)', async () => {
  const raw: Buffer[] = [];
  const seen: { msg: Buffer | null } = { msg: null };
  const j = JSON.parse(infoJson) as Record<string, unknown>;
  const wss = new WebSocketServer({ noServer: true });
  const http: Server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(req.url === '/health' ? JSON.stringify({ ok: true, model_hash: j.hash }) : infoJson);
  });
  http.on('upgrade', (req, socket, head) => {
    // The tap sees the bytes as they came over TCP, before ws parses (and would unmask) them.
    socket.on('data', (c: Buffer) => raw.push(Buffer.from(c)));
    wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (d: Buffer) => { seen.msg = Buffer.from(d); ws.terminate(); }));
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  try {
    const s = await RemoteSession.connect({ url: `ws://127.0.0.1:${(http.address() as { port: number }).port}`, requestTimeoutMs: 2000, maxReconnects: 0 });
    const block = new Uint8Array(64 * 2048 * 5);
    for (let i = 0; i < block.length; i++) block[i] = (i * 131 + 7) & 255;
    await s.request({ masks: 'fresh', paramsId: 1, op: Op.Forward, layer: 0, group: 'o', cols: [64], tokens: 2, seed: new Uint8Array(16), blocks: [[block]] }).catch(() => {});
    await s.close();
    const got = seen.msg;
    assert.ok(got, 'the server received the request');
    const wire = Buffer.concat(raw);
    // Header of a client frame of > 64 KiB: FIN|opcode, MASK|127, 8-byte length, 4-byte mask key, payload.
    assert.equal(wire[0], 0x82);
    assert.equal(wire[1], 0x80 | 127, 'client frames still carry the mask bit (RFC 6455)');
    assert.equal(Number(wire.readBigUInt64BE(2)), got.length);
    assert.deepEqual([...wire.subarray(10, 14)], [0, 0, 0, 0]);
    assert.ok(wire.subarray(14, 14 + got.length).equals(got), 'the payload on the wire is the message itself');
  } finally {
    wss.close();
    await new Promise<void>((r) => { http.close(() => r()); http.closeAllConnections(); });
  }
});
