/**
 * `npm run bench:model`: fp32 GEMM throughput and LoRA training throughput of a
 * SmolLM2-135M-shaped model (random weights) with the fp32 and the int8-quantized frozen
 * products. Prints ONE JSON object to stdout; progress goes to stderr.
 *
 * Flags (or env HELORA_BENCH_<NAME>): --layers N, --tokens T (micro-batch size), --seq-len L
 * (tokens per packed sequence), --threads N (threads of the native kernels, and kernel pool
 * workers for the fp32 frozen products; default all cores, 1 = the in-process LocalFp32Provider),
 * --no-fp32, --no-int8, --no-gemm. Defaults are the real shape: 30 layers, 2048-token
 * micro-batches of four 512-token sequences.
 *
 * The frozen products are what the server computes; for fp32 the pooled provider below shards them
 * over worker threads, for int8 the product's quantized path (LocalQuantizedProvider: the exact
 * int8 GEMM of the native kernels over --threads threads) runs them. Norms, attention, LoRA and
 * the LM head stay with the main thread, as on the client: with the native kernels they run on
 * --threads threads started from it.
 * Each provider runs one warm-up training step, then ONE measured step (forward, backward,
 * clip, AdamW): the full-size step takes minutes.
 * Right after helora's fp32 step, the same LoRA step runs in PyTorch (src/bench/torch_lora_step.py
 * under /usr/bin/python3 with Debian's python3-torch on OpenBLAS, same threads):
 * torch_tokens_per_s_fp32 and helora_vs_torch_fp32. A missing python3 or torch fails the bench.
 */

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../util/paths.js';
import { benchLogger, flag, intOption, printResult, runBench } from './common.js';
import { KernelEngine } from '../kernels/engine.js';
import { matmulForward } from '../kernels/matmul-f32.js';
import { kernelBackend, loadNativeKernels, nativeKernels } from '../kernels/native.js';
import { KernelPool } from '../kernels/pool.js';
import { parseConfig, type LlamaConfig } from '../model/config.js';
import { LocalFp32Provider, LocalQuantizedProvider, groupWeights, type FrozenLinearProvider, type TensorMap } from '../model/frozen.js';
import { groupShapes, PROJECTION_GROUPS, type ProjectionGroup } from '../model/projections.js';
import { LlamaModel } from '../model/llama.js';
import { DEFAULT_LORA_CONFIG, LoraAdapter } from '../model/lora.js';
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
const LORA_DROPOUT = 0.05;
const LR = 1e-4;
const PYTHON = '/usr/bin/python3';

const log = benchLogger('bench:model');

/** fp32 frozen products on the kernel pool (weights resident in the workers). */
class PooledFp32Provider implements FrozenLinearProvider {
  private readonly handles = new Map<string, number[]>();
  private constructor(private readonly pool: KernelPool) {}

  static async create(pool: KernelPool, config: LlamaConfig, tensors: TensorMap): Promise<PooledFp32Provider> {
    const p = new PooledFp32Provider(pool);
    for (let l = 0; l < config.numLayers; l++) {
      for (const g of PROJECTION_GROUPS) {
        const shapes = groupShapes(config, g);
        const ws = groupWeights(config, tensors, l, g);
        p.handles.set(`${l}.${g}`, await Promise.all(ws.map((w, j) => pool.registerF32(w, shapes[j]![0], shapes[j]![1]))));
      }
    }
    return p;
  }

  async forward(layer: number, group: ProjectionGroup, x: Float32Array, T: number): Promise<Float32Array[]> {
    return Promise.all(this.handles.get(`${layer}.${group}`)!.map((h) => this.pool.matmulForward(h, x, T)));
  }

  async backward(layer: number, group: ProjectionGroup, dys: Float32Array[], T: number): Promise<Float32Array> {
    const hs = this.handles.get(`${layer}.${group}`)!;
    const parts = await Promise.all(hs.map((h, j) => this.pool.matmulBackwardInput(h, dys[j]!, T)));
    const dx = parts[0]!;
    for (let j = 1; j < parts.length; j++) for (let i = 0; i < dx.length; i++) dx[i]! += parts[j]![i]!;
    return dx;
  }
}

/** Largest |a - b| between two providers' outputs on one layer's groups (a self-check of the pooled path). */
async function maxProviderDiff(a: FrozenLinearProvider, b: FrozenLinearProvider, config: LlamaConfig, T: number): Promise<number> {
  const rnd = seededRandom(3);
  let worst = 0;
  for (const g of PROJECTION_GROUPS) {
    const shapes = groupShapes(config, g);
    const x = Float32Array.from({ length: T * shapes[0]![1] }, () => rnd() - 0.5);
    const dys = shapes.map(([o]) => Float32Array.from({ length: T * o }, () => rnd() - 0.5));
    const ya = await a.forward(0, g, x, T), yb = await b.forward(0, g, x, T);
    const da = await a.backward(0, g, dys, T), db = await b.backward(0, g, dys, T);
    ya.forEach((y, j) => y.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - yb[j]![i]!)))));
    da.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - db[i]!))));
  }
  return worst;
}

/** numpy's sgemm (Debian numpy on libblas.so.3 = OpenBLAS) on `threads` threads, n^3, best of `repeats`; null when unavailable. */
function openblasGflops(n: number, repeats: number, threads: number): number | null {
  const env: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: String(threads) };
  // The baseline runs with OpenBLAS's own CPU detection and cache sizes.
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const script = [
    'import numpy as np, time',
    `n = ${n}`,
    'rng = np.random.default_rng(1)',
    'a = rng.random((n, n), dtype=np.float32) - 0.5',
    'b = rng.random((n, n), dtype=np.float32) - 0.5',
    'a @ b',
    `best = min((lambda t0: (a @ b, time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(${repeats}))`,
    'print(2 * n ** 3 / best / 1e9)',
  ].join('\n');
  try {
    return Number(execFileSync('/usr/bin/python3', ['-c', script], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim());
  } catch (e) {
    log(`numpy/OpenBLAS baseline unavailable: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
    return null;
  }
}

/**
 * fp32 GEMM n^3 on one thread: the backend the model uses (matmulForward), each backend
 * explicitly, and numpy/OpenBLAS, in GEMM_REPEATS interleaved rounds (best of each); then the
 * native GEMM and OpenBLAS on `threads` threads (the client's own GEMMs run on every core).
 */
function gemmComparison(threads: number): Record<string, unknown> {
  const n = GEMM_SIZE;
  const rnd = seededRandom(1);
  const a = Float32Array.from({ length: n * n }, () => rnd() - 0.5);
  const w = Float32Array.from({ length: n * n }, () => rnd() - 0.5);
  const out = new Float32Array(n * n);
  const native = loadNativeKernels().kernels;
  const shared = nativeKernels();
  const wasm = new KernelEngine();
  const nativeOp = (): void => native!.sgemm(n, n, n, { data: a, offset: 0, si: n, sj: 1 }, { data: w, offset: 0, si: 1, sj: n }, { data: out, offset: 0, si: n, sj: 1 }, false, null);
  const ops: Record<string, () => void> = {
    model: () => matmulForward(out, a, w, null, n, n, n),
    wasm: () => {
      wasm.heap.resetScratch();
      const ap = wasm.packF32A({ data: a, offset: 0, si: n, sj: 1 }, n, n, false);
      const bp = wasm.packF32B({ data: w, offset: 0, si: 1, sj: n }, n, n, false);
      wasm.gemmF32Packed(ap, bp, n, n, n, { data: out, offset: 0, si: n, sj: 1 }, false, null);
    },
  };
  if (native) ops.native = nativeOp;
  const sharedThreads = shared?.threads ?? 1;
  if (native) native.threads = 1;
  if (shared) shared.threads = 1;
  for (const op of Object.values(ops)) op(); // warm-up (compiles, sizes the wasm heap)
  const best: Record<string, number> = {};
  let openblas: number | null = null;
  let nativeMt = Infinity;
  let openblasMt: number | null = null;
  for (let r = 0; r < GEMM_REPEATS; r++) {
    for (const [name, op] of Object.entries(ops)) {
      const t0 = performance.now();
      op();
      best[name] = Math.min(best[name] ?? Infinity, performance.now() - t0);
    }
    const o = openblasGflops(n, 3, 1);
    if (o !== null) openblas = Math.max(openblas ?? 0, o);
    if (native && threads > 1) {
      native.threads = threads;
      const t0 = performance.now();
      nativeOp();
      nativeMt = Math.min(nativeMt, performance.now() - t0);
      native.threads = 1;
      const om = openblasGflops(n, 3, threads);
      if (om !== null) openblasMt = Math.max(openblasMt ?? 0, om);
    }
  }
  if (shared) shared.threads = sharedThreads;
  const gflops = (ms: number | undefined): number | null => (ms === undefined || ms === Infinity ? null : Math.round((2 * n ** 3) / (ms / 1000) / 1e7) / 100);
  const ratio = (x: number | null, y: number | null): number | null => (x === null || y === null ? null : Math.round((x / y) * 1000) / 1000);
  const r = {
    gemm_gflops: gflops(best.model),
    gemm_backend: kernelBackend(),
    gemm_gflops_native: gflops(best.native),
    gemm_gflops_wasm: gflops(best.wasm),
    openblas_gflops: openblas === null ? null : Math.round(openblas * 100) / 100,
    native_vs_openblas: ratio(gflops(best.native), openblas),
    gemm_threads: threads,
    gemm_gflops_native_threads: gflops(nativeMt),
    openblas_gflops_threads: openblasMt === null ? null : Math.round(openblasMt * 100) / 100,
    native_vs_openblas_threads: ratio(gflops(nativeMt), openblasMt),
    gemm_note: `fp32 ${n}^3 on one thread, best of ${GEMM_REPEATS} interleaved rounds; openblas_gflops: numpy sgemm via /usr/bin/python3 with OPENBLAS_NUM_THREADS=1; the _threads figures on ${threads} threads (native: rows or columns split over threads; OpenBLAS with OPENBLAS_NUM_THREADS=${threads})`,
  };
  log(`fp32 GEMM ${n}^3: ${JSON.stringify(r)}`);
  return r;
}

function randomExamples(count: number, len: number, vocab: number): Example[] {
  const rnd = seededRandom(99);
  return Array.from({ length: count }, () => ({ ids: Array.from({ length: len }, () => Math.floor(rnd() * vocab)) }));
}

async function trainThroughput(label: string, model: LlamaModel, config: ReturnType<typeof parseConfig>, T: number, seqLen: number): Promise<number> {
  const lora = LoraAdapter.create(config, { rank: LORA_RANK, alpha: 2 * LORA_RANK, dropout: LORA_DROPOUT }, { seed: 'bench' });
  const perBatch = Math.max(1, Math.floor(T / seqLen));
  const data = epochBatchSource(randomExamples(4 * perBatch, Math.min(seqLen, T), config.vocabSize), { T, padId: 0, seed: 1 });
  const trainer = new Trainer({ model, lora, data, seed: 1, schedule: makeSchedule({ kind: 'constant', lr: LR }) });
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

/**
 * The same LoRA training step in PyTorch (src/bench/torch_lora_step.py on Debian's python3-torch,
 * whose BLAS is the OpenBLAS alternative): same shape, LoRA rank/alpha/dropout/targets, optimizer,
 * clipping, token sequences (the bench's own examples) and thread count; warm-up step, then one
 * measured step. Throws with a clear message when python3 or torch is missing: the bench's
 * comparison must not silently disappear.
 */
function torchTrainThroughput(config: LlamaConfig, T: number, seqLen: number, threads: number): { tokens_per_s: number; step_s: number; loss: number; torch_version: string; lora_parameters: number } {
  const script = join(repoRoot(), 'src', 'bench', 'torch_lora_step.py');
  if (!existsSync(script)) throw new Error(`helora bench:model: the PyTorch baseline script ${script} is missing`);
  const L = Math.min(seqLen, T);
  const perBatch = Math.max(1, Math.floor(T / L));
  const input = {
    hidden_size: config.hiddenSize, intermediate_size: config.intermediateSize, num_layers: config.numLayers,
    num_heads: config.numHeads, num_kv_heads: config.numKvHeads, vocab_size: config.vocabSize,
    rope_theta: config.ropeTheta, rms_norm_eps: config.rmsNormEps,
    rank: LORA_RANK, alpha: 2 * LORA_RANK, dropout: LORA_DROPOUT, targets: DEFAULT_LORA_CONFIG.targetModules, lr: LR, threads,
    sequences: randomExamples(perBatch, L, config.vocabSize).map((e) => e.ids),
  };
  const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) };
  log(`torch fp32: ${perBatch} x ${L} tokens, ${threads} threads (warm-up step, then measured step)`);
  const r = spawnSync(PYTHON, [script], { input: JSON.stringify(input), env, encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.error || r.status !== 0) {
    throw new Error(`helora bench:model: the PyTorch baseline failed (${PYTHON} ${script}); it needs python3 with Debian's ` +
      `python3-torch (apt-get install python3-torch). ${r.error ? r.error.message : `exit status ${r.status}`}\n${r.stderr ?? ''}`);
  }
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { tokens_per_s: number; step_s: number; loss: number; torch_version: string; lora_parameters: number; threads: number };
  if (!(out.tokens_per_s > 0) || out.threads !== threads) throw new Error(`helora bench:model: unexpected PyTorch baseline output ${r.stdout}`);
  log(`torch fp32: ${out.step_s.toFixed(1)} s for ${perBatch * L} tokens = ${out.tokens_per_s.toFixed(1)} tokens/s (loss ${out.loss.toFixed(3)}, torch ${out.torch_version})`);
  return out;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const layers = intOption(args, 'layers', SMOLLM2_135M.numLayers);
  const T = intOption(args, 'tokens', 2048);
  const seqLen = intOption(args, 'seq-len', 512);
  const threads = intOption(args, 'threads', availableParallelism());
  const shape: RandomLlamaShape = { ...SMOLLM2_135M, numLayers: layers };
  const result: Record<string, unknown> = {
    bench: 'model',
    model_shape: { ...shape, name: layers === SMOLLM2_135M.numLayers ? 'SmolLM2-135M' : `SmolLM2-135M (${layers} layers)` },
    micro_batch_tokens: T,
    seq_len: Math.min(seqLen, T),
    lora_rank: LORA_RANK,
  };
  // The client's own native work (LM head, attention, LoRA, norms, loss) on the same threads as the pool and PyTorch.
  const nk = nativeKernels();
  if (nk) nk.threads = threads;

  if (!flag(args, 'no-gemm')) Object.assign(result, gemmComparison(threads));

  const wantFp32 = !flag(args, 'no-fp32');
  const wantInt8 = !flag(args, 'no-int8');
  if (wantFp32 || wantInt8) {
    log(`building a random ${layers}-layer model`);
    const config = parseConfig(llamaConfigJson(shape));
    const tensors = randomLlamaTensors(shape, 7);
    const pool = threads > 1 ? await KernelPool.create(threads) : null;
    try {
      const run = async (label: string, make: () => Promise<FrozenLinearProvider>): Promise<number> => {
        const t0 = performance.now();
        const provider = await make();
        log(`${label}: provider ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        return trainThroughput(label, LlamaModel.fromTensors(config, tensors, provider), config, T, seqLen);
      };
      const local = {
        fp32: async (): Promise<FrozenLinearProvider> => LocalFp32Provider.fromTensors(config, tensors),
        int8: async (): Promise<FrozenLinearProvider> => LocalQuantizedProvider.fromTensors(config, tensors),
      };
      // fp32: the frozen products on the kernel pool; int8: the product's own quantized path
      // (LocalQuantizedProvider: the native int8 GEMM over the threads), which measured faster
      // than running the same integers on the pool.
      const pooledFp32 = pool && (async (): Promise<FrozenLinearProvider> => PooledFp32Provider.create(pool, config, tensors));
      if (pool) {
        // The pooled provider must compute what the in-process one does.
        const one = { ...config, numLayers: 1 };
        const diff = await maxProviderDiff(LocalFp32Provider.fromTensors(one, tensors), await PooledFp32Provider.create(pool, one, tensors), one, 64);
        log(`pooled vs in-process fp32 provider, max |diff|: ${diff}`);
        if (!(diff < 1e-4)) throw new Error(`helora: the pooled fp32 provider disagrees with the in-process one (max |diff| ${diff})`);
        result.pooled_check_max_abs_diff = { fp32: diff };
      }
      const make = { fp32: pooledFp32 ?? local.fp32, int8: local.int8 };
      if (wantFp32) {
        result.train_tokens_per_s_fp32 = await run('fp32', make.fp32);
        // Timed right after helora's fp32 step, in the same run and on the same threads.
        const torch = torchTrainThroughput(config, T, seqLen, threads);
        result.torch_tokens_per_s_fp32 = Math.round(torch.tokens_per_s * 100) / 100;
        result.helora_vs_torch_fp32 = Math.round((result.train_tokens_per_s_fp32 as number / torch.tokens_per_s) * 1000) / 1000;
        result.torch_note = `PyTorch ${torch.torch_version} (${PYTHON}, src/bench/torch_lora_step.py): same shape, LoRA rank ${LORA_RANK} on ` +
          `${DEFAULT_LORA_CONFIG.targetModules.length} projections (${torch.lora_parameters} parameters), AdamW, clipping, ${threads} threads; one measured step after a warm-up`;
      }
      if (wantInt8) result.train_tokens_per_s_int8 = await run('int8', make.int8);
    } finally {
      await pool?.close();
    }
  }

  result.threads = threads;
  printResult(result);
}

runBench(main);
