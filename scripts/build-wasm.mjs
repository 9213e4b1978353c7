// Compiles every AssemblyScript entry in src/kernels/assembly/*.entry.ts into build/wasm/<name>.wasm.
// Built from source on install/build: no binaries are committed.
// Usage: node scripts/build-wasm.mjs [name ...]   (no names: build every entry)
import { readdirSync, mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, dirname, basename } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const srcDir = join(root, 'src/kernels/assembly');
const outDir = join(root, 'build/wasm');
mkdirSync(outDir, { recursive: true });
const asc = join(root, 'node_modules/assemblyscript/bin/asc.js');
const only = process.argv.slice(2);
const entries = readdirSync(srcDir).filter((f) => f.endsWith('.entry.ts')).sort()
  .filter((f) => only.length === 0 || only.includes(basename(f, '.entry.ts')));
if (entries.length === 0) {
  console.error(`build-wasm: no matching *.entry.ts in ${srcDir}${only.length ? ` for ${only.join(', ')}` : ''}`);
  process.exit(1);
}
for (const file of entries) {
  const name = basename(file, '.entry.ts');
  execFileSync(process.execPath, [
    asc, join(srcDir, file),
    '--outFile', join(outDir, `${name}.wasm`),
    // -O3 with SIMD; asserts off (the TypeScript wrappers validate every shape before calling).
    '-O3', '--noAssert', '--enable', 'simd',
    // No managed objects in the kernels: the stub runtime; linear memory is laid out by the
    // TypeScript side (src/kernels/wasm.ts), which grows it as needed.
    '--runtime', 'stub', '--exportRuntime',
    '--initialMemory', '16', '--memoryBase', '65536',
  ], { stdio: 'inherit' });
  console.error(`built build/wasm/${name}.wasm`);
}
