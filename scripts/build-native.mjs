// Builds the native kernels (src/kernels/native/*.c) into build/native/helora.node, an N-API addon,
// with the system C compiler ($CC, else cc, gcc or clang) and the node_api.h headers that ship
// with this Node. kernels.c, client-crypto.c, model-ops.c and attention.c are compiled once per CPU level (the addon picks one at run time); a
// vector level this compiler cannot build is left out (the others still run).
//
// Never fails the install: without a compiler or headers, or on a compile error, it prints one
// line and exits 0; helora then runs its WebAssembly kernels (HELORA_KERNELS=native makes that an
// error at run time instead).
// Usage: node scripts/build-native.mjs [--verbose]
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { arch, platform } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { commonFlags, haveFlags, levelUnits, levelsFor, sharedUnits } from './native-levels.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'src/kernels/native');
const outDir = join(root, 'build/native');
const out = join(outDir, 'helora.node');
const verbose = process.argv.includes('--verbose');

function skip(why) {
  // The previous build (if any) must not be picked up with sources it was not built from.
  rmSync(out, { force: true });
  console.error(`build-native: ${why}; helora will use its WebAssembly kernels`);
  process.exit(0);
}

function findCompiler() {
  for (const cc of [process.env.CC, 'cc', 'gcc', 'clang'].filter(Boolean)) {
    try {
      execFileSync(cc, ['--version'], { stdio: 'ignore' });
      return cc;
    } catch { /* try the next one */ }
  }
  return null;
}

/** node_api.h: next to this Node (<prefix>/include/node), or where npm_config_nodedir points. */
function findHeaders() {
  const dirs = [
    process.env.npm_config_nodedir && join(process.env.npm_config_nodedir, 'include/node'),
    join(dirname(process.execPath), '../include/node'),
  ].filter(Boolean);
  return dirs.find((d) => existsSync(join(d, 'node_api.h'))) ?? null;
}

const cc = findCompiler();
if (!cc) skip('no C compiler found (set CC)');
const inc = findHeaders();
if (!inc) skip(`node_api.h not found under ${join(dirname(process.execPath), '../include/node')}`);

const levels = levelsFor(arch());
const common = [...commonFlags, '-fPIC', `-I${inc}`, `-I${src}`];
mkdirSync(outDir, { recursive: true });
const objs = [];
const built = [];
const dropped = [];
const tmp = `${out}.tmp-${process.pid}`;
try {
  const run = (args) => execFileSync(cc, args, { stdio: verbose ? 'inherit' : ['ignore', 'ignore', 'pipe'] });
  for (const [name, flags] of levels) {
    const units = levelUnits;
    const levelObjs = units.map(([f]) => join(outDir, `${f}-${name}.o`));
    try {
      units.forEach(([f, extra], i) => run([...common, ...flags, ...extra, `-DHL_LEVEL=${name}`, '-c', join(src, `${f}.c`), '-o', levelObjs[i]]));
    } catch (e) {
      if (name === 'scalar') throw e;
      for (const o of levelObjs) rmSync(o, { force: true });
      dropped.push(name);
      continue;
    }
    objs.push(...levelObjs);
    built.push(name);
  }
  const have = haveFlags(built);
  for (const f of [...sharedUnits, 'addon']) {
    const obj = join(outDir, `${f}.o`);
    run([...common, ...have, '-c', join(src, `${f}.c`), '-o', obj]);
    objs.push(obj);
  }
  // N-API symbols resolve against the running node at load time.
  const linkFlags = platform() === 'darwin' ? ['-bundle', '-undefined', 'dynamic_lookup'] : ['-shared'];
  run([...linkFlags, ...objs, '-pthread', '-lm', '-o', tmp]);
  renameSync(tmp, out);
} catch (e) {
  rmSync(tmp, { force: true });
  const msg = e && e.stderr ? String(e.stderr).split('\n').find((l) => l.includes('error')) ?? '' : String(e);
  skip(`compiling with ${cc} failed${msg ? ` (${msg.trim()})` : ''}`);
} finally {
  for (const o of objs) rmSync(o, { force: true });
}
console.error(`built build/native/helora.node (${cc}; levels ${built.join(', ')}${dropped.length ? `; ${cc} cannot build ${dropped.join(', ')}` : ''})`);
