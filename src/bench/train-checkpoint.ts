/**
 * `npm run bench:train -- --shape llama-3.2-1b`: one encrypted training step of a Llama-3.2-1B-shaped
 * model as a user runs it, with the server in its own process, next to the same step in local fp32.
 *
 * 1. A random-weight checkpoint of the real shape (hidden 2048, intermediate 8192, 32/8 heads of 64,
 *    vocab 128256, tied, llama3 rope scaling) is written to a temp folder as two bf16 safetensors
 *    shards with model.safetensors.index.json, one tensor at a time (`--layers N` keeps N decoder layers).
 * 2. `serve-process.js --model DIR` (the stand-alone `helora serve`) is forked and listens on 127.0.0.1;
 *    it logs each request with its compute time and its memory (--memory-log).
 * 3. The client loads from the folder only what it computes itself (embeddings, norms: no projection
 *    weights, as `helora train` in encrypted mode) and runs ONE 2048-token step through the server
 *    (plus `--warmup-steps` before it, default 0: a step of this shape takes minutes).
 * 4. After the server is stopped, the same step runs in local fp32 (the projections loaded too).
 *
 * Peak memory: VmHWM of /proc/<pid>/status, for the server process over its whole life (loading
 * included) and for this process over the encrypted part only (reset with /proc/self/clear_refs after
 * the checkpoint is written; the fp32 part is reported separately as fp32_peak_rss_mb).
 */

import { readFileSync, writeFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, type LlamaConfig } from '../model/config.js';
import { LocalFp32Provider, type FrozenLinearProvider } from '../model/frozen.js';
import { LlamaModel } from '../model/llama.js';
import { loadModelFolder } from '../model/loader.js';
import { parseProjectionWeightName, PROJECTION_NAMES, projectionShape, projectionWeightName } from '../model/projections.js';
import { writeSafetensorsLazily, type LazyTensor } from '../model/safetensors.js';
import { INIT_STD, llamaConfigJson, type RandomLlamaShape } from '../train/random-init.js';
import { encryptedStepFigures } from './common.js';
import type { Trainer } from '../train/trainer.js';
import type { LoraAdapter } from '../model/lora.js';
import { RemoteEncryptedProvider } from '../transport/client.js';
import { forkServer, type ChildServer } from '../transport/test-support.js';
import { seededRandom } from '../util/random.js';

export const LLAMA_3_2_1B: RandomLlamaShape = {
  hiddenSize: 2048, intermediateSize: 8192, numLayers: 16, numHeads: 32, numKvHeads: 8, vocabSize: 128256,
  ropeTheta: 500000, maxPositionEmbeddings: 131072,
};

/** config.json of the shape as Meta ships Llama-3.2-1B (llama3 rope scaling, tied, bf16). */
export function llama32ConfigJson(shape: RandomLlamaShape): Record<string, unknown> {
  return {
    ...llamaConfigJson(shape),
    rope_scaling: { rope_type: 'llama3', factor: 32.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 },
    head_dim: shape.hiddenSize / shape.numHeads,
    torch_dtype: 'bfloat16',
  };
}

/** Uniform values of standard deviation `std` from a seeded generator (one tensor at a time). */
function randomValues(n: number, std: number, seed: number): Float32Array {
  const rnd = seededRandom(seed);
  const a = std * Math.sqrt(3);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * rnd() - 1) * a;
  return out;
}

/**
 * Writes a random tied Llama checkpoint of `shape` as two bf16 shards (embeddings and the first half
 * of the layers, then the rest and the final norm) plus the index, never holding more than one tensor.
 */
export function writeRandomShardedCheckpoint(dir: string, configJson: Record<string, unknown>, config: LlamaConfig, seed: number): void {
  mkdirSync(dir, { recursive: true });
  const C = config.hiddenSize;
  let tensorSeed = seed;
  const random = (name: string, shape: number[], std = INIT_STD): LazyTensor => {
    const s = tensorSeed++;
    return { name, shape, data: () => randomValues(shape[0]! * (shape[1] ?? 1), std, s) };
  };
  const ones = (name: string): LazyTensor => ({ name, shape: [C], data: () => new Float32Array(C).fill(1) });
  const layer = (l: number): LazyTensor[] => [
    ones(`model.layers.${l}.input_layernorm.weight`),
    ones(`model.layers.${l}.post_attention_layernorm.weight`),
    ...PROJECTION_NAMES.map((name) => random(projectionWeightName(l, name), projectionShape(config, name))),
  ];
  const half = Math.ceil(config.numLayers / 2);
  const shards: LazyTensor[][] = [
    [random('model.embed_tokens.weight', [config.vocabSize, C]), ...Array.from({ length: half }, (_, l) => layer(l)).flat()],
    [...Array.from({ length: config.numLayers - half }, (_, l) => layer(half + l)).flat(), ones('model.norm.weight')],
  ];
  const weightMap: Record<string, string> = {};
  let totalBytes = 0;
  shards.forEach((tensors, i) => {
    const file = `model-0000${i + 1}-of-0000${shards.length}.safetensors`;
    writeSafetensorsLazily(join(dir, file), tensors, { dtype: 'BF16', metadata: { format: 'pt' } });
    for (const t of tensors) {
      weightMap[t.name] = file;
      totalBytes += 2 * t.shape.reduce((p, d) => p * d, 1);
    }
  });
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: totalBytes }, weight_map: weightMap }, null, 2) + '\n');
  writeFileSync(join(dir, 'config.json'), JSON.stringify(configJson, null, 2) + '\n');
}

/** Peak resident memory (VmHWM) of a process in MiB, or null when /proc does not tell. */
export function peakRssMb(pid: number | 'self'): number | null {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : null;
  } catch {
    return null;
  }
}

/** Resets this process's VmHWM to its current RSS (Linux: "5" into clear_refs); false where unsupported. */
function resetPeakRss(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/**
 * Logs this process's memory (and the server's last request line) every 15 s while the step runs,
 * so a run that grows can be followed; stop() ends it.
 */
function memorySampler(log: (msg: string) => void, lastRequest: () => Record<string, unknown> | null): { stop: () => void } {
  const mb = (n: number): number => Math.round(n / 2 ** 20);
  const timer = setInterval(() => {
    const m = process.memoryUsage();
    const r = lastRequest();
    const server = r ? ` | server after ${String(r.op)} ${String(r.layer)}.${String(r.group)}: rss ${String(r.rss_mb)} hwm ${String(r.hwm_mb)} arrayBuffers ${String(r.array_buffers_mb)} MiB` : '';
    log(`client rss ${mb(m.rss)} hwm ${peakRssMb('self') ?? '?'} heap ${mb(m.heapUsed)} external ${mb(m.external)} arrayBuffers ${mb(m.arrayBuffers)} MiB${server}`);
  }, 15_000);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

export interface CheckpointBenchOptions {
  shapeName: string;
  shape: RandomLlamaShape;
  tokens: number;
  threads: number;
  warmupSteps: number;
  fp32: boolean;
  keep: string | undefined;
  log: (msg: string) => void;
  trainerFor: (model: LlamaModel, T: number) => Trainer<LoraAdapter>;
}

/** Runs the benchmark described at the top of this file; returns the result fields. */
export async function checkpointShapeBench(o: CheckpointBenchOptions): Promise<Record<string, unknown>> {
  const { shape, tokens: T, log } = o;
  const configJson = llama32ConfigJson(shape);
  const config = parseConfig(configJson);
  const result: Record<string, unknown> = {
    bench: 'train',
    shape: shape.numLayers === LLAMA_3_2_1B.numLayers ? o.shapeName : `${o.shapeName} (${shape.numLayers} of ${LLAMA_3_2_1B.numLayers} layers)`,
    model_shape: { ...shape, rope_scaling: 'llama3', tied: true, checkpoint: 'random weights, bf16, 2 safetensors shards' },
    micro_batch_tokens: T,
    setup: `helora serve (serve-process.js) in its own process on 127.0.0.1 with ${o.threads} kernel threads; client in this process over loopback TCP WebSocket; ${o.warmupSteps} warm-up step(s), 1 measured step per mode`,
  };
  const root = o.keep ?? mkdtempSync(join(tmpdir(), 'helora-bench-ckpt-'));
  const dir = join(root, 'model');
  let server: ChildServer | null = null;
  let stopping = false;
  try {
    let t0 = performance.now();
    log(`writing a random ${shape.numLayers}-layer ${o.shapeName} checkpoint (bf16, 2 shards) to ${dir}`);
    writeRandomShardedCheckpoint(dir, configJson, config, 7);
    result.checkpoint_write_s = (performance.now() - t0) / 1000;
    const peakResetWorks = resetPeakRss();

    t0 = performance.now();
    server = await forkServer(['--model', dir, '--host', '127.0.0.1', '--port', '0', '--threads', String(o.threads), '--rate', '1000000', '--memory-log', '1'], 3_600_000);
    const running = server;
    void running.exited.then((code) => {
      if (stopping) return;
      const last = running.logs.filter((e) => e.event === 'request').at(-1);
      log(`the server process exited with ${code} during the run (last request: ${JSON.stringify(last ?? null)})`);
      process.exit(1);
    });
    result.server_load_s = (performance.now() - t0) / 1000;
    const listening = server.logs.find((e) => e.event === 'listening')!;
    result.server_rss_after_load_mb = peakRssMb(server.child.pid!);
    log(`server listening after ${(result.server_load_s as number).toFixed(1)} s at ${result.server_rss_after_load_mb as number} MiB peak RSS`);

    const sampler = memorySampler(log, () => server?.logs.filter((e) => e.event === 'request').at(-1) ?? null);
    const { tensors } = loadModelFolder(dir, (n) => parseProjectionWeightName(n) === null);
    const remote = await RemoteEncryptedProvider.connect({ url: server.url, expectedModelHash: String(listening.model_hash) });
    try {
      const trainer = o.trainerFor(LlamaModel.fromTensors(config, tensors, remote), T);
      for (let i = 0; i < o.warmupSteps; i++) {
        log(`encrypted: warm-up step ${i + 1}`);
        await trainer.trainStep();
      }
      log('encrypted: measured step');
      const s0 = remote.stats();
      const r0 = server.logs.length;
      t0 = performance.now();
      const ev = await trainer.trainStep();
      const stepS = (performance.now() - t0) / 1000;
      const s1 = remote.stats();
      // The request lines of the step may still be on their way through the pipe.
      await new Promise((r) => setTimeout(r, 200));
      const reqs = server.logs.slice(r0).filter((e) => e.event === 'request');
      const serverS = reqs.reduce((s, e) => s + Number(e.ms ?? 0), 0) / 1000;
      const { time_split: split, ...step } = encryptedStepFigures(ev.tokens, stepS, ev.loss, s0, s1, serverS);
      Object.assign(result, step, split);
      result.client_peak_rss_mb = peakResetWorks ? peakRssMb('self') : null;
      result.server_peak_rss_mb = peakRssMb(server.child.pid!);
      result.server_request_memory = reqs.map((e) => ({ op: e.op, layer: e.layer, group: e.group, ms: e.ms, rss_mb: e.rss_mb, hwm_mb: e.hwm_mb, array_buffers_mb: e.array_buffers_mb }));
      log(`encrypted: ${stepS.toFixed(1)} s for ${ev.tokens} tokens (${(ev.tokens / stepS).toFixed(2)} tokens/s), server peak ${result.server_peak_rss_mb as number} MiB, client peak ${result.client_peak_rss_mb as number} MiB`);
    } finally {
      sampler.stop();
      await remote.close();
    }
  } finally {
    if (server) {
      stopping = true;
      server.child.kill('SIGTERM');
      await server.exited;
    }
  }

  // The encrypted figures on stderr now: the fp32 step of this shape can take as long again.
  log(`encrypted result: ${JSON.stringify({ ...result, server_request_memory: undefined })}`);
  try {
    if (o.fp32) {
      resetPeakRss();
      const { tensors } = loadModelFolder(dir);
      const provider: FrozenLinearProvider = LocalFp32Provider.fromTensors(config, tensors);
      const trainer = o.trainerFor(LlamaModel.fromTensors(config, tensors, provider), T);
      for (let i = 0; i < o.warmupSteps; i++) await trainer.trainStep();
      log('fp32: measured step');
      const t0 = performance.now();
      const ev = await trainer.trainStep();
      const s = (performance.now() - t0) / 1000;
      result.fp32_tokens_per_s = ev.tokens / s;
      result.fp32_step_s = s;
      result.fp32_loss = ev.loss;
      result.fp32_peak_rss_mb = peakRssMb('self');
      result.fp32_note = 'local fp32 training (LocalFp32Provider, frozen products on the main thread)';
      log(`fp32: ${s.toFixed(1)} s (${(ev.tokens / s).toFixed(2)} tokens/s)`);
      if (typeof result.encrypted_tokens_per_s === 'number') result.encrypted_vs_fp32_slowdown = (result.fp32_tokens_per_s as number) / result.encrypted_tokens_per_s;
    }
  } finally {
    if (!o.keep) rmSync(root, { recursive: true, force: true });
  }
  return result;
}
