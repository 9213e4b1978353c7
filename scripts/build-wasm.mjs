// Compiles every AssemblyScript entry in src/kernels/assembly/*.entry.ts into build/wasm/<name>.wasm.
// Built from source on install/build: no binaries are committed.
import { readdirSync, mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, dirname, basename } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const srcDir = join(root, 'src/kernels/assembly');
const outDir = join(root, 'build/wasm');
mkdirSync(outDir, { recursive: true });
const asc = join(root, 'node_modules/assemblyscript/bin/asc.js');
for (const file of readdirSync(srcDir).filter((f) => f.endsWith('.entry.ts')).sort()) {
  const name = basename(file, '.entry.ts');
  execFileSync(process.execPath, [
    asc, join(srcDir, file),
    '--outFile', join(outDir, `${name}.wasm`),
    '-O3', '--noAssert', '--enable', 'simd',
    '--runtime', 'stub', '--exportRuntime',
    '--initialMemory', '16', '--memoryBase', '65536',
  ], { stdio: 'inherit' });
  console.error(`built build/wasm/${name}.wasm`);
}
