// Weight rows that quantize to all zeros publish a positive placeholder scale (issue 12, item 15):
// a scale of 0 would be refused by every client (model-info.ts accepts [2^-40, 2^20] only).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as quant from './quantize.js';

// Read through the namespace so that this file also runs (and fails) against code without them.
const { quantizeWeightsPerChannel } = quant;
const { MAX_WEIGHT_SCALE, MIN_WEIGHT_SCALE, ZERO_ROW_WEIGHT_SCALE } = quant as unknown as Record<string, number>;

test('item 15: an all-zero (or vanishing) weight row gets the positive placeholder scale and zero values; other rows are unchanged', () => {
  const cols = 4;
  const w = new Float32Array([
    0.5, -0.25, 0.125, 1, // ordinary row
    0, 0, 0, 0, // all zero
    1e-12, -1e-12, 0, 0, // below 127 * 2^-40: treated as zero
  ]);
  const q = quantizeWeightsPerChannel(w, 3, cols);
  assert.ok(ZERO_ROW_WEIGHT_SCALE > 0 && ZERO_ROW_WEIGHT_SCALE >= MIN_WEIGHT_SCALE && ZERO_ROW_WEIGHT_SCALE <= MAX_WEIGHT_SCALE);
  assert.equal(q.scales[0], Math.fround(1 / 127));
  assert.deepEqual([...q.values.subarray(0, 4)], [64, -32, 16, 127]);
  assert.equal(q.scales[1], ZERO_ROW_WEIGHT_SCALE);
  assert.equal(q.scales[2], ZERO_ROW_WEIGHT_SCALE);
  assert.deepEqual([...q.values.subarray(4)], new Array(8).fill(0));
  for (const s of q.scales) assert.ok(s >= MIN_WEIGHT_SCALE && s <= MAX_WEIGHT_SCALE);
});

test('item 15: a weight beyond the publishable scale range is refused at quantization, with a clear error', () => {
  assert.throws(() => quantizeWeightsPerChannel(new Float32Array([1e9, 0]), 1, 2), /weight row 0 has \|w\| up to .* above the supported/);
});
