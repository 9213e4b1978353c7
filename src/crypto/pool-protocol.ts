/** Messages between CryptoPool (pool.ts) and its workers (pool-worker.ts); in-process only. */

export type CryptoRequest =
  | { op: 'init'; paramsId: number; keyFile: Uint8Array }
  | { op: 'encrypt'; m: Int32Array; d: number; seed: Uint8Array; blockIndex: number; polyStart: number; plaintextBits: number }
  | { op: 'decrypt'; a: Uint32Array; b: Uint32Array; rows: number; plaintextBits: number }
  /** Encode features [polyStart, polyStart + d) of column block blockIndex from shared token-major values, then encrypt. */
  | { op: 'encryptValues'; values: Int8Array | Int16Array; T: number; K: number; d: number; seed: Uint8Array; blockIndex: number; polyStart: number; plaintextBits: number }
  /** decrypt, then return the first tn tokens token-major (tn x rows). */
  | { op: 'decryptTokens'; a: Uint32Array; b: Uint32Array; rows: number; plaintextBits: number; tn: number }
  | { op: 'close' };

export interface CryptoEnvelope {
  id: number;
  req: CryptoRequest;
}

export interface CryptoReply {
  id: number;
  ok: boolean;
  error?: string;
  bytes?: Uint8Array;
  y?: Int32Array;
}
