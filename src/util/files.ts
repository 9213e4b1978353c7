import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/** Largest single read (one readSync call is limited to 2 GiB). */
const READ_CHUNK_BYTES = 1 << 30;

/** Reads into `buf` from `position` of the open file until buf is full or the file ends; the bytes read. */
export function readAt(fd: number, buf: Uint8Array, position = 0): number {
  let off = 0;
  while (off < buf.length) {
    const n = readSync(fd, buf, off, Math.min(READ_CHUNK_BYTES, buf.length - off), position + off);
    if (n <= 0) break;
    off += n;
  }
  return off;
}

/** A text file of at most maxBytes, its size checked on the open file before anything is read. */
export function readTextFileBounded(path: string, maxBytes: number, what = path): string {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    if (size > maxBytes) throw new Error(`helora: ${what} is ${size} bytes, more than the limit of ${maxBytes}`);
    const buf = Buffer.alloc(size);
    return buf.subarray(0, readAt(fd, buf)).toString('utf8');
  } finally {
    closeSync(fd);
  }
}
