import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SharedBuffers } from './shared-buffers.js';

test('SharedBuffers reuses released buffers of the same size and keeps at most maxBytes idle', () => {
  const pool = new SharedBuffers(3000);
  const a = pool.acquire(1000);
  assert.ok(a instanceof SharedArrayBuffer);
  assert.equal(a.byteLength, 1000);
  pool.release(a);
  assert.equal(pool.idleBytes, 1000);
  assert.equal(pool.acquire(1000), a, 'same size: the released buffer comes back');
  assert.notEqual(pool.acquire(1000), a, 'it is handed out once');
  const big = [pool.acquire(2000), pool.acquire(2000)];
  for (const b of big) pool.release(b);
  assert.equal(pool.idleBytes, 2000, 'the second 2000-byte buffer is over the cap and dropped');
  assert.equal(pool.acquire(500).byteLength, 500, 'other sizes are new buffers');
});
