/** Messages between KernelPool (main thread) and its workers (pool-worker.ts). */
import type { WorkerEnvelope, WorkerReply } from '../util/worker-channel.js';

export type PoolRequest =
  | { op: 'warm' }
  | { op: 'regInt8'; handle: number; w: Int8Array; rows: number; cols: number }
  | { op: 'regF32'; handle: number; w: Float32Array; rows: number; cols: number }
  | { op: 'zq'; handle: number; a: Uint8Array; b: Uint8Array; N: number; aOut: Uint32Array; bOut: Uint32Array; offset: number }
  | { op: 'zqPart'; handle: number; part: 'a' | 'b'; v: Uint8Array; N: number; out: Uint32Array; offset: number }
  | { op: 'int8'; handle: number; x: Int8Array; N: number; out: Int32Array; offset: number }
  | { op: 'f32'; handle: number; x: Float32Array; N: number }
  | { op: 'fwd'; handle: number; inp: Float32Array; T: number }
  | { op: 'bwdIn'; handle: number; dout: Float32Array; T: number; OC: number; r0: number }
  | { op: 'keystream'; key: Uint8Array; iv: Uint8Array; dst: Uint8Array };

export type PoolResult =
  | { kind: 'none' }
  | { kind: 'f32'; v: Float32Array };

export type PoolEnvelope = WorkerEnvelope<PoolRequest>;
export interface PoolReply extends WorkerReply { result?: PoolResult }
