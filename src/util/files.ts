import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/** A text file of at most maxBytes, its size checked on the open file before anything is read. */
export function readTextFileBounded(path: string, maxBytes: number, what = path): string {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    if (size > maxBytes) throw new Error(`helora: ${what} is ${size} bytes, more than the limit of ${maxBytes}`);
    const buf = Buffer.alloc(size);
    let off = 0;
    while (off < size) {
      const n = readSync(fd, buf, off, size - off, off);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off).toString('utf8');
  } finally {
    closeSync(fd);
  }
}
