// The decryption's results from feature-major rows to token-major order.

/**
 * dst[c*rows + r] = src[r*cols + c] for an i32 matrix (rows x cols): 4 x 4 blocks in registers,
 * then the edges one value at a time.
 */
export function transposeI32(src: usize, rows: i32, cols: i32, dst: usize): void {
  const r4 = rows & ~3, c4 = cols & ~3;
  const rs = <usize>cols << 2, ds = <usize>rows << 2;
  for (let r = 0; r < r4; r += 4) {
    for (let c = 0; c < c4; c += 4) {
      const p = src + ((<usize>r * <usize>cols + <usize>c) << 2);
      const x0 = v128.load(p), x1 = v128.load(p + rs), x2 = v128.load(p + 2 * rs), x3 = v128.load(p + 3 * rs);
      const t0 = i32x4.shuffle(x0, x1, 0, 4, 1, 5), t1 = i32x4.shuffle(x2, x3, 0, 4, 1, 5);
      const t2 = i32x4.shuffle(x0, x1, 2, 6, 3, 7), t3 = i32x4.shuffle(x2, x3, 2, 6, 3, 7);
      const d = dst + ((<usize>c * <usize>rows + <usize>r) << 2);
      v128.store(d, v128.shuffle<i64>(t0, t1, 0, 2));
      v128.store(d + ds, v128.shuffle<i64>(t0, t1, 1, 3));
      v128.store(d + 2 * ds, v128.shuffle<i64>(t2, t3, 0, 2));
      v128.store(d + 3 * ds, v128.shuffle<i64>(t2, t3, 1, 3));
    }
  }
  for (let r = 0; r < rows; r++) {
    for (let c = r < r4 ? c4 : 0; c < cols; c++) {
      store<i32>(dst + ((<usize>c * <usize>rows + <usize>r) << 2), load<i32>(src + ((<usize>r * <usize>cols + <usize>c) << 2)));
    }
  }
}
