/**
 * Text generation with a KV cache: greedy, temperature and nucleus (top-p) sampling, with or
 * without a LoRA adapter, through the same FrozenLinearProvider as training (forward only).
 */

import { randomBytes } from 'node:crypto';
import { KvCache, type LlamaModel } from './llama.js';
import { seededUint32, type LoraAdapter } from './lora.js';

export interface GenerateOptions {
  /** Most tokens to produce (default 64). */
  maxNewTokens?: number;
  /** 0 (default) = greedy argmax; > 0 = sample from softmax(logits / temperature). */
  temperature?: number;
  /** Nucleus sampling: keep the smallest set of top tokens whose probability reaches topP (default 1). */
  topP?: number;
  /** Token id(s) that end generation (included in the output); default: the config's eos. */
  eosTokenId?: number | number[] | null;
  /** Seed for reproducible sampling; random (node:crypto) when absent. */
  seed?: Uint8Array | string;
  /** Called with each new token as it is produced. */
  onToken?: (token: number) => void;
}

/** Index of the largest value (first on ties). */
export function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/**
 * Samples a token from logits with temperature and top-p, given u uniform in [0, 1).
 * temperature <= 0 means argmax.
 */
export function sampleToken(logits: Float32Array, temperature: number, topP: number, u: number): number {
  if (!(temperature > 0)) return argmax(logits);
  const V = logits.length;
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[i]! > max) max = logits[i]!;
  const probs = new Float64Array(V);
  let sum = 0;
  for (let i = 0; i < V; i++) { const p = Math.exp((logits[i]! - max) / temperature); probs[i] = p; sum += p; }
  for (let i = 0; i < V; i++) probs[i]! /= sum;
  let order: number[];
  if (topP < 1) {
    order = Array.from({ length: V }, (_, i) => i).sort((a, b) => probs[b]! - probs[a]! || a - b);
    let cum = 0, keep = 0;
    while (keep < V) { cum += probs[order[keep]!]!; keep++; if (cum >= topP) break; }
    order = order.slice(0, keep);
    let kept = 0;
    for (const i of order) kept += probs[i]!;
    let target = u * kept;
    for (const i of order) { target -= probs[i]!; if (target < 0) return i; }
    return order[order.length - 1]!;
  }
  let target = u;
  for (let i = 0; i < V; i++) { target -= probs[i]!; if (target < 0) return i; }
  return argmax(logits);
}

/** Generates up to maxNewTokens tokens after the prompt; returns only the new tokens. */
export async function generate(model: LlamaModel, lora: LoraAdapter | null, prompt: ArrayLike<number>, opts: GenerateOptions = {}): Promise<number[]> {
  const maxNew = opts.maxNewTokens ?? 64;
  if (!Number.isInteger(maxNew) || maxNew < 0) throw new Error(`helora: maxNewTokens must be a non-negative integer, got ${maxNew}`);
  if (prompt.length < 1) throw new Error('helora: generation needs a prompt of at least one token (e.g. BOS)');
  const temperature = opts.temperature ?? 0;
  const topP = opts.topP ?? 1;
  if (!(topP > 0 && topP <= 1)) throw new Error(`helora: topP must be in (0, 1], got ${topP}`);
  const eosOpt = opts.eosTokenId === undefined ? model.config.eosTokenId : opts.eosTokenId;
  const eos = new Set(eosOpt === null ? [] : Array.isArray(eosOpt) ? eosOpt : [eosOpt]);
  const seed = opts.seed === undefined ? randomBytes(32) : typeof opts.seed === 'string' ? Buffer.from(opts.seed, 'utf8') : opts.seed;
  const uniforms = temperature > 0 ? seededUint32(seed, 'generate', Math.max(1, maxNew)) : null;

  const cache = new KvCache(model.config, prompt.length + Math.max(1, maxNew));
  const out: number[] = [];
  if (maxNew === 0) return out;
  let logits = await model.forwardCached(Int32Array.from(prompt), cache, lora, { lastOnly: true });
  for (let step = 0; step < maxNew; step++) {
    const u = uniforms ? uniforms[step]! / 4294967296 : 0;
    const tok = sampleToken(logits, temperature, topP, u);
    out.push(tok);
    opts.onToken?.(tok);
    if (eos.has(tok) || step === maxNew - 1) break;
    logits = await model.forwardCached(Int32Array.of(tok), cache, lora, { lastOnly: true });
  }
  return out;
}
