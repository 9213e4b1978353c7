import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { HeLinearClient } from '../linear/client.js';
import {
  decodeMessage, encodeEncryptedInput, encodeEncryptedOutput, MessageType, Op, ServerErrorCode, type DecodedMessage, type EncryptedInputMessage,
} from '../protocol/wire.js';
import { RemoteEncryptedProvider, RemoteSession } from './client.js';
import { ModelServer } from './model-server.js';
import { startServer, type LogEvent, type RunningServer } from './server.js';
import { httpGet, removeDir, writeTinyModel } from './test-support.js';
import type { ProjectionGroup } from '../model/projections.js';

const TOKEN = 'test-token-7f3a9c-5b1e08d2c4a6'; // 29 base64url characters: 174 bits counted
const he = new HeLinearClient();
let root = '';
let model: ModelServer;
let srv: RunningServer;
const logs: LogEvent[] = [];

before(async () => {
  const tiny = writeTinyModel();
  root = tiny.root;
  model = await ModelServer.fromFolder(tiny.dir, { threads: 0, maxTokens: 64 });
  srv = await startServer({ model, token: TOKEN, rateLimit: { perSecond: 1000, burst: 1000 }, log: (e) => logs.push(e) });
});
after(async () => {
  await srv.close();
  await model.close();
  removeDir(root);
});

/** A well-formed ENCRYPTED_INPUT for a forward product of (layer, group) with C input features. */
function forwardRequest(layer: number, group: ProjectionGroup, C: number, T = 3, requestId = 1n): EncryptedInputMessage {
  const x = new Int8Array(T * C).map((_, i) => (i % 17) - 8);
  const r = he.encryptIntegersReference(x, T, [C]);
  return { masks: 'fresh', paramsId: 1, requestId, op: Op.Forward, layer, group, cols: [C], tokens: T, seed: r.seed, blocks: r.blocks.map((b) => [b]) };
}

class RawClient {
  private queue: DecodedMessage[] = [];
  private waiters: ((m: DecodedMessage) => void)[] = [];
  closed: Promise<number>;
  constructor(readonly ws: WebSocket) {
    ws.on('message', (d: Buffer) => {
      const m = decodeMessage(new Uint8Array(d));
      const w = this.waiters.shift();
      if (w) w(m); else this.queue.push(m);
    });
    this.closed = new Promise((r) => ws.on('close', (code) => r(code)));
  }
  static open(token: string | null = TOKEN): Promise<RawClient> {
    const ws = new WebSocket(`${srv.url}/v1/ws`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new RawClient(ws)));
      ws.once('unexpected-response', (_q, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode })));
      ws.once('error', reject);
    });
  }
  next(): Promise<DecodedMessage> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    return new Promise((r) => this.waiters.push(r));
  }
  async ask(bytes: Uint8Array | string): Promise<DecodedMessage> {
    this.ws.send(bytes);
    return this.next();
  }
}

async function expectError(c: RawClient, bytes: Uint8Array, code: number, msg: RegExp): Promise<void> {
  const m = await c.ask(bytes);
  assert.equal(m.type, MessageType.Error, `expected an ERROR answer, got type ${m.type}`);
  if (m.type !== MessageType.Error) return;
  assert.equal(m.message.code, code, m.message.message);
  assert.match(m.message.message, msg);
}

async function expectOutput(c: RawClient, req: EncryptedInputMessage): Promise<void> {
  const m = await c.ask(encodeEncryptedInput(req));
  assert.equal(m.type, MessageType.EncryptedOutput, m.type === MessageType.Error ? m.message.message : '');
  if (m.type !== MessageType.EncryptedOutput) return;
  assert.equal(m.message.requestId, req.requestId);
  assert.equal(m.message.layer, req.layer);
  assert.equal(m.message.tokens, req.tokens);
}

test('malformed, mis-shaped and oversized requests get clear ERROR answers and the connection keeps serving', async () => {
  const c = await RawClient.open();
  const good = forwardRequest(0, 'qkv', 64);
  await expectOutput(c, good);
  const goodBytes = encodeEncryptedInput(good);

  await expectError(c, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]), ServerErrorCode.Malformed, /truncated|ends inside|magic/);
  await expectError(c, new Uint8Array(200).fill(0x41), ServerErrorCode.Malformed, /bad magic/);
  await expectError(c, goodBytes.subarray(0, goodBytes.length - 7), ServerErrorCode.Malformed, /payload needs/);
  const wrongParams = goodBytes.slice(); wrongParams[7] = 9;
  await expectError(c, wrongParams, ServerErrorCode.UnknownParams, /unknown parameter set id 9/);
  const wrongVersion = goodBytes.slice(); wrongVersion[4] = 1; // an old client
  await expectError(c, wrongVersion, ServerErrorCode.UnsupportedVersion, /unsupported version 1, expected 3/);
  // shapes that the wire format allows but this model does not
  await expectError(c, encodeEncryptedInput(forwardRequest(0, 'qkv', 32, 3, 5n)), ServerErrorCode.BadRequest, /needs input parts of \[64\] features, got \[32\]/);
  await expectError(c, encodeEncryptedInput(forwardRequest(0, 'down', 64, 3, 6n)), ServerErrorCode.BadRequest, /\[128\] features/);
  await expectError(c, encodeEncryptedInput(forwardRequest(7, 'o', 64, 3, 7n)), ServerErrorCode.BadRequest, /unknown layer 7: this model has layers 0\.\.1/);
  // over the server's token limit (64): refused by the decoder limits, before any work
  await expectError(c, encodeEncryptedInput(forwardRequest(0, 'o', 64, 65, 8n)), ServerErrorCode.TooLarge, /tokens = 65 exceeds the limit of 64/);
  // a client must not send outputs
  const out = encodeEncryptedOutput({ masks: 'fresh', paramsId: 1, requestId: 9n, op: Op.Backward, layer: 0, group: 'o', rows: [1], tokens: 1, terms: 1, blocks: [[{ a: new Uint32Array(2048), b: new Uint32Array(2048) }]] });
  await expectError(c, out, ServerErrorCode.Malformed, /may only send ENCRYPTED_INPUT/);
  // the error answers carry the request id when the header was readable
  const m = await c.ask(encodeEncryptedInput(forwardRequest(3, 'o', 64, 3, 4242n)));
  assert.equal(m.type === MessageType.Error && m.message.requestId, 4242n);
  // still serving on the same connection
  await expectOutput(c, { ...forwardRequest(1, 'gate_up', 64, 5, 77n) });

  // A frame over the WebSocket limit is a protocol violation: the connection is closed (1009) ...
  c.ws.send(new Uint8Array(srv.maxPayload + 1));
  assert.equal(await c.closed, 1009);
  // ... and the server serves a new connection
  const c2 = await RawClient.open();
  await expectOutput(c2, forwardRequest(1, 'o', 64, 2, 78n));
  // text frames are a protocol violation too
  c2.ws.send('hello');
  assert.equal(await c2.closed, 1003);
  // no log line carries payload bytes
  for (const e of logs) assert.ok(JSON.stringify(e).length < 600, JSON.stringify(e).slice(0, 200));
  assert.ok(logs.some((e) => e.event === 'request_error' && e.code === ServerErrorCode.BadRequest && e.layer === 7));
});

test('without the right bearer token: HTTP 401 on the WebSocket upgrade and on model info; /health stays public (ok and model hash only)', async () => {
  for (const token of [null, 'wrong-token', TOKEN + 'x', '']) {
    await assert.rejects(RawClient.open(token), (e: Error & { status?: number }) => e.status === 401);
    assert.equal((await httpGet(srv.url, '/v1/model-info', token)).status, 401);
  }
  await assert.rejects(RemoteSession.connect({ url: srv.url, token: 'nope' }), /HTTP 401: helora: missing or wrong bearer token/);
  const info = await httpGet(srv.url, '/v1/model-info', TOKEN);
  assert.equal(info.status, 200);
  assert.equal(JSON.parse(info.body).hash, model.hash);
  const health = await httpGet(srv.url, '/health', null);
  assert.equal(health.status, 200);
  assert.deepEqual(JSON.parse(health.body), { ok: true, model_hash: model.hash });
  const h = JSON.parse((await httpGet(srv.url, '/health', TOKEN)).body);
  assert.equal(h.model_hash, model.hash);
  assert.equal(typeof h.uptime_s, 'number');
  assert.equal(typeof h.connections, 'number');
  assert.equal((await httpGet(srv.url, '/nothing', TOKEN)).status, 404);
  const p = await RemoteEncryptedProvider.connect({ url: srv.url, token: TOKEN });
  const ys = await p.forward(0, 'o', new Float32Array(2 * 64).fill(0.5), 2);
  assert.equal(ys[0].length, 2 * 64);
  await p.close();
});

test('rate limit per connection answers RateLimited, and the connection limit refuses with 503', async () => {
  const limited = await startServer({ model, rateLimit: { perSecond: 2, burst: 3 }, maxConnections: 1, maxInFlightPerConnection: 8, log: () => {} });
  try {
    const ws = new WebSocket(`${limited.url}/v1/ws`);
    await new Promise((r) => ws.once('open', r));
    const c = new RawClient(ws);
    // Second connection over the limit of 1.
    const second = new WebSocket(`${limited.url}/v1/ws`);
    const status = await new Promise<number>((resolve) => {
      second.once('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0));
      second.once('open', () => resolve(101));
      second.once('error', () => resolve(-1));
    });
    assert.equal(status, 503);
    const req = encodeEncryptedInput(forwardRequest(0, 'o', 64, 1, 1n));
    for (let i = 0; i < 8; i++) ws.send(req);
    const answers: DecodedMessage[] = [];
    for (let i = 0; i < 8; i++) answers.push(await c.next());
    const ok = answers.filter((a) => a.type === MessageType.EncryptedOutput).length;
    const limitedAnswers = answers.filter((a) => a.type === MessageType.Error && a.message.code === ServerErrorCode.RateLimited);
    assert.ok(ok >= 3 && ok <= 4, `${ok} answered`);
    assert.equal(ok + limitedAnswers.length, 8);
    const e = limitedAnswers[0];
    assert.ok(e.type === MessageType.Error && /rate limit exceeded \(2 requests\/s, burst 3/.test(e.message.message));
    ws.close();
    await c.closed;
  } finally {
    await limited.close();
  }
});

test('a rate-limited RemoteSession retries after a pause and completes', async () => {
  const limited = await startServer({ model, rateLimit: { perSecond: 5, burst: 1 }, log: () => {} });
  try {
    const p = await RemoteEncryptedProvider.connect({ url: limited.url, initialBackoffMs: 50, maxBackoffMs: 200 });
    const x = new Float32Array(64).fill(0.25);
    const res = await Promise.all([0, 1, 0, 1].map((l) => p.forward(l, 'o', x, 1)));
    assert.equal(res.length, 4);
    await p.close();
  } finally {
    await limited.close();
  }
});

// Self-signed test certificate for 127.0.0.1 (EC P-256, valid until 2126), for the TLS test only.
const TEST_CERT = `-----BEGIN CERTIFICATE-----
MIIBkDCCATagAwIBAgIUNE+mmpBUt9glLaVdwj8dNn0OUqcwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJMTI3LjAuMC4xMCAXDTI2MTEyNjA4MzAyNFoYDzIxMjYxMTAy
MDgzMDI0WjAUMRIwEAYDVQQDDAkxMjcuMC4wLjEwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAARt4tTVnfU9o+XBHs9okSqTWUJRHbytn8DPvTSx397oajKO3dZO58ES
nVSHmmQI48JGZzOh1wX/a8KKtbqozRXto2QwYjAdBgNVHQ4EFgQUAG8lVx2xMTnm
2qridvPctUTOxZwwHwYDVR0jBBgwFoAUAG8lVx2xMTnm2qridvPctUTOxZwwDwYD
VR0TAQH/BAUwAwEB/zAPBgNVHREECDAGhwR/AAABMAoGCCqGSM49BAMCA0gAMEUC
IQCL6176fKynM15ECsdbB5PtO7BMxnE3VEIMKWT606xYsQIgcWJe+ZFEtv3fBlXD
XimLURrlFCKhq+a9K3vAr0VUW0M=
-----END CERTIFICATE-----
`;
const TEST_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg2plnEZDuxAtcH7jA
hpw5KzTNiQxOoIWaeJ7P075MrV+hRANCAARt4tTVnfU9o+XBHs9okSqTWUJRHbyt
n8DPvTSx397oajKO3dZO58ESnVSHmmQI48JGZzOh1wX/a8KKtbqozRXt
-----END PRIVATE KEY-----
`;

test('TLS: wss:// with the certificate trusted works; an untrusted certificate is refused', async () => {
  const tls = await startServer({ model, token: TOKEN, tls: { cert: TEST_CERT, key: TEST_KEY }, log: () => {} });
  try {
    assert.match(tls.url, /^wss:\/\/127\.0\.0\.1:\d+$/);
    const p = await RemoteEncryptedProvider.connect({ url: tls.url, token: TOKEN, ca: TEST_CERT });
    const dx = await p.backward(1, 'qkv', [new Float32Array(2 * 64).fill(0.1), new Float32Array(2 * 32).fill(-0.1), new Float32Array(2 * 32).fill(0.2)], 2);
    assert.equal(dx.length, 2 * 64);
    await p.close();
    await assert.rejects(RemoteSession.connect({ url: tls.url, token: TOKEN }), /self[- ]signed|certificate/i);
  } finally {
    await tls.close();
  }
});
