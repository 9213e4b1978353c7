// docs/PROTOCOL.md against the code: every table marked `<!-- spec: NAME -->` is parsed and checked
// against the codec (field offsets, sizes and types read back from encoded messages), the message
// types, ops, projection groups, error codes, parameter sets, limits and endpoints, so the document
// and the implementation cannot drift apart. The model info a real server publishes is validated
// against docs/model-info.schema.json (ajv).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { downloadBytes, maxInnerDim, PARAMETER_SETS, uploadBytes } from '../crypto/params.js';
import { expandMask, SEED_BYTES } from '../crypto/sampling.js';
import { groupMembers, PROJECTION_GROUP_SPECS, PROJECTION_GROUPS, type ProjectionGroup } from '../model/projections.js';
import { HEALTH_PATH, MASK_TABLE_PATH, MODEL_INFO_PATH, WS_PATH } from '../protocol/endpoints.js';
import {
  encodeEncryptedInput, encodeEncryptedOutput, encodeError, encryptedInputBytes, encryptedOutputBytes, HEADER_BYTES, inputParts,
  MAX_ERROR_MESSAGE_BYTES, MAX_PARTS, MAX_TERMS, MessageType, MIN_PARTS, MIN_TERMS, Op, outputParts, ServerErrorCode, WIRE_MAGIC, WIRE_VERSION,
} from '../protocol/wire.js';
import { DEFAULT_ACT_BITS } from '../quant/quantize.js';
import { repoRoot } from '../util/paths.js';
import { MAX_MODEL_INFO_BYTES, MODEL_INFO_VERSION } from './model-info.js';
import { DEFAULT_MAX_TOKENS, ModelServer } from './model-server.js';
import { startServer } from './server.js';
import { removeDir, writeTinyModel } from './test-support.js';

const doc = readFileSync(join(repoRoot(), 'docs', 'PROTOCOL.md'), 'utf8');
const schema = JSON.parse(readFileSync(join(repoRoot(), 'docs', 'model-info.schema.json'), 'utf8')) as Record<string, unknown>;

/** The rows (cells without backticks) of the table that follows `<!-- spec: name -->`, keyed by its header cells. */
function specTable(name: string): Record<string, string>[] {
  const marker = `<!-- spec: ${name} -->`;
  const at = doc.indexOf(marker);
  assert.ok(at >= 0, `PROTOCOL.md has no table marked ${marker}`);
  assert.equal(doc.indexOf(marker, at + 1), -1, `PROTOCOL.md marks two tables ${marker}`);
  const lines = doc.slice(at + marker.length).split('\n').map((l) => l.trim());
  let i = 0;
  while (lines[i] === '') i++;
  const cells = (line: string): string[] => line.replace(/^\||\|$/g, '').split('|').map((c) => c.trim().replaceAll('`', ''));
  const header = cells(lines[i]!);
  assert.match(lines[i + 1]!, /^\|(\s*-+\s*\|)+$/, `table ${name} has no separator line`);
  const rows: Record<string, string>[] = [];
  for (let j = i + 2; j < lines.length && lines[j]!.startsWith('|'); j++) {
    const c = cells(lines[j]!);
    assert.equal(c.length, header.length, `table ${name} row ${j - i - 1} has ${c.length} cells, expected ${header.length}`);
    rows.push(Object.fromEntries(header.map((h, k) => [h, c[k]!])));
  }
  assert.ok(rows.length > 0, `table ${name} is empty`);
  return rows;
}

/** "24", "4p", "24 + 4p" evaluated for p parts. */
function evalOffset(expr: string, parts: number): number {
  const m = /^(?:(\d+))?\s*\+?\s*(?:(\d+)p)?$/.exec(expr);
  assert.ok(m && (m[1] !== undefined || m[2] !== undefined), `cannot read offset or size ${JSON.stringify(expr)}`);
  return Number(m[1] ?? 0) + Number(m[2] ?? 0) * parts;
}

/** "1..8" or "1" as [min, max]. */
function range(s: string): [number, number] {
  const m = /(\d+)(?:\.\.(\d+))?/.exec(s);
  assert.ok(m, `no number in ${JSON.stringify(s)}`);
  return [Number(m[1]), Number(m[2] ?? m[1])];
}

const enumKey = (wireName: string): string => wireName.toLowerCase().split('_').map((w) => w[0]!.toUpperCase() + w.slice(1)).join('');

interface FieldCheck {
  /** Expected value of each named field (numbers, bigint, byte arrays, arrays of u32). */
  values: Record<string, number | bigint | Uint8Array | number[] | 'payload' | 'zero' | string>;
  parts: number;
}

/** Reads every documented field of `bytes` at its documented offset and type; checks that the fields tile the message. */
function checkFields(table: string, bytes: Uint8Array, check: FieldCheck, startAt: number, payloadBytes: number): void {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let next = startAt;
  for (const row of specTable(table)) {
    const field = row.field!;
    const off = evalOffset(row.offset!, check.parts);
    assert.equal(off, next, `${table}: field ${field} at offset ${off}, expected ${next} (fields must be contiguous)`);
    const want = check.values[field];
    assert.ok(want !== undefined, `${table}: the test has no value for documented field ${field}`);
    let size: number;
    if (row.size === 'payload') {
      assert.equal(want, 'payload');
      size = payloadBytes;
    } else if (row.size === 'length') {
      size = Number(check.values.length);
      assert.equal(new TextDecoder().decode(bytes.subarray(off, off + size)), want);
    } else {
      size = evalOffset(row.size!, check.parts);
      const type = row.type!;
      const width = ({ u8: 1, u16: 2, u32: 4, u64: 8 } as Record<string, number>)[type];
      if (width !== undefined) assert.equal(size, width, `${table}.${field}: a ${type} is ${width} bytes, the table says ${size}`);
      if (type === 'u8') assert.equal(dv.getUint8(off), want, `${table}.${field}`);
      else if (type === 'u16') assert.equal(dv.getUint16(off, true), want, `${table}.${field}`);
      else if (type === 'u32') assert.equal(dv.getUint32(off, true), want, `${table}.${field}`);
      else if (type === 'u64') assert.equal(dv.getBigUint64(off, true), want, `${table}.${field}`);
      else if (type === 'u32 x parts') {
        assert.equal(size, 4 * check.parts);
        assert.deepEqual(Array.from({ length: check.parts }, (_, k) => dv.getUint32(off + 4 * k, true)), want, `${table}.${field}`);
      } else if (type === 'bytes') assert.deepEqual(bytes.subarray(off, off + size), want, `${table}.${field}`);
      else if (type === 'zero') {
        assert.equal(want, 'zero');
        assert.ok(bytes.subarray(off, off + size).every((b) => b === 0), `${table}.${field} must be zero`);
      } else assert.fail(`${table}: unknown type ${type} of field ${field}`);
    }
    next = off + size;
  }
  assert.equal(next, bytes.length, `${table}: the documented fields cover ${next} bytes of a ${bytes.length}-byte message`);
}

const N = PARAMETER_SETS[0]!.ringDegree;
const U = uploadBytes(PARAMETER_SETS[0]!);

function inputMessage(op: Op, group: ProjectionGroup, cols: number[], tokens: number) {
  const blocks = Array.from({ length: Math.ceil(tokens / N) }, (_, b) => cols.map((c, j) => new Uint8Array(c * N * U).fill(b * 16 + j + 1)));
  const seed = Uint8Array.from({ length: SEED_BYTES }, (_, i) => 0xa0 + i);
  return { masks: 'fresh' as const, paramsId: 1, requestId: 0x0102030405060708n, op, layer: 258, group, cols, tokens, seed, blocks };
}

test('PROTOCOL.md header table matches the codec: offsets, sizes, types, magic and version', () => {
  const msg = inputMessage(Op.Forward, 'o', [3], 5);
  const bytes = encodeEncryptedInput(msg);
  const rows = specTable('header');
  assert.equal(rows.reduce((s, r) => s + Number(r.size), 0), HEADER_BYTES);
  checkFields('header', bytes.subarray(0, HEADER_BYTES), {
    parts: 0,
    values: { magic: WIRE_MAGIC, version: WIRE_VERSION, type: MessageType.EncryptedInput, params_id: 1, request_id: msg.requestId },
  }, 0, 0);
  assert.equal(Number(range(rows.find((r) => r.field === 'version')!['value / limits']!)[0]), WIRE_VERSION);
  assert.match(doc, new RegExp(`^# The helora protocol, version ${WIRE_VERSION}$`, 'm'));
});

test('PROTOCOL.md message types, ops, groups and error codes are exactly the code\'s', () => {
  const types = specTable('message-types');
  assert.deepEqual(Object.fromEntries(types.map((r) => [enumKey(r.message!), Number(r.type)])), MessageType);

  const ops = specTable('ops');
  assert.deepEqual(Object.fromEntries(ops.map((r) => [enumKey(r.op!), Number(r.value)])), Op);

  const groups = specTable('groups');
  assert.deepEqual(groups.map((r) => r.group), [...PROJECTION_GROUPS]);
  for (const r of groups) {
    const g = r.group as ProjectionGroup;
    assert.equal(Number(r['wire id']), PROJECTION_GROUP_SPECS[g].wireId, `wire id of ${g}`);
    assert.deepEqual(r['members (output order)']!.split(',').map((s) => s.trim()), [...groupMembers(g)], `members of ${g}`);
    const parts = (s: string): number[] => s.split('/').map((x) => Number(x.trim()));
    assert.deepEqual(parts(r['forward: input parts / output parts']!), [inputParts(Op.Forward, g), outputParts(Op.Forward, g)], `forward parts of ${g}`);
    assert.deepEqual(parts(r['backward: input parts / output parts']!), [inputParts(Op.Backward, g), outputParts(Op.Backward, g)], `backward parts of ${g}`);
  }

  const codes = specTable('error-codes');
  assert.deepEqual(Object.fromEntries(codes.map((r) => [r.name!, Number(r.code)])), ServerErrorCode);
});

test('PROTOCOL.md ENCRYPTED_INPUT, ENCRYPTED_OUTPUT and ERROR tables match encoded messages field by field', () => {
  for (const [op, group, cols, tokens] of [[Op.Forward, 'qkv', [7], 3], [Op.Backward, 'qkv', [4, 2, 2], N + 1], [Op.Backward, 'gate_up', [5, 5], 1]] as const) {
    const msg = inputMessage(op, group, [...cols], tokens);
    const bytes = encodeEncryptedInput(msg);
    const payload = Math.ceil(tokens / N) * cols.reduce((s, c) => s + c, 0) * N * U;
    checkFields('encrypted-input', bytes, {
      parts: cols.length,
      values: {
        op, layer: msg.layer, group: PROJECTION_GROUP_SPECS[group].wireId, parts: cols.length, reserved: 'zero', masks: 0, cols: [...cols], tokens, seed: msg.seed, payload: 'payload',
      },
    }, HEADER_BYTES, payload);
    assert.equal(bytes.length, encryptedInputBytes(1, [...cols], tokens));
    assert.equal(bytes.length, 44 + 4 * cols.length + payload, 'the documented size formula');
    // Payload order: for block, for part (each part's bytes are filled with block * 16 + part + 1 above).
    const headerEnd = 44 + 4 * cols.length;
    const K = cols.reduce((s, c) => s + c, 0);
    msg.blocks.forEach((parts, b) => parts.forEach((_, j) => {
      const start = headerEnd + (b * K + cols.slice(0, j).reduce((s, c) => s + c, 0)) * N * U;
      assert.equal(bytes[start], b * 16 + j + 1);
      assert.equal(bytes[start + cols[j]! * N * U - 1], b * 16 + j + 1);
    }));
  }

  for (const [op, group, rows, tokens, terms] of [[Op.Forward, 'gate_up', [3, 3], 2, 1], [Op.Backward, 'down', [6], N + 2, 2]] as const) {
    const blocks = Array.from({ length: Math.ceil(tokens / N) }, () => rows.flatMap((r) => Array.from({ length: terms }, () => ({ a: new Uint32Array(r * N).fill(1), b: new Uint32Array(r * N).fill(2) }))));
    const msg = { masks: 'fresh' as const, paramsId: 1, requestId: 77n, op, layer: 9, group, rows: [...rows], tokens, terms, blocks };
    const bytes = encodeEncryptedOutput(msg);
    const payload = Math.ceil(tokens / N) * terms * rows.reduce((s, r) => s + r, 0) * N * 2 * downloadBytes(PARAMETER_SETS[0]!);
    checkFields('encrypted-output', bytes, {
      parts: rows.length,
      values: { op, layer: 9, group: PROJECTION_GROUP_SPECS[group].wireId, parts: rows.length, terms, reserved: 'zero', masks: 0, rows: [...rows], tokens, payload: 'payload' },
    }, HEADER_BYTES, payload);
    assert.equal(bytes.length, 28 + 4 * rows.length + payload, 'the documented size formula');
    assert.equal((28 + 4 * rows.length) % 4, 0, 'the payload starts 4-byte aligned');
  }

  const text = 'helora: wrong shape \u00e9';
  const err = encodeError({ paramsId: 0, requestId: 5n, code: ServerErrorCode.BadRequest, message: text });
  const len = new TextEncoder().encode(text).length;
  checkFields('error', err, { parts: 0, values: { code: ServerErrorCode.BadRequest, length: len, message: text } }, HEADER_BYTES, 0);
  assert.equal(range(specTable('error').find((r) => r.field === 'length')!['value / limits']!.replace('at most ', '0..'))[1], MAX_ERROR_MESSAGE_BYTES);
});

test('PROTOCOL.md parameter sets, limits, K_max and worked sizes match the code', () => {
  const params = specTable('params');
  assert.deepEqual(params.map((r) => Number(r.params_id)), PARAMETER_SETS.map((p) => p.id));
  for (const r of params) {
    const p = PARAMETER_SETS.find((s) => s.id === Number(r.params_id))!;
    assert.deepEqual(
      [r.name, r.N, r['log2 q'], r['plaintext bits P'], r['upload bits'], r['U (bytes)'], r['download bits'], r['D (bytes)'], r.secret, r['error sigma'], r['error tail cut'], r.security].map(String),
      [p.name, p.ringDegree, p.logQ, p.plaintextBits, p.uploadBits, uploadBytes(p), p.downloadBits, downloadBytes(p), p.secret, p.errorStd, p.errorTailCut, p.securityBits].map(String),
    );
    // The K_max formula of section 6.3.
    for (const actBits of [4, 6, 8, 12]) {
      assert.equal(Math.ceil(2 ** p.plaintextBits / (2 * 127 * (2 ** (actBits - 1) - 1))) - 1, maxInnerDim(p, actBits, 8));
    }
  }
  assert.match(doc, new RegExp(`\\(${maxInnerDim(PARAMETER_SETS[0]!, 8, 8)} for P = ${PARAMETER_SETS[0]!.plaintextBits} and act_bits = 8`));

  const limits = Object.fromEntries(specTable('limits').map((r) => [r.limit!, r.value!]));
  const expected: Record<string, [number, number]> = {
    'header bytes': [HEADER_BYTES, HEADER_BYTES],
    'seed bytes': [SEED_BYTES, SEED_BYTES],
    'parts per message': [MIN_PARTS, MAX_PARTS],
    'terms per part': [MIN_TERMS, MAX_TERMS],
    'error message bytes': [MAX_ERROR_MESSAGE_BYTES, MAX_ERROR_MESSAGE_BYTES],
    'default max_tokens': [DEFAULT_MAX_TOKENS, DEFAULT_MAX_TOKENS],
    'default act_bits': [DEFAULT_ACT_BITS, DEFAULT_ACT_BITS],
    'model info bytes': [MAX_MODEL_INFO_BYTES, MAX_MODEL_INFO_BYTES],
    'model info version': [MODEL_INFO_VERSION, MODEL_INFO_VERSION],
  };
  assert.deepEqual(Object.keys(limits).sort(), Object.keys(expected).sort());
  for (const [k, v] of Object.entries(expected)) assert.deepEqual(range(limits[k]!), v, `limit ${k}`);

  for (const r of specTable('sizes')) {
    const dims = r.dims!.split(',').map((s) => Number(s.trim()));
    const got = r.message === 'ENCRYPTED_INPUT' ? encryptedInputBytes(1, dims, Number(r.T)) : encryptedOutputBytes(1, dims, Number(r.T), Number(r.terms));
    assert.equal(Number(r.bytes), got, `worked size ${JSON.stringify(r)}`);
  }
});

test('PROTOCOL.md section 6.1: the mask key stream as documented (AES-128 on big-endian counter blocks) is expandMask', () => {
  const p = PARAMETER_SETS[0]!;
  const seed = Uint8Array.from({ length: SEED_BYTES }, (_, i) => i * 7 + 1);
  const block = 3;
  const features = 2;
  const want = expandMask(p, seed, block, features);
  // Written from the document: counter block = k (u32 BE) | 4 zero bytes | counter (u64 BE), encrypted with AES-128-ECB.
  const ecb = createCipheriv('aes-128-ecb', seed, null).setAutoPadding(false);
  const counters = Buffer.alloc(want.length);
  for (let c = 0; c * 16 < want.length; c++) {
    counters.writeUInt32BE(block, c * 16);
    counters.writeBigUInt64BE(BigInt(c), c * 16 + 8);
  }
  assert.deepEqual(new Uint8Array(ecb.update(counters)), want);
  assert.equal(want.length, features * N * 6, '6 bytes per mask coefficient');
});

/** A bearer token of 128 bits (32 hex digits), as the server requires. */
const TOKEN = '0123456789abcdef0123456789abcdef';

test('a real server: endpoints and auth as documented; its model info validates against docs/model-info.schema.json', async (t) => {
  const { dir, root } = writeTinyModel();
  const model = await ModelServer.fromFolder(dir, { threads: 0, maxTokens: 100 });
  const server = await startServer({ model, token: TOKEN, log: () => {} });
  t.after(async () => {
    await server.close();
    await model.close();
    removeDir(root);
  });
  const endpoints = specTable('endpoints');
  const tablePath = `${MASK_TABLE_PATH}/<layer>`;
  assert.deepEqual(endpoints.map((r) => r.path).sort(), [HEALTH_PATH, MODEL_INFO_PATH, WS_PATH, tablePath].sort());
  const base = server.url.replace(/^ws/, 'http');
  for (const r of endpoints) {
    assert.equal(r.method, 'GET');
    const anonymous = await fetch(base + (r.path === tablePath ? `${MASK_TABLE_PATH}/0` : r.path!));
    if (r.auth === 'none') assert.equal(anonymous.status, 200, `${r.path} without a token`);
    else {
      assert.equal(r.auth, 'bearer');
      assert.equal(anonymous.status, r.path === WS_PATH ? 404 : 401, `${r.path} without a token`); // a plain GET of the WS path is not an upgrade
    }
  }
  const health = await (await fetch(base + HEALTH_PATH)).json() as Record<string, unknown>;
  assert.deepEqual(Object.keys(health).sort(), ['model_hash', 'ok'], 'without the token: only the model hash');
  const counted = await (await fetch(base + HEALTH_PATH, { headers: { authorization: `Bearer ${TOKEN}` } })).json() as Record<string, unknown>;
  assert.deepEqual(Object.keys(counted).sort(), ['connections', 'model_hash', 'ok', 'params_id', 'queued', 'queued_bytes', 'requests', 'uptime_s']);

  const table = await fetch(`${base}${MASK_TABLE_PATH}/1`, { headers: { authorization: `Bearer ${TOKEN}`, range: 'bytes=8-' } });
  assert.equal(table.status, 206, 'a table download resumes from a byte offset');
  const res = await fetch(base + MODEL_INFO_PATH, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(res.status, 200);
  const info = await res.json() as Record<string, unknown>;
  const ajv = new Ajv({ allErrors: true, strict: true });
  const validate = ajv.compile(schema);
  assert.ok(validate(info), JSON.stringify(validate.errors));
  // The schema is not vacuous: each of these breaks it.
  const broken: [string, (d: any) => void][] = [
    ['format', (d) => { d.format = 'other'; }],
    ['hash', (d) => { d.hash = d.hash.toUpperCase(); }],
    ['params_id', (d) => { d.params_id = 0; }],
    ['extra field', (d) => { d.extra = 1; }],
    ['config field', (d) => { delete d.config.head_dim; }],
    ['scales count', (d) => { d.scales[0].qkv.pop(); }],
    ['scales base64', (d) => { d.scales[0].down[0] = 'not base64!'; }],
    ['mask table hash', (d) => { d.mask_tables.layers[0].sha256 = 'x'; }],
  ];
  for (const [what, f] of broken) {
    const d = structuredClone(info);
    f(d);
    assert.equal(validate(d), false, `the schema accepts a document with a bad ${what}`);
  }
});
