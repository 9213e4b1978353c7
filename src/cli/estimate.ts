// `helora estimate` and `helora calibrate`: argument parsing and printing; the counts are
// train/estimate.ts, the rates train/calibration.ts and train/calibrate.ts.

import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { DEFAULT_PARAMS } from '../crypto/params.js';
import { parseConfig } from '../model/config.js';
import { readJsonFile } from '../model/loader.js';
import { groupShapes, PROJECTION_GROUPS, PROJECTION_NAMES, type ProjectionName } from '../model/projections.js';
import { MASK_TABLE_PATH, MODEL_INFO_PATH } from '../protocol/endpoints.js';
import { layerTableLayout, MASK_TABLE_VERSION } from '../transport/mask-tables.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { DEFAULT_ACT_BITS } from '../quant/quantize.js';
import { measureCalibration, QUICK_CALIBRATION_SHAPE } from '../train/calibrate.js';
import { readCalibrationFile, readmeCalibration, type Calibration } from '../train/calibration.js';
import { readTrainingFile } from '../train/data.js';
import {
  estimateRun, MASK_MODES, NAMED_SHAPES, planFromExamples, planFromTokenCount, type Estimate, type EstimateTotals, type MaskMode, type ModelDims, type RunPlan,
} from '../train/estimate.js';
import { modelInfoToJson, type ModelInfo } from '../transport/model-info.js';
import { DEFAULT_MAX_TOKENS } from '../transport/model-server.js';
import { nonNegativeInt, nonNegativeNumber, positiveInt, positiveNumber, targets } from './args.js';
import { writeFileAtomic } from '../train/run-files.js';
import { TRAIN_DEFAULTS, tokenizeForTraining } from '../train/fine-tune.js';

const SI_PREFIX: Record<string, number> = { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 };

/** "1gbit", "100Mbit", "2.5gbps" (bits per second) or "10MB/s" (bytes per second), decimal prefixes -> bytes per second. */
export function parseBandwidth(v: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)(bit|bps|B\/s)\s*$/.exec(v);
  if (!m) throw new Error(`--bandwidth: expected a number with a unit (1gbit, 100mbit, 2.5gbps, 10MB/s), got ${JSON.stringify(v)}`);
  const bytesPerS = Number(m[1]) * SI_PREFIX[m[2]!.toLowerCase()]! / (m[3] === 'B/s' ? 1 : 8);
  if (!(bytesPerS > 0)) throw new Error(`--bandwidth must be positive, got ${JSON.stringify(v)}`);
  return bytesPerS;
}

/** A named shape, or a model folder's config.json. */
function modelDims(model: string): { dims: ModelDims; architecture: string; folder: string | null } {
  const name = model.toLowerCase();
  const named = NAMED_SHAPES[name];
  if (named) return { dims: named, architecture: name.startsWith('qwen') ? 'qwen2' : 'llama', folder: null };
  if (!existsSync(join(model, 'config.json'))) {
    throw new Error(`--model: ${JSON.stringify(model)} is neither a model folder with config.json nor a named shape (${Object.keys(NAMED_SHAPES).join(', ')})`);
  }
  const config = parseConfig(readJsonFile(join(model, 'config.json'), 'config.json'));
  return { dims: config, architecture: config.architecture, folder: model };
}

/**
 * The session setup the client's byte counters see once per run: its GET /v1/model-info request
 * line (without a bearer header: a token adds "authorization: Bearer <token>\r\n") and the
 * document, whose length follows from the shapes alone (transport/model-info.ts).
 */
function sessionSetupBytes(dims: ModelDims, architecture: string, actBits: number, maxTokens: number, maskMode: MaskMode): { uploadBytes: number; downloadBytes: number } {
  const scales = Array.from({ length: dims.numLayers }, () => Object.fromEntries(PROJECTION_GROUPS.map((g) => [g, groupShapes(dims, g).map(([rows]) => new Float32Array(rows))])) as ModelInfo['scales'][number]);
  // A server with tables lists them (size and hash per layer); the client then GETs each layer once (the bodies are counted as the table).
  const layerBytes = layerTableLayout(dims, DEFAULT_PARAMS, actBits).bytes;
  const maskTables = maskMode === 'table' ? { version: MASK_TABLE_VERSION, layers: Array.from({ length: dims.numLayers }, () => ({ bytes: layerBytes, sha256: '0'.repeat(64) })) } : null;
  const info: ModelInfo = { hash: '0'.repeat(64), paramsId: DEFAULT_PARAMS.id, actBits, maxTokens, shape: { ...dims, architecture }, scales, maskTables };
  const tableGets = maskMode === 'table' ? Array.from({ length: dims.numLayers }, (_, l) => Buffer.byteLength(`GET ${MASK_TABLE_PATH}/${l} HTTP/1.1\r\n\r\n`)).reduce((a, b) => a + b, 0) : 0;
  return {
    uploadBytes: Buffer.byteLength(`GET ${MODEL_INFO_PATH} HTTP/1.1\r\n\r\n`) + tableGets,
    downloadBytes: Buffer.byteLength(modelInfoToJson(info)),
  };
}

export interface EstimateCliOptions {
  model: string;
  data?: string;
  tokens?: number;
  epochs?: number;
  steps?: number;
  batchTokens: number;
  gradAccum: number;
  targets: ProjectionName[];
  rank: number;
  maskMode: MaskMode;
  actBits: number;
  maxTokensPerRequest: number;
  seed: number;
  bandwidth: string;
  rttMs: number;
  serverPricePerHour: number;
  egressPricePerGb: number;
  serverCalibration?: string;
  clientCalibration?: string;
}

export function runEstimate(o: EstimateCliOptions): { estimate: Estimate; inputs: Record<string, unknown> } {
  if ((o.data === undefined) === (o.tokens === undefined)) throw new Error('give either --data FILE or --tokens N');
  if (o.steps !== undefined && o.epochs !== undefined) throw new Error('give either --steps or --epochs, not both');
  const { dims, architecture, folder } = modelDims(o.model);
  const runLength = { epochs: o.epochs, steps: o.steps, gradAccum: o.gradAccum };
  let plan: RunPlan;
  if (o.data !== undefined) {
    if (folder === null) throw new Error(`--data needs the model's tokenizer: give a model folder instead of the named shape ${o.model}, or give --tokens`);
    const records = readTrainingFile(o.data).records;
    const config = parseConfig(readJsonFile(join(folder, 'config.json'), 'config.json'));
    const { examples, padId } = tokenizeForTraining(records, loadTokenizer(folder), config);
    plan = planFromExamples(examples, { T: o.batchTokens, padId, seed: o.seed, vocabSize: config.vocabSize }, runLength);
  } else {
    plan = planFromTokenCount(o.tokens!, o.batchTokens, runLength);
  }
  const calibration = (file: string | undefined): Calibration => (file === undefined ? readmeCalibration() : readCalibrationFile(file));
  const estimate = estimateRun({
    dims,
    plan,
    wire: { params: DEFAULT_PARAMS, actBits: o.actBits, maxTokensPerRequest: o.maxTokensPerRequest, maskMode: o.maskMode },
    lora: { targets: o.targets, rank: o.rank },
    cost: { bandwidthBytesPerS: parseBandwidth(o.bandwidth), rttS: o.rttMs / 1000, serverPricePerHour: o.serverPricePerHour, egressPricePerGB: o.egressPricePerGb },
    serverCalibration: calibration(o.serverCalibration),
    clientCalibration: calibration(o.clientCalibration),
    sessionSetup: sessionSetupBytes(dims, architecture, o.actBits, o.maxTokensPerRequest, o.maskMode),
  });
  const inputs = {
    model: o.model, data: o.data ?? null, tokens: o.tokens ?? null, epochs: o.epochs ?? (o.steps === undefined ? 1 : null), steps: o.steps ?? null,
    batch_tokens: o.batchTokens, grad_accum: o.gradAccum, targets: o.targets, rank: o.rank, mask_mode: o.maskMode, act_bits: o.actBits,
    max_tokens_per_request: o.maxTokensPerRequest, bandwidth_bytes_per_s: parseBandwidth(o.bandwidth), rtt_ms: o.rttMs,
    server_price_per_hour: o.serverPricePerHour, egress_price_per_gb: o.egressPricePerGb,
  };
  return { estimate, inputs };
}

const bytes = (n: number): string => (n >= 1e12 ? `${(n / 1e12).toFixed(2)} TB` : n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} kB` : `${n} B`);
const count = (n: number): string => (n >= 1e15 ? `${(n / 1e15).toFixed(2)} P` : n >= 1e12 ? `${(n / 1e12).toFixed(2)} T` : n >= 1e9 ? `${(n / 1e9).toFixed(2)} G` : n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : String(Math.round(n)));
function duration(s: number): string {
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${(s / 60).toFixed(1)} min`;
  if (s < 86400 * 2) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} days`;
}
const money = (x: number): string => x.toFixed(2);

/** The human-readable report. */
export function formatEstimate(e: Estimate, inputs: Record<string, unknown>): string {
  const d = e.model;
  const lines: string[] = [];
  lines.push(`model: ${inputs.model} (hidden ${d.hiddenSize}, intermediate ${d.intermediateSize}, ${d.numLayers} layers, ${d.numHeads}/${d.numKvHeads} heads of ${d.headDim}, vocabulary ${d.vocabSize})`);
  lines.push(`data: ${inputs.data ?? `${inputs.tokens} tokens`} (${e.planSource === 'data' ? 'packed exactly as helora train packs it' : 'assumed: full micro-batches, one sequence each'}), ${inputs.batch_tokens} tokens per micro-batch, ${inputs.grad_accum} per step`);
  lines.push(`LoRA rank ${inputs.rank} on ${(inputs.targets as string[]).join(', ')}; mask mode ${e.maskMode}${e.maskMode === 'table' ? ' (public mask tables: only b downloaded, the server computes only W b)' : ''}; bandwidth ${bytes(Number(inputs.bandwidth_bytes_per_s))}/s, round trip ${inputs.rtt_ms} ms`);
  lines.push(`rates: server from ${e.rates.server.source}; client from ${e.rates.client.source}`);
  lines.push('');
  const header = ['epoch', 'tokens', 'steps', 'requests', 'upload', 'download', 'server', 'client compute', 'crypto', 'transfer', 'overhead', 'wall', 'cost', 'fp32 local'];
  const row = (label: string, t: EstimateTotals): string[] => [
    label, count(t.tokens), String(t.optimizerSteps), count(t.requests), bytes(t.uploadBytes), bytes(t.downloadBytes), duration(t.serverS),
    duration(t.clientComputeS), duration(t.cryptoS), duration(t.transferS), duration(t.requestOverheadS), duration(t.wallS), money(t.cost), duration(t.localFp32.wallS),
  ];
  const rows = [header, ...e.epochs.map((ep) => row(String(ep.epoch), ep)), row('total', e.total)];
  const widths = header.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const [i, r] of rows.entries()) {
    lines.push(r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  '));
    if (i === 0) lines.push(widths.map((w) => '-'.repeat(w)).join('  '));
  }
  const t = e.total;
  lines.push('');
  lines.push(`per token: upload ${Math.round(t.uploadBytes / t.tokenSlots)} B, download ${Math.round(t.downloadBytes / t.tokenSlots)} B (token slots incl. padding: ${count(t.tokenSlots)})`);
  lines.push(`server: ${count(t.serverMacs)} encrypted MACs; client: ${count(t.clientMacs)} MACs of its own work, ${count(t.encryptedValues)} values encrypted, ${count(t.decryptedValues)} decrypted`);
  lines.push(`cost: server ${money(t.serverCost)} (held for the wall time at ${inputs.server_price_per_hour}/h) + egress ${money(t.egressCost)} (${bytes(t.downloadBytes)} at ${inputs.egress_price_per_gb}/GB) = ${money(t.cost)}`);
  lines.push(`session setup (once, in the totals): ${bytes(e.sessionSetup.uploadBytes)} up, ${bytes(e.sessionSetup.downloadBytes)} down (GET ${MODEL_INFO_PATH})`);
  if (e.maskTable) lines.push(`mask table (once): ${bytes(e.maskTable.bytes)} download, ${duration(e.maskTable.transferS)}, egress ${money(e.maskTable.egressCost)}`);
  lines.push(`fp32 on the data owner's machine: ${duration(t.localFp32.wallS)} (its own work plus ${count(t.localFp32.frozenMacs)} frozen-product MACs in fp32); encrypted: ${(t.wallS / t.localFp32.wallS).toFixed(1)}x that`);
  return lines.join('\n');
}

export function registerEstimateCommands(program: Command): void {
  program
    .command('estimate')
    .description('what a private fine-tune will cost: tokens, steps, bytes, time and money per epoch, next to fp32 on your own machine')
    .requiredOption('--model <dir|name>', `model folder (config.json, tokenizer.json) or a named shape: ${Object.keys(NAMED_SHAPES).join(', ')}`)
    .option('--data <file>', 'training data as for helora train (needs a model folder for its tokenizer)')
    .option('--tokens <n>', 'or a token count per epoch', positiveInt)
    .option('--epochs <n>', 'epochs (default 1 when --steps is not given)', positiveNumber)
    .option('--steps <n>', 'optimizer steps', positiveInt)
    .option('--batch-tokens <n>', 'tokens per micro-batch', positiveInt, TRAIN_DEFAULTS.batchTokens)
    .option('--grad-accum <k>', 'micro-batches per optimizer step', positiveInt, TRAIN_DEFAULTS.gradAccum)
    .option('--targets <list>', 'LoRA target modules', targets, [...PROJECTION_NAMES])
    .option('--rank <r>', 'LoRA rank', positiveInt, TRAIN_DEFAULTS.rank)
    .addOption(new Option('--mask-mode <mode>', 'table (public mask tables, what helora train uses when the server offers them) or fresh').choices(MASK_MODES as string[]).default('table'))
    .option('--act-bits <n>', "the server's activation width", positiveInt, DEFAULT_ACT_BITS)
    .option('--max-tokens-per-request <n>', "the server's max_tokens", positiveInt, DEFAULT_MAX_TOKENS)
    .option('--seed <n>', 'data order seed (as helora train --seed)', nonNegativeInt, TRAIN_DEFAULTS.seed)
    .option('--bandwidth <rate>', 'network bandwidth each way (1gbit, 100mbit, 10MB/s)', '1gbit')
    .option('--rtt-ms <ms>', 'network round trip per request', nonNegativeNumber, 0)
    .option('--server-price-per-hour <x>', 'price of the server per hour', nonNegativeNumber, 0)
    .option('--egress-price-per-gb <x>', 'price per GB (10^9 bytes) the server sends', nonNegativeNumber, 0)
    .option('--server-calibration <file>', 'the compute provider\'s helora calibrate file (default: the README\'s measured figures)')
    .option('--client-calibration <file>', 'your machine\'s helora calibrate file (default: the README\'s measured figures)')
    .option('--json', 'print one JSON object', false)
    .action((o: EstimateCliOptions & { json: boolean }) => {
      const { estimate, inputs } = runEstimate(o);
      process.stdout.write((o.json ? JSON.stringify({ inputs, ...estimate }) : formatEstimate(estimate, inputs)) + '\n');
    });

  program
    .command('calibrate')
    .description('time the real kernels on this machine and write the rates helora estimate uses')
    .requiredOption('--out <file>', 'calibration file to write (JSON)')
    .option('--threads <n>', 'worker threads (default: every core)', positiveInt)
    .option('--rounds <n>', 'timed rounds per figure (median)', positiveInt, 3)
    .option('--quick', 'a small model (seconds, for a first look; less representative)', false)
    .action(async (o: { out: string; threads?: number; rounds: number; quick: boolean }) => {
      if (existsSync(o.out) && statSync(o.out).isDirectory()) throw new Error(`--out ${o.out} is a folder`);
      const say = (l: string): void => { process.stderr.write(l + '\n'); };
      const cal = await measureCalibration({ threads: o.threads, rounds: o.rounds, say, ...(o.quick ? { shape: QUICK_CALIBRATION_SHAPE, tokens: 512, seqLen: 128 } : {}) });
      writeFileAtomic(o.out, JSON.stringify(cal, null, 2) + '\n');
      process.stdout.write(JSON.stringify({ event: 'calibrated', file: o.out, rates: cal.rates }) + '\n');
    });
}
