// The used-seed check of a key is bounded (issue 12, item 15) and still refuses a recent repeat.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SecretKey } from './keys.js';
import * as keys from './keys.js';
import { RLWE_N2048_Q44 } from './params.js';

test('item 15: the used-seed map of a key stays bounded; a recent repeat is still refused', () => {
  const max = (keys as Record<string, unknown>).MAX_REMEMBERED_SEEDS as number | undefined;
  assert.equal(typeof max, 'number');
  const key = SecretKey.generate(RLWE_N2048_Q44);
  const seed = (i: number): string => i.toString(16).padStart(32, '0');
  for (let i = 0; i < max! + 1000; i++) SecretKey.claimSeed(key, seed(i), 0);
  assert.equal((SecretKey as unknown as { rememberedSeeds(k: SecretKey): number }).rememberedSeeds(key), max);
  assert.throws(() => SecretKey.claimSeed(key, seed(max! + 999), 0), /already used with this key/);
  SecretKey.claimSeed(key, seed(max! + 999), 1); // another block of the same seed is a different mask
});
