/** Loads the kernels' WebAssembly modules (built by `npm run build:wasm` into build/wasm/). */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { repoRoot } from '../util/paths.js';

const modules = new Map<string, WebAssembly.Module>();
let tieringSet = false;

/**
 * V8 first compiles wasm with its baseline compiler (Liftoff) and tiers a function up only
 * between calls; one long GEMM call would then run entirely at about a third of the speed. Compile
 * with the optimizing compiler from the start instead (process-wide; affects only wasm compiled later).
 */
function optimizeWasmFromStart(): void {
  if (tieringSet) return;
  tieringSet = true;
  setFlagsFromString('--no-liftoff');
}

/** Path of build/wasm/<name>.wasm under the package root. */
export function wasmPath(name: string): string {
  return join(repoRoot(), 'build', 'wasm', `${name}.wasm`);
}

/** Compiles (once per thread) build/wasm/<name>.wasm; throws a clear error if it was not built. */
export function loadWasmModule(name: string): WebAssembly.Module {
  let mod = modules.get(name);
  if (mod) return mod;
  const path = wasmPath(name);
  if (!existsSync(path)) {
    throw new Error(`helora: WebAssembly kernel ${path} is missing; run \`npm run build:wasm\` (node scripts/build-wasm.mjs) first`);
  }
  optimizeWasmFromStart();
  mod = new WebAssembly.Module(readFileSync(path));
  modules.set(name, mod);
  return mod;
}

/** Imports every AssemblyScript module built with the stub runtime expects. */
export function asImports(): WebAssembly.Imports {
  return {
    env: {
      abort(_msg: number, _file: number, line: number, col: number): never {
        throw new Error(`helora: WebAssembly kernel aborted at line ${line}:${col}`);
      },
    },
  };
}

/** A new instance of build/wasm/<name>.wasm (its own linear memory). */
export function instantiateWasm(name: string): WebAssembly.Instance {
  return new WebAssembly.Instance(loadWasmModule(name), asImports());
}

const PAGE = 65536;

/**
 * Linear-memory bookkeeping for one instance: a permanent region (resident weights, bump
 * allocated, never freed) below a scratch region that every call resets.
 */
export class WasmHeap {
  private permTop: number;
  private top: number;

  constructor(readonly memory: WebAssembly.Memory, heapBase: number) {
    this.permTop = align(heapBase, 64);
    this.top = this.permTop;
  }

  /** Bytes that stay allocated for the lifetime of the instance. Call only between kernel calls. */
  allocPermanent(bytes: number): number {
    const ptr = this.permTop;
    this.permTop = align(ptr + bytes, 64);
    this.top = this.permTop;
    this.ensure(this.permTop);
    return ptr;
  }

  resetScratch(): void {
    this.top = this.permTop;
  }

  /** Scratch bytes, valid until the next resetScratch(). `slack` extra readable bytes past the end. */
  alloc(bytes: number, slack = 0): number {
    const ptr = this.top;
    this.top = align(ptr + bytes + slack, 64);
    this.ensure(this.top);
    return ptr;
  }

  private ensure(end: number): void {
    if (end > 0xffff0000) throw new Error(`helora: WebAssembly kernel needs ${end} bytes of memory, over the 4 GiB wasm32 limit`);
    const have = this.memory.buffer.byteLength;
    if (end <= have) return;
    try {
      this.memory.grow(Math.ceil((end - have) / PAGE));
    } catch (e) {
      throw new Error(`helora: cannot grow WebAssembly memory to ${end} bytes (${e instanceof Error ? e.message : String(e)})`);
    }
  }

  u8(ptr: number, len: number): Uint8Array { return new Uint8Array(this.memory.buffer, ptr, len); }
  i8(ptr: number, len: number): Int8Array { return new Int8Array(this.memory.buffer, ptr, len); }
  i16(ptr: number, len: number): Int16Array { return new Int16Array(this.memory.buffer, ptr, len); }
  i32(ptr: number, len: number): Int32Array { return new Int32Array(this.memory.buffer, ptr, len); }
  u32(ptr: number, len: number): Uint32Array { return new Uint32Array(this.memory.buffer, ptr, len); }
  f32(ptr: number, len: number): Float32Array { return new Float32Array(this.memory.buffer, ptr, len); }
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}
