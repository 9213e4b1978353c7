// Every client frame is masked by the client and unmasked by the server (RFC 6455). Under Node 20
// `ws` does that byte by byte in JavaScript (~0.8 GB/s here) unless `bufferutil` loads: with about
// 1.2 MB uploaded per training token that was a fifth of a 135M training step. bufferutil is an
// optional dependency (prebuilt for linux-x64, darwin and win32; elsewhere npm may skip it and ws
// falls back to its own loop), so this pins it where a prebuild exists.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';

const require = createRequire(import.meta.url);
const PREBUILT = new Set(['linux-x64', 'darwin-x64', 'darwin-arm64', 'win32-x64', 'win32-ia32']);

test('WebSocket frame masking runs in native code (bufferutil) where it ships prebuilt, and masks correctly', () => {
  const platform = `${process.platform}-${process.arch}`;
  let bufferUtil: { mask: (src: Buffer, mask: Buffer, out: Buffer, offset: number, length: number) => void; unmask: (buf: Buffer, mask: Buffer) => void };
  try {
    bufferUtil = require('bufferutil');
  } catch (err) {
    if (PREBUILT.has(platform)) assert.fail(`bufferutil did not load on ${platform} (run npm ci): ${(err as Error).message}`);
    return; // no prebuild for this platform: ws masks in JavaScript, slower but correct
  }
  const src = randomBytes(4099), mask = randomBytes(4);
  const out = Buffer.alloc(src.length + 3);
  bufferUtil.mask(src, mask, out, 3, src.length);
  for (let i = 0; i < src.length; i++) assert.equal(out[3 + i], src[i]! ^ mask[i & 3]!, `byte ${i}`);
  const back = Buffer.from(out.subarray(3));
  bufferUtil.unmask(back, mask);
  assert.deepEqual(back, src);
});
