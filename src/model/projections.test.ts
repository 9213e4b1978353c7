import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  groupByWireId, groupMembers, groupShapes, isProjectionName, parseProjectionWeightName, PROJECTION_GROUPS, PROJECTION_NAMES,
  projectionGroup, projectionPath, projectionShape, projectionWeightName, type ProjectionDims,
} from './projections.js';

// Llama-3.2-1B's published shape (hidden 2048, intermediate 8192, 32 / 8 heads of 64).
const LLAMA_1B: ProjectionDims = { hiddenSize: 2048, intermediateSize: 8192, numHeads: 32, numKvHeads: 8, headDim: 64 };

test('the projection table gives the HF names and [out, in] shapes of a Llama layer', () => {
  assert.deepEqual([...PROJECTION_NAMES], ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
  assert.deepEqual(PROJECTION_NAMES.map((n) => projectionShape(LLAMA_1B, n)),
    [[2048, 2048], [512, 2048], [512, 2048], [2048, 2048], [8192, 2048], [8192, 2048], [2048, 8192]]);
  assert.equal(projectionPath('k_proj'), 'self_attn.k_proj');
  assert.equal(projectionWeightName(15, 'down_proj'), 'model.layers.15.mlp.down_proj.weight');
});

test('groups partition the projections in output order and share their input size', () => {
  assert.deepEqual(PROJECTION_GROUPS.flatMap((g) => groupMembers(g)), [...PROJECTION_NAMES]);
  for (const g of PROJECTION_GROUPS) {
    const shapes = groupShapes(LLAMA_1B, g);
    assert.ok(shapes.every(([, inDim]) => inDim === shapes[0]![1]), `${g} members read one input`);
    for (const m of groupMembers(g)) assert.equal(projectionGroup(m), g);
  }
  assert.deepEqual(groupShapes(LLAMA_1B, 'gate_up'), [[8192, 2048], [8192, 2048]]);
  assert.equal(groupByWireId(3), 'gate_up');
  assert.equal(groupByWireId(0), undefined);
  assert.equal(groupByWireId(5), undefined);
});

test('projection weight names parse back, and nothing else does', () => {
  for (const n of PROJECTION_NAMES) assert.deepEqual(parseProjectionWeightName(projectionWeightName(7, n)), { layer: 7, name: n });
  for (const other of [
    'model.layers.0.self_attn.q_proj.bias', 'model.layers.0.mlp.q_proj.weight', 'model.layers.0.self_attn.gate_proj.weight',
    'model.layers.01.self_attn.q_proj.weight', 'model.embed_tokens.weight', 'lm_head.weight', 'model.layers.0.input_layernorm.weight',
    'model.layers.0.self_attnXq_proj.weight',
  ]) assert.equal(parseProjectionWeightName(other), null, other);
  assert.ok(isProjectionName('up_proj'));
  assert.ok(!isProjectionName('toString'));
  assert.ok(!isProjectionName('lm_head'));
});
