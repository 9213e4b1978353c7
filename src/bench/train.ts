/**
 * `npm run bench:train`: encrypted LoRA training throughput of a SmolLM2-135M-shaped model
 * (random weights: hidden 576, intermediate 1536, 30 layers, 9/3 heads, vocab 49152, tied) with
 * the server and the client on this machine over loopback TCP, next to local fp32 training of the
 * same model in the same run; plus the final losses of the demo run (encrypted vs fp32, `helora demo` defaults).
 * Prints ONE JSON object to stdout; progress goes to stderr.
 *
 * Flags: --shape smollm2-135m (default) | llama-3.2-1b (a bf16 checkpoint on disk, `helora serve` in its own
 * process: see train-checkpoint.ts; there --layers defaults to 16, --warmup-steps to 0, --keep DIR keeps the
 * checkpoint), --layers N (default 30), --tokens T (micro-batch, default 2048), --threads N (server
 * kernel threads, default every core), --demo-steps N (default: the demo's own steps; 0 skips the demo part),
 * --demo-batch-tokens T (default: the demo's), --no-fp32.
 *
 * Setup: the server (transport/server.ts startServer + ModelServer, kernels on its worker pool)
 * runs in this process and listens on 127.0.0.1; the client (RemoteEncryptedProvider) talks to it
 * over a real TCP WebSocket. Each mode runs one warm-up step, then ONE measured step.
 * Time split of the measured encrypted step:
 *   crypto_s         client quantize + encrypt + decrypt + dequantize (RemoteStats.cryptoMs)
 *   server_s         server compute per request, from the server's own request log (queue wait excluded)
 *   transfer_s       request round trips minus server_s: framing, loopback TCP, event-loop latency
 *   client_compute_s the rest of the step: embeddings, norms, attention, LoRA, LM head, loss, AdamW
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { benchLogger, encryptedStepFigures, intOption, option, printResult, runBench } from './common.js';
import { checkpointShapeBench, LLAMA_3_2_1B } from './train-checkpoint.js';
import { join } from 'node:path';
import { parseConfig } from '../model/config.js';
import { LocalFp32Provider, type FrozenLinearProvider } from '../model/frozen.js';
import { LlamaModel } from '../model/llama.js';
import { LoraAdapter } from '../model/lora.js';
import { makeSchedule } from '../train/optim.js';
import { epochBatchSource, seededRandom, type Example } from '../train/packing.js';
import { llamaConfigJson, randomLlamaTensors, type RandomLlamaShape } from '../train/random-init.js';
import { Trainer } from '../train/trainer.js';
import { RemoteEncryptedProvider } from '../transport/client.js';
import { ModelServer, quantizeModel } from '../transport/model-server.js';
import { startServer, type LogEvent } from '../transport/server.js';
import { RemoteTraining } from '../transport/remote-training.js';
import { fineTune } from '../train/fine-tune.js';
import { DEMO_DEFAULTS, demoGlosses, demoRunOptions, glossRecords, type DemoRunSettings } from '../train/gloss-demo.js';

export const SMOLLM2_135M: RandomLlamaShape = {
  hiddenSize: 576, intermediateSize: 1536, numLayers: 30, numHeads: 9, numKvHeads: 3, vocabSize: 49152,
  ropeTheta: 100000, maxPositionEmbeddings: 8192,
};
const LORA_RANK = 8;
const SEQ_LEN = 512;

const log = benchLogger('bench:train');

/** Random token sequences of SEQ_LEN (the micro-batch packs several). */
function randomExamples(vocab: number, T: number): Example[] {
  const rnd = seededRandom(11);
  const n = Math.max(4, Math.ceil((4 * T) / SEQ_LEN));
  return Array.from({ length: n }, () => ({ ids: Array.from({ length: Math.min(SEQ_LEN, T) }, () => Math.floor(rnd() * vocab)) }));
}

function trainerFor(model: LlamaModel, T: number): Trainer<LoraAdapter> {
  const lora = LoraAdapter.create(model.config, { rank: LORA_RANK, alpha: 2 * LORA_RANK, dropout: 0.05 }, { seed: 'bench-train' });
  const data = epochBatchSource(randomExamples(model.config.vocabSize, T), { T, padId: 0, seed: 1, vocabSize: model.config.vocabSize });
  return new Trainer({ model, lora, data, seed: 1, schedule: makeSchedule({ kind: 'constant', lr: 1e-4 }) });
}

/**
 * Final losses of the demo run (train/gloss-demo.ts) in encrypted and fp32 mode, the encrypted one
 * through a server on loopback in this process (as `helora demo` runs it).
 */
async function demoFinalLosses(settings: DemoRunSettings, threads: number, out: string): Promise<{ encrypted: number; fp32: number }> {
  const records = glossRecords(demoGlosses(DEMO_DEFAULTS.examples, settings.seed));
  const say = (l: string): void => log(`demo: ${l}`);
  const modelServer = await ModelServer.fromFolder(settings.model, { threads });
  try {
    const server = await startServer({ model: modelServer, host: '127.0.0.1', port: 0, rateLimit: { perSecond: 1e6, burst: 1e6 }, log: () => {} });
    try {
      const finalLoss = async (mode: 'encrypted' | 'fp32'): Promise<number> => {
        const remote = mode === 'encrypted' ? new RemoteTraining({ url: server.url, say }) : null;
        const r = await fineTune({ ...demoRunOptions(settings, mode, records, join(out, mode)), connectEncrypted: remote?.connect, say });
        return r.history.at(-1)!.loss;
      };
      return { encrypted: await finalLoss('encrypted'), fp32: await finalLoss('fp32') };
    } finally {
      await server.close();
    }
  } finally {
    await modelServer.close();
  }
}

/** The shapes --shape names: SmolLM2-135M (default, server in this process) or Llama-3.2-1B (train-checkpoint.ts). */
const SHAPES = ['smollm2-135m', 'llama-3.2-1b'] as const;

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const shapeName = option(args, 'shape') ?? 'smollm2-135m';
  if (!(SHAPES as readonly string[]).includes(shapeName)) throw new Error(`helora: --shape must be one of ${SHAPES.join(', ')}, got ${shapeName}`);
  const T = intOption(args, 'tokens', 2048, 2);
  const threads = intOption(args, 'threads', availableParallelism());
  if (shapeName === 'llama-3.2-1b') {
    const result = await checkpointShapeBench({
      shapeName: 'Llama-3.2-1B',
      shape: { ...LLAMA_3_2_1B, numLayers: intOption(args, 'layers', LLAMA_3_2_1B.numLayers) },
      tokens: T, threads,
      warmupSteps: intOption(args, 'warmup-steps', 0, 0),
      fp32: !args.includes('--no-fp32'),
      keep: option(args, 'keep'),
      log, trainerFor,
    });
    result.threads = threads;
    printResult(result);
    return;
  }
  const layers = intOption(args, 'layers', SMOLLM2_135M.numLayers);
  const demoSteps = intOption(args, 'demo-steps', DEMO_DEFAULTS.steps, 0);
  const demoBatch = intOption(args, 'demo-batch-tokens', DEMO_DEFAULTS.batchTokens, 2);
  const shape: RandomLlamaShape = { ...SMOLLM2_135M, numLayers: layers };
  const result: Record<string, unknown> = {
    bench: 'train',
    model_shape: { ...shape, name: layers === SMOLLM2_135M.numLayers ? 'SmolLM2-135M (random weights)' : `SmolLM2-135M shape, ${layers} layers (random weights)` },
    micro_batch_tokens: T,
    lora_rank: LORA_RANK,
    setup: 'server in this process on 127.0.0.1 (kernels on its worker pool), client over loopback TCP WebSocket; 1 warm-up step, 1 measured step per mode',
  };

  log(`building a random ${layers}-layer model`);
  const config = parseConfig(llamaConfigJson(shape));
  const tensors = randomLlamaTensors(shape, 7);

  // Encrypted: server + client over loopback.
  const requests: LogEvent[] = [];
  const modelServer = await ModelServer.create(quantizeModel(config, tensors), { threads });
  const server = await startServer({
    model: modelServer, host: '127.0.0.1', port: 0, rateLimit: { perSecond: 1e6, burst: 1e6 },
    log: (e) => { if (e.event === 'request') requests.push(e); },
  });
  let remote: RemoteEncryptedProvider | null = null;
  try {
    remote = await RemoteEncryptedProvider.connect({ url: server.url, expectedModelHash: modelServer.hash });
    const trainer = trainerFor(LlamaModel.fromTensors(config, tensors, remote), T);
    log('encrypted: warm-up step');
    let t0 = performance.now();
    await trainer.trainStep();
    log(`encrypted: warm-up took ${((performance.now() - t0) / 1000).toFixed(1)} s; measured step`);
    const s0 = remote.stats();
    const r0 = requests.length;
    t0 = performance.now();
    const ev = await trainer.trainStep();
    const stepS = (performance.now() - t0) / 1000;
    const s1 = remote.stats();
    const reqs = requests.slice(r0);
    const serverS = reqs.reduce((s, e) => s + Number(e.ms ?? 0), 0) / 1000;
    Object.assign(result, encryptedStepFigures(ev.tokens, stepS, ev.loss, s0, s1, serverS));
    const up = s1.bytesUp - s0.bytesUp, down = s1.bytesDown - s0.bytesDown;
    log(`encrypted: ${stepS.toFixed(1)} s for ${ev.tokens} tokens (${(ev.tokens / stepS).toFixed(1)} tokens/s), ${(up / 2 ** 20).toFixed(0)} MiB up, ${(down / 2 ** 20).toFixed(0)} MiB down`);
  } finally {
    await remote?.close();
    await server.close();
    await modelServer.close();
  }

  if (!args.includes('--no-fp32')) {
    const provider: FrozenLinearProvider = LocalFp32Provider.fromTensors(config, tensors);
    const trainer = trainerFor(LlamaModel.fromTensors(config, tensors, provider), T);
    log('fp32: warm-up step');
    await trainer.trainStep();
    const t0 = performance.now();
    const ev = await trainer.trainStep();
    const s = (performance.now() - t0) / 1000;
    result.fp32_tokens_per_s = ev.tokens / s;
    result.fp32_step_s = s;
    result.fp32_note = 'local fp32 training (LocalFp32Provider, frozen products on the main thread)';
    log(`fp32: ${s.toFixed(1)} s (${(ev.tokens / s).toFixed(1)} tokens/s)`);
    if (typeof result.encrypted_tokens_per_s === 'number') result.encrypted_vs_fp32_slowdown = (result.fp32_tokens_per_s as number) / result.encrypted_tokens_per_s;
  }

  if (demoSteps > 0) {
    const out = mkdtempSync(join(tmpdir(), 'helora-bench-demo-'));
    try {
      log(`demo: ${demoSteps} steps of ${demoBatch} tokens per mode on ${DEMO_DEFAULTS.model}`);
      const final = await demoFinalLosses({ ...DEMO_DEFAULTS, steps: demoSteps, batchTokens: demoBatch }, threads, out);
      result.demo_config = { model: 'models/helora-tiny', steps: demoSteps, batch_tokens: demoBatch, examples: DEMO_DEFAULTS.examples, lr: DEMO_DEFAULTS.lr, seed: DEMO_DEFAULTS.seed };
      result.final_loss_encrypted = final.encrypted;
      result.final_loss_fp32 = final.fp32;
      result.final_loss_rel_diff = Math.abs(final.encrypted - final.fp32) / final.fp32;
      result.final_loss_within_2pct = (result.final_loss_rel_diff as number) <= 0.02;
    } catch (e) {
      result.demo_error = e instanceof Error ? e.message : String(e);
      log(`demo failed: ${result.demo_error as string}`);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }

  result.threads = threads;
  printResult(result);
}

runBench(main);
