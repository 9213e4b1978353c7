// `helora audit verify LOG` and `helora audit match CLIENT_LOG SERVER_LOG` (transport/audit.ts).
// Exit status 0 when the chain holds / the logs agree, 1 otherwise; --json prints the report.

import type { Command } from 'commander';
import { matchLogs, verifyLog, type MatchReport, type VerifyReport } from '../transport/audit.js';

const mb = (n: number): string => `${(n / 1e6).toFixed(2)} MB`;

export function verifyText(r: VerifyReport): string {
  const s = r.summary;
  const lines: string[] = [];
  if (r.broken) lines.push(`${r.file}: BROKEN at line ${r.broken.line}: ${r.broken.reason} (${r.broken.detail})`, `  ${s.records} good records before it`);
  else lines.push(`${r.file}: chain OK`);
  const kinds = Object.entries(s.kinds).map(([k, n]) => `${k} ${n}`).join(', ');
  lines.push(`  records ${s.records}${kinds ? ` (${kinds})` : ''}`, `  exchanges ${s.exchanges}: ${mb(s.bytesUp)} up, ${mb(s.bytesDown)} down`);
  if (s.first) lines.push(`  from ${s.first} to ${s.last}`);
  lines.push(`  last seq ${s.lastSeq}, its SHA-256 ${s.lastSha256}`);
  return lines.join('\n');
}

export function matchText(r: MatchReport): string {
  const lines: string[] = [];
  for (const v of [r.client, r.server]) if (!v.ok) lines.push(verifyText(v));
  if (!r.client.ok || !r.server.ok) {
    lines.push('logs with a broken chain are not matched');
    return lines.join('\n');
  }
  lines.push(`${r.ok ? 'MATCH' : 'DIFFERENT'}: ${r.matched} exchanges on both sides`
    + `${r.repeats ? `, ${r.repeats} computed again by the server after a re-send (same answer)` : ''}; server connections ${r.connections.join(', ') || 'none'}`);
  if (r.failedOnClient.length) lines.push(`  ${r.failedOnClient.length} requests the server answered and the client recorded as failed (request_failed; not a difference)`);
  for (const h of r.modelHashMismatch) lines.push(`  the client trained against model ${h}, which the server log never served`);
  for (const c of r.onlyClient) lines.push(`  only in the client log: line ${c.line} (${String(c.direction)} layer ${String(c.layer)} ${String(c.group)}, upload ${c.up_sha256.slice(0, 16)}...)`);
  for (const s of r.onlyServer) lines.push(`  only in the server log: line ${s.line} conn ${s.conn} (${String(s.direction)} layer ${String(s.layer)} ${String(s.group)}, upload ${s.up_sha256.slice(0, 16)}...)`);
  for (const d of r.differing) {
    lines.push(`  differs: client line ${d.client_line} / server line ${d.server_line}: ${d.fields.map((f) => `${f.field} ${JSON.stringify(f.client)} vs ${JSON.stringify(f.server)}`).join('; ')}`);
  }
  return lines.join('\n');
}

export function registerAuditCommands(program: Command): void {
  const audit = program.command('audit').description('check the hash-chained audit logs of `helora train` and `helora serve`');
  audit
    .command('verify')
    .description('check a log\'s chain; report the first broken line (exit 1) or a summary')
    .argument('<log>', 'audit log (JSONL)')
    .option('--json', 'print the report as JSON', false)
    .action((log: string, o: { json: boolean }) => {
      const r = verifyLog(log);
      process.stdout.write((o.json ? JSON.stringify(r) : verifyText(r)) + '\n');
      if (!r.ok) process.exitCode = 1;
    });
  audit
    .command('match')
    .description('check that a client\'s and a server\'s logs record the same exchanges (by the SHA-256 of the frames); exit 1 when they differ')
    .argument('<client-log>', 'the audit log of `helora train`')
    .argument('<server-log>', 'the audit log of `helora serve`')
    .option('--json', 'print the report as JSON', false)
    .action((clientLog: string, serverLog: string, o: { json: boolean }) => {
      const r = matchLogs(clientLog, serverLog);
      process.stdout.write((o.json ? JSON.stringify(r) : matchText(r)) + '\n');
      if (!r.ok) process.exitCode = 1;
    });
}
