import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateSync } from 'node:zlib';
import { paramsById, resultErrorBound } from '../crypto/index.js';
import { LocalFp32Provider } from '../model/frozen.js';
import { LlamaModel } from '../model/llama.js';
import { loadModelFolder } from '../model/loader.js';
import { LoraAdapter } from '../model/lora.js';
import { loadAdapter } from '../model/peft.js';
import { readSafetensorsHeader, readTensors } from '../model/safetensors.js';
import { WEIGHT_QMAX } from '../quant/quantize.js';
import { packExamples } from '../train/packing.js';
import { writeTinyModelFolder, TINY_SHAPE } from './fixtures.js';
import { crc32, PNG_SIGNATURE, plotLines } from './plot.js';
import { TRAIN_DEFAULTS, tokenizeForTraining } from '../train/fine-tune.js';
import { CSV_HEADER, CSV_HEADER_EVAL, parseHistoryCsv } from '../train/run-files.js';
import { parseSynsetLine } from '../train/wordnet.js';
import { runTrain, type TrainOptions } from './train.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { layerList } from './args.js';

const MAIN = join(dirname(fileURLToPath(import.meta.url)), 'main.js');
const work = mkdtempSync(join(tmpdir(), 'helora-cli-test-'));
const modelDir = join(work, 'model');
const dataPath = join(work, 'data.jsonl');
const evalPath = join(work, 'heldout.jsonl');
const children = new Set<ChildProcess>();

before(() => {
  const pairs = writeTinyModelFolder(modelDir);
  writeFileSync(dataPath, pairs.slice(0, 120).map((p) => JSON.stringify(p)).join('\n') + '\n');
  writeFileSync(evalPath, pairs.slice(120, 150).map((p) => JSON.stringify(p)).join('\n') + '\n');
});

after(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

/** Starts `helora serve` in its own process; resolves with its URL once it listens. */
function startServerProcess(port = 0, extra: string[] = []): Promise<{ proc: ChildProcess; url: string; port: number; hash: string }> {
  const proc = spawn(process.execPath, [MAIN, 'serve', '--model', modelDir, '--port', String(port), '--threads', '1', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  proc.on('exit', () => children.delete(proc));
  return new Promise((resolve, reject) => {
    let buf = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`server did not start: ${err}`)), 30_000);
    proc.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (const line of buf.split('\n')) {
        if (!line.includes('"listening"')) continue;
        const e = JSON.parse(line) as { url: string; model_hash: string };
        clearTimeout(timer);
        resolve({ proc, url: e.url, port: Number(new URL(e.url.replace(/^ws/, 'http')).port), hash: e.model_hash });
        return;
      }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited with ${code}: ${err}`)); });
  });
}

function opts(over: Partial<TrainOptions>): TrainOptions {
  return {
    ...TRAIN_DEFAULTS, model: modelDir, data: dataPath, out: join(work, 'unused'), mode: 'quantized', steps: 2, batchTokens: 256, lr: 1e-2,
    dropout: 0.1, seed: 3, resume: false, checkpointEvery: 1, progress: false, say: () => {}, ...over,
  };
}

function loraValues(lora: LoraAdapter): Float32Array[] {
  return lora.parameters().map((p) => p.value);
}

function maxAbsDiff(a: Float32Array[], b: Float32Array[]): number {
  assert.equal(a.length, b.length);
  let m = 0;
  a.forEach((x, i) => {
    assert.equal(x.length, b[i]!.length);
    for (let j = 0; j < x.length; j++) m = Math.max(m, Math.abs(x[j]! - b[i]![j]!));
  });
  return m;
}

/** Parses a PNG: checks the signature, chunk CRCs and IHDR; returns the inflated image data. */
function decodePng(png: Buffer): { width: number; height: number; raw: Buffer } {
  assert.deepEqual([...png.subarray(0, 8)], [...PNG_SIGNATURE]);
  let off = 8;
  let width = 0, height = 0;
  const idat: Buffer[] = [];
  let sawEnd = false;
  while (off < png.length) {
    const len = png.readUInt32BE(off);
    const type = png.toString('ascii', off + 4, off + 8);
    const data = png.subarray(off + 8, off + 8 + len);
    assert.equal(png.readUInt32BE(off + 8 + len), crc32(png.subarray(off + 4, off + 8 + len)), `CRC of ${type}`);
    if (type === 'IHDR') {
      assert.equal(len, 13);
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      assert.deepEqual([...data.subarray(8)], [8, 2, 0, 0, 0]);
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') sawEnd = true;
    off += 12 + len;
  }
  assert.ok(sawEnd && width > 0 && height > 0);
  const raw = inflateSync(Buffer.concat(idat));
  assert.equal(raw.length, (width * 3 + 1) * height);
  return { width, height, raw };
}

test('PNG plot: valid signature, IHDR, CRCs; IDAT inflates to the image size; curves are drawn', () => {
  const img = plotLines([{ name: 'a', points: [[1, 3], [2, 2], [3, 1]] }, { name: 'b', points: [[1, 1], [3, 3]] }], { width: 320, height: 200, title: 't' });
  const { width, height, raw } = decodePng(img.toPng());
  assert.equal(width, 320);
  assert.equal(height, 200);
  // Every row starts with filter byte 0 and the pixels equal the rasterized image.
  for (let y = 0; y < height; y++) {
    assert.equal(raw[y * (width * 3 + 1)], 0);
    assert.deepEqual(raw.subarray(y * (width * 3 + 1) + 1, (y + 1) * (width * 3 + 1)), Buffer.from(img.rgb.subarray(y * width * 3, (y + 1) * width * 3)));
  }
  // Both series colours appear.
  const has = (c: number[]): boolean => { for (let i = 0; i < img.rgb.length; i += 3) if (img.rgb[i] === c[0] && img.rgb[i + 1] === c[1] && img.rgb[i + 2] === c[2]) return true; return false; };
  assert.ok(has([213, 94, 0]) && has([0, 114, 178]));
  // Known CRC-32 check value.
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
});

test('WordNet synset lines become (word, definition) with the examples dropped', () => {
  const g = parseSynsetLine('00001740 29 v 04 breathe 0 take_a_breath 0 respire 0 suspire 3 021 * 00005041 v 0000 | draw air into, and expel out of, the lungs; "I can breathe better"', 'verb');
  assert.deepEqual(g, { word: 'breathe', pos: 'verb', definition: 'draw air into, and expel out of, the lungs' });
  assert.equal(parseSynsetLine('  1 This software and database is being provided', 'verb'), null);
});

test('CLI argument errors are clear', () => {
  const run = (...args: string[]): { code: number | null; err: string } => {
    const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 30_000 });
    return { code: r.status, err: r.stderr };
  };
  let r = run('train', '--data', dataPath, '--out', join(work, 'x'));
  assert.notEqual(r.code, 0);
  assert.match(r.err, /required option '--model <dir>'/);
  r = run('train', '--model', modelDir, '--data', dataPath, '--out', join(work, 'x'), '--mode', 'plain');
  assert.notEqual(r.code, 0);
  assert.match(r.err, /--mode.*plain.*encrypted, quantized, fp32|Allowed choices are encrypted, quantized, fp32/);
  r = run('train', '--model', modelDir, '--data', dataPath, '--out', join(work, 'x'), '--steps', '0');
  assert.notEqual(r.code, 0);
  assert.match(r.err, /--steps.*expected a positive integer, got "0"/);
  r = run('train', '--model', modelDir, '--data', dataPath, '--out', join(work, 'x'));
  assert.notEqual(r.code, 0);
  assert.match(r.err, /encrypted mode needs --server URL/);
  r = run('train', '--model', modelDir, '--data', dataPath, '--out', join(work, 'x'), '--mode', 'fp32', '--steps', '2', '--epochs', '1');
  assert.match(r.err, /either --steps or --epochs/);
  r = run('train', '--model', modelDir, '--data', join(work, 'missing.jsonl'), '--out', join(work, 'x'), '--mode', 'fp32');
  assert.match(r.err, /cannot open training data .*missing\.jsonl/);
  r = run('train', '--model', modelDir, '--data', dataPath, '--out', join(work, 'x'), '--mode', 'fp32', '--targets', 'q_proj,foo');
  assert.match(r.err, /unknown module "foo"/);
  r = run('train', '--model', modelDir, '--data', dataPath, '--out', join(work, 'x'), '--mode', 'fp32', '--eval-data', evalPath, '--eval-split', '0.1');
  assert.match(r.err, /either --eval-data or --eval-split, not both/);
  r = run('train', '--model', modelDir, '--data', dataPath, '--out', join(work, 'x'), '--mode', 'fp32', '--eval-every', '2');
  assert.match(r.err, /--eval-every needs a held-out set: --eval-data FILE or --eval-split FRACTION/);
  r = run('train', '--model', modelDir, '--data', dataPath, '--out', join(work, 'x'), '--mode', 'fp32', '--eval-split', '1');
  assert.match(r.err, /--eval-split.*expected a fraction in \(0, 1\), got "1"/);
  r = run('train', '--model', modelDir, '--data', dataPath, '--out', join(work, 'x'), '--mode', 'quantized', '--act-bits', '1');
  assert.match(r.err, /--act-bits.*expected an activation bit width in 2\.\.16, got "1"/);
  r = run('train', '--model', modelDir, '--data', dataPath, '--out', join(work, 'x'), '--mode', 'fp32', '--threads', '0');
  assert.match(r.err, /--threads.*expected a positive integer, got "0"/);
  r = run('eval', '--model', modelDir, '--data', dataPath, '--act-bits', '5');
  assert.match(r.err, /--act-bits is only used with --mode quantized/);
  r = run('serve', '--model', modelDir, '--port', '70000');
  assert.match(r.err, /expected a port number/);
  assert.ok(!existsSync(join(work, 'x', 'checkpoints')));
});

test('encrypted training over loopback TCP (server in its own process) matches the quantized mode, held-out eval too; CSV, PNG and adapter are right', async () => {
  const srv = await startServerProcess();
  try {
    const withEval = { evalData: evalPath, evalEvery: 1 };
    const enc = await runTrain(opts({ mode: 'encrypted', server: srv.url, out: join(work, 'enc'), ...withEval }));
    const quant = await runTrain(opts({ mode: 'quantized', out: join(work, 'quant'), ...withEval }));
    const fp32 = await runTrain(opts({ mode: 'fp32', out: join(work, 'fp32'), ...withEval }));
    assert.equal(enc.modelHash, srv.hash);
    // A server announcing another model is refused before any data is sent.
    await assert.rejects(runTrain(opts({ mode: 'encrypted', server: srv.url, out: join(work, 'wrong'), expectHash: 'ab'.repeat(32) })), /differs from the expected/);
    assert.ok(!existsSync(join(work, 'wrong', 'loss.csv')));
    assert.equal(enc.hashCheck, 'local-folder');
    assert.equal(enc.history.length, 2);

    // Tolerance from the documented HE error (crypto/noise.ts): each decrypted integer product is
    // off by at most `bound` units (8 sigma, at the full plaintext width, the worst case), while
    // the 8-bit rounding of the quantized path moves it by up to 0.5 * 127 * K units. So the HE
    // error is at most a fraction r of the quantization error, and its effect on the loss at most
    // about r times the quantized-vs-fp32 loss gap (x4 for safety; plus float round-off).
    const params = paramsById(1);
    const K = TINY_SHAPE.hiddenSize; // smallest inner dimension of any product
    const Kmax = 2 * TINY_SHAPE.intermediateSize; // largest (gate/up backward, stacked)
    const bound = resultErrorBound(params, WEIGHT_QMAX * WEIGHT_QMAX * Kmax, params.ringDegree);
    const r = bound / (0.5 * WEIGHT_QMAX * K);
    for (let s = 0; s < 2; s++) {
      const gap = Math.abs(quant.history[s]!.loss - fp32.history[s]!.loss);
      const tol = 4 * r * gap + 1e-9 * quant.history[s]!.loss;
      const d = Math.abs(enc.history[s]!.loss - quant.history[s]!.loss);
      assert.ok(d <= tol, `step ${s + 1}: encrypted ${enc.history[s]!.loss} vs quantized ${quant.history[s]!.loss} (|d| = ${d}, tolerance ${tol})`);
    }
    // Held-out evaluation through the server (forward only) is the quantized mode's, at steps 0, 1, 2.
    assert.deepEqual(enc.evals.map((e) => e.step), [0, 1, 2]);
    for (let s = 0; s < 3; s++) {
      const [e, q, f] = [enc, quant, fp32].map((r) => r.evals[s]!.loss);
      const d = Math.abs(e! - q!);
      assert.ok(d <= 4 * r * Math.abs(q! - f!) + 1e-9 * q!, `eval after step ${s}: encrypted ${e} vs quantized ${q} (fp32 ${f})`);
      assert.notEqual(q, f);
    }
    assert.equal(enc.finalEval, enc.evals[2]);
    // The quantized mode is a different computation from fp32 (else the comparison above proves nothing).
    assert.notEqual(quant.history[0]!.loss, fp32.history[0]!.loss);
    assert.ok(enc.history[1]!.bytesUp > 0 && enc.history[1]!.bytesDown > enc.history[0]!.bytesDown);

    // CSV and PNG.
    const rows = parseHistoryCsv(readFileSync(enc.csvPath, 'utf8'));
    assert.equal(readFileSync(enc.csvPath, 'utf8').split('\n')[0], CSV_HEADER_EVAL);
    assert.deepEqual(rows.map((x) => x.step), [1, 2]);
    assert.deepEqual(rows.map((x) => x.loss), enc.history.map((h) => h.loss));
    decodePng(readFileSync(enc.pngPath));

    // The adapter loads back and gives the same logits as the trained LoRA.
    const { config, tensors } = loadModelFolder(modelDir);
    const local = LlamaModel.fromTensors(config, tensors, LocalFp32Provider.fromTensors(config, tensors));
    const loaded = LoraAdapter.fromTensors(config, loadAdapter(enc.adapterDir!, config));
    const tok = loadTokenizer(modelDir);
    const { examples, padId } = tokenizeForTraining([{ kind: 'pair', prompt: 'word: breathe\ndefinition:', completion: ' draw air' }], tok, config);
    const batch = packExamples(examples, { T: 32, padId }).batches[0]!;
    const a = await local.forward(batch, enc.lora);
    const b = await local.forward(batch, loaded);
    const base = await local.forward(batch, null);
    assert.deepEqual(b.logits, a.logits);
    assert.notDeepEqual(a.logits, base.logits); // the adapter is not a no-op
  } finally {
    srv.proc.kill('SIGKILL');
  }
});

test('--act-bits 5: encrypted (server at --act-bits 6) equals quantized at 5 bits (products and held-out eval), differs from 8 bits; more than the server\'s width is refused', async () => {
  const srv = await startServerProcess(0, ['--act-bits', '6']);
  try {
    const o = { steps: 2, evalData: evalPath };
    const enc5 = await runTrain(opts({ ...o, mode: 'encrypted', server: srv.url, out: join(work, 'enc5'), actBits: 5 }));
    const q5 = await runTrain(opts({ ...o, mode: 'quantized', out: join(work, 'q5'), actBits: 5 }));
    const q8 = await runTrain(opts({ ...o, mode: 'quantized', out: join(work, 'q8') }));
    const f = await runTrain(opts({ ...o, mode: 'fp32', out: join(work, 'f5') }));
    // Exactly equal: with the adaptive plaintext width the HE error rounds away at this size (each
    // decrypted product is y + round(E), |E| < 1/2 but with probability ~1e-14 per coefficient).
    const pairs = [...enc5.history.map((h, s) => [h.loss, q5.history[s]!.loss, q8.history[s]!.loss, f.history[s]!.loss]),
      ...enc5.evals.map((e, s) => [e.loss, q5.evals[s]!.loss, q8.evals[s]!.loss, f.evals[s]!.loss])];
    assert.equal(pairs.length, 2 + 2);
    // 8 bits differ from 5 by more than the HE error could explain (the tolerance of the 8-bit comparison above).
    const params = paramsById(1);
    const bound = resultErrorBound(params, WEIGHT_QMAX * WEIGHT_QMAX * 2 * TINY_SHAPE.intermediateSize, params.ringDegree);
    const r = bound / (0.5 * WEIGHT_QMAX * TINY_SHAPE.hiddenSize);
    for (const [e, q, q8v, fv] of pairs as number[][]) {
      assert.equal(e, q, `encrypted 5 bits ${e} vs quantized 5 bits ${q}`);
      const tol = 4 * r * Math.abs(q! - fv!) + 1e-9 * q!;
      assert.ok(Math.abs(q8v! - q!) > tol, `5 bits ${q} must differ from 8 bits ${q8v} by more than ${tol}`);
    }
    await assert.rejects(runTrain(opts({ mode: 'encrypted', server: srv.url, out: join(work, 'enc7'), actBits: 7 })),
      /--act-bits 7 is more than the server's 6 bits/);
    assert.ok(!existsSync(join(work, 'enc7', 'loss.csv')));
    await assert.rejects(runTrain(opts({ mode: 'fp32', out: join(work, 'f9'), actBits: 6 })), /--act-bits is used in quantized and encrypted mode/);
  } finally {
    srv.proc.kill('SIGKILL');
  }
});

test('helora train --eval-data reports the held-out loss; helora eval of the adapter gives it again', () => {
  const out = join(work, 'evalrun');
  const r = spawnSync(process.execPath, [MAIN, 'train', '--mode', 'fp32', '--model', modelDir, '--data', dataPath, '--eval-data', evalPath, '--eval-every', '1',
    '--out', out, '--steps', '2', '--batch-tokens', '256', '--lr', '1e-2', '--no-progress'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const done = JSON.parse(r.stdout.trim().split('\n').pop()!) as { final_eval_loss: number; final_eval_ppl: number; eval_tokens: number };
  assert.ok(done.final_eval_loss > 0 && Math.abs(done.final_eval_ppl - Math.exp(done.final_eval_loss)) < 1e-9 * done.final_eval_ppl);
  assert.match(r.stderr, /held-out loss [\d.]+ \(perplexity [\d.]+, \d+ tokens\) after step 0/);
  const e = spawnSync(process.execPath, [MAIN, 'eval', '--model', modelDir, '--adapter', join(out, 'adapter'), '--data', evalPath, '--batch-tokens', '256', '--json'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(e.status, 0, e.stderr);
  const j = JSON.parse(e.stdout) as { loss: number; ppl: number; tokens: number; mode: string };
  assert.equal(j.mode, 'fp32');
  assert.equal(j.tokens, done.eval_tokens);
  assert.ok(Math.abs(j.loss - done.final_eval_loss) <= 1e-6 * j.loss, `${j.loss} vs ${done.final_eval_loss}`);
  const base = spawnSync(process.execPath, [MAIN, 'eval', '--model', modelDir, '--data', evalPath, '--batch-tokens', '256'], { encoding: 'utf8', timeout: 60_000 });
  assert.match(base.stdout, /^base model on .* loss [\d.]+, perplexity [\d.]+/);
  decodePng(readFileSync(join(out, 'loss.png')));
});

test('client killed (SIGKILL) mid-run: --resume finishes with exactly the weights of an uninterrupted run (quantized mode)', async () => {
  const args = (out: string): string[] => [MAIN, 'train', '--mode', 'quantized', '--model', modelDir, '--data', dataPath, '--out', out,
    '--steps', '5', '--batch-tokens', '256', '--lr', '1e-2', '--seed', '5', '--checkpoint-every', '1', '--no-progress'];
  const full = join(work, 'full');
  const r0 = spawnSync(process.execPath, args(full), { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r0.status, 0, r0.stderr);

  const crashed = join(work, 'crashed');
  const proc = spawn(process.execPath, args(crashed), { stdio: 'ignore' });
  children.add(proc);
  // Kill as soon as the second checkpoint is in place (the run is then somewhere in steps 3..5).
  await new Promise<void>((resolve, reject) => {
    const t = setInterval(() => {
      if (existsSync(join(crashed, 'checkpoints', 'step-00000002'))) {
        clearInterval(t);
        proc.kill('SIGKILL');
      }
    }, 5);
    const giveUp = setTimeout(() => { clearInterval(t); reject(new Error('no checkpoint appeared')); }, 60_000);
    proc.on('exit', () => { clearInterval(t); clearTimeout(giveUp); resolve(); });
  });
  const wasFinished = existsSync(join(crashed, 'adapter'));
  // Resumed on one thread (the uninterrupted run used every core): the kernels' results do not depend on it.
  const r1 = spawnSync(process.execPath, [...args(crashed), '--resume', '--threads', '1'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r1.status, 0, r1.stderr);
  if (!wasFinished) assert.match(r1.stderr, /resuming quantized from step [2-5] of 5/);

  const w = (dir: string): Map<string, { data: Float32Array }> => readTensors(join(dir, 'adapter', 'adapter_model.safetensors'));
  const a = w(full), b = w(crashed);
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [k, t] of a) assert.deepEqual(b.get(k)!.data, t.data, k);
  assert.ok([...a.values()].some((t) => t.data.some((v) => v !== 0)));
  // The loss log of the resumed run has each step exactly once, with the same losses.
  assert.equal(readFileSync(join(full, 'loss.csv'), 'utf8').split('\n')[0], CSV_HEADER); // no eval: the 7 columns of before
  const la = parseHistoryCsv(readFileSync(join(full, 'loss.csv'), 'utf8'));
  const lb = parseHistoryCsv(readFileSync(join(crashed, 'loss.csv'), 'utf8'));
  assert.deepEqual(lb.map((x) => [x.step, x.loss]), la.map((x) => [x.step, x.loss]));
  assert.ok(readSafetensorsHeader(join(crashed, 'adapter', 'adapter_model.safetensors')).size > 0);
  // A second start without --resume refuses to overwrite the run.
  const r2 = spawnSync(process.execPath, args(crashed), { encoding: 'utf8', timeout: 60_000 });
  assert.notEqual(r2.status, 0);
  assert.match(r2.stderr, /already holds checkpoints.*--resume/);
});

test('server killed (SIGKILL) and restarted mid-run: the client reconnects or resumes from its checkpoint, same result as an uninterrupted run', async () => {
  const first = await startServerProcess();
  const steps = 3;
  const ref = await runTrain(opts({ mode: 'quantized', out: join(work, 'ref'), steps, seed: 9 }));
  const out = join(work, 'killed');
  let second: Awaited<ReturnType<typeof startServerProcess>> | null = null;
  try {
    // 1) The server dies after step 1 and stays down past the client's retry deadline: the run fails...
    await assert.rejects(runTrain(opts({
      mode: 'encrypted', server: first.url, out, steps, seed: 9, retryDeadlineMs: 1500,
      onStep: (row) => { if (row.step === 1) first.proc.kill('SIGKILL'); },
    })), /lost the connection|could not reconnect|ECONNREFUSED/);
    assert.ok(existsSync(join(out, 'checkpoints', 'step-00000001')));
    // ...and --resume against the restarted server (same port) continues from the checkpoint.
    second = await startServerProcess(first.port);
    let restarted: Awaited<ReturnType<typeof startServerProcess>> | null = null;
    const resumed = await runTrain(opts({
      mode: 'encrypted', server: second.url, out, steps, seed: 9, resume: true, retryDeadlineMs: 30_000,
      // 2) A second crash, this time restarted at once: the transport client reconnects and re-sends.
      onStep: (row) => {
        if (row.step === 2) {
          second!.proc.kill('SIGKILL');
          void startServerProcess(first.port).then((s) => { restarted = s; });
        }
      },
    }));
    assert.equal(resumed.startStep, 1);
    assert.deepEqual(resumed.history.map((h) => h.step), [1, 2, 3]);
    assert.ok(restarted !== null, 'the server was restarted');
    assert.ok(resumed.remote!.reconnects >= 1);
    // Same weights as the uninterrupted (quantized = same integers) run, up to the HE error; in
    // practice the adaptive plaintext width makes the products exact at this size.
    const d = maxAbsDiff(loraValues(resumed.lora), loraValues(ref.lora));
    const scale = Math.max(...loraValues(ref.lora).map((v) => v.reduce((m, x) => Math.max(m, Math.abs(x)), 0)));
    assert.ok(d <= 1e-3 * scale, `max |LoRA difference| ${d} (weights up to ${scale})`);
    (restarted as { proc: ChildProcess } | null)?.proc.kill('SIGKILL');
  } finally {
    first.proc.kill('SIGKILL');
    second?.proc.kill('SIGKILL');
  }
});

test('--layers parses indices and ranges, ascending without repeats, and refuses anything else', () => {
  assert.deepEqual(layerList('8-11'), [8, 9, 10, 11]);
  assert.deepEqual(layerList('5, 0,2-3,2'), [0, 2, 3, 5]);
  for (const bad of ['', 'a', '3-1', '-2', '1.5', '2-', '1,,x']) assert.throws(() => layerList(bad), /layer|expected/, bad);
});
