// npm run bench:he — the encrypted linear product against the project's own plaintext GEMMs of
// the same shape, measured in the same run on the same cores. Prints one JSON object to stdout
// (progress goes to stderr).
//
// Data: activations with a few outlier channels (like LLM hidden states) quantized per token,
// Gaussian weights quantized per output channel: the error figure is relative to realistic outputs.

import { availableParallelism, cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { RLWE_N2048_Q44, randomSeed, SecretKey } from '../crypto/index.js';
import { KernelPool } from '../kernels/pool.js';
import { KernelEngine } from '../kernels/engine.js';
import { loadNativeKernels, type NativeKernels } from '../kernels/native.js';
import { quantizePerToken, quantizeWeightsPerChannel, transposeInt8 } from '../quant/quantize.js';
import { HeLinearClient } from '../linear/client.js';
import { HeLinearServer, poolBackend } from '../linear/server.js';
import type { EncryptedOutput } from '../linear/types.js';

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

/**
 * The native library's register-only loop of the best dot-product instruction this CPU has (e.g.
 * vpdpbusd zmm with AVX-512 VNNI, vpmaddwd ymm with AVX2), in this thread: the hardware's ceiling.
 */
function nativeInt8Peak(nk: NativeKernels): { run: () => Promise<void>; macs: number } {
  const reps = Math.max(1, Math.round(4e8 / nk.peak(1))); // ~4e8 multiply-accumulates: a few ms
  return { run: async () => { nk.peak(reps); }, macs: nk.peak(1) * reps };
}

type Backend = 'native' | 'wasm';

async function runCase(c: LayerCase, cores: number, runs: number, native: NativeKernels | null): Promise<Record<string, unknown>[]> {
  const backends: Backend[] = native ? ['native', 'wasm'] : ['wasm'];
  log(`${c.name}, T=${T}, ${cores} core(s), backends ${backends.join(' + ')}`);
  const pools = new Map<Backend, KernelPool>();
  try {
    for (const be of backends) pools.set(be, await KernelPool.create(cores, be));
    const x = activations(T, c.dIn);
    const wq = quantizeWeightsPerChannel(weights(c.dOut, c.dIn), c.dOut, c.dIn);
    const xq = quantizePerToken(x, T, c.dIn, 8);
    const xt = transposeInt8(xq.values as Int8Array, T, c.dIn); // the server orientation: K x T
    const wf = new Float32Array(wq.values.length);
    for (let i = 0; i < wf.length; i++) wf[i] = wq.values[i];
    const xf = new Float32Array(xt.length);
    for (let i = 0; i < xf.length; i++) xf[i] = xt[i];

    // Plaintext baselines and the server of each backend, on the same number of workers.
    // The baselines read x from the pool's shared memory, where a server keeps what it receives:
    // otherwise a copy of x per call (several ms) would be timed as part of the GEMM.
    const per = new Map<Backend, { pool: KernelPool; hInt8: number; hF32: number; xInt8: Int8Array; xF32: Float32Array; server: HeLinearServer; response?: EncryptedOutput }>();
    for (const [be, pool] of pools) {
      const server = new HeLinearServer({ backend: poolBackend(pool) });
      await server.registerGroup('layer', [{ values: wq.values, rows: c.dOut, cols: c.dIn }]);
      const xInt8 = new Int8Array(pool.sharedScratch(xt.length).view.buffer, 0, xt.length);
      const xF32 = new Float32Array(pool.sharedScratch(xf.byteLength).view.buffer, 0, xf.length);
      xInt8.set(xt);
      xF32.set(xf);
      per.set(be, { pool, hInt8: await pool.registerInt8(wq.values, c.dOut, c.dIn), hF32: await pool.registerF32(wf, c.dOut, c.dIn), xInt8, xF32, server });
    }

    // Encrypted product; the client's crypto runs on the same number of cores as the server.
    const key = SecretKey.generate(params);
    const client = new HeLinearClient({ key, threads: cores });
    let exact: Int32Array = new Int32Array(0);
    let request = await client.encryptIntegers(xq.values, T, [c.dIn]);
    let response = await per.get(backends[0]!)!.server.forward('layer', request);
    let y: Int32Array | Float64Array = new Float64Array(0);
    // Public mask tables: the table of this product is built once per backend (a one-time cost),
    // requests carry a single-use secret per block, and the server computes only W·B.
    const tableSeed = randomSeed();
    const tableMs = new Map<Backend, number>();
    let table: Uint32Array[] = [];
    for (const [be, p] of per) {
      const t0 = performance.now();
      table = await p.server.maskTable('layer', 'forward', tableSeed);
      tableMs.set(be, performance.now() - t0);
    }
    let tRequest = await client.encryptIntegers(xq.values, T, [c.dIn], { tableSeed });
    let tResponse = await per.get(backends[0]!)!.server.forward('layer', tRequest, tableSeed);
    let yTable: Int32Array | Float64Array = new Float64Array(0);
    const withTable = (res: EncryptedOutput): EncryptedOutput => ({ ...res, blocks: res.blocks.map((row) => row.map((m, term) => ({ a: table[term]!, b: m.b }))) });
    const peak = int8KernelPeak();
    const nPeak = native ? nativeInt8Peak(native) : null;
    const ops: Record<string, () => Promise<unknown>> = {
      // this machine's speed drifts (turbo, neighbours): the probes run in every round as well
      peak: peak.run,
      ...(nPeak ? { native_peak: nPeak.run } : {}),
      encrypt: async () => {
        const sent = request; // answered and decrypted in the previous round: its memory is reused, as the transport client does
        request = await client.encryptIntegers(xq.values, T, [c.dIn]);
        client.releaseRequest(sent);
      },
      // (before the servers in every round, like encrypt: the round's answer is to this request)
      encrypt_table: async () => {
        const sent = tRequest;
        tRequest = await client.encryptIntegers(xq.values, T, [c.dIn], { tableSeed });
        client.releaseRequest(sent);
      },
    };
    for (const [be, p] of per) {
      ops[`int8_${be}`] = async () => { exact = await p.pool.gemmInt8(p.hInt8, p.xInt8, T); };
      ops[`fp32_${be}`] = () => p.pool.gemmF32(p.hF32, p.xF32, T);
      ops[`server_${be}`] = async () => { response = p.response = await p.server.forward('layer', request); };
      ops[`server_table_${be}`] = async () => { tResponse = await p.server.forward('layer', tRequest, tableSeed); };
    }
    ops.decrypt = async () => { [y] = await client.decryptIntegers(request, response, [c.dOut]); };
    ops.decrypt_table = async () => { [yTable] = await client.decryptIntegers(tRequest, withTable(tResponse), [c.dOut]); };
    const ms = await timeInterleaved(ops, runs);
    const plaintextBits = client.plaintextBitsOf(request);
    await client.close();

    // Every backend answered the last request: the answers must be the same bits.
    const answers = [...per.values()].map((p) => p.response!);
    const identical = answers.every((r) => r.blocks.every((row, i) => row.every((m, j) => {
      const o = answers[0]!.blocks[i]![j]!;
      return Buffer.compare(Buffer.from(m.a.buffer, m.a.byteOffset, m.a.byteLength), Buffer.from(o.a.buffer, o.a.byteOffset, o.a.byteLength)) === 0
        && Buffer.compare(Buffer.from(m.b.buffer, m.b.byteOffset, m.b.byteLength), Buffer.from(o.b.buffer, o.b.byteOffset, o.b.byteLength)) === 0;
    })));

    const errorOf = (got: Int32Array | Float64Array): { rmsRel: number; maxAbs: number } => {
      let errSq = 0, sigSq = 0, maxAbs = 0;
      for (let t = 0; t < T; t++) {
        for (let o = 0; o < c.dOut; o++) {
          const want = exact[o * T + t];
          const e = got[t * c.dOut + o] - want;
          errSq += e * e;
          sigSq += want * want;
          maxAbs = Math.max(maxAbs, Math.abs(e));
        }
      }
      return { rmsRel: Number(Math.sqrt(errSq / sigSq).toExponential(3)), maxAbs };
    };
    const freshErr = errorOf(y), tableErr = errorOf(yTable);
    const N = params.ringDegree;
    const blocks = Math.ceil(T / N);
    const uploadBytes = request.blocks.reduce((s, b) => s + b.length, 0) + request.seed.length;
    const downloadBytes = response.blocks.reduce((s, row) => s + row.reduce((q, m) => q + m.a.byteLength + m.b.byteLength, 0), 0);
    const tableDownloadBytes = tResponse.blocks.reduce((s, row) => s + row.reduce((q, m) => q + m.a.byteLength + m.b.byteLength, 0), 0);
    const tableBytes = table.reduce((s, t) => s + t.byteLength, 0);
    const macs = T * c.dIn * c.dOut;
    const wasmPeak = peak.macs / ms.peak;
    const nativePeak = nPeak ? nPeak.macs / ms.native_peak : null;
    return backends.flatMap((be) => (['fresh', 'table'] as const).map((masks) => {
      const table = masks === 'table';
      const [plainInt8Ms, plainF32Ms] = [ms[`int8_${be}`], ms[`fp32_${be}`]];
      const serverMs = ms[table ? `server_table_${be}` : `server_${be}`];
      const [encryptMs, decryptMs] = table ? [ms.encrypt_table, ms.decrypt_table] : [ms.encrypt, ms.decrypt];
      const clientMs = encryptMs + decryptMs;
      const err = table ? tableErr : freshErr;
      // Each backend's int8 GEMM against the ceiling of its own instruction.
      const ceiling = be === 'native' && nativePeak ? nativePeak : wasmPeak;
      return {
        name: c.name,
        backend: be,
        masks,
        kernel_level: be === 'native' ? native!.level : 'wasm-simd128',
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
        int8_kernel_peak_gmacs: round(wasmPeak / 1e6, 2),
        native_int8_peak_gmacs: nativePeak === null ? null : round(nativePeak / 1e6, 2),
        native_int8_peak_instruction: native ? native.peakInstruction() : null,
        plain_int8_vs_kernel_peak: round((macs / plainInt8Ms / cores) / ceiling, 3),
        server_vs_native_server: nativePeak === null ? null : round(serverMs / ms[table ? 'server_table_native' : 'server_native'], 2),
        backends_bit_identical: identical,
        upload_bytes_per_value: round(uploadBytes / (T * c.dIn), 3),
        download_bytes_per_value: round((table ? tableDownloadBytes : downloadBytes) / (T * c.dOut), 3),
        // one-time cost of table mode: the public table W·A of this product (bytes the client downloads once, server ms to build it)
        table_bytes: table ? tableBytes : null,
        table_ms: table ? round(tableMs.get(be)!) : null,
        column_blocks: blocks,
        terms: response.terms,
        err_rms_rel: err.rmsRel,
        err_max_abs: err.maxAbs,
      };
    }));
  } finally {
    for (const pool of pools.values()) await pool.close();
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
  // Both backends in the same rounds unless HELORA_KERNELS=wasm (or no native build).
  const native = process.env.HELORA_KERNELS === 'wasm' ? null : loadNativeKernels().kernels;
  const layers: Record<string, unknown>[] = [];
  for (const c of CASES) for (const cores of coreCounts) layers.push(...await runCase(c, cores, runs, native));
  const out = {
    benchmark: 'bench:he',
    params: params.name,
    machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: all, node: process.version },
    targets: {
      fresh: { server_vs_int8_max: 10, upload_bytes_per_value_max: 5, download_bytes_per_value_max: 8, client_vs_server_max: 0.1, err_rms_rel_max: 1e-4, plain_int8_gmacs_per_core_min: 30 },
      table: { server_vs_int8_max: 3.5, upload_bytes_per_value_max: 5, download_bytes_per_value_max: 4, client_vs_server_max: 0.1, err_rms_rel_max: 1e-4 },
      native: { server_vs_int8_max_fresh: 12, server_vs_int8_max_table: 6, server_speedup_vs_wasm_min: 5, plain_int8_vs_peak_min: 0.6 },
    },
    // int8_kernel_peak_gmacs (per layer): the WebAssembly int8 micro-kernel on L1-resident data in
    // one thread; native_int8_peak_gmacs: a register-only loop of the best dot-product instruction
    // of this CPU (native_int8_peak_instruction); both timed in the same rounds as everything else.
    // plain_int8_vs_kernel_peak relates each backend's int8 GEMM to its own ceiling.
    // One row per backend and layer: native and WebAssembly measured in the same interleaved rounds.
    timing: `median of ${runs} interleaved rounds after 2 warm-up rounds (each round runs every measured operation once)`,
    layers,
  };
  process.stdout.write(JSON.stringify(out, null, 2) + '\n');
}

main().catch((e) => {
  process.stderr.write(`bench:he failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
