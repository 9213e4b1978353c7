import { IGNORE_INDEX } from '../model/layers.js';
import type { Parameter } from '../model/parameter.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSafetensors } from '../model/safetensors.js';
import { loadTrainerCheckpoint, saveTrainerCheckpoint } from './checkpoint.js';
import { makeSchedule } from './optim.js';
import { epochBatchSource, seededRandom, type PackedBatch } from './packing.js';
import { Trainer } from './trainer.js';

/** Quadratic toy: the loss of a target token y is (w[y] - y / 10)^2, so gradients depend on the data. */
class Quad {
  readonly w = new Float32Array(16);
  readonly g = new Float32Array(16);
  parameters(): Parameter[] {
    return [{ name: 'w', value: this.w, grad: this.g }];
  }
  zeroGrad(): void {
    this.g.fill(0);
  }
}
const model = {
  async forwardBackward(b: PackedBatch, q: Quad, o?: { lossDenominator?: number }): Promise<{ loss: number; tokens: number }> {
    let n = 0, sum = 0;
    for (let t = 0; t < b.T; t++) if (b.targets[t] !== IGNORE_INDEX) n++;
    for (let t = 0; t < b.T; t++) {
      const y = b.targets[t]!;
      if (y === IGNORE_INDEX) continue;
      const d = q.w[y]! - y / 10;
      sum += d * d;
      q.g[y]! += (2 * d) / (o?.lossDenominator ?? n);
    }
    return { loss: n ? sum / n : 0, tokens: n };
  },
};

function setup(): { tr: Trainer<Quad>; q: Quad } {
  const rnd = seededRandom(5);
  const ex = Array.from({ length: 20 }, () => ({ ids: Array.from({ length: 3 + Math.floor(rnd() * 10) }, () => Math.floor(rnd() * 16)) }));
  const q = new Quad();
  return { q, tr: new Trainer({ model, lora: q, data: epochBatchSource(ex, { T: 16, padId: 0, seed: 2 }), gradAccum: 2, seed: 1, schedule: makeSchedule({ kind: 'linear', lr: 0.05, totalSteps: 10 }) }) };
}

test('a checkpoint file resumes training exactly', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'helora-ckpt-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const full = setup();
  await full.tr.train(10);
  const a = setup();
  await a.tr.train(6);
  const path = join(dir, 'ckpt.safetensors');
  saveTrainerCheckpoint(path, a.tr.state());
  const loaded = loadTrainerCheckpoint(path);
  assert.deepEqual(loaded, a.tr.state());
  const b = setup();
  b.tr.loadState(loaded);
  await b.tr.train(10);
  assert.deepEqual(b.q.w, full.q.w);
  assert.ok(full.q.w.some((v) => v !== 0));
});

test('foreign or damaged checkpoint files are refused', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'helora-ckpt-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const other = join(dir, 'model.safetensors');
  writeSafetensors(other, [{ name: 'x', shape: [2], data: new Float32Array(2) }], { metadata: { format: 'pt' } });
  assert.throws(() => loadTrainerCheckpoint(other), /not a helora trainer checkpoint/);
  const bad = join(dir, 'bad.safetensors');
  writeSafetensors(bad, [{ name: 'param/w', shape: [2], data: new Float32Array(2) }], {
    metadata: { format: 'helora-trainer-checkpoint-v1', step: '-1', optimizer_step: '0', data_epoch: '0', data_index: '0' },
  });
  assert.throws(() => loadTrainerCheckpoint(bad), /metadata step must be a non-negative integer/);
  const junk = join(dir, 'junk.safetensors');
  writeFileSync(junk, 'not a safetensors file');
  assert.throws(() => loadTrainerCheckpoint(junk));
});
