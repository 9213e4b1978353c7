// Run files against the file system (issue 12, item 13): owner-only permissions, exclusive creation
// that never follows a symlink, unpredictable temporary names.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as runFiles from './run-files.js';
import { saveAdapterAtomic, saveRunCheckpoint, writeFileAtomic } from './run-files.js';

function mode(path: string): number {
  return statSync(path).mode & 0o777;
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? [join(dir, e.name), ...walk(join(dir, e.name))] : [join(dir, e.name)]));
}

test('loss CSV, checkpoints and adapters are owner-only (files 0600, folders 0700)', () => {
  const root = mkdtempSync(join(tmpdir(), 'helora-runfiles-'));
  const old = process.umask(0o022); // the usual umask: without explicit modes files would be 0644
  try {
    const out = join(root, 'run');
    writeFileAtomic(join(out, 'loss.csv'), 'step,loss\n');
    assert.equal(mode(join(out, 'loss.csv')), 0o600);
    const dir = saveRunCheckpoint(out, {
      state: { step: 3, optimizer: { step: 3, m: { a: new Float32Array(2) }, v: { a: new Float32Array(2) } }, params: { a: new Float32Array([1, 2]) }, data: { epoch: 0, index: 5 } },
      fingerprint: { seed: 1 }, history: [], elapsedS: 1, bytesUp: 0, bytesDown: 0,
    });
    for (const p of [dir, ...walk(dir)]) assert.equal(mode(p), statSync(p).isDirectory() ? 0o700 : 0o600, p);
    const adapter = join(out, 'adapter');
    saveAdapterAtomic(adapter, {
      rank: 1, alpha: 1, dropout: 0, targetModules: ['q_proj'], layersToTransform: null,
      layers: new Map([['layers.0.self_attn.q_proj', { A: new Float32Array(4), B: new Float32Array(4), inDim: 4, outDim: 4 }]]),
    }, 'base');
    for (const p of [adapter, ...walk(adapter)]) assert.equal(mode(p), statSync(p).isDirectory() ? 0o700 : 0o600, p);
    // no temporary left behind
    assert.deepEqual(readdirSync(out).filter((n) => n.includes('.tmp-')), []);
  } finally {
    process.umask(old);
    rmSync(root, { recursive: true, force: true });
  }
});

test('a new run file is created exclusively and never through a symlink', () => {
  const writeNewFile = (runFiles as Record<string, unknown>).writeNewFile as ((p: string, d: string) => void) | undefined;
  assert.equal(typeof writeNewFile, 'function', 'run-files exports writeNewFile');
  const root = mkdtempSync(join(tmpdir(), 'helora-runfiles-'));
  try {
    const target = join(root, 'victim');
    writeFileSync(target, 'untouched');
    const link = join(root, 'link');
    symlinkSync(target, link);
    assert.throws(() => writeNewFile!(link, 'attack'), /EEXIST|ELOOP/);
    assert.equal(readFileSync(target, 'utf8'), 'untouched');
    const plain = join(root, 'plain');
    writeFileSync(plain, 'old');
    assert.throws(() => writeNewFile!(plain, 'new'), /EEXIST/);
    writeNewFile!(join(root, 'fresh'), 'data');
    assert.equal(readFileSync(join(root, 'fresh'), 'utf8'), 'data');
    assert.equal(mode(join(root, 'fresh')), 0o600);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
