// The native kernels' CPU levels and compile flags, shared by scripts/build-native.mjs (the N-API
// addon) and scripts/check-arm64.mjs (the self-test harness built for x86-64 and for AArch64), so
// both compile every unit the same way.

/** Level name -> extra compiler flags, best last; `scalar` everywhere, the vector levels per architecture (Node's arch()). */
export function levelsFor(arch) {
  const levels = [['scalar', []]];
  if (arch === 'x64') {
    levels.push(
      ['avx2', ['-mavx2', '-mfma']],
      ['avx512', ['-mavx2', '-mfma', '-mavx512f', '-mavx512bw', '-mavx512vl']],
      ['avx512vnni', ['-mavx2', '-mfma', '-mavx512f', '-mavx512bw', '-mavx512vl', '-mavx512vnni']],
    );
  } else if (arch === 'arm64') {
    // NEON (Advanced SIMD) is baseline on AArch64: no -march needed. HL_NEON selects the intrinsics
    // in kernels.c; the scalar level sees __ARM_NEON as well and must stay portable C.
    levels.push(
      ['neon', ['-DHL_NEON']],
      // ARMv8.2 dot product (sdot); the addon checks HWCAP_ASIMDDP at run time.
      ['dotprod', ['-march=armv8.2-a+dotprod', '-DHL_NEON', '-DHL_DOTPROD']],
    );
  }
  return levels;
}

// -O3 and no -ffast-math: the fp32 sums stay IEEE (only their order differs from WebAssembly).
// A call to an undeclared function links into the addon as an unresolved symbol that fails only when
// called: make it a compile error.
export const commonFlags = ['-O3', '-pthread', '-std=c11', '-D_ISOC11_SOURCE', '-Wall', '-Wextra', '-Wno-unused-parameter', '-Werror=implicit-function-declaration'];

/** The units compiled once per level (src/kernels/native/<name>.c) and their extra flags. */
export const levelUnits = [
  ['kernels', []],
  // The client crypto is bit-identical to its WebAssembly twin: no FMA contraction there.
  ['client-crypto', ['-ffp-contract=off', '-Wno-psabi']],
  ['model-ops', ['-ffp-contract=off', '-Wno-psabi']],
  ['attention', ['-ffp-contract=off', '-Wno-psabi']],
];

/** Level-independent units linked into every build besides the addon's binding. */
export const sharedUnits = ['pack', 'parallel'];

/** -DHL_HAVE_<level> for each vector level that was built (kernels.h declares those). */
export function haveFlags(built) {
  return built.filter((n) => n !== 'scalar').map((n) => `-DHL_HAVE_${n}`);
}
