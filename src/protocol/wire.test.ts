import { test } from 'node:test';
import { PARAMETER_SETS, RLWE_N2048_Q44 } from '../crypto/params.js';
import { PROJECTION_GROUP_SPECS, PROJECTION_GROUPS, type ProjectionGroup } from '../model/projections.js';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  WireError, type WireErrorCode, encodeEncryptedInput, decodeEncryptedInput, encodeEncryptedOutput, decodeEncryptedOutput,
  encodeError, decodeError, decodeMessage, peekHeader, Op, MessageType, type EncryptedInputMessage,
  type EncryptedOutputMessage, inputParts, outputParts, encryptedInputBytes, encryptedOutputBytes, serverCodeFor,
  ServerErrorCode, WIRE_PARAMS, wireParams,
} from './wire.js';

// The format, written out independently of the code (see the layout comment in wire.ts).
const N = 2048, UP = 5, SEED = 16, VERSION = 3;
const OFF = { magic: 0, version: 4, type: 6, params: 7, reqId: 8, op: 16, layer: 17, group: 19, parts: 20, reserved: 21, dims: 24 };
const tokensOff = (parts: number) => 24 + 4 * parts;
const inputHeaderLen = (parts: number) => 24 + 4 * parts + 4 + SEED;
const outputHeaderLen = (parts: number) => 24 + 4 * parts + 4;

function rngBytes(n: number): Uint8Array {
  return new Uint8Array(randomBytes(n));
}

function makeInput(op: Op, group: ProjectionGroup, cols: number[], tokens: number, requestId = 7n, layer = 3): EncryptedInputMessage {
  const blocks: Uint8Array[][] = [];
  for (let b = 0; b < Math.ceil(tokens / N); b++) blocks.push(cols.map((c) => rngBytes(c * N * UP)));
  return { masks: 'fresh', paramsId: 1, requestId, op, layer, group, cols, tokens, seed: rngBytes(SEED), blocks };
}

function makeOutput(op: Op, group: ProjectionGroup, rows: number[], tokens: number, requestId = 9n, layer = 5, terms = 1): EncryptedOutputMessage {
  const blocks = [];
  for (let b = 0; b < Math.ceil(tokens / N); b++) {
    blocks.push(rows.flatMap((r) => Array.from({ length: terms }, () => {
      const a = new Uint32Array(r * N), bb = new Uint32Array(r * N);
      crypto.getRandomValues(a); crypto.getRandomValues(bb);
      a[0] = 0xffffffff; bb[bb.length - 1] = 0;
      return { a, b: bb };
    })));
  }
  return { masks: 'fresh', paramsId: 1, requestId, op, layer, group, rows, tokens, terms, blocks };
}

function expectCode(fn: () => unknown, code: WireErrorCode, msg?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof WireError, `expected WireError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (msg) assert.match(e.message, msg);
    return true;
  });
}

function patch(bytes: Uint8Array, f: (dv: DataView) => void): Uint8Array {
  const c = bytes.slice();
  f(new DataView(c.buffer));
  return c;
}

test('part counts follow op and group', () => {
  assert.deepEqual(PROJECTION_GROUPS.map((g) => inputParts(Op.Forward, g)), [1, 1, 1, 1]);
  assert.deepEqual(PROJECTION_GROUPS.map((g) => inputParts(Op.Backward, g)), [3, 1, 2, 1]);
  assert.deepEqual(PROJECTION_GROUPS.map((g) => outputParts(Op.Forward, g)), [3, 1, 2, 1]);
  assert.deepEqual(PROJECTION_GROUPS.map((g) => outputParts(Op.Backward, g)), [1, 1, 1, 1]);
});

test('ENCRYPTED_INPUT round trip for every shape, header layout as documented, zero-copy views', () => {
  const cases: [Op, ProjectionGroup, number[], number][] = [
    [Op.Forward, 'qkv', [3], 1],
    [Op.Forward, 'down', [2], 2048],
    [Op.Forward, 'gate_up', [1], 2049],
    [Op.Backward, 'qkv', [4, 2, 2], 100],
    [Op.Backward, 'gate_up', [3, 3], 4097],
    [Op.Backward, 'o', [1], 5],
  ];
  for (const [op, group, cols, tokens] of cases) {
    const m = makeInput(op, group, cols, tokens, 0xfedcba9876543210n, 65535);
    const bytes = encodeEncryptedInput(m);
    const blocks = Math.ceil(tokens / N);
    const expectLen = inputHeaderLen(cols.length) + blocks * cols.reduce((s, c) => s + c, 0) * N * UP;
    assert.equal(bytes.length, expectLen);
    assert.equal(encryptedInputBytes(1, cols, tokens), expectLen);
    assert.deepEqual(Array.from(bytes.subarray(0, 4)), [0x48, 0x4c, 0x52, 0x41]);
    const dv = new DataView(bytes.buffer);
    assert.equal(dv.getUint16(OFF.version, true), VERSION);
    assert.equal(bytes[OFF.type], 1);
    assert.equal(bytes[OFF.params], 1);
    assert.equal(dv.getBigUint64(OFF.reqId, true), 0xfedcba9876543210n);
    assert.equal(bytes[OFF.op], op);
    assert.equal(dv.getUint16(OFF.layer, true), 65535);
    assert.equal(bytes[OFF.group], PROJECTION_GROUP_SPECS[group].wireId);
    assert.equal(bytes[OFF.parts], cols.length);
    cols.forEach((c, i) => assert.equal(dv.getUint32(OFF.dims + 4 * i, true), c));
    assert.equal(dv.getUint32(tokensOff(cols.length), true), tokens);
    assert.deepEqual(bytes.subarray(tokensOff(cols.length) + 4, tokensOff(cols.length) + 4 + SEED), m.seed);

    const d = decodeEncryptedInput(bytes);
    assert.deepEqual(d, m);
    assert.equal(d.blocks.length, blocks);
    for (const b of d.blocks) for (const p of b) assert.equal(p.buffer, bytes.buffer); // views, not copies
    const h = peekHeader(bytes);
    assert.deepEqual(h, { version: VERSION, type: MessageType.EncryptedInput, paramsId: 1, requestId: 0xfedcba9876543210n });
    const any = decodeMessage(bytes);
    assert.equal(any.type, MessageType.EncryptedInput);
    assert.deepEqual(any.message, m);
  }
});

test('ENCRYPTED_OUTPUT round trip, zero-copy when aligned, copies when not', () => {
  const cases: [Op, ProjectionGroup, number[], number][] = [
    [Op.Forward, 'qkv', [4, 2, 2], 3],
    [Op.Forward, 'gate_up', [3, 3], 2049],
    [Op.Backward, 'qkv', [5], 2048],
    [Op.Backward, 'down', [1], 1],
  ];
  for (const [op, group, rows, tokens] of cases) {
    const m = makeOutput(op, group, rows, tokens);
    const bytes = encodeEncryptedOutput(m);
    const expectLen = outputHeaderLen(rows.length) + Math.ceil(tokens / N) * rows.reduce((s, r) => s + r, 0) * N * 8;
    assert.equal(bytes.length, expectLen);
    assert.equal(encryptedOutputBytes(1, rows, tokens), expectLen);
    assert.equal(bytes[OFF.reserved], 1, 'terms byte');
    // payload: a then b per part, u32 little-endian
    const dv = new DataView(bytes.buffer);
    const p0 = outputHeaderLen(rows.length);
    assert.equal(dv.getUint32(p0, true), m.blocks[0][0].a[0]);
    assert.equal(dv.getUint32(p0 + 4 * rows[0] * N, true), m.blocks[0][0].b[0]);
    const d = decodeEncryptedOutput(bytes);
    assert.deepEqual(d, m);
    assert.equal(d.blocks[0][0].a.buffer, bytes.buffer);
    // the same bytes at an odd offset inside a larger buffer
    const host = new Uint8Array(bytes.length + 3);
    host.set(bytes, 1);
    const odd = host.subarray(1, 1 + bytes.length);
    const d2 = decodeEncryptedOutput(odd);
    assert.deepEqual(d2, m);
    assert.notEqual(d2.blocks[0][0].a.buffer, host.buffer);
    assert.equal(decodeMessage(bytes).type, MessageType.EncryptedOutput);
  }
});

test('ENCRYPTED_OUTPUT with K-chunk terms: byte 21 carries the count, payload is part-major then term', () => {
  const rows = [3, 2];
  for (const [terms, tokens] of [[2, 5], [3, 2049], [64, 1]] as const) {
    const m = makeOutput(Op.Forward, 'gate_up', rows, tokens, 11n, 7, terms);
    const bytes = encodeEncryptedOutput(m);
    const nb = Math.ceil(tokens / N);
    const expectLen = outputHeaderLen(2) + nb * terms * 5 * N * 8;
    assert.equal(bytes.length, expectLen);
    assert.equal(encryptedOutputBytes(1, rows, tokens, terms), expectLen);
    assert.equal(bytes[OFF.parts], 2);
    assert.equal(bytes[OFF.reserved], terms);
    assert.equal(bytes[OFF.reserved + 1], 0);
    assert.equal(bytes[OFF.reserved + 2], 0);
    // the second matrix of block 0 is part 0, term 1: it starts after part 0 term 0's a and b
    const dv = new DataView(bytes.buffer);
    const p0 = outputHeaderLen(2);
    assert.equal(dv.getUint32(p0 + 2 * 4 * 3 * N + 4, true), m.blocks[0][1].a[1]);
    // the first matrix of part 1 follows all terms of part 0
    assert.equal(dv.getUint32(p0 + terms * 2 * 4 * 3 * N + 8, true), m.blocks[0][terms].a[2]);
    const d = decodeEncryptedOutput(bytes);
    assert.equal(d.terms, terms);
    assert.equal(d.blocks[0].length, 2 * terms);
    assert.deepEqual(d, m);
  }
  const good = encodeEncryptedOutput(makeOutput(Op.Forward, 'o', [1], 1, 1n, 0, 2));
  for (const t of [0, 65, 255]) expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint8(OFF.reserved, t))), 'bad_shape', /1\.\.64/);
  // claiming 1 term leaves the second term's bytes trailing; claiming 3 runs past the end
  expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint8(OFF.reserved, 1))), 'trailing_bytes');
  expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint8(OFF.reserved, 3))), 'truncated');
  expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint8(OFF.reserved + 1, 1))), 'bad_field');
  // the last byte is the masks byte: 1 (table) means b only, so a and b leave bytes trailing
  expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint8(OFF.reserved + 2, 1))), 'trailing_bytes');
  expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint8(OFF.reserved + 2, 2))), 'bad_field', /masks byte 2/);
  // an input keeps the terms byte reserved (and the next); its masks byte is the third
  const inp = encodeEncryptedInput(makeInput(Op.Forward, 'o', [1], 1));
  for (const i of [0, 1]) expectCode(() => decodeMessage(patch(inp, (dv) => dv.setUint8(OFF.reserved + i, 2))), 'bad_field');
  expectCode(() => decodeMessage(patch(inp, (dv) => dv.setUint8(OFF.reserved + 2, 2))), 'bad_field', /masks byte 2/);
  expectCode(() => decodeMessage(patch(inp, (dv) => dv.setUint8(OFF.reserved + 2, 1))), 'bad_field', /all-zero seed/);
  const o = makeOutput(Op.Forward, 'o', [1], 1, 1n, 0, 2);
  expectCode(() => encodeEncryptedOutput({ ...o, terms: 1 }), 'bad_shape');
  expectCode(() => encodeEncryptedOutput({ ...o, terms: 65 }), 'bad_shape');
  expectCode(() => encodeEncryptedOutput({ ...o, terms: 1.5 }), 'bad_shape');
});

test('ERROR round trip, UTF-8, truncation on a character boundary, params id 0 allowed', () => {
  for (const message of ['', 'helora: layer 99 does not exist', 'naïve — 测试 🚀', '\u{feff}bom kept']) {
    const bytes = encodeError({ paramsId: 0, requestId: 42n, code: 5, message });
    assert.equal(bytes.length, 16 + 4 + Buffer.byteLength(message));
    assert.deepEqual(decodeError(bytes), { paramsId: 0, requestId: 42n, code: 5, message });
    assert.equal(decodeMessage(bytes).type, MessageType.Error);
  }
  const long = encodeError({ paramsId: 1, requestId: 1n, code: 65535, message: '€'.repeat(400) }); // 1200 bytes
  const d = decodeError(long);
  assert.equal(d.message, '€'.repeat(341)); // 1023 bytes: the 342nd would cross 1024
  assert.equal(d.code, 65535);
  expectCode(() => encodeError({ paramsId: 1, requestId: 1n, code: 70000, message: '' }), 'bad_field');
  expectCode(() => encodeError({ paramsId: 9, requestId: 1n, code: 1, message: '' }), 'unknown_params');
});

test('truncation at every length is reported as truncated', () => {
  const msgs = [
    encodeEncryptedInput(makeInput(Op.Backward, 'gate_up', [1, 1], 1)),
    encodeEncryptedOutput(makeOutput(Op.Forward, 'o', [1], 1)),
    encodeError({ paramsId: 1, requestId: 3n, code: 1, message: 'boom' }),
  ];
  for (const full of msgs) {
    for (let len = 0; len < full.length; len++) {
      const cut = full.subarray(0, len);
      expectCode(() => decodeMessage(cut), 'truncated');
      if (len < 16) expectCode(() => peekHeader(cut), 'truncated');
    }
  }
});

test('bad magic, version, type, params id', () => {
  const good = encodeEncryptedInput(makeInput(Op.Forward, 'qkv', [1], 1));
  for (let i = 0; i < 4; i++) expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint8(i, dv.getUint8(i) ^ 0x20))), 'bad_magic');
  for (const v of [0, 1, 2, 4, 0xffff]) expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint16(OFF.version, v, true))), 'bad_version', /expected 3/);
  for (const t of [0, 4, 5, 255]) expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint8(OFF.type, t))), 'bad_type');
  for (const p of [0, 2, 255]) expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint8(OFF.params, p))), 'unknown_params');
  // each typed decoder rejects the other types
  expectCode(() => decodeEncryptedOutput(good), 'bad_type');
  expectCode(() => decodeError(good), 'bad_type');
  expectCode(() => decodeEncryptedInput(encodeError({ paramsId: 0, requestId: 0n, code: 1, message: 'x' })), 'bad_type');
  // a bad magic on a 3-byte or empty message is still a clean WireError
  expectCode(() => decodeMessage(new Uint8Array(0)), 'truncated');
});

test('op, group, parts, reserved bytes', () => {
  const good = encodeEncryptedInput(makeInput(Op.Forward, 'qkv', [1], 1));
  for (const op of [0, 3, 255]) expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint8(OFF.op, op))), 'bad_field');
  for (const g of [0, 5, 255]) expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint8(OFF.group, g))), 'bad_field');
  for (const p of [0, 9, 255]) expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint8(OFF.parts, p))), 'bad_shape', /1\.\.8/);
  // forward qkv with 3 inputs: parts must match the op/group
  expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint8(OFF.parts, 3))), 'bad_shape', /expected 1/);
  // backward qkv with 1 part
  expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint8(OFF.op, 2))), 'bad_shape', /expected 3/);
  for (let i = 0; i < 3; i++) expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint8(OFF.reserved + i, 1))), 'bad_field');
  const out = encodeEncryptedOutput(makeOutput(Op.Backward, 'qkv', [1], 1));
  expectCode(() => decodeMessage(patch(out, (dv) => dv.setUint8(OFF.op, 1))), 'bad_shape', /expected 3/);
});

test('zero or huge tokens / cols, custom limits', () => {
  const good = encodeEncryptedInput(makeInput(Op.Forward, 'o', [1], 1));
  expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint32(tokensOff(1), 0, true))), 'bad_shape', /tokens is 0/);
  expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint32(OFF.dims, 0, true))), 'bad_shape', /cols\[0\] is 0/);
  expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint32(tokensOff(1), 65537, true))), 'too_large', /65536/);
  expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint32(OFF.dims, 65537, true))), 'too_large');
  expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint32(tokensOff(1), 0xffffffff, true))), 'too_large');
  // within token/col limits but the implied message is over maxBytes (65536 tokens x 65536 cols)
  expectCode(() => decodeMessage(patch(good, (dv) => { dv.setUint32(tokensOff(1), 65536, true); dv.setUint32(OFF.dims, 65536, true); })), 'too_large', /exceeds the limit/);
  // custom limits
  expectCode(() => decodeMessage(good, { maxBytes: good.length - 1 }), 'too_large');
  assert.equal(decodeMessage(good, { maxBytes: good.length }).type, MessageType.EncryptedInput);
  expectCode(() => decodeMessage(patch(good, (dv) => dv.setUint32(OFF.dims, 2, true)), { maxCols: 1 }), 'too_large');
  assert.throws(() => decodeMessage(good, { maxTokens: 0 }), /maxTokens must be a positive integer/);
  const out = encodeEncryptedOutput(makeOutput(Op.Forward, 'down', [1], 1));
  expectCode(() => decodeMessage(patch(out, (dv) => dv.setUint32(OFF.dims, 0, true))), 'bad_shape', /rows\[0\] is 0/);
  expectCode(() => decodeMessage(patch(out, (dv) => dv.setUint32(tokensOff(1), 0, true))), 'bad_shape');
});

test('payload length must match the header exactly', () => {
  for (const full of [
    encodeEncryptedInput(makeInput(Op.Forward, 'o', [2], 2048)),
    encodeEncryptedOutput(makeOutput(Op.Forward, 'gate_up', [1, 2], 1)),
  ]) {
    expectCode(() => decodeMessage(full.subarray(0, full.length - 1)), 'truncated');
    const longer = new Uint8Array(full.length + 1);
    longer.set(full);
    expectCode(() => decodeMessage(longer), 'trailing_bytes', /1 bytes after/);
    // header claims a second block the payload does not have
    expectCode(() => decodeMessage(patch(full, (dv) => dv.setUint32(tokensOff(full[OFF.parts]), 2049, true))), 'truncated');
    // header claims fewer features than present (the last part has 2)
    const last = OFF.dims + 4 * (full[OFF.parts] - 1);
    const fewer = patch(full, (dv) => dv.setUint32(last, dv.getUint32(last, true) - 1, true));
    expectCode(() => decodeMessage(fewer), 'trailing_bytes');
  }
  const err = encodeError({ paramsId: 1, requestId: 1n, code: 2, message: 'abc' });
  const errLong = new Uint8Array(err.length + 2);
  errLong.set(err);
  expectCode(() => decodeMessage(errLong), 'trailing_bytes');
  expectCode(() => decodeMessage(patch(err, (dv) => dv.setUint16(18, 1025, true))), 'too_large', /1024/);
  expectCode(() => decodeMessage(patch(err, (dv) => dv.setUint16(18, 1000, true))), 'truncated');
  expectCode(() => decodeMessage(patch(err, (dv) => dv.setUint8(20, 0xff))), 'bad_field', /UTF-8/);
});

test('hostile lengths fail fast, before any allocation', () => {
  // 2^32-1 tokens and 2^32-1 columns claimed in a 64-byte message, with limits raised to the maximum
  const hostile = new Uint8Array(inputHeaderLen(1));
  const dv = new DataView(hostile.buffer);
  hostile.set([0x48, 0x4c, 0x52, 0x41]);
  dv.setUint16(OFF.version, VERSION, true);
  hostile[OFF.type] = 1; hostile[OFF.params] = 1;
  hostile[OFF.op] = 1; hostile[OFF.group] = 2; hostile[OFF.parts] = 1;
  dv.setUint32(OFF.dims, 0xffffffff, true);
  dv.setUint32(tokensOff(1), 0xffffffff, true);
  const huge = { maxTokens: 2 ** 32, maxCols: 2 ** 32, maxBytes: Number.MAX_SAFE_INTEGER };
  const before = process.memoryUsage().arrayBuffers;
  const t0 = performance.now();
  for (let i = 0; i < 1000; i++) {
    expectCode(() => decodeMessage(hostile), 'too_large');
    expectCode(() => decodeMessage(hostile, huge), 'too_large'); // 2^69 bytes > 2^53
    dv.setUint32(OFF.dims, 1, true);
    expectCode(() => decodeMessage(hostile, huge), 'truncated'); // 2^21 blocks x 10 KiB: fits the limit, not the bytes
    dv.setUint32(OFF.dims, 0xffffffff, true);
  }
  assert.ok(performance.now() - t0 < 2000);
  assert.ok(process.memoryUsage().arrayBuffers - before < 16 * 1024 * 1024);
  // the same for outputs: a header-only message claiming a huge payload
  const hostileOut = new Uint8Array(outputHeaderLen(1));
  hostileOut.set(hostile.subarray(0, 24));
  hostileOut[OFF.type] = 2;
  hostileOut[OFF.reserved] = 64; // the most terms: the largest payload a header can claim
  new DataView(hostileOut.buffer).setUint32(OFF.dims, 65536, true);
  new DataView(hostileOut.buffer).setUint32(tokensOff(1), 65536, true);
  expectCode(() => decodeMessage(hostileOut), 'too_large');
  expectCode(() => decodeMessage(hostileOut, huge), 'truncated');
});

test('encoders reject inconsistent messages', () => {
  const m = makeInput(Op.Forward, 'o', [2], 10);
  expectCode(() => encodeEncryptedInput({ ...m, cols: [2, 2] }), 'bad_shape');
  expectCode(() => encodeEncryptedInput({ ...m, tokens: 3000 }), 'bad_shape', /blocks/);
  expectCode(() => encodeEncryptedInput({ ...m, cols: [3] }), 'bad_shape', /expected 30720/);
  expectCode(() => encodeEncryptedInput({ ...m, seed: new Uint8Array(32) }), 'bad_shape'); // version 1's seed size
  expectCode(() => encodeEncryptedInput({ ...m, layer: 65536 }), 'bad_field');
  expectCode(() => encodeEncryptedInput({ ...m, requestId: -1n }), 'bad_field');
  expectCode(() => encodeEncryptedInput({ ...m, requestId: 2n ** 64n }), 'bad_field');
  expectCode(() => encodeEncryptedInput({ ...m, op: 3 as Op }), 'bad_field');
  expectCode(() => encodeEncryptedInput({ ...m, paramsId: 2 }), 'unknown_params');
  expectCode(() => encodeEncryptedInput({ ...m, tokens: 0, blocks: [] }), 'bad_shape');
  const o = makeOutput(Op.Forward, 'o', [1], 1);
  expectCode(() => encodeEncryptedOutput({ ...o, rows: [2] }), 'bad_shape');
  expectCode(() => encodeEncryptedOutput({ ...o, group: 'qkv' }), 'bad_shape', /needs 3 parts/);
});

test('public-mask messages: the masks byte, an all-zero seed, answers with b only (4 bytes per value)', () => {
  const inp = { ...makeInput(Op.Backward, 'gate_up', [3, 3], 2049), masks: 'table' as const, seed: new Uint8Array(SEED) };
  const bytes = encodeEncryptedInput(inp);
  assert.equal(bytes[OFF.reserved + 2], 1);
  assert.deepEqual(decodeMessage(bytes), { type: MessageType.EncryptedInput, message: inp });
  expectCode(() => encodeEncryptedInput({ ...inp, seed: rngBytes(SEED) }), 'bad_field', /all-zero seed/);
  const fresh = makeOutput(Op.Forward, 'gate_up', [3, 2], 2049, 11n, 7, 2);
  const out = { ...fresh, masks: 'table' as const, blocks: fresh.blocks.map((row) => row.map((c) => ({ a: new Uint32Array(0), b: c.b }))) };
  const ob = encodeEncryptedOutput(out);
  assert.equal(ob.length, outputHeaderLen(2) + 2 * 2 * 5 * N * 4);
  assert.equal(encryptedOutputBytes(1, [3, 2], 2049, 2, 'table'), ob.length);
  assert.equal(encryptedOutputBytes(1, [3, 2], 2049, 2, 'fresh') - outputHeaderLen(2), 2 * (ob.length - outputHeaderLen(2)), 'half the download');
  assert.equal(ob[OFF.reserved + 2], 1);
  assert.deepEqual(decodeMessage(ob), { type: MessageType.EncryptedOutput, message: out });
  expectCode(() => encodeEncryptedOutput({ ...out, masks: 'fresh' }), 'bad_shape', /a and b/);
});

test('server error codes for decode failures', () => {
  assert.equal(serverCodeFor(new WireError('bad_version', 'x')), ServerErrorCode.UnsupportedVersion);
  assert.equal(serverCodeFor(new WireError('unknown_params', 'x')), ServerErrorCode.UnknownParams);
  assert.equal(serverCodeFor(new WireError('too_large', 'x')), ServerErrorCode.TooLarge);
  assert.equal(serverCodeFor(new WireError('truncated', 'x')), ServerErrorCode.Malformed);
  assert.deepEqual(WIRE_PARAMS.get(1), { id: 1, ringDegree: 2048, uploadBytes: 5, downloadBytes: 4 });
  // codes are part of the protocol: distinct, stable numbers
  assert.deepEqual(Object.values(ServerErrorCode), [1, 2, 3, 4, 5, 6, 7, 8]);
});

test("the wire's view of every parameter set is derived from src/crypto/params.ts", () => {
  assert.deepEqual([...WIRE_PARAMS.keys()], PARAMETER_SETS.map((p) => p.id));
  const p = RLWE_N2048_Q44;
  assert.deepEqual(WIRE_PARAMS.get(p.id), { id: p.id, ringDegree: p.ringDegree, uploadBytes: Math.ceil(p.uploadBits / 8), downloadBytes: p.downloadBits / 8 });
  assert.deepEqual(wireParams({ ...p, id: 9, ringDegree: 4096, uploadBits: 48 }), { id: 9, ringDegree: 4096, uploadBytes: 6, downloadBytes: 4 });
  assert.throws(() => wireParams({ ...p, downloadBits: 40 }), /5-byte values/);
});

test('group wire ids are part of the protocol: stable numbers', () => {
  assert.deepEqual(PROJECTION_GROUPS.map((g) => [g, PROJECTION_GROUP_SPECS[g].wireId]), [['qkv', 1], ['o', 2], ['gate_up', 3], ['down', 4]]);
});

/** Decodes, and demands either a WireError or a decode that re-encodes to the same bytes. */
function fuzzOne(bytes: Uint8Array): 'ok' | WireErrorCode {
  let d;
  try {
    d = decodeMessage(bytes);
  } catch (e) {
    if (e instanceof WireError) return e.code;
    throw new Error(`non-WireError ${String(e)} on ${Buffer.from(bytes.subarray(0, 64)).toString('hex')}`);
  }
  const re = d.type === MessageType.EncryptedInput ? encodeEncryptedInput(d.message)
    : d.type === MessageType.EncryptedOutput ? encodeEncryptedOutput(d.message) : encodeError(d.message);
  assert.deepEqual(re, bytes, 'a decoded message must re-encode to the same bytes');
  return 'ok';
}

test('fuzz: random strings and single-byte mutations give a valid decode or a WireError', () => {
  const seen = new Map<string, number>();
  const count = (k: string) => seen.set(k, (seen.get(k) ?? 0) + 1);
  for (let i = 0; i < 3000; i++) {
    const b = rngBytes(Math.floor(Math.random() * 120));
    if (i % 2 === 0 && b.length >= 8) { // get past the magic/version check half of the time
      b.set([0x48, 0x4c, 0x52, 0x41, 1, 0]);
      b[6] = 1 + (b[6] % 3);
      b[7] = b[7] % 2;
      if (b.length > 20) b[20] = b[20] % 4;
    }
    count(fuzzOne(new Uint8Array(b)));
  }
  const valid = [
    encodeEncryptedInput(makeInput(Op.Backward, 'qkv', [1, 1, 1], 1)),
    encodeEncryptedInput(makeInput(Op.Forward, 'gate_up', [1], 2049)),
    encodeEncryptedOutput(makeOutput(Op.Forward, 'qkv', [1, 1, 1], 1)),
    encodeError({ paramsId: 1, requestId: 5n, code: 1, message: 'é error ✓' }),
  ];
  for (const v of valid) {
    for (let i = 0; i < 1500; i++) {
      const m = v.slice();
      // mostly header bytes, where the structure is
      const pos = i % 3 === 0 ? Math.floor(Math.random() * m.length) : Math.floor(Math.random() * Math.min(m.length, 80));
      m[pos] = i % 5 === 0 ? m[pos] ^ (1 << (i % 8)) : Math.floor(Math.random() * 256);
      count(fuzzOne(m));
    }
    for (let i = 0; i < 200; i++) { // random cuts and extensions
      const cut = Math.floor(Math.random() * (v.length + 40));
      const m = new Uint8Array(cut);
      m.set(v.subarray(0, Math.min(cut, v.length)));
      count(fuzzOne(m));
    }
  }
  // the fuzz reached deep into the decoder, not only the magic check
  for (const k of ['ok', 'truncated', 'bad_magic', 'bad_version', 'bad_type', 'unknown_params', 'bad_field', 'bad_shape', 'too_large', 'trailing_bytes']) {
    assert.ok((seen.get(k) ?? 0) > 0, `fuzz never produced ${k}: ${JSON.stringify([...seen])}`);
  }
});
