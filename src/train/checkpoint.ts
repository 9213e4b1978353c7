/**
 * Trainer checkpoints on disk: one safetensors file holding the LoRA values and the AdamW moments
 * (F32, bit-exact), with the step counters and the data position in its metadata. Resuming from
 * it continues exactly as the uninterrupted run would.
 */

import { readSafetensorsMetadata, readTensors, writeSafetensors } from '../model/safetensors.js';
import type { TrainerState } from './trainer.js';

export const CHECKPOINT_FORMAT = 'helora-trainer-checkpoint-v1';
const PARAM = 'param/';
const M = 'adam_m/';
const V = 'adam_v/';

export function saveTrainerCheckpoint(path: string, s: TrainerState): void {
  const tensors: Array<{ name: string; shape: number[]; data: Float32Array }> = [];
  for (const [name, v] of Object.entries(s.params)) tensors.push({ name: PARAM + name, shape: [v.length], data: v });
  for (const [name, v] of Object.entries(s.optimizer.m)) tensors.push({ name: M + name, shape: [v.length], data: v });
  for (const [name, v] of Object.entries(s.optimizer.v)) tensors.push({ name: V + name, shape: [v.length], data: v });
  writeSafetensors(path, tensors, {
    dtype: 'F32',
    metadata: {
      format: CHECKPOINT_FORMAT,
      step: String(s.step),
      optimizer_step: String(s.optimizer.step),
      data_epoch: String(s.data.epoch),
      data_index: String(s.data.index),
    },
  });
}

function count(meta: Record<string, string>, key: string, path: string): number {
  const v = meta[key];
  const n = v === undefined ? NaN : Number(v);
  if (!/^\d{1,15}$/.test(v ?? '') || !Number.isSafeInteger(n)) throw new Error(`helora: checkpoint ${path}: metadata ${key} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return n;
}

/** Read a checkpoint; shapes are checked against the adapter by Trainer.loadState. */
export function loadTrainerCheckpoint(path: string): TrainerState {
  const meta = readSafetensorsMetadata(path);
  if (!meta || meta.format !== CHECKPOINT_FORMAT) throw new Error(`helora: ${path} is not a helora trainer checkpoint (format ${JSON.stringify(meta?.format)})`);
  const s: TrainerState = {
    step: count(meta, 'step', path),
    optimizer: { step: count(meta, 'optimizer_step', path), m: {}, v: {} },
    params: {},
    data: { epoch: count(meta, 'data_epoch', path), index: count(meta, 'data_index', path) },
  };
  for (const [name, t] of readTensors(path)) {
    if (t.shape.length !== 1) throw new Error(`helora: checkpoint ${path}: tensor ${name} must be one-dimensional`);
    if (name.startsWith(PARAM)) s.params[name.slice(PARAM.length)] = t.data;
    else if (name.startsWith(M)) s.optimizer.m[name.slice(M.length)] = t.data;
    else if (name.startsWith(V)) s.optimizer.v[name.slice(V.length)] = t.data;
    else throw new Error(`helora: checkpoint ${path}: unexpected tensor ${name}`);
  }
  return s;
}
