// The "quantized" training mode: the frozen products computed in the clear with exactly the integers
// of the encrypted path (src/linear/plain.ts QuantizedGroup: the same per-token quantization, the
// same joint quantization of the stacked q/k/v or gate/up gradients in backward). Training in this
// mode and in the encrypted mode differs only by the HE error.

import { QuantizedGroup } from '../linear/plain.js';
import type { LlamaConfig } from '../model/config.js';
import { groupShapes, groupWeights, PROJECTION_GROUPS, type FrozenLinearProvider, type ProjectionGroup, type TensorMap } from '../model/frozen.js';
import { DEFAULT_ACT_BITS, quantizeWeightsPerChannel } from '../quant/quantize.js';

export class QuantizedGroupProvider implements FrozenLinearProvider {
  private readonly groups = new Map<string, QuantizedGroup>();

  private constructor(readonly config: LlamaConfig) {}

  static fromTensors(config: LlamaConfig, tensors: TensorMap, actBits = DEFAULT_ACT_BITS): QuantizedGroupProvider {
    const p = new QuantizedGroupProvider(config);
    for (let l = 0; l < config.numLayers; l++) {
      for (const g of PROJECTION_GROUPS) {
        const shapes = groupShapes(config, g);
        const parts = groupWeights(config, tensors, l, g).map((w, j) => quantizeWeightsPerChannel(w, shapes[j]![0], shapes[j]![1]));
        p.groups.set(`${l}.${g}`, new QuantizedGroup(parts, actBits));
      }
    }
    return p;
  }

  private group(layer: number, group: ProjectionGroup): QuantizedGroup {
    const g = this.groups.get(`${layer}.${group}`);
    if (!g) throw new Error(`helora: no frozen weights for layer ${layer} group ${group}`);
    return g;
  }

  async forward(layer: number, group: ProjectionGroup, x: Float32Array, T: number): Promise<Float32Array[]> {
    const g = this.group(layer, group);
    if (x.length !== T * g.inDim) throw new Error(`helora: ${group} input has ${x.length} values, expected ${T} x ${g.inDim}`);
    return g.forward(x, T);
  }

  async backward(layer: number, group: ProjectionGroup, dys: Float32Array[], T: number): Promise<Float32Array> {
    const g = this.group(layer, group);
    if (dys.length !== g.partRows.length) throw new Error(`helora: ${group} backward takes ${g.partRows.length} gradients, got ${dys.length}`);
    return g.backward(dys, T);
  }
}
