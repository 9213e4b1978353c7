// The audit records of both sides (util/audit-log.ts is the chained file they go into), and the
// checks `helora audit verify` and `helora audit match` run on them.
//
// Both sides write one `request` record per answered exchange with the same fields: direction,
// layer, group, tokens, masks, request_id, bytes_up / bytes_down (the sizes of the request and the
// answer frame) and up_sha256 / down_sha256, the SHA-256 of exactly those WebSocket payload bytes
// (what the client's ws.send() got and what the server's ws.send() got), so the two logs can be
// matched record by record. Nothing secret is written: no key, no payload, no token (only its
// fingerprint, token.ts), no loss (a client's log can be handed to an auditor or to the vendor).

import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { MaskMode } from '../linear/types.js';
import type { ProjectionGroup } from '../model/projections.js';
import { WIRE_VERSION } from '../protocol/wire.js';
import { sha256Hex, verifyAuditLog, type AuditFields, type AuditLog, type AuditRecord, type ChainBreak } from '../util/audit-log.js';

/** Version of the record kinds and fields below (in every start record). */
export const AUDIT_FORMAT = 'helora-audit-v1';

/** One answered exchange, as either side saw it. */
export interface Exchange {
  direction: 'forward' | 'backward';
  layer: number;
  group: ProjectionGroup;
  tokens: number;
  masks: MaskMode;
  requestId: bigint;
  bytesUp: number;
  bytesDown: number;
  upSha256: string;
  downSha256: string;
  /** Client: from the (last) sending to the answer; server: compute time. */
  ms: number;
}

/** A request that was sent and failed without an accepted answer (client side). */
export interface FailedRequest extends Omit<Exchange, 'bytesDown' | 'downSha256' | 'ms'> {
  /** error_answer: the server answered ERROR (code); no_valid_answer: none in time, or one the client refused, or the session closed. */
  reason: 'error_answer' | 'no_valid_answer';
  code: number | null;
}

/** The fields every `request` record carries on both sides (compared by `audit match`). */
export const EXCHANGE_FIELDS = ['direction', 'layer', 'group', 'tokens', 'masks', 'request_id', 'bytes_up', 'bytes_down', 'up_sha256', 'down_sha256'] as const;

export function exchangeFields(e: Exchange): AuditFields {
  return {
    direction: e.direction, layer: e.layer, group: e.group, tokens: e.tokens, masks: e.masks, request_id: e.requestId.toString(),
    bytes_up: e.bytesUp, bytes_down: e.bytesDown, up_sha256: e.upSha256, down_sha256: e.downSha256, ms: Math.round(e.ms * 1000) / 1000,
  };
}

/** SHA-256 of a frame (hex). */
export function frameSha256(bytes: Uint8Array): string {
  return sha256Hex(bytes);
}

/**
 * The files of a folder (not its subfolders) and their SHA-256, sorted by name, and one hash over
 * them: SHA-256 of the lines "<sha256 hex>  <name>\n" in byte order of the names (what
 * `sha256sum` prints, so an auditor can recompute it with `LC_ALL=C sha256sum * | sha256sum`).
 */
export function folderDigest(dir: string): { sha256: string; files: Record<string, string> } {
  const names = readdirSync(dir).filter((n) => statSync(join(dir, n)).isFile()).sort((a, b) => (Buffer.compare(Buffer.from(a), Buffer.from(b))));
  const files: Record<string, string> = {};
  let listing = '';
  for (const n of names) {
    const h = createHash('sha256').update(readFileSync(join(dir, n))).digest('hex');
    files[n] = h;
    listing += `${h}  ${n}\n`;
  }
  return { sha256: sha256Hex(listing), files };
}

/** How the server's model hash was checked. */
export type HashCheck = 'expected' | 'local-folder' | 'unverified';

/** Public facts of a client's connection (remote-training.ts), for the run_start record. */
export interface ConnectionFacts {
  modelHash: string;
  hashCheck: HashCheck;
  paramsId: number;
  actBits: number;
  masks: MaskMode;
  server: string;
  tokenId: string | null;
  resultsVerified: boolean;
}

/** What a client's run start records (public facts only). */
export interface ClientRunStart extends ConnectionFacts {
  /** The run's settings (no secrets: no token, no key, no data). */
  settings: AuditFields;
  totalSteps: number;
  startStep: number;
}

/** The client's audit log of a training run (`helora train --audit-log`). */
export class ClientAudit {
  constructor(readonly log: AuditLog) {}

  runStart(s: ClientRunStart): void {
    this.log.append('run_start', {
      format: AUDIT_FORMAT, side: 'client', wire_version: WIRE_VERSION, model_hash: s.modelHash, hash_check: s.hashCheck, params_id: s.paramsId,
      act_bits: s.actBits, masks: s.masks, server: s.server, token_id: s.tokenId, results_verified: s.resultsVerified,
      total_steps: s.totalSteps, start_step: s.startStep, settings: s.settings,
    }, true);
  }

  exchange(e: Exchange): void {
    this.log.append('request', exchangeFields(e));
  }

  failedRequest(e: FailedRequest): void {
    this.log.append('request_failed', {
      direction: e.direction, layer: e.layer, group: e.group, tokens: e.tokens, masks: e.masks, request_id: e.requestId.toString(),
      bytes_up: e.bytesUp, up_sha256: e.upSha256, reason: e.reason, code: e.code,
    });
  }

  checkpoint(step: number, dir: string): void {
    const d = folderDigest(dir);
    this.log.append('checkpoint', { step, sha256: d.sha256, files: d.files }, true);
  }

  /** The end of a run: the adapter's digest when every step is done, null when it stopped early. */
  runEnd(step: number, totalSteps: number, adapterDir: string | null, traffic: { up: number; down: number }, requests: number): void {
    const d = adapterDir ? folderDigest(adapterDir) : null;
    this.log.append('run_end', {
      step, total_steps: totalSteps, complete: adapterDir !== null, adapter_sha256: d?.sha256 ?? null, adapter_files: d?.files ?? null,
      requests, bytes_up: traffic.up, bytes_down: traffic.down,
    }, true);
  }

  close(): void {
    this.log.close();
  }
}

// ---------------------------------------------------------------------------------------------
// verify and match

export interface LogSummary {
  records: number;
  kinds: Record<string, number>;
  exchanges: number;
  bytesUp: number;
  bytesDown: number;
  first: string | null;
  last: string | null;
  lastSeq: number;
  lastSha256: string;
}

export interface VerifyReport {
  file: string;
  ok: boolean;
  broken: ChainBreak | null;
  summary: LogSummary;
}

/** `helora audit verify`: the chain check and a summary of the good records. */
export function verifyLog(file: string): VerifyReport {
  const summary: LogSummary = { records: 0, kinds: {}, exchanges: 0, bytesUp: 0, bytesDown: 0, first: null, last: null, lastSeq: 0, lastSha256: '' };
  const v = verifyAuditLog(file, (r) => {
    summary.records++;
    summary.kinds[r.kind] = (summary.kinds[r.kind] ?? 0) + 1;
    summary.first ??= r.time;
    summary.last = r.time;
    if (r.kind === 'request') {
      summary.exchanges++;
      summary.bytesUp += typeof r.bytes_up === 'number' ? r.bytes_up : 0;
      summary.bytesDown += typeof r.bytes_down === 'number' ? r.bytes_down : 0;
    }
  });
  summary.lastSeq = v.lastSeq;
  summary.lastSha256 = v.lastHash;
  return { file, ok: v.broken === null, broken: v.broken, summary };
}

/** A request record of a server log, with the server run (0-based count of server_start records before it) it belongs to. */
interface ServerExchange { rec: AuditRecord; conn: string }

export interface FieldDifference {
  up_sha256: string;
  client_line: number;
  server_line: number;
  fields: { field: string; client: unknown; server: unknown }[];
}

export interface MatchReport {
  ok: boolean;
  /** A log whose chain is broken is not matched. */
  client: VerifyReport;
  server: VerifyReport;
  matched: number;
  /** Server records of an exchange it computed again (the client re-sent it after a lost connection) with the same answer. */
  repeats: number;
  onlyClient: { line: number; up_sha256: string; layer: unknown; group: unknown; direction: unknown }[];
  onlyServer: { line: number; up_sha256: string; conn: string; layer: unknown; group: unknown; direction: unknown }[];
  differing: FieldDifference[];
  /**
   * Server records of requests the client recorded as failed (request_failed: an answer it did not
   * accept, or one that came too late): both sides agree the bytes were sent; not a difference.
   */
  failedOnClient: { client_line: number; server_line: number; up_sha256: string }[];
  /** The client's run_start model hashes that no server_start of the server log has. */
  modelHashMismatch: string[];
  /** The server connections that carried the client's requests (server run:conn). */
  connections: string[];
}

/**
 * `helora audit match`: every request record of the client log must be in the server log (by the
 * SHA-256 of the request frame) with the same exchange fields; the server's records are taken from
 * the connections that carried at least one of the client's requests (a server log holds other
 * clients too), and any of those the client did not record is listed.
 */
export function matchLogs(clientFile: string, serverFile: string): MatchReport {
  const client = verifyLog(clientFile);
  const server = verifyLog(serverFile);
  const report: MatchReport = { ok: false, client, server, matched: 0, repeats: 0, onlyClient: [], onlyServer: [], differing: [], failedOnClient: [], modelHashMismatch: [], connections: [] };
  if (!client.ok || !server.ok) return report;

  const clientReqs: AuditRecord[] = [];
  const clientFailed = new Map<string, AuditRecord>();
  const clientModels = new Set<string>();
  verifyAuditLog(clientFile, (r) => {
    if (r.kind === 'request') clientReqs.push(r);
    else if (r.kind === 'request_failed') clientFailed.set(String(r.up_sha256), r);
    else if (r.kind === 'run_start' && typeof r.model_hash === 'string') clientModels.add(r.model_hash);
  });
  const byUp = new Map<string, ServerExchange[]>();
  const serverModels = new Set<string>();
  let run = -1;
  verifyAuditLog(serverFile, (r) => {
    if (r.kind === 'server_start') {
      run++;
      if (typeof r.model_hash === 'string') serverModels.add(r.model_hash);
    } else if (r.kind === 'request') {
      const list = byUp.get(String(r.up_sha256)) ?? [];
      list.push({ rec: r, conn: `${Math.max(0, run)}:${String(r.conn)}` });
      byUp.set(String(r.up_sha256), list);
    }
  });
  report.modelHashMismatch = [...clientModels].filter((h) => !serverModels.has(h));

  const conns = new Set<string>();
  const used = new Set<AuditRecord>();
  for (const c of clientReqs) {
    const up = String(c.up_sha256);
    const cands = byUp.get(up);
    if (!cands) {
      report.onlyClient.push({ line: c.seq, up_sha256: up, layer: c.layer, group: c.group, direction: c.direction });
      continue;
    }
    for (const s of cands) conns.add(s.conn);
    const first = cands[0].rec;
    const fields = EXCHANGE_FIELDS.filter((f) => JSON.stringify(c[f]) !== JSON.stringify(first[f]))
      .map((f) => ({ field: f, client: c[f], server: first[f] }));
    if (fields.length > 0) report.differing.push({ up_sha256: up, client_line: c.seq, server_line: first.seq, fields });
    else report.matched++;
    used.add(first);
    // The same request computed again (a re-send after a lost connection): the same answer, or a difference.
    for (const again of cands.slice(1)) {
      used.add(again.rec);
      if (again.rec.down_sha256 === first.down_sha256) report.repeats++;
      else report.differing.push({ up_sha256: up, client_line: c.seq, server_line: again.rec.seq, fields: [{ field: 'down_sha256', client: c.down_sha256, server: again.rec.down_sha256 }] });
    }
  }
  for (const [up, f] of clientFailed) {
    for (const s of byUp.get(up) ?? []) {
      if (used.has(s.rec)) continue;
      used.add(s.rec);
      conns.add(s.conn);
      report.failedOnClient.push({ client_line: f.seq, server_line: s.rec.seq, up_sha256: up });
    }
  }
  for (const list of byUp.values()) {
    for (const s of list) {
      if (used.has(s.rec) || !conns.has(s.conn)) continue;
      report.onlyServer.push({ line: s.rec.seq, up_sha256: String(s.rec.up_sha256), conn: s.conn, layer: s.rec.layer, group: s.rec.group, direction: s.rec.direction });
    }
  }
  report.onlyServer.sort((a, b) => a.line - b.line);
  report.connections = [...conns].sort();
  report.ok = report.onlyClient.length === 0 && report.onlyServer.length === 0 && report.differing.length === 0 && report.modelHashMismatch.length === 0;
  return report;
}
