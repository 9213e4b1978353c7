/**
 * The RLWE secret key. It never leaves the client: there is deliberately no toBytes() for the
 * wire. toFileBytes()/fromFileBytes() exist only for local checkpoints (the file is as secret as
 * the key: store it with owner-only permissions).
 */
import { createHash } from 'node:crypto';
import { paramsById, type RlweParams } from './params.js';
import { sampleTernary } from './sampling.js';

/** File magic of a saved secret key. */
const KEY_FILE_MAGIC = 'HLRSKEY1';
/** magic (8) + params id (u32) + ring degree (u32) + coefficients (N bytes) + SHA-256 (32). */
const KEY_HEADER_BYTES = 16;
const KEY_DIGEST_BYTES = 32;

/**
 * Seeds the repeat check of one key remembers (one per request: about 1 MB per 10,000). The seeds
 * are fresh 16-byte CSPRNG draws, so an accidental repeat has probability about 2^-128 however many
 * there are; the check is a guard against a code path that re-uses one, and such a bug would re-use
 * a recent seed. A key lives for one run (a fresh key per run makes older entries useless).
 */
export const MAX_REMEMBERED_SEEDS = 1 << 16;

export class SecretKey {
  readonly params: RlweParams;
  /** Number of nonzero coefficients (enters the noise bound). */
  readonly hammingWeight: number;
  /** Coefficients in {-1, 0, 1}. Private: only the crypto module reads them (secretCoefficients). */
  readonly #s: Int8Array;
  /**
   * The most recent seeds used with this key (hex seed -> block indices, oldest first): claimSeed
   * refuses a repeat. Bounded to MAX_REMEMBERED_SEEDS (the oldest are forgotten).
   */
  readonly #usedSeeds = new Map<string, Set<number>>();
  /** A per-block secret of the public-mask-table mode: it encrypts exactly one block, ever. */
  readonly singleUse: boolean;

  private constructor(params: RlweParams, s: Int8Array, singleUse = false) {
    this.params = params;
    this.#s = s;
    this.singleUse = singleUse;
    let w = 0;
    for (let i = 0; i < s.length; i++) if (s[i] !== 0) w++;
    this.hammingWeight = w;
  }

  /** A fresh uniform ternary secret from the CSPRNG. */
  static generate(params: RlweParams): SecretKey {
    return new SecretKey(params, sampleTernary(params.ringDegree));
  }

  /**
   * A fresh secret for one column block under public masks (params.ts, "Public mask tables"): the
   * masks are fixed, so the pair (mask, secret) is new only because the secret is; claimSeed
   * refuses a second block.
   */
  static generateSingleUse(params: RlweParams): SecretKey {
    return new SecretKey(params, sampleTernary(params.ringDegree), true);
  }

  /** @internal A worker's copy of a secret that the calling thread has already claimed for its block. */
  static fromCoefficients(params: RlweParams, s: Int8Array): SecretKey {
    if (!(s instanceof Int8Array) || s.length !== params.ringDegree || s.some((c) => c < -1 || c > 1)) {
      throw new Error(`helora: a secret needs ${params.ringDegree} coefficients in {-1, 0, 1}`);
    }
    return new SecretKey(params, s.slice(), true);
  }

  /** Local checkpoint format: magic, params id, N, one signed byte per coefficient, SHA-256 of all before. */
  toFileBytes(): Uint8Array {
    const n = this.#s.length;
    const out = new Uint8Array(KEY_HEADER_BYTES + n + KEY_DIGEST_BYTES);
    out.set(new TextEncoder().encode(KEY_FILE_MAGIC), 0);
    const dv = new DataView(out.buffer);
    dv.setUint32(8, this.params.id, true);
    dv.setUint32(12, n, true);
    for (let i = 0; i < n; i++) out[KEY_HEADER_BYTES + i] = this.#s[i] & 0xff;
    out.set(createHash('sha256').update(out.subarray(0, KEY_HEADER_BYTES + n)).digest(), KEY_HEADER_BYTES + n);
    return out;
  }

  /** Parses and validates a file written by toFileBytes(). */
  static fromFileBytes(bytes: Uint8Array): SecretKey {
    if (!(bytes instanceof Uint8Array) || bytes.length < KEY_HEADER_BYTES + KEY_DIGEST_BYTES) {
      throw new Error(`helora: secret key file too short (${bytes?.length ?? 0} bytes)`);
    }
    const magic = new TextDecoder().decode(bytes.subarray(0, 8));
    if (magic !== KEY_FILE_MAGIC) throw new Error(`helora: not a helora secret key file (magic ${JSON.stringify(magic)}, expected ${KEY_FILE_MAGIC})`);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const params = paramsById(dv.getUint32(8, true));
    const n = dv.getUint32(12, true);
    if (n !== params.ringDegree) throw new Error(`helora: secret key file has N = ${n}, parameter set ${params.name} needs ${params.ringDegree}`);
    const expected = KEY_HEADER_BYTES + n + KEY_DIGEST_BYTES;
    if (bytes.length !== expected) throw new Error(`helora: secret key file is ${bytes.length} bytes, expected ${expected}`);
    const digest = createHash('sha256').update(bytes.subarray(0, KEY_HEADER_BYTES + n)).digest();
    const stored = bytes.subarray(KEY_HEADER_BYTES + n);
    let diff = 0;
    for (let i = 0; i < KEY_DIGEST_BYTES; i++) diff |= digest[i] ^ stored[i];
    if (diff !== 0) throw new Error('helora: secret key file checksum mismatch (corrupted file)');
    const s = new Int8Array(n);
    for (let i = 0; i < n; i++) {
      const c = (bytes[KEY_HEADER_BYTES + i] << 24) >> 24;
      if (c < -1 || c > 1) throw new Error(`helora: secret key coefficient ${i} is ${c}, expected -1, 0 or 1`);
      s[i] = c;
    }
    return new SecretKey(params, s);
  }

  /** Stops JSON.stringify from ever serializing the key. */
  toJSON(): never {
    throw new Error('helora: a secret key is never serialized (use toFileBytes for a local checkpoint)');
  }

  /** @internal crypto-module access to the coefficients (do not use outside src/crypto). */
  static coefficients(key: SecretKey): Int8Array {
    return key.#s;
  }

  /**
   * @internal Records (seed, blockIndex) as used with this key; throws if it was used before:
   * reusing a mask with the same key leaks the difference of the two messages.
   */
  static claimSeed(key: SecretKey, seedHex: string, blockIndex: number): void {
    if (key.singleUse && key.#usedSeeds.size > 0) {
      throw new Error('helora: a single-use secret has already encrypted its block; draw a fresh secret (SecretKey.generateSingleUse) for every block');
    }
    let blocks = key.#usedSeeds.get(seedHex);
    if (!blocks) {
      blocks = new Set();
      key.#usedSeeds.set(seedHex, blocks);
      if (key.#usedSeeds.size > MAX_REMEMBERED_SEEDS) key.#usedSeeds.delete(key.#usedSeeds.keys().next().value!);
    }
    if (blocks.has(blockIndex)) {
      throw new Error(`helora: mask seed ${seedHex.slice(0, 8)}... was already used with this key for block ${blockIndex}; draw a fresh seed (randomSeed()) for every request`);
    }
    blocks.add(blockIndex);
  }

  /** @internal How many seeds the repeat check remembers for this key (tests). */
  static rememberedSeeds(key: SecretKey): number {
    return key.#usedSeeds.size;
  }
}
