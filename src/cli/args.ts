// Argument parsers shared by the helora commands: clear commander errors for malformed values.

import { InvalidArgumentError, Option, type Command } from 'commander';
import { TRAIN_DEFAULTS } from '../train/fine-tune.js';
import { MAX_BITS, MIN_BITS } from '../quant/quantize.js';
import { isProjectionName, PROJECTION_NAMES, type ProjectionName } from '../model/projections.js';

export function positiveInt(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive integer, got "${v}"`);
  return n;
}

export function nonNegativeInt(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) throw new InvalidArgumentError(`expected a non-negative integer, got "${v}"`);
  return n;
}

export function positiveNumber(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`expected a positive number, got "${v}"`);
  return n;
}

export function nonNegativeNumber(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`expected a non-negative number, got "${v}"`);
  return n;
}

export function probability(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !(n >= 0 && n < 1)) throw new InvalidArgumentError(`expected a number in [0, 1), got "${v}"`);
  return n;
}

export function fraction(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !(n > 0 && n < 1)) throw new InvalidArgumentError(`expected a fraction in (0, 1), got "${v}"`);
  return n;
}

/** Activation bit width: an integer in [MIN_BITS, MAX_BITS]. */
export function actBitsArg(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n < MIN_BITS || n > MAX_BITS) throw new InvalidArgumentError(`expected an activation bit width in ${MIN_BITS}..${MAX_BITS}, got "${v}"`);
  return n;
}

export function port(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n > 65535) throw new InvalidArgumentError(`expected a port number 0..65535, got "${v}"`);
  return n;
}

export function targets(v: string): ProjectionName[] {
  const list = v.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (list.length === 0) throw new InvalidArgumentError('expected a comma-separated list of modules');
  for (const t of list) {
    if (!isProjectionName(t)) throw new InvalidArgumentError(`unknown module "${t}" (choose from ${PROJECTION_NAMES.join(',')})`);
  }
  return list as ProjectionName[];
}

/** Decoder layer indices: "8-15", "0,2,4" or a mix ("0,4-6"); returned ascending without repeats. */
export function layerList(v: string): number[] {
  const out = new Set<number>();
  for (const part of v.split(',').map((s) => s.trim()).filter((s) => s.length > 0)) {
    const m = /^(\d{1,6})(?:-(\d{1,6}))?$/.exec(part);
    if (!m) throw new InvalidArgumentError(`expected layer indices like "8-15" or "0,2,4", got "${v}"`);
    const a = Number(m[1]), b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new InvalidArgumentError(`layer range "${part}" runs backwards`);
    if (b - a > 100_000) throw new InvalidArgumentError(`layer range "${part}" is too long`);
    for (let l = a; l <= b; l++) out.add(l);
  }
  if (out.size === 0) throw new InvalidArgumentError('expected at least one layer index');
  return [...out].sort((x, y) => x - y);
}

/** The LoRA and optimizer options that `train` and `sweep` share, with the defaults of TRAIN_DEFAULTS. */
export function addTrainingHyperparameters(cmd: Command): Command {
  return cmd
    .option('--batch-tokens <n>', 'tokens per micro-batch', positiveInt, TRAIN_DEFAULTS.batchTokens)
    .option('--grad-accum <k>', 'micro-batches per optimizer step', positiveInt, TRAIN_DEFAULTS.gradAccum)
    .option('--lr <x>', 'peak learning rate', positiveNumber, TRAIN_DEFAULTS.lr)
    .option('--warmup <n>', 'warmup steps', nonNegativeInt, TRAIN_DEFAULTS.warmup)
    .addOption(new Option('--schedule <kind>', 'learning-rate schedule after warmup').choices(['cosine', 'linear', 'constant']).default(TRAIN_DEFAULTS.schedule))
    .option('--rank <r>', 'LoRA rank', positiveInt, TRAIN_DEFAULTS.rank)
    .option('--alpha <a>', 'LoRA alpha', positiveNumber, TRAIN_DEFAULTS.alpha)
    .option('--dropout <p>', 'LoRA dropout', probability, TRAIN_DEFAULTS.dropout)
    .option('--targets <list>', 'LoRA target modules', targets, TRAIN_DEFAULTS.targets);
}
