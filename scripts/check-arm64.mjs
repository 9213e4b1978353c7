// Checks that the AArch64 build of the native kernels computes what the x86-64 build computes,
// on an x86-64 machine: builds the self-test harness (src/kernels/native/selftest.c) twice, with
// the system compiler at every x86-64 level build-native.mjs builds and with aarch64-linux-gnu-gcc
// (static; levels scalar, neon and dotprod), runs the first natively and the second under qemu-aarch64, and
// compares: integer (bit-for-bit) outputs must hash the same on both architectures at every level;
// fp32 outputs must agree with the x86-64 scalar level within the harness's tolerance.
// Each harness also checks its own levels against its scalar level (exit 1 on a mismatch).
//
// Needs: a C compiler, aarch64-linux-gnu-gcc with the arm64 libc (Debian gcc-aarch64-linux-gnu, libc6-dev-arm64-cross)
// and qemu-aarch64 (Debian qemu-user); $CC, $CROSS_CC and $QEMU_AARCH64 override the names.
// A missing tool is an error (exit 1), never a silent skip. On a non-x86-64 host only the native
// harness runs (its levels against its scalar level) and the script says so.
// Usage: node scripts/check-arm64.mjs [--keep] [--host-only [--static]]
//   --keep: leave build/check-arm64 in place; --host-only: only the native harness (its levels against
//   its scalar level); --static: link it statically, so build/check-arm64/x64/selftest (with --keep)
//   runs on another x86-64 machine without a compiler, e.g. to execute the AVX-512 levels on a CPU
//   that has them.
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { arch, availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { commonFlags, haveFlags, levelUnits, levelsFor, sharedUnits } from './native-levels.mjs';

const run = promisify(execFile);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'src/kernels/native');
const work = join(root, 'build/check-arm64');
const keep = process.argv.includes('--keep');
/** Must match F32_TOL in selftest.c. */
const F32_TOL = 1e-4;
const started = Date.now();

function fail(msg) {
  console.error(`check-arm64: FAILED: ${msg}`);
  process.exit(1);
}

function have(cmd, args = ['--version']) {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const hostCc = [process.env.CC, 'cc', 'gcc', 'clang'].filter(Boolean).find((c) => have(c));
if (!hostCc) fail('no C compiler found (set CC)');
const hostOnly = process.argv.includes('--host-only');
const hostLink = process.argv.includes('--static') ? ['-static'] : [];
const cross = arch() === 'x64' && !hostOnly;
const crossCc = process.env.CROSS_CC || 'aarch64-linux-gnu-gcc';
const qemu = process.env.QEMU_AARCH64 || 'qemu-aarch64';
if (cross) {
  const missing = [];
  if (!have(crossCc)) missing.push(`${crossCc} (Debian/Ubuntu: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)`);
  if (!have(qemu, ['-version'])) missing.push(`${qemu} (Debian/Ubuntu: apt-get install qemu-user)`);
  if (missing.length) fail(`missing ${missing.join(' and ')}; the arm64 build cannot be checked without them`);
}

/** Runs compile jobs `width` at a time; resolves to the failures' messages by job index. */
async function pool(jobs, width) {
  const errors = new Array(jobs.length).fill(null);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      try {
        await jobs[i]();
      } catch (e) {
        errors[i] = String(e.stderr || e.message || e).trim();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, width) }, worker));
  return errors;
}

/**
 * Builds the harness for one target: every level's units (a vector level the compiler cannot
 * build is left out, as in build-native.mjs), then the harness linked with the shared units.
 */
async function buildHarness(label, cc, targetArch, extraLink) {
  const dir = join(work, label);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const flags = [...commonFlags, `-I${src}`];
  const levels = levelsFor(targetArch);
  const jobs = [];
  const owner = [];
  for (const [name, lflags] of levels) {
    for (const [unit, extra] of levelUnits) {
      const obj = join(dir, `${unit}-${name}.o`);
      jobs.push(() => run(cc, [...flags, ...lflags, ...extra, `-DHL_LEVEL=${name}`, '-c', join(src, `${unit}.c`), '-o', obj]));
      owner.push([name, obj]);
    }
  }
  const errors = await pool(jobs, availableParallelism());
  const dropped = new Set();
  errors.forEach((e, i) => {
    if (e === null) return;
    if (owner[i][0] === 'scalar') fail(`${cc} could not compile the scalar level:\n${e}`);
    dropped.add(owner[i][0]);
  });
  const built = levels.map(([n]) => n).filter((n) => !dropped.has(n));
  const objs = owner.filter(([n]) => !dropped.has(n)).map(([, o]) => o);
  const bin = join(dir, 'selftest');
  const units = ['selftest', ...sharedUnits].map((u) => join(src, `${u}.c`));
  try {
    await run(cc, [...flags, ...haveFlags(built), ...extraLink, ...units, ...objs, '-lm', '-o', bin]);
  } catch (e) {
    fail(`linking the ${label} harness with ${cc} failed:\n${String(e.stderr || e.message).trim()}`);
  }
  return { bin, built, dropped: [...dropped] };
}

/** Runs a harness; returns its lines as { test, level, kind, hash } plus the dump directory. */
function runHarness(label, cmd, args) {
  const dump = join(work, label, 'dump');
  mkdirSync(dump, { recursive: true });
  const t0 = Date.now();
  let out;
  try {
    out = execFileSync(cmd, [...args, '--dump', dump], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 24 });
  } catch (e) {
    process.stdout.write(String(e.stdout || ''));
    fail(`the ${label} harness failed (exit ${e.status}): ${String(e.stderr || e.message).trim()}`);
  }
  const secs = (Date.now() - t0) / 1000;
  const lines = out.trim().split('\n');
  const levels = lines.shift();
  const rows = lines.map((l) => {
    const [test, level, kind, hash] = l.split(' ');
    return { test, level, kind, hash: hash.slice('hash='.length), line: l };
  });
  return { rows, dump, levels, secs };
}

function f32(path) {
  const b = readFileSync(path);
  return new Float32Array(b.buffer, b.byteOffset, b.length / 4);
}

/** The harness's measure (selftest.c max_rel): |x - r| / max(|r|, 1e-2 max|r|); non-finite values must match. */
function maxRel(x, r) {
  if (x.length !== r.length) return Infinity;
  let scale = 0;
  for (const v of r) if (Number.isFinite(v) && Math.abs(v) > scale) scale = Math.abs(v);
  const floor = Math.max(1e-2 * scale, 1e-30);
  let m = 0;
  for (let i = 0; i < r.length; i++) {
    if (!Number.isFinite(r[i]) || !Number.isFinite(x[i])) {
      if (!(Object.is(x[i], r[i]) || (Number.isNaN(x[i]) && Number.isNaN(r[i])))) return Infinity;
      continue;
    }
    m = Math.max(m, Math.abs(x[i] - r[i]) / Math.max(Math.abs(r[i]), floor));
  }
  return m;
}

const tb = Date.now();
const builds = [buildHarness(arch() === 'x64' ? 'x64' : arch(), hostCc, arch(), hostLink)];
if (cross) builds.push(buildHarness('arm64', crossCc, 'arm64', ['-static']));
const [host, arm] = await Promise.all(builds);
if (cross) {
  // The addon's level table with the neon entry must compile for arm64 too (node_api.h is the same on every architecture).
  const inc = join(dirname(process.execPath), '../include/node');
  if (existsSync(join(inc, 'node_api.h'))) {
    try {
      await run(crossCc, [...commonFlags, '-Werror', '-fPIC', `-I${inc}`, `-I${src}`, ...haveFlags(arm.built), '-fsyntax-only', join(src, 'addon.c')]);
    } catch (e) {
      fail(`addon.c does not compile for arm64:\n${String(e.stderr || e.message).trim()}`);
    }
  }
}
const buildSecs = (Date.now() - tb) / 1000;

const x = runHarness(arch() === 'x64' ? 'x64' : arch(), host.bin, []);
console.log(`native (${arch()}, ${hostCc}): ${x.levels}${host.dropped.length ? `; not buildable: ${host.dropped.join(', ')}` : ''}; ran in ${x.secs.toFixed(1)} s`);
if (!cross) {
  const why = hostOnly ? '--host-only' : `host is ${arch()}, not x86-64`;
  console.log(`check-arm64: ${why}: checked this build's levels against its scalar level only (${x.rows.length} results)`);
  process.exit(0);
}
// -cpu max: the emulated CPU has every extension QEMU knows (dotprod included), so every arm64 level runs.
const a = runHarness('arm64', qemu, ['-cpu', 'max', arm.bin]);
console.log(`arm64 (${crossCc}, under ${qemu}): ${a.levels}; ran in ${a.secs.toFixed(1)} s`);

// Cross-architecture comparison, test by test.
const tests = [...new Set(x.rows.map((r) => r.test))];
const armTests = new Set(a.rows.map((r) => r.test));
const problems = [];
let exactCount = 0;
let worst = 0;
let bitIdentical = 0;
let f32Count = 0;
for (const t of tests) {
  if (!armTests.has(t)) {
    problems.push(`${t}: missing from the arm64 run`);
    continue;
  }
  const xs = x.rows.filter((r) => r.test === t);
  const as = a.rows.filter((r) => r.test === t);
  if (xs[0].kind === 'exact') {
    const hashes = new Set([...xs, ...as].map((r) => r.hash));
    exactCount++;
    if (hashes.size !== 1) problems.push(`${t}: integer outputs differ: ${[...xs, ...as].map((r) => `${r.level}=${r.hash}`).join(' ')}`);
    console.log(`  ${t.padEnd(40)} exact ${[...hashes].join(',')}  (${[...xs, ...as].map((r) => r.level).join(', ')})`);
    continue;
  }
  const ref = f32(join(x.dump, `${t}.scalar.bin`));
  const xHashes = new Map();
  for (const r of xs) if (!xHashes.has(r.hash)) xHashes.set(r.hash, r.level);
  const parts = [];
  for (const r of as) {
    f32Count++;
    const d = maxRel(f32(join(a.dump, `${t}.${r.level}.bin`)), ref);
    worst = Math.max(worst, d);
    const same = xHashes.get(r.hash);
    if (same) bitIdentical++;
    parts.push(`arm64 ${r.level}: ${d.toExponential(2)}${same ? ` (bits of x64 ${same})` : ''}`);
    if (!(d <= F32_TOL)) problems.push(`${t}: arm64 ${r.level} differs from x64 scalar by ${d} (tolerance ${F32_TOL})`);
  }
  console.log(`  ${t.padEnd(40)} f32   ${parts.join('; ')}`);
}
for (const t of armTests) if (!tests.includes(t)) problems.push(`${t}: missing from the x64 run`);
if (!keep) rmSync(work, { recursive: true, force: true });
const total = ((Date.now() - started) / 1000).toFixed(1);
const notRun = host.built.filter((n) => x.levels.includes(`${n}(unsupported)`));
if (problems.length) fail(`${problems.length} difference(s) between x86-64 and arm64:\n  ${problems.join('\n  ')}`);
console.log(
  `check-arm64: OK: ${exactCount} integer tests bit-identical across x64 (${host.built.filter((n) => !notRun.includes(n)).join(', ')}` +
    `${notRun.length ? `; built but not run on this CPU: ${notRun.join(', ')}` : ''}) and arm64 (${arm.built.join(', ')}); ` +
    `${f32Count} arm64 fp32 results within ${F32_TOL} of x64 scalar (max ${worst.toExponential(2)}; ${bitIdentical} bit-identical to an x64 level); ` +
    `build ${buildSecs.toFixed(1)} s, total ${total} s`,
);
