/** Messages between CryptoPool (pool.ts) and its workers (pool-worker.ts); in-process only. */

export type CryptoRequest =
  | { op: 'init'; paramsId: number; keyFile: Uint8Array }
  | { op: 'encrypt'; m: Int32Array; d: number; seed: Uint8Array; blockIndex: number; polyStart: number; plaintextBits: number }
  | { op: 'decrypt'; a: Uint32Array; b: Uint32Array; rows: number; plaintextBits: number }
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
