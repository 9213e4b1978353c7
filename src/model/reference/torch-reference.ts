// Test support: runs the PyTorch reference script (Debian's python3-torch at /usr/bin/python3)
// that writes tiny Hugging Face checkpoints and the expected logits, losses and gradients, and
// reads its output back. A missing torch fails the calling test with a clear message.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../../util/paths.js';
import type { Batch } from '../llama.js';

export const PYTHON = '/usr/bin/python3';

/** Fields every reference case has; tests extend it with what they read. */
export interface ReferenceExpected {
  batch: { tokens: number[]; targets: number[]; positions: number[]; seqIds: number[] };
  loss_base: number;
  tensors: Record<string, { offset: number; shape: number[] }>;
}

/** Runs the reference script into a fresh temp folder; returns it and the case names. */
export function runTorchReference(prefix: string): { dir: string; cases: string[] } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const script = join(repoRoot(), 'src', 'model', 'reference', 'torch_reference.py');
  const r = spawnSync(PYTHON, [script, dir], { encoding: 'utf8', timeout: 120_000 });
  if (r.error || r.status !== 0) {
    throw new Error(`helora test: the PyTorch reference failed (${PYTHON} ${script}); it needs Debian's python3-torch. ` +
      `status ${r.status}, error ${r.error?.message ?? 'none'}\n${r.stderr}`);
  }
  return { dir, cases: JSON.parse(readFileSync(join(dir, 'cases.json'), 'utf8')) as string[] };
}

/** One case: its expectations, a getter for the expected tensors, the batch and the checkpoint folder. */
export function loadReferenceCase<E extends ReferenceExpected>(dir: string, name: string):
  { exp: E; get: (k: string) => Float32Array; batch: Batch; folder: string } {
  const folder = join(dir, name);
  const exp = JSON.parse(readFileSync(join(folder, 'expected.json'), 'utf8')) as E;
  const buf = readFileSync(join(folder, 'expected.bin'));
  const all = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  const get = (k: string): Float32Array => {
    const t = exp.tensors[k];
    if (!t) throw new Error(`expected tensor ${k} missing`);
    return all.subarray(t.offset, t.offset + t.shape.reduce((a, b) => a * b, 1));
  };
  const b = exp.batch;
  const batch: Batch = { T: b.tokens.length, tokens: Int32Array.from(b.tokens), targets: Int32Array.from(b.targets), positions: Int32Array.from(b.positions), seqIds: Int32Array.from(b.seqIds) };
  return { exp, get, batch, folder };
}

/** max |a - b| / max |b|. */
export function relErr(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num = Math.max(num, Math.abs(a[i]! - b[i]!)); den = Math.max(den, Math.abs(b[i]!)); }
  assert.ok(den > 0, 'reference tensor is all zeros');
  return num / den;
}
