// A minimal stand-alone server process (tests fork it; `helora serve` offers the full CLI):
//   node serve-process.js --model DIR [--host H] [--port P] [--token T] [--threads N]
//                         [--rate R] [--burst B] [--max-connections C] [--max-tokens M] [--act-bits A]
//                         [--limits JSON (ServerLimits fields)] [--mask-tables DIR|none]
//                         [--audit-log FILE]
//                         [--memory-log 1]  (adds this process's memory to each request line, for benchmarks)
// Logs JSON lines on stdout; the "listening" line carries the URL. SIGTERM/SIGINT close it cleanly.

import { ModelServer } from './model-server.js';
import { readFileSync } from 'node:fs';
import { jsonLineLogger, startServer, type LogEvent, type ServerLimits } from './server.js';
import { AuditLog } from '../util/audit-log.js';

/** This process's memory now and its peak (VmHWM), in MiB, for the request log of a benchmark. */
function memoryFields(): LogEvent {
  const m = process.memoryUsage();
  const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  const mb = (n: number): number => Math.round(n / 2 ** 20);
  return { rss_mb: mb(m.rss), hwm_mb: hwm ? Math.round(Number(hwm[1]) / 1024) : null, array_buffers_mb: mb(m.arrayBuffers), external_mb: mb(m.external), heap_mb: mb(m.heapUsed) };
}

function parseArgs(argv: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    const v = argv[i + 1];
    if (!k.startsWith('--') || v === undefined) throw new Error(`helora: serve-process: expected --name value pairs, got ${JSON.stringify(argv.slice(i, i + 2))}`);
    out.set(k.slice(2), v);
  }
  return out;
}

function int(args: Map<string, string>, key: string): number | undefined {
  const v = args.get(key);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`helora: --${key} must be a number, got ${v}`);
  return n;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const dir = args.get('model');
  if (!dir) throw new Error('helora: serve-process needs --model DIR');
  const tables = args.get('mask-tables');
  const model = await ModelServer.fromFolder(dir, {
    threads: int(args, 'threads'), maxTokens: int(args, 'max-tokens'), actBits: int(args, 'act-bits'), maskTables: tables === 'none' ? false : tables,
  });
  const rate = int(args, 'rate');
  const audit = args.has('audit-log') ? AuditLog.open(args.get('audit-log')!) : undefined;
  const memoryLog = args.get('memory-log') === '1';
  const server = await startServer({
    log: memoryLog ? (e) => jsonLineLogger(e.event === 'request' ? { ...e, ...memoryFields() } : e) : undefined,
    model,
    host: args.get('host'),
    port: int(args, 'port'),
    token: args.get('token'),
    maxConnections: int(args, 'max-connections'),
    ...(args.has('limits') ? JSON.parse(args.get('limits')!) as Partial<ServerLimits> : {}),
    rateLimit: rate !== undefined ? { perSecond: rate, burst: int(args, 'burst') ?? rate } : undefined,
    audit,
  });
  const stop = (): void => {
    void server.close().then(() => model.close()).then(() => { audit?.close(); process.exit(0); });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
