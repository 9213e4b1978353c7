/**
 * The frozen projections of a Llama-family decoder layer: the one table every other file reads
 * (HF module paths and tensor names, [out, in] shapes, the groups that share one upload or one
 * summed download, and each group's wire id).
 *
 * Adding a projection or an architecture with other projections is a change here; the
 * `ProjectionName` / `ProjectionGroup` types then make the compiler point at every place (LoRA,
 * PEFT, loaders, providers, the wire) that must handle it.
 */

import type { LlamaConfig } from './config.js';

/** The config fields that fix every projection's shape. */
export type ProjectionDims = Pick<LlamaConfig, 'hiddenSize' | 'intermediateSize' | 'numHeads' | 'numKvHeads' | 'headDim'>;

interface ProjectionSpec {
  /** HF sub-module of the decoder layer that holds the projection. */
  readonly block: 'self_attn' | 'mlp';
  /** [out, in] of the weight (the HF / PyTorch nn.Linear layout). */
  readonly shape: (d: ProjectionDims) => [number, number];
}

const qDim = (d: ProjectionDims): number => d.numHeads * d.headDim;
const kvDim = (d: ProjectionDims): number => d.numKvHeads * d.headDim;

/** Every projection, in the order PEFT and HF list them. */
export const PROJECTIONS = {
  q_proj: { block: 'self_attn', shape: (d) => [qDim(d), d.hiddenSize] },
  k_proj: { block: 'self_attn', shape: (d) => [kvDim(d), d.hiddenSize] },
  v_proj: { block: 'self_attn', shape: (d) => [kvDim(d), d.hiddenSize] },
  o_proj: { block: 'self_attn', shape: (d) => [d.hiddenSize, qDim(d)] },
  gate_proj: { block: 'mlp', shape: (d) => [d.intermediateSize, d.hiddenSize] },
  up_proj: { block: 'mlp', shape: (d) => [d.intermediateSize, d.hiddenSize] },
  down_proj: { block: 'mlp', shape: (d) => [d.hiddenSize, d.intermediateSize] },
} as const satisfies Record<string, ProjectionSpec>;

/** q_proj, k_proj, ... (PEFT's target_modules names). */
export type ProjectionName = keyof typeof PROJECTIONS;
export const PROJECTION_NAMES = Object.freeze(Object.keys(PROJECTIONS)) as readonly ProjectionName[];

/**
 * Projections fused by a shared input: forward uploads the input once and gets one result per
 * member; backward uploads one gradient per member and gets the summed dx. Members are listed in
 * output order; the wire id is the group's byte in protocol messages (never reuse a retired id).
 */
export const PROJECTION_GROUP_SPECS = {
  qkv: { wireId: 1, members: ['q_proj', 'k_proj', 'v_proj'] },
  o: { wireId: 2, members: ['o_proj'] },
  gate_up: { wireId: 3, members: ['gate_proj', 'up_proj'] },
  down: { wireId: 4, members: ['down_proj'] },
} as const satisfies Record<string, { wireId: number; members: readonly ProjectionName[] }>;

export type ProjectionGroup = keyof typeof PROJECTION_GROUP_SPECS;
export const PROJECTION_GROUPS = Object.freeze(Object.keys(PROJECTION_GROUP_SPECS)) as readonly ProjectionGroup[];

/** The members of a group, in output order. */
export function groupMembers(group: ProjectionGroup): readonly ProjectionName[] {
  return PROJECTION_GROUP_SPECS[group].members;
}

/** The group a projection belongs to. */
export function projectionGroup(name: ProjectionName): ProjectionGroup {
  return PROJECTION_GROUPS.find((g) => groupMembers(g).includes(name))!;
}

export function isProjectionName(s: string): s is ProjectionName {
  return Object.hasOwn(PROJECTIONS, s);
}

/** [out, in] of a projection for this model. */
export function projectionShape(dims: ProjectionDims, name: ProjectionName): [number, number] {
  return PROJECTIONS[name].shape(dims);
}

/** [out, in] of every member of a group, in output order. */
export function groupShapes(dims: ProjectionDims, group: ProjectionGroup): [number, number][] {
  return groupMembers(group).map((m) => projectionShape(dims, m));
}

/** HF sub-module path inside a decoder layer: 'self_attn.q_proj'. */
export function projectionPath(name: ProjectionName): string {
  return `${PROJECTIONS[name].block}.${name}`;
}

/** HF tensor name of a projection's weight: 'model.layers.3.self_attn.q_proj.weight'. */
export function projectionWeightName(layer: number, name: ProjectionName): string {
  return `model.layers.${layer}.${projectionPath(name)}.weight`;
}

const WEIGHT_NAME_RE = new RegExp(`^model\\.layers\\.(0|[1-9]\\d{0,5})\\.(${PROJECTION_NAMES.map(projectionPath).join('|').replaceAll('.', '\\.')})\\.weight$`);

/** The layer and projection of an HF projection weight name, or null for any other tensor name. */
export function parseProjectionWeightName(tensorName: string): { layer: number; name: ProjectionName } | null {
  const m = WEIGHT_NAME_RE.exec(tensorName);
  if (!m) return null;
  return { layer: Number(m[1]), name: m[2]!.split('.')[1] as ProjectionName };
}

/** The group with this wire id, or undefined. */
export function groupByWireId(id: number): ProjectionGroup | undefined {
  return PROJECTION_GROUPS.find((g) => PROJECTION_GROUP_SPECS[g].wireId === id);
}
