// Public mask tables (src/crypto/params.ts, "Public mask tables"): the masks of every product of a
// served model are fixed and public, so W·A is a public table. The server computes it once per
// model (kept on disk, keyed by model hash, parameter set and table version) and serves one file per
// layer at GET /v1/mask-table/<layer> (Range requests resume a download); the client downloads
// each layer once into its cache, checks its SHA-256 against the model info (once: a marker beside
// the file records it), and reads the rows of each product when it needs them (up to a memory
// budget, kept in memory from step to step).
//
// Layer file: for group in PROJECTION_GROUPS, for direction in [forward, backward], for each K-chunk
// term: rows x N little-endian u32 (rows: the stacked outputs forward, the input features backward),
// exactly the `a` part a fresh-mask answer of that product would carry.

import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, truncateSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { maxInnerDim, type RlweParams } from '../crypto/index.js';
import { SEED_BYTES } from '../crypto/sampling.js';
import { featureChunks } from '../linear/layout.js';
import type { ProductDirection } from '../linear/types.js';
import { groupShapes, PROJECTION_GROUPS, type ProjectionDims, type ProjectionGroup } from '../model/projections.js';
import { WEIGHT_BITS } from '../quant/quantize.js';
import { HOST_LITTLE_ENDIAN } from '../util/bytes.js';
import { readAt } from '../util/files.js';

/** Version of the seed derivation and the file layout (part of the cache key). */
export const MASK_TABLE_VERSION = 1;
const SEED_DOMAIN = 'helora-mask-table-v1';
export const DIRECTIONS: readonly ProductDirection[] = ['forward', 'backward'];

/**
 * The public mask seed of one product: SHA-256 over the domain, the parameter set, the model hash,
 * the layer, the group and the direction, cut to the seed size. Both sides derive it; the server
 * cannot choose it (the masks come from AES-128-CTR under it, an ideal cipher in the argument).
 */
export function tableMaskSeed(params: RlweParams, modelHash: string, layer: number, group: ProjectionGroup, direction: ProductDirection): Uint8Array {
  const h = createHash('sha256').update(`${SEED_DOMAIN}\0${params.id}\0${modelHash}\0${layer}\0${group}\0${direction}`, 'utf8').digest();
  return new Uint8Array(h.subarray(0, SEED_BYTES));
}

/** One product's place in a layer file. */
export interface TableEntry {
  group: ProjectionGroup;
  direction: ProductDirection;
  /** Rows of the product's result (all outputs stacked). */
  rows: number;
  /** K-chunk terms. */
  terms: number;
  /** First u32 of term 0; term t starts at offsetWords + t * rows * N. */
  offsetWords: number;
}

export interface LayerTableLayout {
  entries: TableEntry[];
  /** Words per table row (the ring degree N). */
  ringDegree: number;
  words: number;
  bytes: number;
}

/** Where every product's table lies in a layer file (the same for every layer). */
export function layerTableLayout(dims: ProjectionDims, params: RlweParams, actBits: number): LayerTableLayout {
  const N = params.ringDegree;
  const maxK = maxInnerDim(params, actBits, WEIGHT_BITS);
  const entries: TableEntry[] = [];
  let words = 0;
  for (const group of PROJECTION_GROUPS) {
    const shapes = groupShapes(dims, group);
    const inDim = shapes[0]![1];
    const stacked = shapes.reduce((s, [r]) => s + r, 0);
    for (const direction of DIRECTIONS) {
      const rows = direction === 'forward' ? stacked : inDim;
      const K = direction === 'forward' ? inDim : stacked;
      const terms = featureChunks(K, maxK).length;
      entries.push({ group, direction, rows, terms, offsetWords: words });
      words += terms * rows * N;
    }
  }
  return { entries, ringDegree: N, words, bytes: words * 4 };
}

export function tableEntry(layout: LayerTableLayout, group: ProjectionGroup, direction: ProductDirection): TableEntry {
  return layout.entries.find((e) => e.group === group && e.direction === direction)!;
}

/** The cache folder of one model's tables: model hash, parameter set and table version in the name. */
export function tableFolder(root: string, modelHash: string, params: RlweParams): string {
  return join(root, `${modelHash.slice(0, 32)}-p${params.id}-v${MASK_TABLE_VERSION}`);
}

export function layerFileName(layer: number): string {
  return `layer-${layer}.bin`;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** u32 words as little-endian bytes (a view on little-endian hosts). */
export function wordsToBytes(words: Uint32Array): Uint8Array {
  if (HOST_LITTLE_ENDIAN) return new Uint8Array(words.buffer, words.byteOffset, words.byteLength);
  const out = new Uint8Array(words.length * 4);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < words.length; i++) dv.setUint32(4 * i, words[i]!, true);
  return out;
}

function bytesToWords(bytes: Uint8Array): Uint32Array {
  if (HOST_LITTLE_ENDIAN && bytes.byteOffset % 4 === 0) return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  const out = new Uint32Array(bytes.length / 4);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < out.length; i++) out[i] = dv.getUint32(4 * i, true);
  return out;
}

/** Writes a file atomically (temp file, then rename). */
export function writeFileAtomic(path: string, bytes: Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, bytes, { mode: 0o644 });
  renameSync(tmp, path);
}

/** Downloads running in this process, by cache folder (they run one after the other). */
const downloadsInFlight = new Map<string, Promise<void>>();

/** What the model info says of each layer's table. */
export interface LayerTableInfo {
  bytes: number;
  sha256: string;
}

/**
 * Bytes of product tables a client keeps in memory by default: none. Measured at the SmolLM2-135M
 * shape (1.93 GiB of tables): reading every product of a step from the page cache takes ~1.2-1.7 s
 * on a loaded 2-core EPYC, 0.55 s with 1 GiB kept, which raised the client's peak RSS by 1 GB; so
 * keeping is opt-in (tableMemoryBytes) for clients with memory to spare.
 */
export const DEFAULT_TABLE_MEMORY_BYTES = 0;

/**
 * What a verified layer file looked like on disk: kept beside it as `<file>.ok` so that a later
 * connect trusts the file without hashing it again while size, mtime, ctime and inode are those
 * recorded (ctime cannot be set back by user tools: any write or rename through the file system
 * changes it). Not caught: a change below the file system (disk bit rot, raw-device writes), or
 * someone who may write the cache folder and rewrites the marker too (who could as well change this
 * program). The tables are public: a wrong one gives wrong results, never leaks, and the result
 * check (transport/integrity.ts) reports wrong results. The trade: a connect at 1B costs a stat per
 * layer instead of hashing 5 GB.
 */
interface VerifiedMark {
  sha256: string;
  bytes: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
}

function statMark(path: string, sha256: string): VerifiedMark {
  const st = statSync(path);
  return { sha256, bytes: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino };
}

/**
 * The client's tables: downloaded once per layer (resuming a partial file), checked against the
 * model info's SHA-256 (once: a verified file gets a marker, see VerifiedMark), then read one
 * product at a time: only the rows a request needs, not the whole layer. Products are kept in
 * memory up to memoryBytes, first come first kept: training walks the products in the same cycle
 * every step, where an LRU would evict each one just before its next use.
 */
export class MaskTableCache {
  private readonly resident = new Map<string, Uint32Array>();
  private residentBytes = 0;
  /** Bytes hashed to verify cached files (not downloads) in this object's lifetime. */
  rehashedBytes = 0;
  /** Bytes read from the cache files for products (reads of products not kept in memory included). */
  readBytes = 0;

  constructor(readonly folder: string, readonly layout: LayerTableLayout, readonly layers: readonly LayerTableInfo[],
    readonly memoryBytes = DEFAULT_TABLE_MEMORY_BYTES) {
    for (const [l, t] of layers.entries()) {
      if (t.bytes !== layout.bytes) throw new Error(`helora: the server's mask table of layer ${l} has ${t.bytes} bytes, this model's layout needs ${layout.bytes}`);
    }
    if (!(Number.isSafeInteger(memoryBytes) && memoryBytes >= 0)) throw new Error(`helora: table memory must be a non-negative byte count, got ${memoryBytes}`);
  }

  private path(layer: number): string {
    return join(this.folder, layerFileName(layer));
  }

  /** True when every layer is in the cache (checked against its hash when first read). */
  complete(): boolean {
    return this.layers.every((_, l) => existsSync(this.path(l)));
  }

  /** True when the file's marker says it was verified against `sha256` and the file is unchanged since. */
  private markedVerified(path: string, sha256: string): boolean {
    let mark: unknown;
    try {
      const text = readFileSync(`${path}.ok`, 'utf8');
      if (text.length > 1024) return false;
      mark = JSON.parse(text);
    } catch {
      return false;
    }
    const now = statMark(path, sha256);
    const m = mark as Partial<VerifiedMark>;
    return m.sha256 === now.sha256 && m.bytes === now.bytes && m.mtimeMs === now.mtimeMs && m.ctimeMs === now.ctimeMs && m.ino === now.ino;
  }

  private markVerified(path: string, sha256: string): void {
    writeFileAtomic(`${path}.ok`, new TextEncoder().encode(JSON.stringify(statMark(path, sha256))));
  }

  /**
   * Downloads the missing layers into `<layer>.part` files (a later call resumes a partial one):
   * fetch(layer, from, write) streams the file's bytes from offset `from` into write(). Each
   * finished file is checked against the published hash before it is kept. Downloads into one
   * folder run one at a time in this process (two processes must not share a cache folder while
   * downloading).
   */
  async download(fetch: (layer: number, from: number, write: (chunk: Uint8Array) => void) => Promise<void>, onLayer?: (layer: number, bytes: number) => void): Promise<void> {
    const previous = downloadsInFlight.get(this.folder) ?? Promise.resolve();
    const mine = previous.catch(() => undefined).then(() => this.downloadMissing(fetch, onLayer));
    downloadsInFlight.set(this.folder, mine);
    try {
      await mine;
    } finally {
      if (downloadsInFlight.get(this.folder) === mine) downloadsInFlight.delete(this.folder);
    }
  }

  private async downloadMissing(fetch: (layer: number, from: number, write: (chunk: Uint8Array) => void) => Promise<void>, onLayer?: (layer: number, bytes: number) => void): Promise<void> {
    mkdirSync(this.folder, { recursive: true });
    for (const [l, info] of this.layers.entries()) {
      const done = this.path(l);
      if (existsSync(done)) {
        if (this.markedVerified(done, info.sha256)) continue;
        // Changed since it was verified (or never marked): hashed again, a damaged cache is fetched again.
        const bytes = readFileSync(done);
        this.rehashedBytes += bytes.length;
        if (bytes.length === info.bytes && sha256Hex(bytes) === info.sha256) {
          this.markVerified(done, info.sha256);
          continue;
        }
        unlinkSync(done);
        rmSync(`${done}.ok`, { force: true });
      }
      const part = `${done}.part`;
      let have = existsSync(part) ? statSync(part).size : 0;
      if (have > info.bytes) {
        truncateSync(part, 0);
        have = 0;
      }
      if (have < info.bytes) {
        const fd = openSync(part, 'a');
        try {
          let written = have;
          await fetch(l, have, (chunk) => {
            if (written + chunk.length > info.bytes) throw new Error(`helora: the server sent more than ${info.bytes} bytes of the mask table of layer ${l}`);
            writeSync(fd, chunk);
            written += chunk.length;
          });
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
      }
      const whole = readFileSync(part);
      if (whole.length !== info.bytes || sha256Hex(whole) !== info.sha256) {
        truncateSync(part, 0); // start over next time
        throw new Error(`helora: the mask table of layer ${l} (${whole.length} bytes) does not match the size and hash the server published; refused`);
      }
      renameSync(part, done);
      this.markVerified(done, info.sha256);
      onLayer?.(l, info.bytes);
    }
  }

  /**
   * The a words of every K-chunk term of one product (term t, row r at (t * rows + r) * N), from
   * memory when kept there, else read from the cache file into memory of its own (the caller's
   * until it drops it: nothing here reuses it).
   */
  product(layer: number, group: ProjectionGroup, direction: ProductDirection): Uint32Array {
    const key = `${layer}/${group}/${direction}`;
    const kept = this.resident.get(key);
    if (kept) return kept;
    const info = this.layers[layer];
    if (!info) throw new Error(`helora: no mask table for layer ${layer}`);
    const e = tableEntry(this.layout, group, direction);
    const bytes = e.terms * e.rows * this.layout.ringDegree * 4;
    // Filled by the read below in full, so no zeroing pass; never from the small-buffer pool (aligned, ours alone).
    const buf = Buffer.allocUnsafeSlow(bytes);
    const fd = openSync(this.path(layer), 'r');
    try {
      if (readAt(fd, buf, e.offsetWords * 4) < bytes) throw new Error(`helora: the cached mask table of layer ${layer} is shorter than ${info.bytes} bytes`);
    } finally {
      closeSync(fd);
    }
    this.readBytes += bytes;
    const words = bytesToWords(buf);
    if (this.residentBytes + bytes <= this.memoryBytes) {
      this.resident.set(key, words);
      this.residentBytes += bytes;
    }
    return words;
  }

  /** a of term t of one product's answer, rows [r0, r0 + rows) of its stacked result, within product() words. */
  static termRows(words: Uint32Array, entry: TableEntry, term: number, r0: number, rows: number, N: number): Uint32Array {
    const start = (term * entry.rows + r0) * N;
    return words.subarray(start, start + rows * N);
  }
}
