/** Messages between CryptoPool (pool.ts) and its workers (pool-worker.ts); in-process only. */
import type { WorkerEnvelope, WorkerReply } from '../util/worker-channel.js';

export type CryptoRequest =
  | { op: 'init'; paramsId: number; keyFile: Uint8Array }
  | { op: 'encrypt'; m: Int32Array; d: number; seed: Uint8Array; blockIndex: number; polyStart: number; plaintextBits: number }
  | { op: 'decrypt'; a: Uint32Array; b: Uint32Array; rows: number; plaintextBits: number }
  /**
   * Tokens [t0, t0 + tn) of the shared token-major values (T x K) into the shared feature-major
   * `out` (K x T) and their L1 norms into `tokenL1`; with wipeSource, zero those tokens in values
   * afterwards (a staging copy of the caller's data).
   */
  | { op: 'featureMajor'; values: Int8Array | Int16Array; T: number; K: number; t0: number; tn: number; out: Int8Array | Int16Array;
      tokenL1: Float64Array; wipeSource: boolean }
  /**
   * Encrypt features [polyStart, polyStart + d) of column block blockIndex, taken from shared
   * feature-major values (K x T, see CryptoPool.featureMajor), into their range of the shared
   * upload `out` of the whole block. The values read are zeroed right after (each is read once).
   * With `secret` (public-mask-table mode): that block's single-use secret instead of the pool's
   * key, and the masks of block `maskBlock` of the seed.
   */
  | { op: 'encryptValues'; values: Int8Array | Int16Array; T: number; K: number; d: number; seed: Uint8Array; blockIndex: number; polyStart: number; plaintextBits: number;
      out: Uint8Array; secret?: Int8Array; maskBlock?: number }
  /**
   * Decrypt rows [r0, r0 + nr) of every term (a[k], b[k]: the whole rows x N matrices in shared
   * memory, or only those rows when sliced) and store the sum of the terms for tokens [t0, t0 + tn)
   * into the shared acc (T x rows).
   */
  | { op: 'decryptSum'; a: Uint32Array[]; b: Uint32Array[]; rows: number; r0: number; nr: number; sliced: boolean; plaintextBits: number;
      acc: Int32Array | Float64Array; t0: number; tn: number; secret?: Int8Array }
  | { op: 'close' };

export type CryptoEnvelope = WorkerEnvelope<CryptoRequest>;

export interface CryptoReply extends WorkerReply {
  bytes?: Uint8Array;
  y?: Int32Array;
  value?: number;
}
