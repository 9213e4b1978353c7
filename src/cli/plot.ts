// Loss curves as PNG images with no dependencies: a tiny RGB rasterizer (lines, rectangles, a 3x5
// bitmap font) and a PNG encoder (zlib from node:zlib, CRC-32 computed here).

import { deflateSync } from 'node:zlib';
import { writeFileAtomic } from '../train/run-files.js';

export const PNG_SIGNATURE = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a);

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (ISO 3309, as PNG chunks use). */
export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** An RGB image, 8 bits per channel, row-major. */
export class Image {
  readonly rgb: Uint8Array;
  constructor(readonly width: number, readonly height: number, background: Rgb = [255, 255, 255]) {
    if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1 || width * height > 1 << 26) {
      throw new Error(`helora: bad image size ${width}x${height}`);
    }
    this.rgb = new Uint8Array(width * height * 3);
    for (let i = 0; i < width * height; i++) this.rgb.set(background, i * 3);
  }

  set(x: number, y: number, c: Rgb): void {
    x = Math.round(x);
    y = Math.round(y);
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    this.rgb.set(c, (y * this.width + x) * 3);
  }

  fillRect(x0: number, y0: number, w: number, h: number, c: Rgb): void {
    for (let y = Math.round(y0); y < Math.round(y0 + h); y++) for (let x = Math.round(x0); x < Math.round(x0 + w); x++) this.set(x, y, c);
  }

  /** A line of the given thickness (a square brush stepped along the longer axis). */
  line(x0: number, y0: number, x1: number, y1: number, c: Rgb, thickness = 1): void {
    const n = Math.max(1, Math.ceil(Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0))));
    const r = (thickness - 1) / 2;
    for (let i = 0; i <= n; i++) {
      const x = x0 + ((x1 - x0) * i) / n;
      const y = y0 + ((y1 - y0) * i) / n;
      if (thickness <= 1) this.set(x, y, c);
      else this.fillRect(x - r, y - r, thickness, thickness, c);
    }
  }

  /** Text in the 3x5 font (upper case; unknown characters are blank), scaled by `scale`. */
  text(x: number, y: number, s: string, c: Rgb, scale = 2): void {
    let cx = Math.round(x);
    for (const ch of s.toUpperCase()) {
      const g = FONT[ch];
      if (g) {
        for (let row = 0; row < 5; row++) {
          for (let col = 0; col < 3; col++) if ((g[row]! >> (2 - col)) & 1) this.fillRect(cx + col * scale, y + row * scale, scale, scale, c);
        }
      }
      cx += 4 * scale;
    }
  }

  /** PNG bytes: 8-bit RGB, no interlace, filter 0 (None) on every row. */
  toPng(): Buffer {
    const stride = this.width * 3;
    const raw = new Uint8Array((stride + 1) * this.height);
    for (let y = 0; y < this.height; y++) raw.set(this.rgb.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(this.width, 0);
    ihdr.writeUInt32BE(this.height, 4);
    ihdr[8] = 8; // bit depth
    ihdr[9] = 2; // colour type: truecolour
    ihdr[10] = 0; // compression
    ihdr[11] = 0; // filter method
    ihdr[12] = 0; // no interlace
    return Buffer.concat([Buffer.from(PNG_SIGNATURE), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw, { level: 9 })), chunk('IEND', new Uint8Array(0))]);
  }
}

export type Rgb = [number, number, number];

/** 3x5 glyphs: five rows of three bits (MSB = left column). */
const FONT: Record<string, number[]> = {
  '0': [7, 5, 5, 5, 7], '1': [2, 6, 2, 2, 7], '2': [7, 1, 7, 4, 7], '3': [7, 1, 7, 1, 7], '4': [5, 5, 7, 1, 1],
  '5': [7, 4, 7, 1, 7], '6': [7, 4, 7, 5, 7], '7': [7, 1, 1, 2, 2], '8': [7, 5, 7, 5, 7], '9': [7, 5, 7, 1, 7],
  '.': [0, 0, 0, 0, 2], '-': [0, 0, 7, 0, 0], '+': [0, 2, 7, 2, 0], ':': [0, 2, 0, 2, 0], '/': [1, 1, 2, 4, 4],
  '(': [1, 2, 2, 2, 1], ')': [4, 2, 2, 2, 4], '_': [0, 0, 0, 0, 7], '=': [0, 7, 0, 7, 0], ',': [0, 0, 0, 2, 4],
  A: [2, 5, 7, 5, 5], B: [6, 5, 6, 5, 6], C: [3, 4, 4, 4, 3], D: [6, 5, 5, 5, 6], E: [7, 4, 6, 4, 7], F: [7, 4, 6, 4, 4],
  G: [3, 4, 5, 5, 3], H: [5, 5, 7, 5, 5], I: [7, 2, 2, 2, 7], J: [1, 1, 1, 5, 2], K: [5, 5, 6, 5, 5], L: [4, 4, 4, 4, 7],
  M: [5, 7, 7, 5, 5], N: [6, 5, 5, 5, 5], O: [2, 5, 5, 5, 2], P: [6, 5, 6, 4, 4], Q: [2, 5, 5, 6, 3], R: [6, 5, 6, 5, 5],
  S: [3, 4, 2, 1, 6], T: [7, 2, 2, 2, 2], U: [5, 5, 5, 5, 7], V: [5, 5, 5, 5, 2], W: [5, 5, 7, 7, 5], X: [5, 5, 2, 5, 5],
  Y: [5, 5, 2, 2, 2], Z: [7, 1, 2, 4, 7],
};

export interface Series {
  name: string;
  /** Points (x, y); non-finite y values are skipped (a gap in the line). */
  points: Array<[number, number]>;
}

/** Line colours of the series, in order (colour-blind safe: Okabe-Ito). */
export const SERIES_COLOURS: Rgb[] = [[213, 94, 0], [0, 114, 178], [0, 158, 115], [204, 121, 167], [230, 159, 0], [86, 180, 233], [0, 0, 0]];

/** Short number label: 3 significant digits, exponent form for very small or large values. */
export function tickLabel(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1);
  return String(Number(v.toPrecision(3)));
}

/** About `n` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** A line plot of one or more series with axes, ticks, a title and a legend. */
export function plotLines(series: Series[], opts: { width?: number; height?: number; title?: string; xLabel?: string; yLabel?: string } = {}): Image {
  const W = opts.width ?? 800, H = opts.height ?? 500;
  const img = new Image(W, H);
  const left = 80, right = 20, top = 40, bottom = 50;
  const pw = W - left - right, ph = H - top - bottom;
  let xMin = Infinity, xMax = -Infinity, yMin = Infinity, yMax = -Infinity;
  for (const s of series) {
    for (const [x, y] of s.points) {
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      xMin = Math.min(xMin, x); xMax = Math.max(xMax, x);
      yMin = Math.min(yMin, y); yMax = Math.max(yMax, y);
    }
  }
  if (!Number.isFinite(xMin)) { xMin = 0; xMax = 1; yMin = 0; yMax = 1; }
  if (xMax === xMin) { xMin -= 0.5; xMax += 0.5; }
  if (yMax === yMin) { yMin -= 0.5; yMax += 0.5; }
  const pad = (yMax - yMin) * 0.05;
  yMin -= pad; yMax += pad;
  const px = (x: number): number => left + ((x - xMin) / (xMax - xMin)) * pw;
  const py = (y: number): number => top + ph - ((y - yMin) / (yMax - yMin)) * ph;
  const grid: Rgb = [225, 225, 225], axis: Rgb = [0, 0, 0], ink: Rgb = [40, 40, 40];

  for (const t of niceTicks(yMin, yMax)) {
    img.line(left, py(t), left + pw, py(t), grid);
    const label = tickLabel(t);
    img.text(left - 8 - label.length * 8, py(t) - 5, label, ink);
  }
  for (const t of niceTicks(xMin, xMax, 8)) {
    img.line(px(t), top, px(t), top + ph, grid);
    const label = tickLabel(t);
    img.text(px(t) - label.length * 4, top + ph + 8, label, ink);
  }
  img.line(left, top, left, top + ph, axis);
  img.line(left, top + ph, left + pw, top + ph, axis);
  if (opts.title) img.text(left, 12, opts.title, ink);
  if (opts.xLabel) img.text(left + pw / 2 - opts.xLabel.length * 4, H - 18, opts.xLabel, ink);
  if (opts.yLabel) img.text(8, top - 20, opts.yLabel, ink);

  series.forEach((s, k) => {
    const c = SERIES_COLOURS[k % SERIES_COLOURS.length]!;
    // Earlier series are drawn thicker, so curves that coincide (encrypted = quantized) stay visible.
    const thickness = 2 + 2 * (series.length - 1 - k);
    let prev: [number, number] | null = null;
    for (const [x, y] of s.points) {
      if (!Number.isFinite(x) || !Number.isFinite(y)) { prev = null; continue; }
      const p: [number, number] = [px(x), py(y)];
      if (prev) img.line(prev[0], prev[1], p[0], p[1], c, thickness);
      else img.fillRect(p[0] - thickness / 2, p[1] - thickness / 2, thickness + 1, thickness + 1, c);
      prev = p;
    }
    // Legend in the top right corner.
    const ly = top + 10 + k * 18;
    const lx = left + pw - 12 - Math.max(...series.map((q) => q.name.length)) * 8 - 30;
    img.fillRect(lx, ly + 5 - thickness / 2, 20, thickness, c);
    img.text(lx + 28, ly, s.name, ink);
  });
  return img;
}

/** Writes loss curves (loss over step) as a PNG file, atomically. */
export function writeLossPlot(path: string, series: Series[], title: string): void {
  writeFileAtomic(path, plotLines(series, { title, xLabel: 'step', yLabel: 'loss' }).toPng());
}
