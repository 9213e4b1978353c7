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

test('SharedBuffers.acquireAtLeast takes the smallest idle buffer that is large enough, else a new exact one', () => {
  const pool = new SharedBuffers(Number.POSITIVE_INFINITY);
  const small = pool.acquire(100), mid = pool.acquire(300), big = pool.acquire(1000);
  for (const b of [big, small, mid]) pool.release(b);
  assert.equal(pool.acquireAtLeast(200), mid, 'the 300-byte buffer is the best fit for 200');
  assert.equal(pool.acquireAtLeast(50), small);
  assert.equal(pool.acquireAtLeast(1000), big);
  const fresh = pool.acquireAtLeast(400);
  assert.equal(fresh.byteLength, 400, 'nothing idle is large enough: a new buffer of the size asked for');
  assert.equal(pool.idleBytes, 0);
});
