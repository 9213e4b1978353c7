/**
 * `npm run bench:model`: fp32 GEMM throughput and LoRA training throughput of a
 * SmolLM2-135M-shaped model (random weights) with the fp32 and the int8-quantized frozen
 * products. Prints ONE JSON object to stdout; progress goes to stderr.
 *
 * Flags (or env HELORA_BENCH_<NAME>): --layers N, --tokens T (micro-batch size), --seq-len L
 * (tokens per packed sequence), --no-fp32, --no-int8, --no-gemm. Defaults are the real shape:
 * 30 layers, 2048-token micro-batches of four 512-token sequences.
 * Each provider runs one warm-up training step, then ONE measured step (forward, backward,
 * clip, AdamW): the full-size step takes minutes.
 */

import { cpus, platform, release } from 'node:os';
import { matmulForward } from '../kernels/matmul-f32.js';
import { parseConfig } from '../model/config.js';
import { LocalFp32Provider, LocalQuantizedProvider, type FrozenLinearProvider } from '../model/frozen.js';
import { LlamaModel } from '../model/llama.js';
import { LoraAdapter } from '../model/lora.js';
import { makeSchedule } from '../train/optim.js';
import { epochBatchSource, seededRandom, type Example } from '../train/packing.js';
import { llamaConfigJson, randomLlamaTensors, type RandomLlamaShape } from '../train/random-init.js';
import { Trainer } from '../train/trainer.js';

/** SmolLM2-135M (model card): hidden 576, intermediate 1536, 30 layers, 9/3 heads, vocab 49152, tied. */
export const SMOLLM2_135M: RandomLlamaShape = {
  hiddenSize: 576, intermediateSize: 1536, numLayers: 30, numHeads: 9, numKvHeads: 3, vocabSize: 49152,
  ropeTheta: 100000, maxPositionEmbeddings: 8192,
};
const GEMM_SIZE = 1024;
const GEMM_REPEATS = 3;
const LORA_RANK = 8;

function log(msg: string): void {
  process.stderr.write(`[bench:model] ${msg}\n`);
}

function option(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  if (i >= 0) return args[i + 1];
  const eq = args.find((a) => a.startsWith(`--${name}=`));
  if (eq) return eq.slice(name.length + 3);
  return process.env[`HELORA_BENCH_${name.toUpperCase().replace(/-/g, '_')}`];
}
function intOption(args: string[], name: string, fallback: number): number {
  const v = option(args, name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`helora: --${name} must be a positive integer, got ${v}`);
  return n;
}
function flag(args: string[], name: string): boolean {
  const env = process.env[`HELORA_BENCH_${name.toUpperCase().replace(/-/g, '_')}`];
  return args.includes(`--${name}`) || env === '1' || env === 'true';
}

function gemmGflops(): number {
  const n = GEMM_SIZE;
  const rnd = seededRandom(1);
  const a = Float32Array.from({ length: n * n }, () => rnd() - 0.5);
  const w = Float32Array.from({ length: n * n }, () => rnd() - 0.5);
  const out = new Float32Array(n * n);
  matmulForward(out, a, w, null, n, n, n); // warm-up (compiles, sizes the wasm heap)
  let best = Infinity;
  for (let r = 0; r < GEMM_REPEATS; r++) {
    const t0 = performance.now();
    matmulForward(out, a, w, null, n, n, n);
    best = Math.min(best, performance.now() - t0);
  }
  const gflops = (2 * n * n * n) / (best / 1000) / 1e9;
  log(`fp32 GEMM ${n}^3: ${best.toFixed(1)} ms, ${gflops.toFixed(2)} GFLOP/s`);
  return gflops;
}

function randomExamples(count: number, len: number, vocab: number): Example[] {
  const rnd = seededRandom(99);
  return Array.from({ length: count }, () => ({ ids: Array.from({ length: len }, () => Math.floor(rnd() * vocab)) }));
}

async function trainThroughput(label: string, model: LlamaModel, config: ReturnType<typeof parseConfig>, T: number, seqLen: number): Promise<number> {
  const lora = LoraAdapter.create(config, { rank: LORA_RANK, alpha: 2 * LORA_RANK, dropout: 0.05 }, { seed: 'bench' });
  const perBatch = Math.max(1, Math.floor(T / seqLen));
  const data = epochBatchSource(randomExamples(4 * perBatch, Math.min(seqLen, T), config.vocabSize), { T, padId: 0, seed: 1 });
  const trainer = new Trainer({ model, lora, data, seed: 1, schedule: makeSchedule({ kind: 'constant', lr: 1e-4 }) });
  log(`${label}: warm-up step (${T} tokens, ${lora.numParameters()} LoRA parameters)`);
  let t0 = performance.now();
  await trainer.trainStep();
  log(`${label}: warm-up took ${((performance.now() - t0) / 1000).toFixed(1)} s; measured step`);
  t0 = performance.now();
  const ev = await trainer.trainStep();
  const s = (performance.now() - t0) / 1000;
  const tps = ev.tokens / s;
  log(`${label}: ${s.toFixed(1)} s for ${ev.tokens} tokens = ${tps.toFixed(1)} tokens/s (loss ${ev.loss.toFixed(3)})`);
  return tps;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const layers = intOption(args, 'layers', SMOLLM2_135M.numLayers);
  const T = intOption(args, 'tokens', 2048);
  const seqLen = intOption(args, 'seq-len', 512);
  const shape: RandomLlamaShape = { ...SMOLLM2_135M, numLayers: layers };
  const result: Record<string, unknown> = {
    bench: 'model',
    model_shape: { ...shape, name: layers === SMOLLM2_135M.numLayers ? 'SmolLM2-135M' : `SmolLM2-135M (${layers} layers)` },
    micro_batch_tokens: T,
    seq_len: Math.min(seqLen, T),
    lora_rank: LORA_RANK,
  };

  if (!flag(args, 'no-gemm')) result.gemm_gflops = gemmGflops();

  const wantFp32 = !flag(args, 'no-fp32');
  const wantInt8 = !flag(args, 'no-int8');
  if (wantFp32 || wantInt8) {
    log(`building a random ${layers}-layer model`);
    const config = parseConfig(llamaConfigJson(shape));
    const tensors = randomLlamaTensors(shape, 7);
    const run = async (label: string, make: () => FrozenLinearProvider): Promise<number> => {
      const t0 = performance.now();
      const provider = make();
      log(`${label}: provider ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      return trainThroughput(label, LlamaModel.fromTensors(config, tensors, provider), config, T, seqLen);
    };
    if (wantFp32) result.train_tokens_per_s_fp32 = await run('fp32', () => LocalFp32Provider.fromTensors(config, tensors));
    if (wantInt8) result.train_tokens_per_s_int8 = await run('int8', () => LocalQuantizedProvider.fromTensors(config, tensors));
  }

  result.threads = 1;
  result.peak_rss_mb = Math.round(process.resourceUsage().maxRSS / 1024);
  const cpu = cpus();
  result.machine = { cpu: cpu[0]?.model ?? 'unknown', cores: cpu.length, os: `${platform()} ${release()}` };
  result.node = process.version;
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
