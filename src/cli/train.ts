// `helora train`: the command around train/fine-tune.ts. It checks the server flags, connects the
// encrypted mode to the server (transport/remote-training.ts), shows a progress bar and draws the
// loss curve into the run folder (loss.png).

import { join } from 'node:path';
import { fineTune, type FineTuneOptions, type FineTuneResult } from '../train/fine-tune.js';
import { RemoteTraining, type HashCheck, type RemoteTrainingOptions } from '../transport/remote-training.js';
import { resolveToken } from '../transport/token.js';
import { nativeKernels } from '../kernels/native.js';
import type { RemoteStats } from '../transport/client.js';
import { writeLossPlot, type Series } from './plot.js';
import type { EvalRow, HistoryRow } from '../train/run-files.js';
import { Progress } from './progress.js';
import type { AuditFields } from '../util/audit-log.js';

/** A fine-tuning run with the server connection of the encrypted mode (RemoteTrainingOptions, its URL as `server`). */
export interface TrainOptions extends Omit<FineTuneOptions, 'connectEncrypted' | 'onStart'>, Omit<RemoteTrainingOptions, 'url' | 'say' | 'auditLog'> {
  /**
   * Encrypted mode: the audit log (a file; default true: audit.jsonl in the run folder; false:
   * none). See transport/audit.ts: no secret goes into it, not even the loss.
   */
  auditLog?: string | boolean;
  /** Server URL (encrypted mode). */
  server?: string;
  /** --token (shows in ps), --token-file or HELORA_TOKEN (env): one of them. */
  tokenFile?: string;
  /** Where HELORA_TOKEN is read from (the CLI passes process.env; default: none). */
  env?: NodeJS.ProcessEnv;
  /** Progress bar / lines on stderr (default true). */
  progress?: boolean;
}

export interface TrainResult extends FineTuneResult {
  pngPath: string;
  /** Server's model hash (encrypted mode) and how it was checked. */
  modelHash: string | null;
  hashCheck: HashCheck | null;
  remote: RemoteStats | null;
  /** The audit log written (encrypted mode), or null. */
  auditLog: string | null;
}

/** The flags of the server connection (fineTune checks the rest). */
function checkServerFlags(o: TrainOptions): void {
  if (o.mode === 'encrypted' && !o.server) throw new Error('helora: encrypted mode needs --server URL (or use --mode quantized / fp32 to train locally)');
  if (o.mode !== 'encrypted' && o.server) throw new Error(`helora: --server is only used in encrypted mode, not with --mode ${o.mode}`);
  if (o.expectHash !== undefined && !/^[0-9a-f]{64}$/i.test(o.expectHash)) throw new Error('helora: --expect-hash must be 64 hex characters (the sha256 the server prints)');
  if (o.mode !== 'encrypted' && typeof o.auditLog === 'string') throw new Error(`helora: --audit-log records the exchanges with a server: encrypted mode only, not --mode ${o.mode}`);
}

/** The audit log's file: the given one, audit.jsonl in the run folder by default (encrypted mode), or none. */
export function auditLogPath(o: Pick<TrainOptions, 'mode' | 'out' | 'auditLog'>): string | undefined {
  if (o.mode !== 'encrypted' || o.auditLog === false) return undefined;
  return typeof o.auditLog === 'string' ? o.auditLog : join(o.out, 'audit.jsonl');
}

/** The run's settings as the audit log records them (no token, no key, no data, no paths). */
function auditSettings(o: TrainOptions): AuditFields {
  return {
    mode: o.mode, steps: o.steps ?? null, epochs: o.epochs ?? null, batch_tokens: o.batchTokens, grad_accum: o.gradAccum, lr: o.lr, warmup: o.warmup,
    schedule: o.schedule, rank: o.rank, alpha: o.alpha, dropout: o.dropout, targets: [...o.targets], layers: o.layers ? [...o.layers] : null, seed: o.seed,
    checkpoint_every: o.checkpointEvery, resume: o.resume, masks_requested: o.masks ?? null, verify_results: o.verifyResults ?? true,
  };
}

/** The training loss curve, and the held-out one when the run has evaluations. */
export function lossSeries(label: string, history: readonly HistoryRow[], evals: readonly EvalRow[]): Series[] {
  const series: Series[] = [{ name: evals.length > 0 ? `${label} train` : label, points: history.map((r) => [r.step, r.loss]) }];
  if (evals.length > 0) series.push({ name: `${label} held-out`, points: evals.map((e) => [e.step, e.loss]) });
  return series;
}

/** fineTune with a progress bar on stderr; afterwards the loss curve goes to loss.png in the run folder. */
export async function fineTuneWithProgress(o: FineTuneOptions, showProgress: boolean): Promise<FineTuneResult & { pngPath: string }> {
  const label = o.label ?? o.mode;
  const progress = new Progress({ label, traffic: o.mode === 'encrypted', enabled: showProgress });
  let run: FineTuneResult;
  try {
    run = await fineTune({
      ...o,
      onStart: (start) => {
        progress.start(start.totalSteps, start.startStep);
        o.onStart?.(start);
      },
      onEval: (e) => {
        o.say?.(`helora: held-out loss ${e.loss.toFixed(4)} (perplexity ${e.ppl.toFixed(2)}, ${e.tokens} tokens) after step ${e.step}`);
        o.onEval?.(e);
      },
      onStep: (row, step) => {
        progress.update({ step: row.step, loss: row.loss, tokensPerSec: step.tokensPerSec, bytesUp: row.bytesUp, bytesDown: row.bytesDown });
        o.onStep?.(row, step);
      },
    });
  } finally {
    progress.stop();
  }
  const pngPath = join(run.out, 'loss.png');
  writeLossPlot(pngPath, lossSeries(label, run.history, run.evals), `${label} loss`);
  return { ...run, pngPath };
}

export async function runTrain(o: TrainOptions): Promise<TrainResult> {
  checkServerFlags(o);
  const say = o.say ?? ((l: string) => process.stderr.write(l + '\n'));
  // The client's own compute (model work in the native kernels; the crypto workers below).
  const nk = o.threads !== undefined ? nativeKernels() : null;
  if (nk) nk.threads = o.threads!;
  const server = o.mode === 'encrypted'
    ? new RemoteTraining({
      url: o.server!, token: resolveToken({ token: o.token, tokenFile: o.tokenFile, env: o.env ?? {} })?.token, expectHash: o.expectHash, ca: o.ca,
      retryDeadlineMs: o.retryDeadlineMs, actBits: o.actBits, allowUnverified: o.allowUnverified, verifyResults: o.verifyResults, checkTokens: o.checkTokens, masks: o.masks, tableCache: o.tableCache, say,
      threads: o.threads,
      auditLog: auditLogPath(o),
    })
    : null;
  let run: FineTuneResult & { pngPath: string };
  try {
    run = await fineTuneWithProgress({
      ...o, say, connectEncrypted: server?.connect,
      onStart: (start) => {
        const facts = server?.facts();
        if (server?.audit && facts) server.audit.runStart({ ...facts, settings: auditSettings(o), totalSteps: start.totalSteps, startStep: start.startStep });
      },
      onCheckpoint: (step, dir) => {
        server?.audit?.checkpoint(step, dir);
        o.onCheckpoint?.(step, dir);
      },
    }, o.progress ?? true);
    const stats = server?.stats();
    if (server?.audit && stats) {
      const step = run.history.length > 0 ? run.history[run.history.length - 1].step : run.startStep;
      server.audit.runEnd(step, run.totalSteps, run.adapterDir, { up: stats.bytesUp, down: stats.bytesDown }, stats.requests);
    }
  } catch (e) {
    // No error text: it could quote what the log must not hold.
    try { server?.audit?.log.append('run_abort', {}, true); } catch { /* the log itself failed */ }
    throw e;
  } finally {
    server?.closeAudit();
  }
  return { ...run, modelHash: server?.modelHash ?? null, hashCheck: server?.hashCheck ?? null, remote: server?.stats() ?? null, auditLog: auditLogPath(o) ?? null };
}
