// `helora serve`: loads a model folder, quantizes its projection weights (int8 per output
// channel), hashes them and serves encrypted products. Logs are JSON lines on stdout (the
// "listening" line carries the URL and the model hash); a short human summary goes to stderr.

import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { ModelServer } from '../transport/model-server.js';
import { jsonLineLogger, startServer, type Logger, type RunningServer } from '../transport/server.js';

export interface ServeOptions {
  model: string;
  host: string;
  port: number;
  threads?: number;
  token?: string;
  tlsCert?: string;
  tlsKey?: string;
  /** Requests per second per connection (a training client sends 8 per layer and step). */
  rate: number;
  burst?: number;
  maxTokens?: number;
  /** Folder of the public mask tables (see ModelServerOptions.maskTables); false: offer none. */
  maskTables?: string | false;
  log?: Logger;
  say?: (line: string) => void;
}

/**
 * Default request rate per connection. The transport's own default (20/s) suits an open server;
 * a training client on a small model sends hundreds of small requests per second, one at a time.
 */
export const SERVE_DEFAULT_RATE = 2000;

export async function serve(o: ServeOptions): Promise<{ server: RunningServer; model: ModelServer; close(): Promise<void> }> {
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) throw new Error('helora: --tls-cert and --tls-key go together');
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) throw new Error(`helora: --port must be an integer in 0..65535, got ${o.port}`);
  if (o.token !== undefined && o.token.length === 0) throw new Error('helora: --token must not be empty');
  const log = o.log ?? jsonLineLogger;
  const say = o.say ?? ((l: string) => process.stderr.write(l + '\n'));
  const tls = o.tlsCert !== undefined ? { cert: readFileSync(o.tlsCert), key: readFileSync(o.tlsKey!) } : undefined;
  const t0 = performance.now();
  const model = await ModelServer.fromFolder(o.model, { threads: o.threads, maxTokens: o.maxTokens, maskTables: o.maskTables });
  log({
    event: 'model_loaded', model: o.model, model_hash: model.hash, layers: model.config.numLayers, hidden: model.config.hiddenSize,
    mask_tables: model.maskTableFolder, load_ms: Math.round(performance.now() - t0),
  });
  let server: RunningServer;
  try {
    server = await startServer({ model, host: o.host, port: o.port, token: o.token, tls, log, rateLimit: { perSecond: o.rate, burst: o.burst ?? o.rate } });
  } catch (e) {
    await model.close();
    throw e;
  }
  say(`helora: serving ${o.model} at ${server.url}`);
  say(`helora: model hash ${model.hash} (clients check it with --expect-hash)`);
  return {
    server, model,
    async close(): Promise<void> {
      await server.close();
      await model.close();
    },
  };
}
