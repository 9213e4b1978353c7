// Bounds-checked little-endian byte reading and fixed-width unsigned packing.
// Readers never read past the end and never allocate: a short read calls the caller's error factory,
// so that each format (wire messages, files) reports truncation with its own error type.

/** Builds the error thrown when `need` bytes of `what` are wanted at `offset` but only `have` remain. */
export type ShortReadError = (what: string, need: number, have: number, offset: number) => Error;

const defaultShort: ShortReadError = (what, need, have, offset) =>
  new Error(`helora: truncated input: ${what} needs ${need} bytes at offset ${offset}, only ${have} left`);

/** True on little-endian hosts (all platforms Node 20 ships for); typed-array views assume it. */
export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export class ByteReader {
  private readonly view: DataView;
  private pos = 0;

  constructor(private readonly bytes: Uint8Array, private readonly short: ShortReadError = defaultShort) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get offset(): number { return this.pos; }
  get remaining(): number { return this.bytes.byteLength - this.pos; }

  /** Throws the short-read error unless n more bytes exist. */
  need(n: number, what: string): void {
    if (!(n >= 0) || n > this.remaining) throw this.short(what, n, this.remaining, this.pos);
  }

  u8(what: string): number {
    this.need(1, what);
    return this.view.getUint8(this.pos++);
  }

  u16(what: string): number {
    this.need(2, what);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }

  u32(what: string): number {
    this.need(4, what);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  u64(what: string): bigint {
    this.need(8, what);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }

  /** A zero-copy view of the next n bytes. */
  bytesView(n: number, what: string): Uint8Array {
    this.need(n, what);
    const v = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
}

/** Widths the packers handle: up to 6 bytes, so every value is an exact double. */
export const MAX_PACK_WIDTH = 6;

function checkWidth(width: number): void {
  if (!Number.isInteger(width) || width < 1 || width > MAX_PACK_WIDTH) {
    throw new Error(`helora: pack width must be an integer in 1..${MAX_PACK_WIDTH} bytes, got ${width}`);
  }
}

/**
 * Packs unsigned integers (each < 2^(8*width)) as `width`-byte little-endian values
 * (e.g. width 5 for 40-bit ciphertext coefficients). Writes into `out` when given.
 */
export function packUintLE(values: ArrayLike<number>, width: number, out?: Uint8Array): Uint8Array {
  checkWidth(width);
  const n = values.length;
  const dst = out ?? new Uint8Array(n * width);
  if (dst.length !== n * width) throw new Error(`helora: pack output has ${dst.length} bytes, expected ${n * width}`);
  const limit = 2 ** (8 * width);
  for (let i = 0, p = 0; i < n; i++) {
    const v = values[i];
    if (!Number.isInteger(v) || v < 0 || v >= limit) {
      throw new Error(`helora: cannot pack value ${v} at index ${i} into ${width} bytes (expected an integer in [0, 2^${8 * width}))`);
    }
    let lo = v >>> 0; // v mod 2^32, exact for v < 2^48
    let hi = (v - lo) / 4294967296;
    for (let b = 0; b < width; b++, p++) {
      if (b < 4) { dst[p] = lo & 0xff; lo >>>= 8; } else { dst[p] = hi & 0xff; hi >>>= 8; }
    }
  }
  return dst;
}

/** Inverse of packUintLE: bytes.length must be a multiple of width. */
export function unpackUintLE(bytes: Uint8Array, width: number, out?: Float64Array): Float64Array {
  checkWidth(width);
  if (bytes.length % width !== 0) throw new Error(`helora: ${bytes.length} bytes is not a multiple of the value width ${width}`);
  const n = bytes.length / width;
  const dst = out ?? new Float64Array(n);
  if (dst.length !== n) throw new Error(`helora: unpack output has ${dst.length} values, expected ${n}`);
  for (let i = 0, p = 0; i < n; i++, p += width) {
    let lo = 0, hi = 0;
    for (let b = Math.min(width, 4) - 1; b >= 0; b--) lo = lo * 256 + bytes[p + b];
    for (let b = width - 1; b >= 4; b--) hi = hi * 256 + bytes[p + b];
    dst[i] = hi * 4294967296 + lo;
  }
  return dst;
}
