/**
 * `helora calibrate`: times the real kernels on this machine and returns the rates `helora
 * estimate` divides its counts by (train/calibration.ts). Everything runs the production code:
 *
 *  - server: the encrypted products of one layer (all four projection groups, forward and
 *    backward) on HeLinearServer with the kernel worker pool, as `helora serve` runs them;
 *  - client crypto: HeLinearClient's quantize + encrypt and decrypt + dequantize of the same
 *    requests on the crypto worker pool, as `helora train` runs them;
 *  - client training work and local fp32 products: one LlamaModel training micro-batch with LoRA
 *    on all seven projections and the frozen products in fp32 (LocalFp32Provider), the provider's
 *    time measured apart;
 *  - request overhead: a product of a 4 x 4 matrix on one token, whose work is negligible.
 *
 * Each figure is the median of `rounds` runs after one warm-up.
 */

import { availableParallelism, cpus } from 'node:os';
import { DEFAULT_PARAMS, SecretKey } from '../crypto/index.js';
import { KernelPool } from '../kernels/pool.js';
import { HeLinearClient } from '../linear/client.js';
import { HeLinearServer, poolBackend } from '../linear/server.js';
import { parseConfig } from '../model/config.js';
import { groupWeights, LocalFp32Provider, type FrozenLinearProvider, type TensorMap } from '../model/frozen.js';
import { LlamaModel } from '../model/llama.js';
import { LoraAdapter } from '../model/lora.js';
import { groupShapes, PROJECTION_GROUPS, PROJECTION_NAMES, type ProjectionGroup } from '../model/projections.js';
import { quantizeWeightsPerChannel } from '../quant/quantize.js';
import { CALIBRATION_FORMAT, CALIBRATION_VERSION, type Calibration } from './calibration.js';
import { batchPlan, clientMacs, frozenProductMacs, microBatchRequests } from './estimate.js';
import { packExamples, seededRandom } from './packing.js';
import { llamaConfigJson, randomLlamaTensors, type RandomLlamaShape } from './random-init.js';

/** The model the rates are measured on: SmolLM2-135M's layer shapes, two layers, a smaller vocabulary. */
export const CALIBRATION_SHAPE: RandomLlamaShape = { hiddenSize: 576, intermediateSize: 1536, numLayers: 2, numHeads: 9, numKvHeads: 3, vocabSize: 16384 };
/** A small one for tests and quick looks (`--quick`). */
export const QUICK_CALIBRATION_SHAPE: RandomLlamaShape = { hiddenSize: 128, intermediateSize: 352, numLayers: 2, numHeads: 4, numKvHeads: 2, vocabSize: 2048 };

export interface CalibrateOptions {
  shape?: RandomLlamaShape;
  /** Tokens per micro-batch (default 2048), packed from sequences of seqLen (default 512). */
  tokens?: number;
  seqLen?: number;
  rounds?: number;
  /** Worker threads of the server's kernel pool and the client's crypto pool (default: every core). */
  threads?: number;
  say?: (line: string) => void;
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** Normal samples (calibration data only). */
function gaussians(n: number, rnd: () => number, scale = 1): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = scale * Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
  return x;
}

/** Wraps a provider and adds up the time spent in it. */
class TimedProvider implements FrozenLinearProvider {
  ms = 0;
  constructor(private readonly inner: FrozenLinearProvider) {}
  async forward(layer: number, group: ProjectionGroup, x: Float32Array, T: number): Promise<Float32Array[]> {
    const t0 = performance.now();
    try { return await this.inner.forward(layer, group, x, T); } finally { this.ms += performance.now() - t0; }
  }
  async backward(layer: number, group: ProjectionGroup, dys: Float32Array[], T: number): Promise<Float32Array> {
    const t0 = performance.now();
    try { return await this.inner.backward(layer, group, dys, T); } finally { this.ms += performance.now() - t0; }
  }
}

/** Times one LoRA training micro-batch in fp32; returns the client's and the frozen products' rates. */
async function measureClientTraining(config: ReturnType<typeof parseConfig>, tensors: TensorMap, T: number, seqLen: number, rounds: number): Promise<{ clientMacsPerS: number; localFrozenMacsPerS: number }> {
  const provider = new TimedProvider(LocalFp32Provider.fromTensors(config, tensors));
  const model = LlamaModel.fromTensors(config, tensors, provider);
  const lora = LoraAdapter.create(config, { rank: 8, alpha: 16, dropout: 0.05, targetModules: [...PROJECTION_NAMES] }, { seed: 'helora-calibrate' });
  const rnd = seededRandom(5);
  const examples = Array.from({ length: Math.ceil(T / seqLen) }, () => ({ ids: Array.from({ length: seqLen }, () => Math.floor(rnd() * config.vocabSize)) }));
  const batch = packExamples(examples, { T, padId: 0 }).batches[0]!;
  const client: number[] = [];
  const frozen: number[] = [];
  for (let r = 0; r <= rounds; r++) {
    provider.ms = 0;
    const t0 = performance.now();
    await model.forwardBackward(batch, lora, { dropoutSeed: r });
    const total = performance.now() - t0;
    if (r === 0) continue; // warm-up
    client.push(total - provider.ms);
    frozen.push(provider.ms);
  }
  const targets = { targets: PROJECTION_NAMES, rank: 8 };
  return {
    clientMacsPerS: clientMacs(config, batchPlan(batch), targets) / (median(client) / 1000),
    localFrozenMacsPerS: frozenProductMacs(config, T) / (median(frozen) / 1000),
  };
}

export async function measureCalibration(opts: CalibrateOptions = {}): Promise<Calibration> {
  const shape = opts.shape ?? CALIBRATION_SHAPE;
  const T = opts.tokens ?? 2048;
  const seqLen = opts.seqLen ?? 512;
  const rounds = opts.rounds ?? 3;
  const threads = opts.threads ?? availableParallelism();
  const say = opts.say ?? (() => {});
  const params = DEFAULT_PARAMS;
  const config = parseConfig(llamaConfigJson(shape));
  const tensors: TensorMap = randomLlamaTensors(shape, 3);
  const rnd = seededRandom(9);

  say(`helora: calibrating the client's training work (fp32, ${shape.numLayers} layers of hidden ${shape.hiddenSize}, ${T} tokens)`);
  const training = await measureClientTraining(config, tensors, T, seqLen, rounds);

  say(`helora: calibrating the encrypted products of one layer (server pool and client crypto pool, ${threads} threads each)`);
  const pool = await KernelPool.create(threads);
  const client = new HeLinearClient({ params, key: SecretKey.generate(params), threads });
  try {
    const server = new HeLinearServer({ params, backend: poolBackend(pool) });
    const scales = new Map<ProjectionGroup, Float32Array[]>();
    for (const g of PROJECTION_GROUPS) {
      const shapes = groupShapes(config, g);
      const q = groupWeights(config, tensors, 0, g).map((w, j) => quantizeWeightsPerChannel(w, shapes[j]![0], shapes[j]![1]));
      await server.registerGroup(g, q.map((w) => ({ values: w.values, rows: w.rows, cols: w.cols })));
      scales.set(g, q.map((w) => w.scales));
    }
    await server.registerGroup('tiny', [{ values: new Int8Array(16).fill(3), rows: 4, cols: 4 }]);
    await client.start();
    const inputs = new Map<ProjectionGroup, { x: Float32Array; dys: Float32Array[] }>();
    for (const g of PROJECTION_GROUPS) {
      const shapes = groupShapes(config, g);
      inputs.set(g, { x: gaussians(T * shapes[0]![1], rnd), dys: shapes.map(([o]) => gaussians(T * o, rnd, 1e-3)) });
    }
    const tinyX = gaussians(4, rnd);
    const serverMs: number[] = [];
    const cryptoMs: number[] = [];
    const tinyMs: number[] = [];
    for (let r = 0; r <= rounds; r++) {
      let s = 0, c = 0;
      for (const g of PROJECTION_GROUPS) {
        const shapes = groupShapes(config, g);
        const { x, dys } = inputs.get(g)!;
        let t0 = performance.now();
        const fwd = await client.encryptForward(x, T, shapes[0]![1]);
        let t1 = performance.now();
        const fwdAnswer = await server.forward(g, fwd.request);
        let t2 = performance.now();
        await client.decryptForward(fwd, fwdAnswer, scales.get(g)!);
        client.releaseRequest(fwd.request);
        let t3 = performance.now();
        c += t1 - t0 + (t3 - t2);
        s += t2 - t1;
        t0 = performance.now();
        const bwd = await client.encryptBackward(dys, T, scales.get(g)!);
        t1 = performance.now();
        const bwdAnswer = await server.backward(g, bwd.request);
        t2 = performance.now();
        await client.decryptBackward(bwd, bwdAnswer, shapes[0]![1]);
        client.releaseRequest(bwd.request);
        t3 = performance.now();
        c += t1 - t0 + (t3 - t2);
        s += t2 - t1;
      }
      const t0 = performance.now();
      const tiny = await client.encryptForward(tinyX, 1, 4);
      const tinyAnswer = await server.forward('tiny', tiny.request);
      await client.decryptForward(tiny, tinyAnswer, [new Float32Array(4).fill(0.01)]);
      client.releaseRequest(tiny.request);
      const tinyTime = performance.now() - t0;
      if (r === 0) continue; // warm-up
      serverMs.push(s);
      cryptoMs.push(c);
      tinyMs.push(tinyTime);
    }
    // The counts of the requests just timed: one layer of a micro-batch, both directions, every group
    // (microBatchRequests of a one-layer model holds no backward q/k/v: that one is added here).
    const oneLayer = { ...config, numLayers: 1 };
    const wire = { params, actBits: client.actBits, maxTokensPerRequest: T, maskMode: 'fresh' as const };
    const requests = microBatchRequests(oneLayer, T, wire);
    const qkvBackward = microBatchRequests({ ...oneLayer, numLayers: 2 }, T, wire).filter((q) => q.op === 'backward' && q.group === 'qkv');
    const all = [...requests, ...qkvBackward];
    const serverMacs = all.reduce((sum, q) => sum + q.serverMacs, 0);
    const cryptoValues = all.reduce((sum, q) => sum + q.encryptedValues + q.decryptedValues, 0);
    const serverMacsPerS = serverMacs / (median(serverMs) / 1000);
    const cpu = cpus()[0]?.model ?? 'unknown';
    return {
      format: CALIBRATION_FORMAT,
      version: CALIBRATION_VERSION,
      source: `measured by helora calibrate on ${cpu} (${availableParallelism()} cores)`,
      created: new Date().toISOString(),
      machine: { cpu, cores: availableParallelism(), threads, node: process.version },
      rates: {
        serverMacsPerS,
        serverBOnlyMacsPerS: 2 * serverMacsPerS,
        cryptoValuesPerS: cryptoValues / (median(cryptoMs) / 1000),
        clientMacsPerS: training.clientMacsPerS,
        localFrozenMacsPerS: training.localFrozenMacsPerS,
        requestOverheadS: median(tinyMs) / 1000,
      },
      notes: [
        `model: hidden ${shape.hiddenSize}, intermediate ${shape.intermediateSize}, ${shape.numHeads}/${shape.numKvHeads} heads, vocabulary ${shape.vocabSize}; ${T} tokens per micro-batch in sequences of ${seqLen}; median of ${rounds} rounds after a warm-up`,
        'serverBOnlyMacsPerS assumed twice serverMacsPerS (the b part alone is 3 of the 6 limb GEMMs); no kernel measures it yet',
        'requestOverheadS: one encrypted product of a 4 x 4 matrix on one token, client and server in one process (no network)',
      ],
    };
  } finally {
    await client.close();
    await pool.close();
  }
}
