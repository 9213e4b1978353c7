import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SweepResult, SweepRun } from '../train/sweep.js';
import { writeTinyModelFolder } from './fixtures.js';
import { PNG_SIGNATURE } from './plot.js';
import { formatSweep, widthList } from './sweep.js';

const MAIN = join(dirname(fileURLToPath(import.meta.url)), 'main.js');
const work = mkdtempSync(join(tmpdir(), 'helora-sweep-cli-'));
const modelDir = join(work, 'model');
const dataPath = join(work, 'data.jsonl');

before(() => {
  const pairs = writeTinyModelFolder(modelDir);
  writeFileSync(dataPath, pairs.slice(0, 60).map((p) => JSON.stringify(p)).join('\n') + '\n');
});
after(() => rmSync(work, { recursive: true, force: true }));

const run = (bits: number | null, loss: number, fp32: number): SweepRun => ({
  label: bits === null ? 'fp32' : `bits-${bits}`, actBits: bits, out: '/x', evals: [{ step: 0, loss, ppl: Math.exp(loss), tokens: 9 }], finalEvalLoss: loss,
  relGap: (loss - fp32) / fp32, bytesPerToken: bits === null ? null : { up: 1000.4, down: 2000 + bits },
});

test('the sweep table: one row per width against fp32, the gap in percent, bytes per token, and the recommendation (or clearly none)', () => {
  const r: SweepResult = { fp32: run(null, 2, 2), widths: [run(4, 2.1, 2), run(6, 2.01, 2), run(8, 2.0, 2)], tolerance: 0.01, recommended: 6 };
  const text = formatSweep(r);
  const lines = text.split('\n');
  assert.match(lines[0]!, /^width\s+held-out loss\s+perplexity\s+vs fp32\s+B\/token up\s+B\/token down$/);
  assert.match(lines[2]!, /^fp32\s+2\.0000\s+7\.389\s+-\s+- \(local\)\s+-$/);
  assert.match(lines[3]!, /^4 bits\s+2\.1000\s+8\.166\s+\+5\.00%\s+1000\s+2004$/);
  assert.match(lines[4]!, /^6 bits\s+2\.0100\s+7\.463\s+\+0\.50%/);
  assert.match(text, /recommended: --act-bits 6 \(the smallest width whose final held-out loss is within 1% of fp32\)/);
  const none = formatSweep({ ...r, widths: [run(4, 2.1, 2)], recommended: null });
  assert.match(none, /no width is within 1% of fp32's final held-out loss: none of 4 bits is recommended/);
  assert.doesNotMatch(none, /recommended: --act-bits/);
  assert.deepEqual(widthList('8, 4,5'), [8, 4, 5]);
  assert.throws(() => widthList('4,x'), /activation bit width/);
});

test('helora sweep on the tiny model: run folders, sweep.json, sweep.png, the table; flag errors are clear', () => {
  const out = join(work, 'out');
  const args = ['sweep', '--model', modelDir, '--data', dataPath, '--out', out, '--widths', '8,3', '--steps', '2', '--batch-tokens', '128', '--lr', '1e-2', '--no-progress'];
  const r = spawnSync(process.execPath, [MAIN, ...args, '--json'], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { recommended_act_bits: number | null; tolerance: number; fp32: { final_eval_loss: number; eval_curve: unknown[] };
    widths: { act_bits: number; final_eval_loss: number; rel_gap_vs_fp32: number; bytes_per_token_up: number }[] };
  assert.deepEqual(j.widths.map((w) => w.act_bits), [3, 8]);
  assert.deepEqual(JSON.parse(readFileSync(join(out, 'sweep.json'), 'utf8')), j);
  for (const w of j.widths) assert.equal(w.rel_gap_vs_fp32, (w.final_eval_loss - j.fp32.final_eval_loss) / j.fp32.final_eval_loss);
  const within = j.widths.filter((w) => w.rel_gap_vs_fp32 <= 0.01).map((w) => w.act_bits);
  assert.equal(j.recommended_act_bits, within.length > 0 ? Math.min(...within) : null);
  assert.equal(j.fp32.eval_curve.length, 3); // steps 0, 1, 2
  for (const d of ['fp32', 'bits-3', 'bits-8']) assert.ok(existsSync(join(out, d, 'loss.csv')), d);
  assert.deepEqual([...readFileSync(join(out, 'sweep.png')).subarray(0, 8)], [...PNG_SIGNATURE]);
  // The table from the finished runs (resumed at their ends).
  const t = spawnSync(process.execPath, [MAIN, ...args, '--resume'], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(t.status, 0, t.stderr);
  assert.match(t.stdout, /^width .*\n-+ .*\nfp32 .*\n3 bits .*\n8 bits /);
  assert.match(t.stdout, /recommended: --act-bits \d|no width is within 1%/);
  const bad = spawnSync(process.execPath, [MAIN, 'sweep', '--model', modelDir, '--data', dataPath, '--out', join(work, 'bad'), '--widths', '4,1'], { encoding: 'utf8' });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /--widths.*expected an activation bit width in 2\.\.16, got "1"/);
  const both = spawnSync(process.execPath, [MAIN, 'sweep', '--model', modelDir, '--data', dataPath, '--out', join(work, 'bad'), '--eval-data', dataPath, '--eval-split', '0.2'], { encoding: 'utf8' });
  assert.match(both.stderr, /either --eval-data or --eval-split, not both/);
});
