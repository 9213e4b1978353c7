/**
 * The frozen linear products of every block (q/k/v, o, gate/up, down) behind one async
 * interface, so the model code is the same whether they run in memory (fp32 or int8) or on
 * a server over encrypted activations.
 */

import { matmulBackwardInput, matmulBackwardWeight, matmulForward } from '../kernels/matmul-f32.js';
import { quantizeWeightsPerChannel, DEFAULT_ACT_BITS } from '../quant/quantize.js';
import { QuantizedGroup } from '../linear/plain.js';
import type { LlamaConfig } from './config.js';
import type { Parameter } from './parameter.js';
import { groupMembers, groupShapes, PROJECTION_GROUPS, projectionWeightName, type ProjectionGroup } from './projections.js';

export interface FrozenLinearProvider {
  /** y_j[T, out_j] = x[T, in] · W_j^T for each projection of the group. Biases are NOT included. */
  forward(layer: number, group: ProjectionGroup, x: Float32Array, T: number): Promise<Float32Array[]>;
  /** dx[T, in] = sum_j dy_j · W_j. */
  backward(layer: number, group: ProjectionGroup, dys: Float32Array[], T: number): Promise<Float32Array>;
}

/** A tensor as the loader returns it (HF names, fp32 data). */
export interface NamedTensor { shape: number[]; data: Float32Array }
export type TensorMap = Map<string, NamedTensor>;

/** Fetches and shape-checks the projection weights of one group of one layer. */
export function groupWeights(config: LlamaConfig, tensors: TensorMap, layer: number, group: ProjectionGroup): Float32Array[] {
  const shapes = groupShapes(config, group);
  return groupMembers(group).map((m, j) => {
    const name = projectionWeightName(layer, m);
    const t = tensors.get(name);
    if (!t) throw new Error(`helora: checkpoint has no tensor ${name}`);
    const [o, i] = shapes[j]!;
    if (t.shape.length !== 2 || t.shape[0] !== o || t.shape[1] !== i || t.data.length !== o * i) {
      throw new Error(`helora: ${name} has shape [${t.shape.join(', ')}], expected [${o}, ${i}]`);
    }
    return t.data;
  });
}

abstract class LocalProvider<W> implements FrozenLinearProvider {
  protected readonly weights: Map<string, W[]> = new Map();
  protected readonly shapes: Map<ProjectionGroup, [number, number][]> = new Map();

  protected constructor(readonly config: LlamaConfig) {
    for (const g of PROJECTION_GROUPS) this.shapes.set(g, groupShapes(config, g));
  }

  protected get(layer: number, group: ProjectionGroup): { ws: W[]; shapes: [number, number][] } {
    const ws = this.weights.get(`${layer}.${group}`);
    if (!ws) throw new Error(`helora: no frozen weights for layer ${layer} group ${group}`);
    return { ws, shapes: this.shapes.get(group)! };
  }

  protected static checkX(x: Float32Array, T: number, C: number, what: string): void {
    if (!Number.isInteger(T) || T < 0 || x.length !== T * C) throw new Error(`helora: ${what} has ${x.length} values, expected T*${C} with T = ${T}`);
  }

  abstract forward(layer: number, group: ProjectionGroup, x: Float32Array, T: number): Promise<Float32Array[]>;
  abstract backward(layer: number, group: ProjectionGroup, dys: Float32Array[], T: number): Promise<Float32Array>;
}

/** fp32 weights in memory (the plaintext reference). */
export class LocalFp32Provider extends LocalProvider<Float32Array> {
  protected constructor(config: LlamaConfig) { super(config); }

  /** Keeps references to the projection tensors (no copy). */
  static fromTensors(config: LlamaConfig, tensors: TensorMap): LocalFp32Provider {
    const p = new LocalFp32Provider(config);
    for (let l = 0; l < config.numLayers; l++) {
      for (const g of PROJECTION_GROUPS) p.weights.set(`${l}.${g}`, groupWeights(config, tensors, l, g));
    }
    return p;
  }

  async forward(layer: number, group: ProjectionGroup, x: Float32Array, T: number): Promise<Float32Array[]> {
    const { ws, shapes } = this.get(layer, group);
    LocalProvider.checkX(x, T, shapes[0]![1], `${group} input`);
    return ws.map((w, j) => {
      const [o, i] = shapes[j]!;
      const y = new Float32Array(T * o);
      matmulForward(y, x, w, null, T, i, o);
      return y;
    });
  }

  async backward(layer: number, group: ProjectionGroup, dys: Float32Array[], T: number): Promise<Float32Array> {
    const { ws, shapes } = this.get(layer, group);
    if (dys.length !== ws.length) throw new Error(`helora: ${group} backward takes ${ws.length} gradients, got ${dys.length}`);
    const C = shapes[0]![1];
    const dx = new Float32Array(T * C);
    ws.forEach((w, j) => {
      const [o, i] = shapes[j]!;
      LocalProvider.checkX(dys[j]!, T, o, `${group} gradient ${j}`);
      matmulBackwardInput(dx, dys[j]!, w, T, i, o);
    });
    return dx;
  }
}

/**
 * Per-output-channel int8 weights and per-token quantized activations / gradients: exactly the
 * integers of the encrypted path (src/linear/plain.ts: one quantization of the shared q/k/v or
 * gate/up input, one joint quantization of the stacked backward gradients), without encryption.
 */
export class LocalQuantizedProvider extends LocalProvider<QuantizedGroup> {
  private constructor(config: LlamaConfig, readonly bits: number) { super(config); }

  static fromTensors(config: LlamaConfig, tensors: TensorMap, bits = DEFAULT_ACT_BITS): LocalQuantizedProvider {
    const p = new LocalQuantizedProvider(config, bits);
    for (let l = 0; l < config.numLayers; l++) {
      for (const g of PROJECTION_GROUPS) {
        const shapes = groupShapes(config, g);
        const parts = groupWeights(config, tensors, l, g).map((w, j) => quantizeWeightsPerChannel(w, shapes[j]![0], shapes[j]![1]));
        p.weights.set(`${l}.${g}`, [new QuantizedGroup(parts, bits)]);
      }
    }
    return p;
  }

  /** The quantized group of one layer (for providers that run the same integers elsewhere). */
  group(layer: number, group: ProjectionGroup): QuantizedGroup {
    return this.get(layer, group).ws[0]!;
  }

  async forward(layer: number, group: ProjectionGroup, x: Float32Array, T: number): Promise<Float32Array[]> {
    const g = this.group(layer, group);
    LocalProvider.checkX(x, T, g.inDim, `${group} input`);
    return g.forward(x, T);
  }

  async backward(layer: number, group: ProjectionGroup, dys: Float32Array[], T: number): Promise<Float32Array> {
    const g = this.group(layer, group);
    if (dys.length !== g.partRows.length) throw new Error(`helora: ${group} backward takes ${g.partRows.length} gradients, got ${dys.length}`);
    dys.forEach((dy, j) => LocalProvider.checkX(dy, T, g.partRows[j]!, `${group} gradient ${j}`));
    return g.backward(dys, T);
  }
}


/**
 * fp32 projection weights that are TRAINED (pretraining / full fine-tuning), in memory. Forward
 * keeps a reference to each group's input x (the model never writes to it afterwards), so the
 * matching backward can accumulate dW_j += dy_j^T · x besides returning dx. A later forward of the
 * same (layer, group) replaces the saved input, so call backward in the usual reverse order
 * after one forward per group (what LlamaModel.forwardBackward does).
 */
export class LocalTrainableProvider extends LocalFp32Provider {
  private readonly grads: Map<string, Float32Array[]> = new Map();
  private readonly inputs: Map<string, Float32Array> = new Map();
  private readonly params: Parameter[] = [];

  private constructor(config: LlamaConfig) { super(config); }

  /**
   * Keeps references to the projection tensors (no copy): optimizer updates land in `tensors`
   * itself, so the map can be written out as the trained checkpoint.
   */
  static override fromTensors(config: LlamaConfig, tensors: TensorMap): LocalTrainableProvider {
    const p = new LocalTrainableProvider(config);
    for (let l = 0; l < config.numLayers; l++) {
      for (const g of PROJECTION_GROUPS) {
        const ws = groupWeights(config, tensors, l, g);
        const gs = ws.map((w) => new Float32Array(w.length));
        p.weights.set(`${l}.${g}`, ws);
        p.grads.set(`${l}.${g}`, gs);
        groupMembers(g).forEach((m, j) => p.params.push({ name: projectionWeightName(l, m), value: ws[j]!, grad: gs[j]! }));
      }
    }
    return p;
  }

  /** Every projection weight with its gradient buffer, HF names, layer by layer. */
  parameters(): Parameter[] {
    return this.params.slice();
  }

  zeroGrad(): void {
    for (const p of this.params) p.grad.fill(0);
  }

  /** Drops the saved forward inputs (e.g. after an evaluation pass, to free memory). */
  releaseInputs(): void {
    this.inputs.clear();
  }

  override async forward(layer: number, group: ProjectionGroup, x: Float32Array, T: number): Promise<Float32Array[]> {
    const ys = await super.forward(layer, group, x, T);
    this.inputs.set(`${layer}.${group}`, x);
    return ys;
  }

  override async backward(layer: number, group: ProjectionGroup, dys: Float32Array[], T: number): Promise<Float32Array> {
    const key = `${layer}.${group}`;
    const { ws, shapes } = this.get(layer, group);
    const x = this.inputs.get(key);
    if (!x || x.length !== T * shapes[0]![1]) throw new Error(`helora: ${group} backward of layer ${layer} has no matching forward input for T = ${T}`);
    const dx = await super.backward(layer, group, dys, T); // validates dys
    const gs = this.grads.get(key)!;
    ws.forEach((_, j) => {
      const [o, i] = shapes[j]!;
      matmulBackwardWeight(gs[j]!, dys[j]!, x, T, i, o);
    });
    this.inputs.delete(key);
    return dx;
  }
}
