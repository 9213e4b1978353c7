/**
 * The rates `helora estimate` divides its exact counts by, for one machine: written by
 * `helora calibrate` (train/calibrate.ts times the real kernels there), or the defaults below,
 * derived from this repository's measured README figures and labelled as such. The compute provider
 * and the data owner each calibrate their own machine; the estimate takes the server rates from one
 * file and the client rates from the other.
 *
 * File (JSON, format "helora-calibration", version 1):
 *   { format, version, source, created, machine: { cpu, cores, threads, node },
 *     rates: { serverMacsPerS, serverBOnlyMacsPerS, cryptoValuesPerS, clientMacsPerS, localFrozenMacsPerS, requestOverheadS },
 *     notes: [string] }
 */

import { readTextFileBounded } from '../util/files.js';
import { PROJECTION_NAMES } from '../model/projections.js';
import { clientMacs, frozenProductMacs, microBatchRequests, NAMED_SHAPES } from './estimate.js';
import { DEFAULT_PARAMS } from '../crypto/params.js';

export const CALIBRATION_FORMAT = 'helora-calibration';
export const CALIBRATION_VERSION = 1;
/** A calibration file larger than this is refused before reading. */
export const MAX_CALIBRATION_BYTES = 64 * 1024;

export interface CalibrationRates {
  /** Encrypted-product multiply-accumulates per second on the server (fresh masks: a and b parts), per ciphertext slot. */
  serverMacsPerS: number;
  /** The same with only the b part (public-mask-table mode). */
  serverBOnlyMacsPerS: number;
  /** Client values per second through quantize + encrypt and decrypt + dequantize (encrypted plus decrypted values). */
  cryptoValuesPerS: number;
  /** Client multiply-accumulates per second of its own training work (estimate.ts clientMacs: LM head, attention, LoRA, with the elementwise work around them). */
  clientMacsPerS: number;
  /** The frozen products in fp32 on the client's machine (estimate.ts frozenProductMacs per second): the local fp32 fine-tune. */
  localFrozenMacsPerS: number;
  /** Fixed time per request beyond the rates (dispatch, messages, workers), seconds. */
  requestOverheadS: number;
}

export interface Calibration {
  format: typeof CALIBRATION_FORMAT;
  version: typeof CALIBRATION_VERSION;
  /** Where the rates come from (a machine's measurement, or the README defaults). */
  source: string;
  created: string;
  machine: { cpu: string; cores: number; threads: number; node: string };
  rates: CalibrationRates;
  notes: string[];
}

/**
 * Defaults from the README's measured figures (`npm run bench:train -- --demo-steps 0`: SmolLM2-135M
 * shape, 2048-token micro-batch of four 512-token sequences, LoRA rank 8 on all seven projections,
 * public mask tables, native kernels, server and client on one idle 2-core AMD EPYC (AVX2) over
 * loopback): server_s 19.8, crypto_s 19.5, client_compute_s 10.5 per step, and the same step in fp32 at
 * 107.42 tokens/s (19.07 s: the client's 10.5 s plus the frozen products). Each rate is the count the
 * estimate gives for that step divided by the measured time.
 */
export function readmeCalibration(): Calibration {
  const dims = NAMED_SHAPES['smollm2-135m']!;
  const T = 2048;
  const requests = microBatchRequests(dims, T, { params: DEFAULT_PARAMS, actBits: 8, maxTokensPerRequest: 4096, maskMode: 'table' });
  const serverMacs = requests.reduce((s, r) => s + r.serverMacs, 0);
  const cryptoValues = requests.reduce((s, r) => s + r.encryptedValues + r.decryptedValues, 0);
  const client = clientMacs(dims, { T, seqLens: [512, 512, 512, 512], realTokens: T }, { targets: PROJECTION_NAMES, rank: 8 });
  const serverBOnlyMacsPerS = serverMacs / 19.8;
  const fp32StepS = T / 107.42;
  return {
    format: CALIBRATION_FORMAT,
    version: CALIBRATION_VERSION,
    source: 'README measured figures (npm run bench:train, SmolLM2-135M shape, table mode, native kernels, 2-core AMD EPYC, Node 20)',
    created: '2026-12-02T00:00:00.000Z',
    machine: { cpu: 'AMD EPYC', cores: 2, threads: 2, node: 'v20.20.2' },
    rates: {
      serverMacsPerS: serverBOnlyMacsPerS / 2,
      serverBOnlyMacsPerS,
      cryptoValuesPerS: cryptoValues / 19.5,
      clientMacsPerS: client / 10.5,
      localFrozenMacsPerS: frozenProductMacs(dims, T) / (fp32StepS - 10.5),
      requestOverheadS: 0,
    },
    notes: [
      'server, crypto and client rates: counts of one table-mode bench:train step divided by its measured server_s, crypto_s and client_compute_s; local frozen products: the fp32 step time (2048 / 107.42 tokens/s) minus client_compute_s',
      'serverMacsPerS (fresh masks: a and b parts) assumed half of serverBOnlyMacsPerS (6 limb GEMMs against 3)',
      'requestOverheadS not measured by the README benchmarks: 0',
    ],
  };
}

function bad(where: string, msg: string): never {
  throw new Error(`helora: calibration ${where} is invalid: ${msg}`);
}

/** Validates a calibration document (untrusted JSON). */
export function parseCalibration(text: string, where = 'file'): Calibration {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    bad(where, `not JSON (${(e as Error).message})`);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) bad(where, 'expected a JSON object');
  const o = j as Record<string, unknown>;
  if (o.format !== CALIBRATION_FORMAT) bad(where, `format ${JSON.stringify(o.format)}, expected "${CALIBRATION_FORMAT}"`);
  if (o.version !== CALIBRATION_VERSION) bad(where, `version ${JSON.stringify(o.version)}, expected ${CALIBRATION_VERSION}`);
  const str = (v: unknown, name: string): string => {
    if (typeof v !== 'string' || v.length > 1000) bad(where, `"${name}" must be a string of at most 1000 characters`);
    return v;
  };
  const rates = o.rates;
  if (typeof rates !== 'object' || rates === null) bad(where, '"rates" must be an object');
  const r = rates as Record<string, unknown>;
  const rate = (name: keyof CalibrationRates, allowZero: boolean): number => {
    const v = r[name];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0) || v > 1e18) bad(where, `rates.${name} must be a ${allowZero ? 'non-negative' : 'positive'} finite number, got ${JSON.stringify(v)}`);
    return v;
  };
  const m = o.machine as Record<string, unknown> | undefined;
  if (typeof m !== 'object' || m === null) bad(where, '"machine" must be an object');
  const count = (v: unknown, name: string): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > 1 << 20) bad(where, `machine.${name} must be a small non-negative integer`);
    return v;
  };
  const notes = o.notes;
  if (!Array.isArray(notes) || notes.length > 100) bad(where, '"notes" must be a list of at most 100 strings');
  return {
    format: CALIBRATION_FORMAT,
    version: CALIBRATION_VERSION,
    source: str(o.source, 'source'),
    created: str(o.created, 'created'),
    machine: { cpu: str(m.cpu, 'machine.cpu'), cores: count(m.cores, 'cores'), threads: count(m.threads, 'threads'), node: str(m.node, 'machine.node') },
    rates: {
      serverMacsPerS: rate('serverMacsPerS', false),
      serverBOnlyMacsPerS: rate('serverBOnlyMacsPerS', false),
      cryptoValuesPerS: rate('cryptoValuesPerS', false),
      clientMacsPerS: rate('clientMacsPerS', false),
      localFrozenMacsPerS: rate('localFrozenMacsPerS', false),
      requestOverheadS: rate('requestOverheadS', true),
    },
    notes: notes.map((n, i) => str(n, `notes[${i}]`)),
  };
}

/** Reads a calibration file (size checked before reading). */
export function readCalibrationFile(path: string): Calibration {
  let text: string;
  try {
    text = readTextFileBounded(path, MAX_CALIBRATION_BYTES, `calibration file ${path}`);
  } catch (e) {
    const m = (e as Error).message;
    throw m.startsWith('helora:') ? e : new Error(`helora: cannot open calibration file ${path}: ${m}`);
  }
  return parseCalibration(text, path);
}
