import { test } from 'node:test';
import assert from 'node:assert/strict';
import { settleAll } from './settle.js';

test('settleAll returns the values in order, and on a failure waits for the others before throwing the first error', async () => {
  assert.deepEqual(await settleAll([Promise.resolve(1), Promise.resolve(2)]), [1, 2]);
  let slowDone = false;
  const slow = new Promise<number>((resolve) => setTimeout(() => { slowDone = true; resolve(3); }, 30));
  await assert.rejects(settleAll([Promise.reject(new Error('first')), slow, Promise.reject(new Error('second'))]), /first/);
  assert.ok(slowDone, 'the slow promise had settled before settleAll threw');
});
