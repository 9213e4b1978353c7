import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog, GENESIS, MAX_AUDIT_LINE_BYTES, verifyAuditLog } from './audit-log.js';

function withDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'helora-audit-'));
  try { fn(dir); } finally { rmSync(dir, { recursive: true, force: true }); }
}

/** A log of n records (kind 'r', field i). */
function writeLog(path: string, n: number): void {
  const log = AuditLog.open(path);
  for (let i = 1; i <= n; i++) log.append('r', { i, text: `record ${i}` });
  log.close();
}

const lines = (path: string): string[] => readFileSync(path, 'utf8').split('\n').slice(0, -1);
const writeLines = (path: string, ls: string[]): void => writeFileSync(path, ls.map((l) => l + '\n').join(''));

test('a log chains every line to the SHA-256 of the previous one, from the genesis value, seq = line number', () => withDir((dir) => {
  const p = join(dir, 'a.jsonl');
  writeLog(p, 5);
  const ls = lines(p);
  assert.equal(ls.length, 5);
  // Rebuilt here from the documented format, independently of the reader.
  let prev = GENESIS;
  ls.forEach((l, i) => {
    const o = JSON.parse(l) as Record<string, unknown>;
    assert.deepEqual(Object.keys(o).slice(0, 4), ['seq', 'prev', 'time', 'kind']);
    assert.equal(o.seq, i + 1);
    assert.equal(o.prev, prev);
    assert.equal(o.i, i + 1);
    prev = createHash('sha256').update(l, 'utf8').digest('hex');
  });
  const v = verifyAuditLog(p);
  assert.equal(v.broken, null);
  assert.equal(v.records.length, 5);
  assert.equal(v.lastSeq, 5);
  assert.equal(v.lastHash, prev);
  assert.equal(statSync(p).mode & 0o777, 0o600);
}));

test('reopening continues the chain (a resumed run); the reserved fields cannot be overridden', () => withDir((dir) => {
  const p = join(dir, 'a.jsonl');
  writeLog(p, 3);
  const log = AuditLog.open(p);
  assert.equal(log.lastSeq, 3);
  log.append('r', { seq: 99, prev: 'x', kind: 'forged', i: 4 });
  log.close();
  const v = verifyAuditLog(p);
  assert.equal(v.broken, null);
  assert.equal(v.records.length, 4);
  assert.deepEqual([v.records[3].seq, v.records[3].kind, v.records[3].i], [4, 'r', 4]);
}));

test('a changed line is caught at the next line (its prev no longer matches)', () => withDir((dir) => {
  const p = join(dir, 'a.jsonl');
  writeLog(p, 6);
  const ls = lines(p);
  ls[2] = ls[2].replace('"i":3', '"i":33');
  writeLines(p, ls);
  const v = verifyAuditLog(p);
  assert.deepEqual([v.broken?.line, v.broken?.reason], [4, 'wrong_prev']);
  assert.match(v.broken!.detail, /line 3/);
  assert.equal(v.records.length, 3);
}));

test('a deleted line is caught where it was (seq gap)', () => withDir((dir) => {
  const p = join(dir, 'a.jsonl');
  writeLog(p, 6);
  const ls = lines(p);
  ls.splice(3, 1); // line 4
  writeLines(p, ls);
  const v = verifyAuditLog(p);
  assert.deepEqual([v.broken?.line, v.broken?.reason], [4, 'seq_gap']);
}));

test('reordered lines are caught at the first one out of place', () => withDir((dir) => {
  const p = join(dir, 'a.jsonl');
  writeLog(p, 6);
  const ls = lines(p);
  [ls[1], ls[2]] = [ls[2], ls[1]]; // lines 2 and 3 swapped
  writeLines(p, ls);
  const v = verifyAuditLog(p);
  assert.deepEqual([v.broken?.line, v.broken?.reason], [2, 'seq_gap']);
  // Renumbering the seq after a swap does not help: the prev hashes give it away.
  const o2 = JSON.parse(ls[1]) as Record<string, unknown>;
  const o3 = JSON.parse(ls[2]) as Record<string, unknown>;
  ls[1] = JSON.stringify({ ...o2, seq: 2 });
  ls[2] = JSON.stringify({ ...o3, seq: 3 });
  writeLines(p, ls);
  const w = verifyAuditLog(p);
  assert.deepEqual([w.broken?.line, w.broken?.reason], [2, 'wrong_prev']);
}));

test('a truncated log (torn last line) is reported as such, and nothing is appended after it', () => withDir((dir) => {
  const p = join(dir, 'a.jsonl');
  writeLog(p, 4);
  const text = readFileSync(p, 'utf8');
  writeFileSync(p, text.slice(0, text.length - 10)); // cut inside line 4
  const v = verifyAuditLog(p);
  assert.deepEqual([v.broken?.line, v.broken?.reason], [4, 'torn_last_line']);
  assert.equal(v.records.length, 3);
  assert.throws(() => AuditLog.open(p), /broken at line 4 \(torn_last_line/);
  assert.equal(readFileSync(p, 'utf8'), text.slice(0, text.length - 10), 'the broken file is left as it was');
  // Even a whole JSON line without its line feed is the remains of an interrupted write.
  writeFileSync(p, text.slice(0, text.length - 1));
  assert.equal(verifyAuditLog(p).broken?.reason, 'torn_last_line');
}));

test('garbage, non-objects, missing fields and over-long lines are reported with their line number', () => withDir((dir) => {
  const p = join(dir, 'a.jsonl');
  writeLog(p, 2);
  appendFileSync(p, 'not json\n');
  assert.deepEqual([verifyAuditLog(p).broken?.line, verifyAuditLog(p).broken?.reason], [3, 'bad_json']);
  writeLog(join(dir, 'b.jsonl'), 2);
  appendFileSync(join(dir, 'b.jsonl'), '[1,2]\n');
  assert.deepEqual([verifyAuditLog(join(dir, 'b.jsonl')).broken?.line, verifyAuditLog(join(dir, 'b.jsonl')).broken?.reason], [3, 'bad_record']);
  writeFileSync(join(dir, 'c.jsonl'), JSON.stringify({ seq: 1, prev: GENESIS, kind: 'r' }) + '\n');
  assert.equal(verifyAuditLog(join(dir, 'c.jsonl')).broken?.reason, 'bad_record');
  writeFileSync(join(dir, 'd.jsonl'), 'x'.repeat(MAX_AUDIT_LINE_BYTES + 10) + '\n');
  assert.deepEqual([verifyAuditLog(join(dir, 'd.jsonl')).broken?.line, verifyAuditLog(join(dir, 'd.jsonl')).broken?.reason], [1, 'line_too_long']);
  // The first line must start from the genesis value.
  writeFileSync(join(dir, 'e.jsonl'), JSON.stringify({ seq: 1, prev: 'ab'.repeat(32), time: 't', kind: 'r' }) + '\n');
  assert.equal(verifyAuditLog(join(dir, 'e.jsonl')).broken?.reason, 'wrong_prev');
  // An empty file is an empty, valid log.
  writeFileSync(join(dir, 'f.jsonl'), '');
  assert.deepEqual([verifyAuditLog(join(dir, 'f.jsonl')).broken, verifyAuditLog(join(dir, 'f.jsonl')).lastHash], [null, GENESIS]);
}));

test('lines are read across chunk boundaries exactly (records larger than the read buffer)', () => withDir((dir) => {
  const p = join(dir, 'a.jsonl');
  const log = AuditLog.open(p);
  for (let i = 0; i < 5; i++) log.append('big', { pad: 'é'.repeat(40_000 + i * 7) }, i === 4);
  log.close();
  const v = verifyAuditLog(p);
  assert.equal(v.broken, null);
  assert.equal(v.records.length, 5);
}));

test('a log is never opened through a symlink', () => withDir((dir) => {
  writeFileSync(join(dir, 'target'), '');
  symlinkSync(join(dir, 'target'), join(dir, 'link.jsonl'));
  assert.throws(() => AuditLog.open(join(dir, 'link.jsonl')), /ELOOP|symbolic/);
  assert.equal(readFileSync(join(dir, 'target'), 'utf8'), '');
}));
