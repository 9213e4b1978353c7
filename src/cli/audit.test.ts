// A real encrypted run over loopback with audit logs on both sides: they verify, match, hold no
// secret, survive a resume, and `helora audit` says so (and catches a tampered copy).

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TRAIN_DEFAULTS } from '../train/fine-tune.js';
import { verifyAuditLog, type AuditRecord } from '../util/audit-log.js';
import { matchLogs } from '../transport/audit.js';
import { tokenFingerprint } from '../transport/token.js';
import { writeTinyModelFolder } from './fixtures.js';
import { runTrain, type TrainOptions } from './train.js';

const MAIN = join(dirname(fileURLToPath(import.meta.url)), 'main.js');
const work = mkdtempSync(join(tmpdir(), 'helora-audit-e2e-'));
const children = new Set<ChildProcess>();
const modelDir = join(work, 'model');
const dataPath = join(work, 'data.jsonl');
before(() => {
  const pairs = writeTinyModelFolder(modelDir);
  writeFileSync(dataPath, pairs.slice(0, 60).map((p) => JSON.stringify(p)).join('\n') + '\n');
});
after(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

function startServe(args: string[]): Promise<{ proc: ChildProcess; url: string }> {
  const proc = spawn(process.execPath, [MAIN, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  proc.on('exit', () => children.delete(proc));
  return new Promise((resolve, reject) => {
    let buf = '';
    let err = '';
    proc.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const line = buf.split('\n').find((l) => l.includes('"listening"'));
      if (line) resolve({ proc, url: (JSON.parse(line) as { url: string }).url });
    });
    proc.on('exit', (code) => reject(new Error(`server exited with ${code}: ${err}`)));
  });
}

const sha256 = (b: string | Buffer): string => createHash('sha256').update(b).digest('hex');
/** The documented folder digest, recomputed here: SHA-256 of the sha256sum listing in byte order of the names. */
function listingDigest(dir: string): string {
  const names = readdirSync(dir).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  return sha256(names.map((n) => `${sha256(readFileSync(join(dir, n)))}  ${n}\n`).join(''));
}

test('an encrypted run writes client and server audit logs that verify, match and hold no secret; a resume continues the chain', async () => {
  const token = 'f3'.repeat(20);
  writeFileSync(join(work, 'token'), token + '\n');
  const serverLog = join(work, 'server-audit.jsonl');
  const srv = await startServe(['--model', modelDir, '--port', '0', '--threads', '1', '--token-file', join(work, 'token'), '--audit-log', serverLog]);

  const out = join(work, 'run');
  const opts = (over: Partial<TrainOptions>): TrainOptions => ({
    ...TRAIN_DEFAULTS, model: modelDir, data: dataPath, out, mode: 'encrypted', server: srv.url, token, steps: 3, batchTokens: 128, lr: 1e-2,
    dropout: 0.1, seed: 4, resume: false, checkpointEvery: 1, progress: false, say: () => {}, ...over,
  });
  // A run that stops after 2 of 3 steps (as a crash would, after its checkpoint), then --resume.
  const first = await runTrain(opts({ stopAfter: 2 }));
  assert.equal(first.adapterDir, null);
  const clientLog = join(out, 'audit.jsonl');
  assert.equal(first.auditLog, clientLog);
  const firstLines = verifyAuditLog(clientLog).records.length;
  const resumed = await runTrain(opts({ resume: true }));
  assert.equal(resumed.startStep, 2);
  assert.ok(resumed.adapterDir);

  const c = verifyAuditLog(clientLog);
  assert.equal(c.broken, null);
  assert.ok(c.records.length > firstLines);
  const kinds = (recs: AuditRecord[], k: string): AuditRecord[] => recs.filter((r) => r.kind === k);
  const starts = kinds(c.records, 'run_start');
  const ends = kinds(c.records, 'run_end');
  assert.deepEqual(starts.map((r) => r.start_step), [0, 2]);
  assert.deepEqual(ends.map((r) => [r.step, r.complete]), [[2, false], [3, true]]);
  for (const s of starts) {
    assert.equal(s.side, 'client');
    assert.equal(s.model_hash, resumed.modelHash);
    assert.equal(s.token_id, tokenFingerprint(token));
    assert.equal(s.wire_version, 3);
    assert.equal(typeof s.params_id, 'number');
    assert.ok(s.masks === 'table' || s.masks === 'fresh');
  }
  assert.deepEqual(kinds(c.records, 'checkpoint').map((r) => r.step), [1, 2, 3]);
  const ck3 = kinds(c.records, 'checkpoint')[2];
  assert.equal(ck3.sha256, listingDigest(join(out, 'checkpoints', 'step-00000003')));
  assert.equal(ends[1].adapter_sha256, listingDigest(resumed.adapterDir!));
  const reqs = kinds(c.records, 'request');
  assert.equal(reqs.length, first.remote!.requests + resumed.remote!.requests);
  assert.equal(ends[1].requests, resumed.remote!.requests);
  for (const r of reqs) {
    assert.match(String(r.up_sha256), /^[0-9a-f]{64}$/);
    assert.match(String(r.down_sha256), /^[0-9a-f]{64}$/);
    assert.ok(Number(r.bytes_up) > 0 && Number(r.bytes_down) > 0);
  }

  // Stop the server cleanly (its log ends with server_stop).
  srv.proc.kill('SIGTERM');
  await new Promise((r) => srv.proc.once('exit', r));
  const s = verifyAuditLog(serverLog);
  assert.equal(s.broken, null);
  assert.deepEqual([s.records[0].kind, s.records[s.records.length - 1].kind], ['server_start', 'server_stop']);
  assert.equal(s.records[0].token_id, tokenFingerprint(token));
  for (const r of kinds(s.records, 'request')) assert.equal(r.token_id, tokenFingerprint(token));

  const m = matchLogs(clientLog, serverLog);
  assert.equal(m.ok, true, JSON.stringify({ ...m, client: undefined, server: undefined }).slice(0, 2000));
  assert.equal(m.matched, reqs.length);
  assert.ok(m.connections.length >= 2, 'the resumed run came on a second connection');

  // No secret in either log: not the token, not a loss value, not a LoRA weight.
  const texts = [readFileSync(clientLog, 'utf8'), readFileSync(serverLog, 'utf8')];
  const losses = [...first.history, ...resumed.history].map((h) => h.loss);
  const weights = resumed.lora.parameters().flatMap((p) => [...p.value.subarray(0, 4)]).filter((v) => v !== 0);
  assert.ok(weights.length > 0);
  for (const t of texts) {
    assert.ok(!t.includes(token), 'the token');
    assert.ok(!/"loss"/.test(t), 'a loss field');
    for (const l of losses) assert.ok(!t.includes(String(l)), `the loss ${l}`);
    for (const w of weights) assert.ok(!t.includes(String(w)), `the LoRA value ${w}`);
  }

  // The CLI: verify and match pass (exit 0, JSON), and a tampered copy fails with its line number.
  const cli = (...args: string[]) => spawnSync(process.execPath, [MAIN, 'audit', ...args], { encoding: 'utf8', timeout: 60_000 });
  let r = cli('verify', clientLog, '--json');
  assert.equal(r.status, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as { summary: { exchanges: number } }).summary.exchanges, reqs.length);
  r = cli('match', clientLog, serverLog);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, new RegExp(`^MATCH: ${reqs.length} exchanges`));
  const lines = readFileSync(clientLog, 'utf8').split('\n');
  const k = lines.findIndex((l) => l.includes('"kind":"request"'));
  lines[k] = lines[k].replace(/"bytes_up":(\d+)/, (_, n: string) => `"bytes_up":${Number(n) + 1}`);
  const tampered = join(work, 'tampered.jsonl');
  writeFileSync(tampered, lines.join('\n'));
  r = cli('verify', tampered);
  assert.equal(r.status, 1);
  assert.match(r.stdout, new RegExp(`BROKEN at line ${k + 2}: wrong_prev`));
  r = cli('match', tampered, serverLog, '--json');
  assert.equal(r.status, 1);
  assert.equal((JSON.parse(r.stdout) as { client: { broken: { line: number } } }).client.broken.line, k + 2);
});

test('a broken audit log is never appended to: train and serve refuse to start; --audit-log is for encrypted mode only', async () => {
  const broken = join(work, 'broken.jsonl');
  writeFileSync(broken, '{"seq":1,"prev":"' + '0'.repeat(64) + '","time":"t","kind":"run_start"}\n{"seq":2,"pr');
  const before = readFileSync(broken, 'utf8');
  const base: TrainOptions = {
    ...TRAIN_DEFAULTS, model: modelDir, data: dataPath, out: join(work, 'refused'), mode: 'encrypted', server: 'ws://127.0.0.1:9', steps: 1, batchTokens: 128,
    seed: 1, resume: false, checkpointEvery: 1, progress: false, say: () => {}, auditLog: broken,
  };
  // Refused before the server is contacted (nothing listens at port 9: a connection attempt would fail differently).
  await assert.rejects(runTrain(base), /audit log .*broken at line 2 \(torn_last_line/);
  await assert.rejects(runTrain({ ...base, mode: 'quantized', server: undefined }), /--audit-log .*encrypted mode only/);
  const r = spawnSync(process.execPath, [MAIN, 'serve', '--model', modelDir, '--port', '0', '--audit-log', broken], { encoding: 'utf8', timeout: 60_000 });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /broken at line 2 \(torn_last_line/);
  assert.equal(readFileSync(broken, 'utf8'), before, 'the broken log is left as it was');
});
