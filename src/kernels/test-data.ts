// Random test inputs for the kernel tests (Math.random: test data only, never anything secret).

/** int8 weights uniform in [-127, 127] (the kernels' weight range). */
export function randW(n: number): Int8Array {
  const a = new Int8Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.floor(Math.random() * 255) - 127;
  return a;
}

/** Uniform bytes (mask / upload streams). */
export function randBytes(n: number): Uint8Array {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.floor(Math.random() * 256);
  return a;
}
