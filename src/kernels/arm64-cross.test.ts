// The AArch64 build of the native kernels computes what the x86-64 build computes:
// scripts/check-arm64.mjs cross-compiles the self-test harness (src/kernels/native/selftest.c)
// with aarch64-linux-gnu-gcc, runs it under qemu-aarch64 and compares it with the x86-64 build at
// every level (integer results bit for bit, fp32 within tolerance). A missing cross compiler or
// QEMU fails this test instead of skipping it (.ci/run installs both).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(new URL('../../scripts/check-arm64.mjs', import.meta.url));

test('the arm64 (neon) native kernels agree with the x86-64 build under QEMU', { timeout: 240_000 }, () => {
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 230_000 });
  const output = `${r.stdout}${r.stderr}`;
  assert.equal(r.error, undefined, `check-arm64 did not run: ${r.error}`);
  assert.equal(r.status, 0, `check-arm64 failed (exit ${r.status}):\n${output}`);
  assert.match(r.stdout, /check-arm64: OK/, output);
});
