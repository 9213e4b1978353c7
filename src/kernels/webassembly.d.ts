// Minimal WebAssembly JS-API typings: tsconfig's lib (ES2022, no DOM) and @types/node 20 do not
// declare the WebAssembly namespace. Only what the kernel loaders use.
declare namespace WebAssembly {
  type ImportValue = unknown;
  type Imports = Record<string, Record<string, ImportValue>>;
  type Exports = Record<string, unknown>;
  interface ModuleImportDescriptor { module: string; name: string; kind: string }
  interface ModuleExportDescriptor { name: string; kind: string }
  class Module {
    constructor(bytes: ArrayBufferView | ArrayBuffer);
    static imports(module: Module): ModuleImportDescriptor[];
    static exports(module: Module): ModuleExportDescriptor[];
  }
  class Instance {
    constructor(module: Module, imports?: Imports);
    readonly exports: Exports;
  }
  interface MemoryDescriptor { initial: number; maximum?: number; shared?: boolean }
  class Memory {
    constructor(descriptor: MemoryDescriptor);
    readonly buffer: ArrayBuffer;
    grow(delta: number): number;
  }
  function instantiate(bytes: ArrayBufferView | ArrayBuffer, imports?: Imports): Promise<{ module: Module; instance: Instance }>;
  function compile(bytes: ArrayBufferView | ArrayBuffer): Promise<Module>;
}
