import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog, verifyAuditLog } from '../util/audit-log.js';
import { Op, ServerErrorCode } from '../protocol/wire.js';
import { ClientAudit, exchangeFields, folderDigest, matchLogs, verifyLog, type Exchange } from './audit.js';
import { RemoteSession } from './client.js';
import { ModelServer } from './model-server.js';
import { startServer } from './server.js';
import { removeDir, writeTinyModel } from './test-support.js';
import { tokenFingerprint } from './token.js';

const H = 'cd'.repeat(32);
const up = (i: number): string => createHash('sha256').update(`up ${i}`).digest('hex');
const down = (i: number): string => createHash('sha256').update(`down ${i}`).digest('hex');
function ex(i: number, over: Partial<Exchange> = {}): Exchange {
  return { direction: 'forward', layer: i % 2, group: 'qkv', tokens: 8, masks: 'table', requestId: BigInt(i), bytesUp: 1000 + i, bytesDown: 500 + i, upSha256: up(i), downSha256: down(i), ms: 1.5, ...over };
}

test('match: the same exchanges on both sides match; missing, extra, differing and re-computed ones are told apart', () => {
  const dir = mkdtempSync(join(tmpdir(), 'helora-audit-match-'));
  try {
    const cPath = join(dir, 'client.jsonl');
    const sPath = join(dir, 'server.jsonl');
    const c = AuditLog.open(cPath);
    c.append('run_start', { model_hash: H });
    for (const i of [1, 2, 3, 4]) c.append('request', exchangeFields(ex(i)));
    c.close();
    const s = AuditLog.open(sPath);
    s.append('server_start', { model_hash: H });
    s.append('request', { conn: 1, ...exchangeFields(ex(1, { ms: 9 })) }); // timing differs: not an exchange field
    s.append('request', { conn: 1, ...exchangeFields(ex(2, { bytesDown: 7 })) });
    s.append('request', { conn: 2, ...exchangeFields(ex(3)) });
    s.append('request', { conn: 2, ...exchangeFields(ex(3)) }); // computed again after a re-send
    s.append('request', { conn: 1, ...exchangeFields(ex(5)) }); // on this client's connection, not in its log
    s.append('request', { conn: 7, ...exchangeFields(ex(6)) }); // another client's connection
    s.close();

    const r = matchLogs(cPath, sPath);
    assert.equal(r.ok, false);
    assert.equal(r.matched, 2);
    assert.equal(r.repeats, 1);
    assert.deepEqual(r.onlyClient.map((x) => [x.line, x.up_sha256]), [[5, up(4)]]);
    assert.deepEqual(r.onlyServer.map((x) => [x.line, x.conn]), [[6, '0:1']]);
    assert.deepEqual(r.differing.map((d) => [d.client_line, d.server_line, d.fields.map((f) => f.field)]), [[3, 3, ['bytes_down']]]);
    assert.deepEqual(r.connections, ['0:1', '0:2']);
    assert.deepEqual(r.modelHashMismatch, []);

    // Consistent logs match; a different model on the server side does not.
    const c2 = join(dir, 'c2.jsonl');
    const l2 = AuditLog.open(c2);
    l2.append('run_start', { model_hash: H });
    l2.append('request', exchangeFields(ex(1)));
    l2.append('request', exchangeFields(ex(3)));
    l2.close();
    const s2 = join(dir, 's2.jsonl');
    const m2 = AuditLog.open(s2);
    m2.append('server_start', { model_hash: H });
    m2.append('request', { conn: 1, ...exchangeFields(ex(1)) });
    m2.append('request', { conn: 1, ...exchangeFields(ex(3)) });
    m2.append('request', { conn: 2, ...exchangeFields(ex(5)) });
    m2.close();
    const ok = matchLogs(c2, s2);
    assert.equal(ok.ok, true, JSON.stringify(ok));
    assert.equal(ok.matched, 2);
    const s3 = join(dir, 's3.jsonl');
    writeFileSync(s3, readFileSync(s2, 'utf8').replace(H, 'ef'.repeat(32)).split('\n').slice(0, 1).join('\n') + '\n');
    // (a rewritten first line on its own is a valid one-line chain)
    assert.deepEqual(matchLogs(c2, s3).modelHashMismatch, [H]);

    // A broken chain on either side is reported and not matched.
    const broken = join(dir, 'broken.jsonl');
    writeFileSync(broken, readFileSync(s2, 'utf8').replace('"conn":1', '"conn":3'));
    const b = matchLogs(c2, broken);
    assert.equal(b.ok, false);
    assert.equal(b.server.broken?.line, 3);
    assert.equal(b.matched, 0);

    const v = verifyLog(sPath);
    assert.equal(v.ok, true);
    assert.equal(v.summary.records, 7);
    assert.equal(v.summary.exchanges, 6);
    assert.equal(v.summary.bytesUp, [1, 2, 3, 3, 5, 6].reduce((t, i) => t + 1000 + i, 0));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('folderDigest is the SHA-256 of the sha256sum listing of the folder\'s files in byte order', () => {
  const dir = mkdtempSync(join(tmpdir(), 'helora-audit-digest-'));
  try {
    writeFileSync(join(dir, 'b.json'), '{"x":1}');
    writeFileSync(join(dir, 'B.bin'), Buffer.from([1, 2, 3]));
    mkdirSync(join(dir, 'sub'));
    const h = (b: string | Buffer): string => createHash('sha256').update(b).digest('hex');
    const listing = `${h(Buffer.from([1, 2, 3]))}  B.bin\n${h('{"x":1}')}  b.json\n`;
    const d = folderDigest(dir);
    assert.equal(d.sha256, h(listing));
    assert.deepEqual(Object.keys(d.files), ['B.bin', 'b.json']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a session and a server record the same frames: the hashes are of the exact bytes sent and received; an ERROR answer is a request_failed on the client only', async () => {
  const tiny = writeTinyModel();
  const model = await ModelServer.fromFolder(tiny.dir, { threads: 0, maxTokens: 64 });
  const serverLog = AuditLog.open(join(tiny.root, 'server.jsonl'));
  const token = '0123456789abcdef'.repeat(2);
  const server = await startServer({ model, audit: serverLog, token, log: () => {} });
  const clientAudit = new ClientAudit(AuditLog.open(join(tiny.root, 'client.jsonl')));
  const sent: string[] = [];
  try {
    const s = await RemoteSession.connect({
      url: server.url, token, onExchange: (e) => clientAudit.exchange(e), onFailedRequest: (e) => clientAudit.failedRequest(e),
      capture: (bytes, channel) => { if (channel === 'ws') sent.push(createHash('sha256').update(bytes).digest('hex')); },
    });
    const req = (layer: number) => s.request({ masks: 'fresh', paramsId: 1, op: Op.Forward, layer, group: 'o', cols: [64], tokens: 2, seed: new Uint8Array(16).fill(3), blocks: [[new Uint8Array(64 * 2048 * 5).fill(1)]] });
    const answer = await req(1);
    assert.equal(answer.layer, 1);
    await assert.rejects(req(7), /unknown layer 7/);
    await s.close();
  } finally {
    await server.close();
    await model.close();
    serverLog.close();
    clientAudit.close();
  }
  const c = verifyAuditLog(join(tiny.root, 'client.jsonl'));
  const sv = verifyAuditLog(join(tiny.root, 'server.jsonl'));
  assert.equal(c.broken, null);
  assert.equal(sv.broken, null);
  assert.deepEqual(c.records.map((r) => r.kind), ['request', 'request_failed']);
  assert.deepEqual(sv.records.slice(0, 3).map((r) => r.kind), ['server_start', 'connection_open', 'request']);
  assert.equal(sv.records.filter((r) => r.kind === 'request').length, 1, 'an ERROR answer is not a request record');
  const [ok, failed] = c.records;
  assert.deepEqual([ok.up_sha256, failed.up_sha256], sent, 'the client hashes exactly what it sent');
  assert.deepEqual([failed.reason, failed.code, failed.layer], ['error_answer', ServerErrorCode.BadRequest, 7]);
  const sr = sv.records[2];
  assert.equal(sv.records[1].token_id, tokenFingerprint(token));
  for (const f of ['up_sha256', 'down_sha256', 'bytes_up', 'bytes_down', 'request_id', 'layer', 'group', 'tokens', 'masks', 'direction']) assert.equal(sr[f], ok[f], f);
  assert.equal(sr.token_id, tokenFingerprint(token));
  const m = matchLogs(join(tiny.root, 'client.jsonl'), join(tiny.root, 'server.jsonl'));
  assert.equal(m.ok, true);
  assert.equal(m.matched, 1);
  removeDir(tiny.root);
});

test('match: a request the server answered and the client recorded as failed is told apart, not a difference', () => {
  const dir = mkdtempSync(join(tmpdir(), 'helora-audit-failed-'));
  try {
    const c = AuditLog.open(join(dir, 'c.jsonl'));
    c.append('request', exchangeFields(ex(1)));
    c.append('request_failed', { up_sha256: up(2), reason: 'no_valid_answer', code: null });
    c.close();
    const s = AuditLog.open(join(dir, 's.jsonl'));
    s.append('request', { conn: 1, ...exchangeFields(ex(1)) });
    s.append('request', { conn: 1, ...exchangeFields(ex(2)) });
    s.close();
    const r = matchLogs(join(dir, 'c.jsonl'), join(dir, 's.jsonl'));
    assert.equal(r.ok, true);
    assert.deepEqual(r.failedOnClient, [{ client_line: 2, server_line: 2, up_sha256: up(2) }]);
    assert.deepEqual(r.onlyServer, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
