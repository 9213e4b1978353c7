/** One trainable tensor: flat values and the gradient accumulated for them (same length, HF name). */
export interface Parameter {
  name: string;
  value: Float32Array;
  grad: Float32Array;
}
