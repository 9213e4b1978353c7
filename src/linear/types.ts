// In-memory shapes of the encrypted products exchanged by the client and the server of one
// projection group. The wire format (src/protocol) carries the same fields.

/** Quantized public weights of one projection: W[rows = out, cols = in], |values| <= 127. */
export interface Int8Matrix {
  values: Int8Array;
  rows: number;
  cols: number;
}

/**
 * Where the masks a_i come from (src/crypto/params.ts): 'fresh' expands them from the request's
 * own seed (the server returns W·A and W·B); 'table' uses the public masks of the product
 * (tableMaskSeed: fixed per model, layer, group and direction) with a single-use secret per column
 * block, so W·A is a public table the client already holds and the server returns only W·B.
 */
export type MaskMode = 'fresh' | 'table';

/** The client's upload for one product: stacked input parts encrypted under one fresh seed. */
export interface EncryptedInput {
  masks: MaskMode;
  paramsId: number;
  /** Real tokens (the last column block is zero-padded up to the ring degree). */
  T: number;
  /** Features of each stacked input part (forward: [C]; backward of q/k/v: [q_out, k_out, v_out]). */
  partCols: number[];
  /** Seed of the masks a_i; the server expands it itself, so only b travels ('table': all zero, the server derives the public one). */
  seed: Uint8Array;
  /** Per column block: (sum of partCols) * N values of uploadBits each, feature-major, little-endian. */
  blocks: Uint8Array[];
}

/** One mod-switched ciphertext matrix: rows * N coefficients of a and of b ('table' answers carry no a: the client's table holds it). */
export interface CipherMatrix {
  a: Uint32Array;
  b: Uint32Array;
}

/** The server's answer: per block, per output, per K-chunk term (the client adds the terms). */
export interface EncryptedOutput {
  masks: MaskMode;
  paramsId: number;
  T: number;
  /** Rows of each output (forward of q/k/v: three outputs; backward: one, the summed dx). */
  outputRows: number[];
  /** K-chunk terms per output; the plaintext headroom bounds each term's inner dimension. */
  terms: number;
  /** blocks[block][output * terms + term]. */
  blocks: CipherMatrix[][];
}

/** Which product of a group is asked for. */
export type ProductDirection = 'forward' | 'backward';
