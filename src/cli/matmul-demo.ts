// `helora matmul-demo`: one frozen linear layer computed by a "server" on encrypted activations,
// next to the fp32 and plaintext-quantized results, with the time and traffic of each step.

import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { KernelPool } from '../kernels/pool.js';
import { quantizeWeightsPerChannel } from '../quant/quantize.js';
import { HeLinearClient, HeLinearServer, poolBackend, QuantizedGroup } from '../linear/index.js';

export interface MatmulDemoOptions {
  dIn: number;
  dOut: number;
  tokens: number;
  threads: number;
}

function gaussian(): number {
  return Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random());
}

function relErr(got: Float32Array, want: Float32Array): number {
  let e = 0;
  let s = 0;
  for (let i = 0; i < got.length; i++) {
    e += (got[i] - want[i]) ** 2;
    s += want[i] ** 2;
  }
  return Math.sqrt(e / s);
}

export async function matmulDemo(opts: MatmulDemoOptions): Promise<void> {
  const { dIn, dOut, tokens: T } = opts;
  const say = (s: string) => process.stdout.write(s + '\n');
  say(`helora matmul demo: y = W x for a ${dOut}x${dIn} layer and ${T} tokens, W public, x encrypted (RLWE, N=2048, q=2^44)`);
  const x = new Float32Array(T * dIn);
  for (let i = 0; i < x.length; i++) x[i] = gaussian() * (i % dIn < 4 ? 20 : 1);
  const w = new Float32Array(dOut * dIn);
  for (let i = 0; i < w.length; i++) w[i] = gaussian() / Math.sqrt(dIn);
  const wq = quantizeWeightsPerChannel(w, dOut, dIn);

  // Reference results computed in the clear.
  const yFp32 = new Float32Array(T * dOut);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < dOut; o++) {
      let s = 0;
      for (let i = 0; i < dIn; i++) s += x[t * dIn + i] * w[o * dIn + i];
      yFp32[t * dOut + o] = s;
    }
  }
  const [yQuant] = new QuantizedGroup([wq]).forward(x, T);

  const client = new HeLinearClient();
  const pool = await KernelPool.create(opts.threads);
  try {
    const server = new HeLinearServer({ backend: poolBackend(pool) });
    await server.registerGroup('layer', [{ values: wq.values, rows: dOut, cols: dIn }]);
    const clientThreads = await client.start(); // the workers' start-up is not part of the timings

    let t0 = performance.now();
    const pending = await client.encryptForward(x, T, dIn);
    const encMs = performance.now() - t0;
    const up = pending.request.blocks.reduce((s, b) => s + b.length, 0) + pending.request.seed.length;
    say(`client: quantized ${T}x${dIn} activations per token (8 bits) and encrypted them on ${clientThreads} thread(s) in ${encMs.toFixed(0)} ms -> ${(up / 2 ** 20).toFixed(1)} MiB (${(up / (T * dIn)).toFixed(2)} bytes/value)`);

    t0 = performance.now();
    const response = await server.forward('layer', pending.request);
    const srvMs = performance.now() - t0;
    const down = response.blocks.reduce((s, row) => s + row.reduce((q, m) => q + m.a.byteLength + m.b.byteLength, 0), 0);
    say(`server: ${pool.threads} thread(s), encrypted product in ${srvMs.toFixed(0)} ms -> ${(down / 2 ** 20).toFixed(1)} MiB back (${(down / (T * dOut)).toFixed(2)} bytes/value)`);

    t0 = performance.now();
    const [yEnc] = await client.decryptForward(pending, response, [wq.scales]);
    const decMs = performance.now() - t0;
    say(`client: decrypted and dequantized in ${decMs.toFixed(0)} ms`);
    say('');
    say(`relative error, encrypted vs plaintext 8-bit path: ${relErr(yEnc, yQuant).toExponential(2)}  (the HE noise)`);
    say(`relative error, 8-bit path vs fp32:               ${relErr(yQuant, yFp32).toExponential(2)}  (the quantization error)`);
    say(`relative error, encrypted vs fp32:                ${relErr(yEnc, yFp32).toExponential(2)}`);
  } finally {
    await Promise.all([pool.close(), client.close()]);
  }
}

export const MATMUL_DEMO_DEFAULTS: MatmulDemoOptions = { dIn: 2048, dOut: 2048, tokens: 2048, threads: availableParallelism() };
