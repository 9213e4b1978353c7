// `helora demo`: fine-tunes the shipped small model (models/helora-tiny) on WordNet glosses
// ("word: X\ndefinition:" -> " ...") three times with the same seed and data order: with the
// frozen products encrypted on a loopback server, quantized in the clear (the same integers), and
// in fp32. Prints the loss per step side by side, writes the curves, CSVs and adapters under
// ./runs/demo-<timestamp>/, and shows a few generations before and after.

import { writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { TrainMode } from '../train/fine-tune.js';
import { demoGlosses, demoHeldOutGlosses, demoRunOptions, glossRecords, type DemoRunSettings } from '../train/gloss-demo.js';
import { writeFileAtomic, type EvalRow, type HistoryRow } from '../train/run-files.js';
import { GLOSS_PROMPT } from '../train/wordnet.js';
import { RemoteTraining } from '../transport/remote-training.js';
import { LoraAdapter } from '../model/lora.js';
import { complete, loadLocalModel } from './generate-cmd.js';
import { writeLossPlot } from './plot.js';
import { serve } from './serve.js';
import { fineTuneWithProgress } from './train.js';
import { formatBytes } from './progress.js';

export interface DemoOptions extends DemoRunSettings {
  out?: string;
  examples: number;
  /** WordNet glosses held out for evaluation (0: none). */
  heldOut: number;
  threads?: number;
  modes: TrainMode[];
  /** Words whose generations are shown before and after (default: a few from the training set). */
  showWords?: number;
  say?: (line: string) => void;
  progress?: boolean;
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : ' '.repeat(n - s.length) + s;
}

/** The held-out losses of the modes side by side, one line per evaluation (nothing without them). */
function sayHeldOutTable(say: (l: string) => void, modes: TrainMode[], evals: Map<TrainMode, EvalRow[]>): void {
  const steps = [...new Set(modes.flatMap((m) => evals.get(m)!.map((e) => e.step)))].sort((a, b) => a - b);
  if (steps.length === 0) return;
  say('');
  say('held-out loss');
  say(['step', ...modes].map((s, i) => pad(s, i === 0 ? 5 : 11)).join(' '));
  for (const step of steps) {
    const vals = modes.map((m) => evals.get(m)!.find((e) => e.step === step)?.loss);
    say([pad(String(step), 5), ...vals.map((v) => pad(v === undefined ? '-' : v.toFixed(4), 11))].join(' '));
  }
}

export async function runDemo(o: DemoOptions): Promise<{ out: string; histories: Map<TrainMode, HistoryRow[]> }> {
  const say = o.say ?? ((l: string) => process.stdout.write(l + '\n'));
  if (!existsSync(join(o.model, 'config.json'))) {
    throw new Error(`helora: no model at ${o.model} (the demo fine-tunes the shipped models/helora-tiny; pass --model DIR for another folder)`);
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/Z$/, '');
  const out = resolve(o.out ?? join('runs', `demo-${stamp}`));
  mkdirSync(out, { recursive: true });
  const t0 = performance.now();

  const glosses = demoGlosses(o.examples, o.seed);
  const records = glossRecords(glosses);
  const heldOut = glossRecords(demoHeldOutGlosses(o.examples, o.heldOut, o.seed));
  writeFileSync(join(out, 'data.jsonl'), records.map((r) => JSON.stringify(r.kind === 'pair' ? { prompt: r.prompt, completion: r.completion } : r)).join('\n') + '\n');
  say(`helora demo: LoRA fine-tuning of ${o.model} on ${records.length} WordNet glosses (WordNet 3.0, Princeton license), ${o.steps} steps of ${o.batchTokens} tokens per mode`
    + (heldOut.length > 0 ? `; held-out loss on ${heldOut.length} other glosses` : ''));
  say(`output: ${out}`);

  const showWords = glosses.slice(0, o.showWords ?? 3);
  const base = loadLocalModel(o.model);
  const before = new Map<string, string>();
  for (const g of showWords) before.set(g.word, await complete(base, null, GLOSS_PROMPT(g.word), { maxNewTokens: 24 }));

  // A loopback server for the encrypted run, in this process (its kernels run on worker threads).
  const needServer = o.modes.includes('encrypted');
  const serverLog: string[] = [];
  const srv = needServer
    ? await serve({ model: o.model, host: '127.0.0.1', port: 0, threads: o.threads, rate: 1e6, log: (e) => void serverLog.push(JSON.stringify(e)), say: () => {} })
    : null;
  const histories = new Map<TrainMode, HistoryRow[]>();
  const evals = new Map<TrainMode, EvalRow[]>();
  const adapters = new Map<TrainMode, string>();
  const seconds = new Map<TrainMode, number>();
  try {
    if (srv) say(`server: ${srv.server.url}, model hash ${srv.model.hash}`);
    for (const mode of o.modes) {
      const ts = performance.now();
      const modeSay = (l: string): void => say(l.replace(/^helora: /, `${mode}: `));
      const remote = mode === 'encrypted' ? new RemoteTraining({ url: srv!.server.url, say: modeSay }) : null;
      const r = await fineTuneWithProgress({ ...demoRunOptions(o, mode, records, join(out, mode), heldOut), connectEncrypted: remote?.connect, say: modeSay }, o.progress ?? true);
      seconds.set(mode, (performance.now() - ts) / 1000);
      histories.set(mode, r.history);
      evals.set(mode, r.evals);
      if (r.adapterDir) adapters.set(mode, r.adapterDir);
      const last = r.history[r.history.length - 1]!;
      const traffic = mode === 'encrypted' ? `, ${formatBytes(last.bytesUp)} up, ${formatBytes(last.bytesDown)} down` : '';
      const held = r.evals.length > 0 ? `, held-out loss ${r.evals[0]!.loss.toFixed(4)} -> ${r.evals[r.evals.length - 1]!.loss.toFixed(4)}` : '';
      say(`${mode}: ${r.history.length} steps in ${seconds.get(mode)!.toFixed(1)} s, final loss ${last.loss.toFixed(4)}${held}${traffic}`);
    }
  } finally {
    await srv?.close();
    if (serverLog.length > 0) writeFileSync(join(out, 'server.log.jsonl'), serverLog.join('\n') + '\n');
  }

  // Loss table and combined CSV.
  const modes = o.modes;
  const steps = Math.max(...modes.map((m) => histories.get(m)!.length));
  say('');
  say(['step', ...modes].map((s, i) => pad(s, i === 0 ? 5 : 11)).join(' '));
  const csv = [['step', ...modes].join(',')];
  for (let s = 0; s < steps; s++) {
    const vals = modes.map((m) => histories.get(m)![s]?.loss);
    say([pad(String(s + 1), 5), ...vals.map((v) => pad(v === undefined ? '-' : v.toFixed(4), 11))].join(' '));
    csv.push([s + 1, ...vals.map((v) => (v === undefined ? '' : String(v)))].join(','));
  }
  writeFileAtomic(join(out, 'loss.csv'), csv.join('\n') + '\n');
  sayHeldOutTable(say, modes, evals);
  const heldSeries = modes.filter((m) => evals.get(m)!.length > 0).map((m) => ({ name: `${m} held-out`, points: evals.get(m)!.map((e) => [e.step, e.loss] as [number, number]) }));
  writeLossPlot(join(out, 'loss.png'), [...modes.map((m) => ({ name: m, points: histories.get(m)!.map((r) => [r.step, r.loss] as [number, number]) })), ...heldSeries], 'helora demo: wordnet glosses');

  const summary: Record<string, unknown> = { model: o.model, steps: o.steps, batch_tokens: o.batchTokens, examples: records.length, held_out: heldOut.length, seed: o.seed };
  for (const m of modes) {
    const h = histories.get(m)!;
    summary[`final_loss_${m}`] = h[h.length - 1]!.loss;
    summary[`seconds_${m}`] = seconds.get(m);
    const ev = evals.get(m)!;
    if (ev.length > 0) summary[`final_eval_loss_${m}`] = ev[ev.length - 1]!.loss;
  }
  if (histories.has('encrypted') && histories.has('fp32')) {
    const e = summary.final_loss_encrypted as number, f = summary.final_loss_fp32 as number;
    summary.final_loss_rel_diff_encrypted_vs_fp32 = Math.abs(e - f) / f;
    say('');
    say(`final loss: encrypted ${e.toFixed(4)} vs fp32 ${f.toFixed(4)} (relative difference ${(100 * Math.abs(e - f) / f).toFixed(2)}%)`);
  }

  // Generations before and after, with the adapter of the encrypted run (or the first one trained).
  const which = adapters.has('encrypted') ? 'encrypted' : modes.find((m) => adapters.has(m));
  if (which && showWords.length > 0) {
    const { loadAdapter } = await import('../model/peft.js');
    const lora = LoraAdapter.fromTensors(base.config, loadAdapter(adapters.get(which)!, base.config));
    say('');
    say(`generations (greedy) before and after fine-tuning (${which} adapter):`);
    const gens: Record<string, unknown>[] = [];
    for (const g of showWords) {
      const after = await complete(base, lora, GLOSS_PROMPT(g.word), { maxNewTokens: 24 });
      say(`  word: ${g.word}`);
      say(`    wordnet: ${g.definition}`);
      say(`    before:  ${before.get(g.word)!.split('\n')[0]!.trim()}`);
      say(`    after:   ${after.split('\n')[0]!.trim()}`);
      gens.push({ word: g.word, wordnet: g.definition, before: before.get(g.word), after });
    }
    summary.generations = gens;
  }
  summary.total_seconds = (performance.now() - t0) / 1000;
  writeFileAtomic(join(out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  say('');
  say(`wrote ${join(out, 'loss.png')}, ${join(out, 'loss.csv')}, ${join(out, 'summary.json')} and the adapters under ${out}/<mode>/adapter (${summary.total_seconds as number > 0 ? (summary.total_seconds as number).toFixed(0) : '?'} s in all)`);
  return { out, histories };
}
