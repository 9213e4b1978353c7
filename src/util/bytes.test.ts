import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ByteReader, packUintLE, unpackUintLE, HOST_LITTLE_ENDIAN } from './bytes.js';

test('ByteReader reads little-endian fields and refuses to read past the end', () => {
  const b = new Uint8Array([1, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12, 1, 0, 0, 0, 0, 0, 0, 0x80, 9, 9]);
  const r = new ByteReader(b);
  assert.equal(r.u8('a'), 1);
  assert.equal(r.u16('b'), 0x1234);
  assert.equal(r.u32('c'), 0x12345678);
  assert.equal(r.u64('d'), 0x8000000000000001n);
  assert.equal(r.remaining, 2);
  assert.throws(() => r.u32('e'), /e needs 4 bytes at offset 15, only 2 left/);
  assert.equal(r.offset, 15); // a failed read consumes nothing
  const v = r.bytesView(2, 'f');
  assert.equal(v.buffer, b.buffer);
  assert.deepEqual(Array.from(v), [9, 9]);
  assert.throws(() => r.u8('g'), /truncated/);
  assert.throws(() => new ByteReader(b).bytesView(-1, 'neg'), /neg/);
  const custom = new ByteReader(new Uint8Array(1), (what) => new RangeError(`custom ${what}`));
  assert.throws(() => custom.u16('x'), (e: unknown) => e instanceof RangeError && /custom x/.test(e.message));
});

test('ByteReader honours the view offset of a subarray', () => {
  const b = new Uint8Array([0xff, 0xff, 2, 0, 0xff]).subarray(2, 4);
  assert.equal(new ByteReader(b).u16('x'), 2);
  assert.equal(HOST_LITTLE_ENDIAN, new Uint16Array(new Uint8Array([1, 0]).buffer)[0] === 1);
});

test('packUintLE / unpackUintLE: 40-bit values, exact bytes, round trip at every width', () => {
  assert.deepEqual(Array.from(packUintLE([0x0102030405], 5)), [5, 4, 3, 2, 1]);
  assert.deepEqual(Array.from(packUintLE([2 ** 40 - 1, 0], 5)), [255, 255, 255, 255, 255, 0, 0, 0, 0, 0]);
  for (let width = 1; width <= 6; width++) {
    const max = 2 ** (8 * width) - 1;
    const vals = [0, 1, max, Math.floor(max / 3), 2 ** (8 * width - 1)];
    for (let i = 0; i < 50; i++) vals.push(Math.floor(Math.random() * (max + 1)));
    const packed = packUintLE(vals, width);
    assert.equal(packed.length, vals.length * width);
    // independent check of the byte layout via BigInt
    for (let i = 0; i < vals.length; i++) {
      let big = 0n;
      for (let b = width - 1; b >= 0; b--) big = (big << 8n) | BigInt(packed[i * width + b]);
      assert.equal(big, BigInt(vals[i]));
    }
    assert.deepEqual(Array.from(unpackUintLE(packed, width)), vals);
  }
});

test('pack/unpack reject bad values and sizes', () => {
  assert.throws(() => packUintLE([2 ** 40], 5), /cannot pack value 1099511627776 at index 0 into 5 bytes/);
  assert.throws(() => packUintLE([-1], 5), /cannot pack/);
  assert.throws(() => packUintLE([1.5], 5), /cannot pack/);
  assert.throws(() => packUintLE([NaN], 5), /cannot pack/);
  assert.throws(() => packUintLE([1], 7), /width/);
  assert.throws(() => packUintLE([1], 5, new Uint8Array(4)), /expected 5/);
  assert.throws(() => unpackUintLE(new Uint8Array(7), 5), /not a multiple/);
  const out = new Float64Array(2);
  assert.equal(unpackUintLE(new Uint8Array(10), 5, out), out);
});
