// A hash-chained, append-only JSON Lines log (the audit logs of `helora train` and `helora serve`).
//
// Format (docs/PROTOCOL.md section 11 is the reference an auditor can write a verifier from):
//   - UTF-8 text, one JSON object per line, each line ended by a single LF (0x0a).
//   - Every object starts with "seq" (1 on the first line, +1 per line: it equals the line number)
//     and "prev": the SHA-256 (lowercase hex) of the previous line's bytes exactly as stored,
//     without its LF; the first line's prev is GENESIS (64 zeros). Then "time" (ISO 8601 UTC) and
//     "kind" (a string), then the record's own fields.
//   So changing, deleting, inserting or reordering a line breaks the chain at the first line after
//   the change (or at the change itself, by seq). Cutting whole lines off the end is not detectable
//   from the file alone: an auditor compares the last seq/hash with a copy (or the other side's log).
//
// Durability: each line goes out in one write() of the whole line (with its LF) on a file opened
// for appending, so a crash of the process never leaves half a line; fsync follows every
// `milestone` record and at most `syncEveryMs` after any other, and on close. A power cut can thus
// lose the records of the last syncEveryMs and may leave a torn last line; verify reports one as
// such ("torn last line").
//
// Reopening an existing log continues its chain (a resumed training run). A log whose chain is
// broken, torn last line included, is never appended to: open() throws, and the user moves the
// damaged file aside (kept as evidence) and starts a new log.

import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, fsyncSync, mkdirSync, openSync, readSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

export const GENESIS = '0'.repeat(64);
/** A line longer than this is reported as broken (and never buffered whole by the reader). */
export const MAX_AUDIT_LINE_BYTES = 1 << 20;
/** Default: fsync at most this long after a non-milestone record. */
export const DEFAULT_SYNC_EVERY_MS = 1000;

export type AuditValue = string | number | boolean | null | AuditValue[] | { [k: string]: AuditValue };
export type AuditFields = Record<string, AuditValue>;

/** A line of a log as read back. */
export interface AuditRecord {
  seq: number;
  prev: string;
  time: string;
  kind: string;
  [field: string]: AuditValue;
}

export type BreakReason = 'bad_json' | 'bad_record' | 'seq_gap' | 'wrong_prev' | 'torn_last_line' | 'line_too_long';

export interface ChainBreak {
  /** 1-based line number of the first bad line. */
  line: number;
  reason: BreakReason;
  detail: string;
}

export interface VerifyResult {
  /** Lines whose chain holds (all of them when ok). */
  records: AuditRecord[];
  /** seq and SHA-256 (hex, without the LF) of the last good line; seq 0 and GENESIS for an empty log. */
  lastSeq: number;
  lastHash: string;
  broken: ChainBreak | null;
}

export function sha256Hex(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The lines of a file as exact bytes (without LF), read in chunks; the last one says whether it was LF-terminated. */
function* fileLines(path: string): Generator<{ bytes: Buffer; terminated: boolean; tooLong: boolean }> {
  const fd = openSync(path, 'r');
  try {
    const chunk = Buffer.alloc(1 << 16);
    let parts: Buffer[] = [];
    let partLen = 0;
    let tooLong = false;
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      let start = 0;
      for (;;) {
        const nl = chunk.indexOf(0x0a, start);
        const end = nl < 0 || nl >= n ? n : nl;
        const piece = chunk.subarray(start, end);
        if (!tooLong) {
          if (partLen + piece.length > MAX_AUDIT_LINE_BYTES) { tooLong = true; parts = []; } else { parts.push(Buffer.from(piece)); partLen += piece.length; }
        }
        if (end === n) break;
        yield { bytes: Buffer.concat(parts), terminated: true, tooLong };
        parts = [];
        partLen = 0;
        tooLong = false;
        start = end + 1;
      }
    }
    if (partLen > 0 || tooLong) yield { bytes: Buffer.concat(parts), terminated: false, tooLong };
  } finally {
    closeSync(fd);
  }
}

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * Checks a log's chain line by line and stops at the first broken line. With onRecord the good
 * records are handed over one by one instead of being kept (a large server log).
 */
export function verifyAuditLog(path: string, onRecord?: (r: AuditRecord) => void): VerifyResult {
  const records: AuditRecord[] = [];
  let lastSeq = 0;
  let lastHash = GENESIS;
  let line = 0;
  const fail = (reason: BreakReason, detail: string): VerifyResult => ({ records, lastSeq, lastHash, broken: { line, reason, detail } });
  for (const l of fileLines(path)) {
    line++;
    if (l.tooLong) return fail('line_too_long', `longer than ${MAX_AUDIT_LINE_BYTES} bytes`);
    // Written in one write with its LF: a line without one is the remains of an interrupted write.
    if (!l.terminated) return fail('torn_last_line', `the last line (${l.bytes.length} bytes) has no line feed: an interrupted write`);
    let r: unknown;
    try {
      r = JSON.parse(l.bytes.toString('utf8'));
    } catch (e) {
      return fail('bad_json', (e as Error).message);
    }
    if (typeof r !== 'object' || r === null || Array.isArray(r)) return fail('bad_record', 'not a JSON object');
    const o = r as Record<string, unknown>;
    if (typeof o.seq !== 'number' || !Number.isSafeInteger(o.seq)) return fail('bad_record', 'no integer "seq"');
    if (typeof o.prev !== 'string' || !HEX64.test(o.prev)) return fail('bad_record', 'no "prev" of 64 lowercase hex digits');
    if (typeof o.kind !== 'string' || typeof o.time !== 'string') return fail('bad_record', 'no string "kind" and "time"');
    if (o.seq !== lastSeq + 1) return fail('seq_gap', `seq ${o.seq} follows seq ${lastSeq} (expected ${lastSeq + 1})`);
    if (o.prev !== lastHash) return fail('wrong_prev', `prev ${o.prev.slice(0, 16)}... is not the SHA-256 of line ${line - 1} (${lastHash.slice(0, 16)}...)`);
    lastSeq = o.seq;
    lastHash = sha256Hex(l.bytes);
    const rec = o as AuditRecord;
    if (onRecord) onRecord(rec); else records.push(rec);
  }
  return { records, lastSeq, lastHash, broken: null };
}

export interface AuditLogOptions {
  /** fsync at most this long after a non-milestone record (default 1 s; 0: after every record). */
  syncEveryMs?: number;
  /** Clock (tests). */
  now?: () => Date;
}

/** An open audit log: appends chained lines. One writer per file (the chain cannot be shared). */
export class AuditLog {
  private fd: number | null;
  private lastSync = Date.now();
  private dirty = false;
  /** Lines appended through this object. */
  appended = 0;

  private constructor(readonly path: string, fd: number, private seq: number, private prev: string, private readonly o: AuditLogOptions) {
    this.fd = fd;
  }

  /**
   * Opens (creating, mode 0600) the log at `path` and continues its chain; throws when the existing
   * file's chain is broken (see the header comment).
   */
  static open(path: string, o: AuditLogOptions = {}): AuditLog {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    // Never through a symlink (a planted link would send the records elsewhere), only into a regular file.
    const fd = openSync(path, constants.O_RDWR | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    try {
      if (!fstatSync(fd).isFile()) throw new Error(`helora: the audit log ${path} is not a regular file`);
      let seq = 0;
      let prev = GENESIS;
      if (fstatSync(fd).size > 0) {
        const v = verifyAuditLog(path, () => {});
        if (v.broken) {
          throw new Error(`helora: the audit log ${path} is broken at line ${v.broken.line} (${v.broken.reason}: ${v.broken.detail}); `
            + 'nothing is appended to a broken chain: move the file aside (keep it as evidence) and start a new log');
        }
        seq = v.lastSeq;
        prev = v.lastHash;
      }
      return new AuditLog(path, fd, seq, prev, o);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Appends one record; `milestone` records are fsync'd at once. Returns the line's seq. */
  append(kind: string, fields: AuditFields = {}, milestone = false): number {
    if (this.fd === null) throw new Error(`helora: the audit log ${this.path} is closed`);
    const seq = this.seq + 1;
    const time = (this.o.now?.() ?? new Date()).toISOString();
    const { seq: _s, prev: _p, time: _t, kind: _k, ...own } = fields;
    const text = JSON.stringify({ seq, prev: this.prev, time, kind, ...own });
    const bytes = Buffer.from(text, 'utf8');
    if (bytes.length > MAX_AUDIT_LINE_BYTES) throw new Error(`helora: an audit record of ${bytes.length} bytes exceeds ${MAX_AUDIT_LINE_BYTES}`);
    const line = Buffer.concat([bytes, Buffer.from('\n')]);
    let off = 0;
    while (off < line.length) off += writeSync(this.fd, line, off, line.length - off);
    this.seq = seq;
    this.prev = sha256Hex(bytes);
    this.appended++;
    this.dirty = true;
    const every = this.o.syncEveryMs ?? DEFAULT_SYNC_EVERY_MS;
    if (milestone || Date.now() - this.lastSync >= every) this.sync();
    return seq;
  }

  /** fsync what was appended. */
  sync(): void {
    if (this.fd === null || !this.dirty) return;
    fsyncSync(this.fd);
    this.dirty = false;
    this.lastSync = Date.now();
  }

  get lastSeq(): number {
    return this.seq;
  }

  close(): void {
    if (this.fd === null) return;
    this.sync();
    closeSync(this.fd);
    this.fd = null;
  }
}
