// Durability order of the run files (issue 12, item 13): a file's data reaches the disk before the
// rename that publishes it, and the folder holding the rename is synced after it, so a machine crash
// leaves the old or the new version, never a published name with missing data. The test records the
// real fs calls (the builtin module's bindings, re-synced into ESM imports) while the writers run.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { saveRunCheckpoint, writeFileAtomic } from './run-files.js';

type FsEvent = { op: 'open' | 'write' | 'fsync' | 'rename'; path: string; to?: string };

/** Runs `fn` with openSync / writeSync / fsyncSync / renameSync recorded (by path), then restores them. */
function recordFs(fn: () => void): FsEvent[] {
  const events: FsEvent[] = [];
  const fdPath = new Map<number, string>();
  const orig = { openSync: fs.openSync, writeSync: fs.writeSync, fsyncSync: fs.fsyncSync, renameSync: fs.renameSync };
  const patched = fs as unknown as Record<string, unknown>;
  patched.openSync = (...a: Parameters<typeof fs.openSync>) => {
    const fd = orig.openSync(...a);
    fdPath.set(fd, String(a[0]));
    events.push({ op: 'open', path: String(a[0]) });
    return fd;
  };
  patched.writeSync = (fd: number, ...rest: unknown[]) => {
    events.push({ op: 'write', path: fdPath.get(fd) ?? `fd ${fd}` });
    return (orig.writeSync as (...x: unknown[]) => number)(fd, ...rest);
  };
  patched.fsyncSync = (fd: number) => {
    events.push({ op: 'fsync', path: fdPath.get(fd) ?? `fd ${fd}` });
    orig.fsyncSync(fd);
  };
  patched.renameSync = (from: fs.PathLike, to: fs.PathLike) => {
    events.push({ op: 'rename', path: String(from), to: String(to) });
    orig.renameSync(from, to);
  };
  syncBuiltinESMExports();
  try {
    fn();
  } finally {
    Object.assign(patched, orig);
    syncBuiltinESMExports();
  }
  return events;
}

function last(events: FsEvent[], pred: (e: FsEvent) => boolean): number {
  for (let i = events.length - 1; i >= 0; i--) if (pred(events[i])) return i;
  return -1;
}
const first = (events: FsEvent[], pred: (e: FsEvent) => boolean): number => events.findIndex(pred);

test('writeFileAtomic: data fsynced before the rename, the folder fsynced after it', () => {
  const root = mkdtempSync(join(tmpdir(), 'helora-durability-'));
  try {
    const path = join(root, 'loss.csv');
    const events = recordFs(() => writeFileAtomic(path, 'step,loss\n1,2.5\n'));
    const rename = first(events, (e) => e.op === 'rename' && e.to === path);
    assert.ok(rename >= 0, 'published by a rename');
    const tmp = events[rename].path;
    const lastWrite = last(events, (e) => e.op === 'write' && e.path === tmp);
    const dataSync = last(events, (e) => e.op === 'fsync' && e.path === tmp);
    assert.ok(lastWrite >= 0 && dataSync > lastWrite && dataSync < rename, `data fsync between the last write and the rename: ${JSON.stringify(events)}`);
    assert.ok(first(events, (e) => e.op === 'fsync' && e.path === root) > rename, 'the folder is fsynced after the rename');
    assert.equal(fs.readFileSync(path, 'utf8'), 'step,loss\n1,2.5\n');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('checkpoints: every file of the folder fsynced before the folder is renamed in, the parent after', () => {
  const root = mkdtempSync(join(tmpdir(), 'helora-durability-'));
  try {
    let dir = '';
    const events = recordFs(() => {
      dir = saveRunCheckpoint(join(root, 'run'), {
        state: { step: 2, optimizer: { step: 2, m: { a: new Float32Array(3) }, v: { a: new Float32Array(3) } }, params: { a: new Float32Array([1, 2, 3]) }, data: { epoch: 0, index: 4 } },
        fingerprint: { seed: 1 }, history: [], elapsedS: 1, bytesUp: 0, bytesDown: 0,
      });
    });
    const rename = first(events, (e) => e.op === 'rename' && e.to === dir);
    assert.ok(rename >= 0, 'the checkpoint folder is published by a rename');
    const tmpDir = events[rename].path;
    const written = [...new Set(events.filter((e) => e.op === 'write' && e.path.startsWith(tmpDir + '/')).map((e) => e.path))];
    assert.ok(written.length >= 2, `the checkpoint has its files: ${written.join(', ')}`);
    for (const f of written) {
      // a writer may publish the file inside the folder under its final name first
      let name = f;
      for (const e of events.slice(0, rename)) if (e.op === 'rename' && e.path === name) name = e.to!;
      const sync = last(events.slice(0, rename), (e) => e.op === 'fsync' && e.path === name);
      assert.ok(sync > last(events, (e) => e.op === 'write' && e.path === f), `${name} fsynced after its last write and before the folder's rename`);
    }
    const folderSync = last(events, (e) => e.op === 'fsync' && e.path === tmpDir);
    assert.ok(folderSync >= 0 && folderSync < rename, 'the new folder itself is fsynced before the rename');
    assert.ok(first(events, (e) => e.op === 'fsync' && e.path === dirname(dir)) > rename, 'the parent folder is fsynced after the rename');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
