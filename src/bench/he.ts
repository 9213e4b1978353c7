// npm run bench:he — the encrypted linear product against the project's own plaintext GEMMs of
// the same shape, measured in the same run on the same cores. Prints one JSON object to stdout
// (progress goes to stderr).
//
// Data: activations with a few outlier channels (like LLM hidden states) quantized per token,
// Gaussian weights quantized per output channel: the error figure is relative to realistic outputs.

import { availableParallelism, cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { RLWE_N2048_Q44, SecretKey } from '../crypto/index.js';
import { KernelPool } from '../kernels/pool.js';
import { KernelEngine } from '../kernels/engine.js';
import { quantizePerToken, quantizeWeightsPerChannel } from '../quant/quantize.js';
import { HeLinearClient } from '../linear/client.js';
import { HeLinearServer, poolBackend } from '../linear/server.js';

interface LayerCase {
  name: string;
  dIn: number;
  dOut: number;
}

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const T = quick ? 512 : 2048;
const CASES: LayerCase[] = quick
  ? [{ name: '512x512', dIn: 512, dOut: 512 }]
  : [
      { name: '2048x2048', dIn: 2048, dOut: 2048 },
      { name: '8192->2048', dIn: 8192, dOut: 2048 },
    ];
const params = RLWE_N2048_Q44;

function log(msg: string): void {
  process.stderr.write(`[bench:he] ${msg}\n`);
}

/** Standard normal from two uniforms (benchmark data only). */
function gaussian(): number {
  return Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random());
}

function activations(T: number, C: number): Float32Array {
  const x = new Float32Array(T * C);
  for (let i = 0; i < x.length; i++) x[i] = gaussian();
  // A few outlier channels, 20x larger, as in real transformer hidden states.
  for (let c = 0; c < C; c += Math.max(1, Math.floor(C / 6))) for (let t = 0; t < T; t++) x[t * C + c] *= 20;
  return x;
}

function weights(rows: number, cols: number): Float32Array {
  const w = new Float32Array(rows * cols);
  const std = 1 / Math.sqrt(cols);
  for (let i = 0; i < w.length; i++) w[i] = gaussian() * std;
  return w;
}

/**
 * Times several operations round-robin: each round runs every operation once, so a drift of the
 * machine's speed (turbo, neighbours) hits all of them alike. Returns each one's median.
 */
async function timeInterleaved(ops: Record<string, () => Promise<unknown>>, rounds: number, warmups = 2): Promise<Record<string, number>> {
  const names = Object.keys(ops);
  for (let w = 0; w < warmups; w++) for (const name of names) await ops[name]();
  const samples: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    for (const name of names) {
      const t0 = performance.now();
      await ops[name]();
      samples[name].push(performance.now() - t0);
    }
  }
  return Object.fromEntries(names.map((n) => [n, median(samples[n])]));
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/**
 * The int8 GEMM's micro-kernel on L1-resident operands in this thread: what one core delivers
 * with that instruction mix at this moment (no cache misses, packing or threads).
 */
function int8KernelPeak(): { run: () => Promise<void>; macs: number } {
  const e = new KernelEngine();
  const n = 256; // k-pairs: A block 4 KiB, B panel 8 KiB
  const a = e.heap.alloc(n * 16), b = e.heap.alloc(n * 32), c = e.heap.alloc(128);
  e.heap.i8(a, n * 16).fill(3);
  e.heap.i8(b, n * 32).fill(5);
  const reps = 12000; // ~7 ms
  return { run: async () => e.ex.int16KernelPeak(a, b, c, n, reps), macs: reps * n * 64 };
}

function transpose(src: Int8Array, rows: number, cols: number): Int8Array {
  const out = new Int8Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c];
  return out;
}

async function runCase(c: LayerCase, cores: number, runs: number): Promise<Record<string, unknown>> {
  log(`${c.name}, T=${T}, ${cores} core(s)`);
  const pool = await KernelPool.create(cores);
  try {
    const x = activations(T, c.dIn);
    const wq = quantizeWeightsPerChannel(weights(c.dOut, c.dIn), c.dOut, c.dIn);
    const xq = quantizePerToken(x, T, c.dIn, 8);
    const xt = transpose(xq.values as Int8Array, T, c.dIn); // the server orientation: K x T

    // Plaintext baselines of the same shape on the same workers.
    const hInt8 = await pool.registerInt8(wq.values, c.dOut, c.dIn);
    const wf = new Float32Array(wq.values.length);
    for (let i = 0; i < wf.length; i++) wf[i] = wq.values[i];
    const xf = new Float32Array(xt.length);
    for (let i = 0; i < xf.length; i++) xf[i] = xt[i];
    const hF32 = await pool.registerF32(wf, c.dOut, c.dIn);

    // Encrypted product; the client's crypto runs on the same number of cores as the server.
    const key = SecretKey.generate(params);
    const client = new HeLinearClient({ key, threads: cores });
    const server = new HeLinearServer({ backend: poolBackend(pool) });
    await server.registerGroup('layer', [{ values: wq.values, rows: c.dOut, cols: c.dIn }]);
    let exact: Int32Array = new Int32Array(0);
    let request = await client.encryptIntegers(xq.values, T, [c.dIn]);
    let response = await server.forward('layer', request);
    let y: Int32Array | Float64Array = new Float64Array(0);
    const peak = int8KernelPeak();
    const ms = await timeInterleaved({
      // this machine's speed drifts (turbo, neighbours): the probe runs in every round as well
      peak: peak.run,
      int8: async () => { exact = await pool.gemmInt8(hInt8, xt, T); },
      fp32: () => pool.gemmF32(hF32, xf, T),
      encrypt: async () => {
        const sent = request; // answered and decrypted in the previous round: its memory is reused, as the transport client does
        request = await client.encryptIntegers(xq.values, T, [c.dIn]);
        client.releaseRequest(sent);
      },
      server: async () => { response = await server.forward('layer', request); },
      decrypt: async () => { [y] = await client.decryptIntegers(request, response, [c.dOut]); },
    }, runs);
    const [plainInt8Ms, plainF32Ms, encryptMs, serverMs, decryptMs] = [ms.int8, ms.fp32, ms.encrypt, ms.server, ms.decrypt];
    const plaintextBits = client.plaintextBitsOf(request);
    await client.close();

    let errSq = 0;
    let sigSq = 0;
    let maxErr = 0;
    for (let t = 0; t < T; t++) {
      for (let o = 0; o < c.dOut; o++) {
        const want = exact[o * T + t];
        const e = y[t * c.dOut + o] - want;
        errSq += e * e;
        sigSq += want * want;
        maxErr = Math.max(maxErr, Math.abs(e));
      }
    }
    const N = params.ringDegree;
    const blocks = Math.ceil(T / N);
    const uploadBytes = request.blocks.reduce((s, b) => s + b.length, 0) + request.seed.length;
    const downloadBytes = response.blocks.reduce((s, row) => s + row.reduce((q, m) => q + m.a.byteLength + m.b.byteLength, 0), 0);
    const clientMs = encryptMs + decryptMs;
    const macs = T * c.dIn * c.dOut;
    return {
      name: c.name,
      cores,
      tokens: T,
      macs,
      server_ms: round(serverMs),
      plain_int8_ms: round(plainInt8Ms),
      plain_fp32_ms: round(plainF32Ms),
      client_ms: round(clientMs),
      client_encrypt_ms: round(encryptMs),
      client_decrypt_ms: round(decryptMs),
      client_threads: cores,
      plaintext_bits: plaintextBits,
      server_vs_int8: round(serverMs / plainInt8Ms, 2),
      server_vs_fp32: round(serverMs / plainF32Ms, 2),
      client_vs_server: round(clientMs / serverMs, 3),
      server_gmacs: round(macs / serverMs / 1e6, 2),
      plain_int8_gmacs: round(macs / plainInt8Ms / 1e6, 2),
      plain_int8_gmacs_per_core: round(macs / plainInt8Ms / 1e6 / cores, 2),
      int8_kernel_peak_gmacs: round(peak.macs / ms.peak / 1e6, 2),
      plain_int8_vs_kernel_peak: round((macs / plainInt8Ms / cores) / (peak.macs / ms.peak), 3),
      upload_bytes_per_value: round(uploadBytes / (T * c.dIn), 3),
      download_bytes_per_value: round(downloadBytes / (T * c.dOut), 3),
      column_blocks: blocks,
      terms: response.terms,
      err_rms_rel: Number((Math.sqrt(errSq / sigSq)).toExponential(3)),
      err_max_abs: maxErr,
    };
  } finally {
    await pool.close();
  }
}

function round(v: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

async function main(): Promise<void> {
  const all = availableParallelism();
  const coreCounts = all > 1 ? [1, all] : [1];
  const runs = quick ? 1 : 5;
  const layers: Record<string, unknown>[] = [];
  for (const c of CASES) for (const cores of coreCounts) layers.push(await runCase(c, cores, runs));
  const out = {
    benchmark: 'bench:he',
    params: params.name,
    machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: all, node: process.version },
    targets: { server_vs_int8_max: 10, upload_bytes_per_value_max: 5, download_bytes_per_value_max: 8, client_vs_server_max: 0.1, err_rms_rel_max: 1e-4, plain_int8_gmacs_per_core_min: 30 },
    // int8_kernel_peak_gmacs (per layer): the int8 micro-kernel on L1-resident data in one thread,
    // timed in the same rounds: the ceiling of plain_int8_gmacs_per_core on this machine right then.
    timing: `median of ${runs} interleaved rounds after 2 warm-up rounds (each round runs every measured operation once)`,
    layers,
  };
  process.stdout.write(JSON.stringify(out, null, 2) + '\n');
}

main().catch((e) => {
  process.stderr.write(`bench:he failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
