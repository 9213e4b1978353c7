// Files of one fine-tuning run in its folder: the loss CSV, the PEFT adapter and the checkpoints.
// Every file is written to a temporary name and renamed into place, so a crash (of this process or
// the machine) leaves either the old or the new version, never half of one: the data is fsynced
// before the rename and the folder after it (a machine crash cannot reorder them).
//
// The temporary names are unpredictable (random) and created exclusively without following a
// symlink (O_CREAT | O_EXCL | O_NOFOLLOW; mkdir is exclusive too), so nobody who can write to the
// run folder can redirect a write elsewhere. Everything a run writes is owner-only: files 0600,
// folders 0700 (the adapter and checkpoints are the data owner's training result).

import { randomBytes } from 'node:crypto';
import {
  chmodSync, closeSync, constants, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { saveAdapter, type LoraTensors } from '../model/peft.js';
import { loadTrainerCheckpoint, saveTrainerCheckpoint } from './checkpoint.js';
import type { TrainerState } from './trainer.js';

/** One row of the loss log. */
export interface HistoryRow {
  step: number;
  loss: number;
  lr: number;
  /** Tokens processed in this step (micro-batch slots). */
  tokens: number;
  /** Seconds since the run started (summed over resumed sessions). */
  elapsedS: number;
  /** Cumulative bytes sent to / received from the server (0 in the local modes). */
  bytesUp: number;
  bytesDown: number;
}

/** A held-out evaluation after `step` optimizer steps (0: before the first). */
export interface EvalRow {
  step: number;
  /** Token-weighted mean loss over the held-out set, and exp of it. */
  loss: number;
  ppl: number;
  /** Held-out tokens with a loss target. */
  tokens: number;
}

export const CSV_HEADER = 'step,loss,lr,tokens,elapsed_s,bytes_up,bytes_down';
/** The header of a run with held-out evaluation: two more columns, empty on steps without one. */
export const CSV_HEADER_EVAL = `${CSV_HEADER},eval_loss,eval_ppl`;

/**
 * The loss CSV. Without evaluations it is the 7-column file it always was. With them every row gets
 * eval_loss and eval_ppl (empty where none was taken), and an evaluation before the first step is
 * a row of step 0 whose training columns are empty.
 */
export function historyCsv(rows: readonly HistoryRow[], evals: readonly EvalRow[] = []): string {
  const train = (r: HistoryRow): string => [r.step, r.loss, r.lr, r.tokens, r.elapsedS.toFixed(3), r.bytesUp, r.bytesDown].join(',');
  if (evals.length === 0) return [CSV_HEADER, ...rows.map(train)].join('\n') + '\n';
  const byStep = new Map(evals.map((e) => [e.step, e]));
  const evalCols = (step: number): string => {
    const e = byStep.get(step);
    return e ? `${e.loss},${e.ppl}` : ',';
  };
  const lines = rows.map((r) => `${train(r)},${evalCols(r.step)}`);
  if (byStep.has(0)) lines.unshift(`0,,,,0.000,0,0,${evalCols(0)}`);
  return [CSV_HEADER_EVAL, ...lines].join('\n') + '\n';
}

/** Parses a loss CSV written by historyCsv, with or without eval columns (strict: header and column count are checked). */
export function parseRunCsv(text: string): { history: HistoryRow[]; evals: Omit<EvalRow, 'tokens'>[] } {
  const lines = text.trim().split('\n');
  const withEval = lines[0] === CSV_HEADER_EVAL;
  if (lines[0] !== CSV_HEADER && !withEval) throw new Error(`helora: loss CSV must start with "${CSV_HEADER}" (or "${CSV_HEADER_EVAL}")`);
  const width = withEval ? 9 : 7;
  const history: HistoryRow[] = [];
  const evals: Omit<EvalRow, 'tokens'>[] = [];
  lines.slice(1).forEach((line, i) => {
    const raw = line.split(',');
    if (raw.length !== width) throw new Error(`helora: loss CSV line ${i + 2} has ${raw.length} fields, expected ${width}`);
    const f = raw.map(Number);
    if (raw[1] !== '') history.push({ step: f[0]!, loss: f[1]!, lr: f[2]!, tokens: f[3]!, elapsedS: f[4]!, bytesUp: f[5]!, bytesDown: f[6]! });
    if (withEval && raw[7] !== '') evals.push({ step: f[0]!, loss: f[7]!, ppl: f[8]! });
  });
  return { history, evals };
}

/** The training rows of a loss CSV (see parseRunCsv). */
export function parseHistoryCsv(text: string): HistoryRow[] {
  return parseRunCsv(text).history;
}

/** Owner-only permissions of everything a run writes. */
export const RUN_FILE_MODE = 0o600;
export const RUN_DIR_MODE = 0o700;

function tmpName(path: string): string {
  return `${path}.tmp-${randomBytes(8).toString('hex')}`;
}

/**
 * Creates `path` as a new owner-only file and writes `data` to it, fsynced. Fails if anything
 * exists at `path`, a symlink included (never followed).
 */
export function writeNewFile(path: string, data: string | Uint8Array): void {
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, RUN_FILE_MODE);
  try {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    for (let off = 0; off < bytes.length;) off += writeSync(fd, bytes, off, bytes.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** fsync of a folder: makes the renames and creations in it durable. */
function syncDir(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Owner-only permissions and fsync for every file and folder under `dir` (written by other modules). */
function secureAndSyncTree(dir: string): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isSymbolicLink()) throw new Error(`helora: ${p} is a symlink; a run folder holds only plain files`);
    if (e.isDirectory()) {
      chmodSync(p, RUN_DIR_MODE);
      secureAndSyncTree(p);
    } else {
      chmodSync(p, RUN_FILE_MODE);
      const fd = openSync(p, constants.O_RDONLY | constants.O_NOFOLLOW);
      try { fsyncSync(fd); } finally { closeSync(fd); }
    }
  }
  chmodSync(dir, RUN_DIR_MODE);
  syncDir(dir);
}

function makeParent(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: RUN_DIR_MODE });
}

export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  makeParent(path);
  const tmp = tmpName(path);
  try {
    writeNewFile(tmp, data);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  syncDir(dirname(path));
}

/** Writes a folder under a temporary name, then swaps it in place of `dir`. */
export function writeDirAtomic(dir: string, fill: (tmpDir: string) => void): void {
  makeParent(dir);
  const tmp = tmpName(dir);
  mkdirSync(tmp, { mode: RUN_DIR_MODE });
  try {
    fill(tmp);
    secureAndSyncTree(tmp);
    if (existsSync(dir)) {
      // rename() cannot replace a non-empty folder: move the old one aside first.
      const old = tmpName(dir);
      renameSync(dir, old);
      renameSync(tmp, dir);
      syncDir(dirname(dir));
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(tmp, dir);
    }
    syncDir(dirname(dir));
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

export function saveAdapterAtomic(dir: string, adapter: LoraTensors, baseModel: string): void {
  writeDirAtomic(dir, (tmp) => saveAdapter(tmp, adapter, baseModel));
}

// ---------------------------------------------------------------------------------------------
// Checkpoints: <out>/checkpoints/step-00000012/{trainer.safetensors, run.json}. The folder is
// renamed into place when complete, so the newest folder is always whole.

export const RUN_CHECKPOINT_FORMAT = 'helora-run-checkpoint-v1';
const STEP_DIR_RE = /^step-(\d{8})$/;
/** Checkpoints kept (older ones are deleted after a new one is in place). */
export const CHECKPOINTS_KEPT = 2;
const MAX_RUN_JSON_BYTES = 64 * 1024 * 1024;

export interface RunCheckpoint {
  state: TrainerState;
  /** Options that must match for a resume to continue the same run. */
  fingerprint: Record<string, unknown>;
  history: HistoryRow[];
  /** Held-out evaluations so far (absent in checkpoints of runs without them). */
  evals?: EvalRow[];
  /** Seconds of training done so far. */
  elapsedS: number;
  bytesUp: number;
  bytesDown: number;
}

export function checkpointsDir(out: string): string {
  return join(out, 'checkpoints');
}

/** Complete checkpoint folders, oldest first. */
export function listCheckpoints(out: string): { step: number; dir: string }[] {
  const root = checkpointsDir(out);
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .map((name) => ({ m: STEP_DIR_RE.exec(name), name }))
    .filter((e) => e.m !== null)
    .map((e) => ({ step: Number(e.m![1]), dir: join(root, e.name) }))
    .sort((a, b) => a.step - b.step);
}

export function saveRunCheckpoint(out: string, c: RunCheckpoint): string {
  const dir = join(checkpointsDir(out), `step-${String(c.state.step).padStart(8, '0')}`);
  writeDirAtomic(dir, (tmp) => {
    saveTrainerCheckpoint(join(tmp, 'trainer.safetensors'), c.state);
    const run = { format: RUN_CHECKPOINT_FORMAT, step: c.state.step, fingerprint: c.fingerprint, elapsed_s: c.elapsedS, bytes_up: c.bytesUp, bytes_down: c.bytesDown, history: c.history, ...(c.evals && c.evals.length > 0 ? { evals: c.evals } : {}) };
    writeNewFile(join(tmp, 'run.json'), JSON.stringify(run) + '\n');
  });
  const all = listCheckpoints(out);
  for (const old of all.slice(0, Math.max(0, all.length - CHECKPOINTS_KEPT))) rmSync(old.dir, { recursive: true, force: true });
  return dir;
}

export function loadRunCheckpoint(dir: string): RunCheckpoint {
  const runPath = join(dir, 'run.json');
  if (!existsSync(runPath)) throw new Error(`helora: checkpoint ${dir} has no run.json`);
  if (statSync(runPath).size > MAX_RUN_JSON_BYTES) throw new Error(`helora: ${runPath} is larger than ${MAX_RUN_JSON_BYTES} bytes`);
  let run: Record<string, unknown>;
  try {
    run = JSON.parse(readFileSync(runPath, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`helora: ${runPath} is not valid JSON (${(e as Error).message})`);
  }
  if (run.format !== RUN_CHECKPOINT_FORMAT) throw new Error(`helora: ${runPath} is not a helora run checkpoint (format ${JSON.stringify(run.format)})`);
  const state = loadTrainerCheckpoint(join(dir, 'trainer.safetensors'));
  if (run.step !== state.step) throw new Error(`helora: checkpoint ${dir}: run.json says step ${String(run.step)}, the trainer state step ${state.step}`);
  const history = run.history;
  if (!Array.isArray(history) || history.length > state.step) throw new Error(`helora: checkpoint ${dir}: bad loss history`);
  const num = (v: unknown, what: string): number => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new Error(`helora: checkpoint ${dir}: ${what} must be a non-negative number`);
    return v;
  };
  const evals = checkpointEvals(run.evals, state.step, dir);
  const fp = run.fingerprint;
  if (typeof fp !== 'object' || fp === null || Array.isArray(fp)) throw new Error(`helora: checkpoint ${dir}: missing fingerprint`);
  return {
    state, fingerprint: fp as Record<string, unknown>, history: history as HistoryRow[], evals,
    elapsedS: num(run.elapsed_s, 'elapsed_s'), bytesUp: num(run.bytes_up, 'bytes_up'), bytesDown: num(run.bytes_down, 'bytes_down'),
  };
}

/** The evaluations of a checkpoint's run.json: absent (none), or rows of steps 0..step in order. */
function checkpointEvals(v: unknown, step: number, dir: string): EvalRow[] {
  if (v === undefined) return [];
  const bad = (): never => { throw new Error(`helora: checkpoint ${dir}: bad held-out evaluations`); };
  if (!Array.isArray(v) || v.length > step + 1) return bad();
  let prev = -1;
  return v.map((e: unknown) => {
    if (typeof e !== 'object' || e === null) return bad();
    const { step: s, loss, ppl, tokens } = e as Record<string, unknown>;
    if (!Number.isSafeInteger(s) || (s as number) <= prev || (s as number) > step) return bad();
    if (typeof loss !== 'number' || typeof ppl !== 'number' || !Number.isSafeInteger(tokens) || (tokens as number) < 0) return bad();
    prev = s as number;
    return { step: s as number, loss, ppl, tokens: tokens as number };
  });
}
