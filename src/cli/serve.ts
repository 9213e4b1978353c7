// `helora serve`: loads a model folder, quantizes its projection weights (int8 per output
// channel), hashes them and serves encrypted products. Logs are JSON lines on stdout (the
// "listening" line carries the URL and the model hash); a short human summary goes to stderr.

import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { ModelServer } from '../transport/model-server.js';
import { checkListenSecurity, DEFAULT_SERVER_LIMITS, jsonLineLogger, startServer, type Logger, type RunningServer } from '../transport/server.js';
import { checkTokenStrength, resolveToken } from '../transport/token.js';
import { AuditLog } from '../util/audit-log.js';

export interface ServeOptions {
  model: string;
  host: string;
  port: number;
  threads?: number;
  /** --token (visible in ps; --token-file or HELORA_TOKEN are better). */
  token?: string;
  tokenFile?: string;
  /** Where HELORA_TOKEN is read from (the CLI passes process.env; default: none). */
  env?: NodeJS.ProcessEnv;
  tlsCert?: string;
  tlsKey?: string;
  /** Requests per second per connection (a training client sends 8 per layer and step). */
  rate: number;
  burst?: number;
  maxTokens?: number;
  /** Activation width the K-splits and noise are sized for (default 8); clients may quantize to fewer bits. */
  actBits?: number;
  /** Folder of the public mask tables (see ModelServerOptions.maskTables); false: offer none. */
  maskTables?: string | false;
  /** Listen on a non-loopback address without TLS or a token. */
  insecure?: boolean;
  maxConnections?: number;
  maxConnectionsPerAddress?: number;
  maxInFlight?: number;
  maxQueue?: number;
  /** The audit log (transport/audit.ts), continued when it exists; a broken one is refused. */
  auditLog?: string;
  log?: Logger;
  say?: (line: string) => void;
}

/**
 * Default frame rate per connection. The transport's own default (20/s) suits an open server;
 * a training client on a small model sends hundreds of small requests per second, one at a time.
 * The burst stays at or below the queue, so one connection's burst cannot fill it alone.
 */
export const SERVE_DEFAULT_RATE = 2000;
export const SERVE_DEFAULT_BURST = 32;
export const SERVE_DEFAULT_QUEUE = DEFAULT_SERVER_LIMITS.maxQueue;

export async function serve(o: ServeOptions): Promise<{ server: RunningServer; model: ModelServer; close(): Promise<void> }> {
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) throw new Error('helora: --tls-cert and --tls-key go together');
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) throw new Error(`helora: --port must be an integer in 0..65535, got ${o.port}`);
  const log = o.log ?? jsonLineLogger;
  const say = o.say ?? ((l: string) => process.stderr.write(l + '\n'));
  const token = resolveToken({ token: o.token, tokenFile: o.tokenFile, env: o.env ?? {} });
  if (token?.source === 'option') say('helora: warning: --token shows in ps and the shell history; prefer --token-file or HELORA_TOKEN');
  const burst = o.burst ?? Math.min(SERVE_DEFAULT_BURST, o.rate);
  const maxQueue = o.maxQueue ?? SERVE_DEFAULT_QUEUE;
  if (burst > maxQueue) throw new Error(`helora: --burst ${burst} exceeds the queue of ${maxQueue}: one connection could fill it alone`);
  const tls = o.tlsCert !== undefined ? { cert: readFileSync(o.tlsCert), key: readFileSync(o.tlsKey!) } : undefined;
  // Refusals before the (long) model load.
  if (token) checkTokenStrength(token.token);
  checkListenSecurity(o.host, tls !== undefined, token !== undefined, !!o.insecure);
  // A broken audit log is refused before the (long) model load too.
  const audit = o.auditLog !== undefined ? AuditLog.open(o.auditLog) : undefined;
  const t0 = performance.now();
  let model: ModelServer;
  try {
    model = await ModelServer.fromFolder(o.model, { threads: o.threads, maxTokens: o.maxTokens, actBits: o.actBits, maskTables: o.maskTables });
  } catch (e) {
    audit?.close();
    throw e;
  }
  log({
    event: 'model_loaded', model: o.model, model_hash: model.hash, layers: model.config.numLayers, hidden: model.config.hiddenSize,
    mask_tables: model.maskTableFolder, load_ms: Math.round(performance.now() - t0),
  });
  let server: RunningServer;
  try {
    server = await startServer({
      model, host: o.host, port: o.port, token: token?.token, tls, log, insecure: o.insecure, rateLimit: { perSecond: o.rate, burst },
      maxQueue, maxConnections: o.maxConnections, maxConnectionsPerAddress: o.maxConnectionsPerAddress, maxInFlightPerConnection: o.maxInFlight, audit,
    });
  } catch (e) {
    await model.close();
    audit?.close();
    throw e;
  }
  say(`helora: serving ${o.model} at ${server.url}`);
  say(`helora: model hash ${model.hash} (clients check it with --expect-hash)`);
  return {
    server, model,
    async close(): Promise<void> {
      await server.close();
      await model.close();
      audit?.close();
    },
  };
}
