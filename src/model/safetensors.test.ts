import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensorsHeader, readSafetensorsMetadata, readTensors, writeSafetensors, MAX_HEADER_BYTES } from './safetensors.js';

const dir = mkdtempSync(join(tmpdir(), 'helora-st-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

function randn(n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (Math.random() * 2 - 1) * scale * 2 ** Math.floor(Math.random() * 20 - 10);
  return a;
}

/** Build a safetensors file by hand: header object + raw data bytes, optionally with a wrong length prefix. */
function rawFile(name: string, header: unknown, data: Uint8Array, lengthOverride?: bigint): string {
  const h = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(h.length));
  const path = join(dir, name);
  writeFileSync(path, Buffer.concat([len, h, data]));
  return path;
}

test('F32 round trip is bit-exact and reads only the requested tensors', () => {
  const a = randn(6 * 7);
  a[0] = -0; a[1] = Infinity; a[2] = 1e-45; a[3] = NaN;
  const b = randn(5);
  const path = join(dir, 'f32.safetensors');
  writeSafetensors(path, new Map([['a.weight', { shape: [6, 7], data: a }], ['b', { shape: [5], data: b }], ['empty', { shape: [0, 3], data: new Float32Array(0) }]]), { metadata: { format: 'pt', note: 'x' } });
  const back = readTensors(path);
  assert.deepEqual([...back.keys()].sort(), ['a.weight', 'b', 'empty']);
  assert.deepEqual(back.get('a.weight')!.shape, [6, 7]);
  assert.deepEqual(new Uint32Array(back.get('a.weight')!.data.buffer), new Uint32Array(a.buffer));
  assert.deepEqual(new Uint32Array(back.get('b')!.data.buffer), new Uint32Array(b.buffer));
  assert.equal(back.get('empty')!.data.length, 0);
  assert.deepEqual(readSafetensorsMetadata(path), { format: 'pt', note: 'x' });
  const only = readTensors(path, (n) => n === 'b');
  assert.deepEqual([...only.keys()], ['b']);
  // Header is padded so the data buffer starts 8-byte aligned.
  const raw = readFileSync(path);
  assert.equal(Number(raw.readBigUInt64LE(0)) % 8, 0);
  const info = readSafetensorsHeader(path).get('a.weight')!;
  assert.equal(info.dtype, 'F32');
  assert.equal(info.byteLength, 6 * 7 * 4);
});

test('writer rejects inconsistent tensors', () => {
  const p = join(dir, 'bad-write.safetensors');
  assert.throws(() => writeSafetensors(p, [{ name: 'x', shape: [2, 2], data: new Float32Array(3) }]), /has 3 values but shape \[2, 2\] needs 4/);
  assert.throws(() => writeSafetensors(p, [{ name: 'x', shape: [1], data: new Float32Array(1) }, { name: 'x', shape: [1], data: new Float32Array(1) }]), /duplicate/);
  assert.throws(() => writeSafetensors(p, [{ name: '__metadata__', shape: [1], data: new Float32Array(1) }]), /invalid tensor name/);
  assert.throws(() => writeSafetensors(p, [{ name: 'x', shape: [-1], data: new Float32Array(1) }]), /bad tensor dimension/);
});

// PyTorch is the independent implementation: it writes F32/F16/BF16 files that we read, and reads
// and rounds (float32 -> bfloat16) the file we write. The file layout is built in Python by hand
// (struct + json), since Debian's torch 1.13 has no safetensors package.
const PY = String.raw`
import json, struct, sys, torch
d = sys.argv[1]
def write(path, tensors):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors:
        b = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        dt = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[t.dtype]
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b); blobs.append(b)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h); f.write(b"".join(blobs))
def read(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n]); data = raw[8 + n:]
    out = {}
    for k, v in header.items():
        if k == "__metadata__": continue
        b, e = v["data_offsets"]
        dt = {"F32": torch.float32, "BF16": torch.bfloat16}[v["dtype"]]
        out[k] = torch.frombuffer(bytearray(data[b:e]), dtype=dt).reshape(v["shape"])
    return out
torch.manual_seed(0)
x = torch.randn(3, 4, 5) * 3
special = torch.tensor([0.0, -0.0, 1.0, 65504.0, 6.0e-8, 1.0e-5, -2.5, float("inf"), float("-inf"), 1e38, 1e-40])
f16 = torch.cat([torch.randn(100) * 100, torch.tensor([0.0, -0.0, 65504.0, 6.0e-8, 3.0e-5, float("inf"), -float("inf")])]).half()
write(d + "/torch.safetensors", [("x.f32", x), ("x.bf16", x.bfloat16()), ("s.bf16", special.bfloat16()), ("h.f16", f16.reshape(107, 1))])
bits = lambda t: t.float().flatten().view(torch.int32).tolist()  # float32 bit patterns (JSON has no inf/nan)
json.dump({"x": bits(x), "x_bf16": bits(x.bfloat16()), "s_bf16": bits(special.bfloat16()), "h": bits(f16)}, open(d + "/torch-ref.json", "w"))
# Read the file the TypeScript writer produced in BF16: torch's own rounding of the same float32 values must match bit for bit.
ours = read(d + "/ours-bf16.safetensors")
src = read(d + "/ours-f32.safetensors")
# NaN bit patterns differ between torch's scalar (0x7fc0) and vectorized (0xffff) paths: compare NaN-ness only.
def same(o, s):
    t = s.bfloat16()
    return torch.equal(torch.isnan(o), torch.isnan(t)) and torch.equal(o[~torch.isnan(o)].view(torch.int16), t[~torch.isnan(t)].view(torch.int16))
ok = all(same(ours[k], src[k]) for k in src)
print(json.dumps({"bf16_match": ok, "keys": sorted(ours.keys())}))
`;

test('interoperates with PyTorch: reads its F32/F16/BF16, writes BF16 it rounds identically', () => {
  const vals = randn(4096, 10);
  // Ties and edge cases of round-to-nearest-even plus NaN/inf/subnormals.
  const edge = new Float32Array(new Uint32Array([0x3f808000, 0x3f818000, 0x3f80c000, 0x3f807fff, 0x7f7fffff, 0xff7fffff, 0x00000001, 0x007fffff, 0x7f800000, 0x80000000, 0x7fc00000, 0x3f7fff80, 0x7f800001, 0xffc12345, 0x3f80ffff, 0x477fe000, 0x477ff000]).buffer);
  const src = new Map([['vals', { shape: [64, 64], data: vals }], ['edge', { shape: [edge.length], data: edge }]]);
  writeSafetensors(join(dir, 'ours-f32.safetensors'), src);
  writeSafetensors(join(dir, 'ours-bf16.safetensors'), src, { dtype: 'BF16' });
  const out = execFileSync('/usr/bin/python3', ['-c', PY, dir], { encoding: 'utf8' });
  const res = JSON.parse(out.trim().split('\n').pop()!);
  assert.equal(res.bf16_match, true);
  assert.deepEqual(res.keys, ['edge', 'vals']);

  const ref = JSON.parse(readFileSync(join(dir, 'torch-ref.json'), 'utf8'));
  const t = readTensors(join(dir, 'torch.safetensors'));
  const bitsOf = (a: Float32Array): number[] => Array.from(new Int32Array(a.buffer, a.byteOffset, a.length));
  assert.deepEqual(t.get('x.f32')!.shape, [3, 4, 5]);
  assert.deepEqual(bitsOf(t.get('x.f32')!.data), ref.x);
  assert.deepEqual(bitsOf(t.get('x.bf16')!.data), ref.x_bf16);
  assert.deepEqual(bitsOf(t.get('s.bf16')!.data), ref.s_bf16);
  assert.deepEqual(bitsOf(t.get('h.f16')!.data), ref.h);
  assert.deepEqual(t.get('h.f16')!.shape, [107, 1]);
});

test('malformed files are rejected with clear errors', () => {
  const data4 = new Uint8Array(16);
  const ok = { w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } };
  // sanity: the well-formed variant loads
  assert.equal(readTensors(rawFile('ok.safetensors', ok, data4)).get('w')!.data.length, 4);

  const cases: Array<[string, () => unknown, RegExp]> = [
    ['tiny', () => { const p = join(dir, 'tiny.safetensors'); writeFileSync(p, Buffer.alloc(5)); return readTensors(p); }, /shorter than the 8-byte header length/],
    ['truncated data', () => readTensors(rawFile('trunc.safetensors', ok, data4.subarray(0, 10))), /beyond the 10-byte data buffer/],
    ['header past EOF', () => readTensors(rawFile('hlen.safetensors', ok, data4, 1000n)), /runs past the end/],
    ['header over cap', () => readTensors(rawFile('hcap.safetensors', ok, data4, BigInt(MAX_HEADER_BYTES) + 1n)), /exceeds the .*cap/],
    ['header 2^64-1', () => readTensors(rawFile('hmax.safetensors', ok, data4, 0xffffffffffffffffn)), /exceeds the .*cap/],
    ['not json', () => readTensors(rawFile('nojson.safetensors', '{"w": ', data4)), /not valid JSON/],
    ['array header', () => readTensors(rawFile('arr.safetensors', [1, 2], data4)), /must be a JSON object/],
    ['bad dtype', () => readTensors(rawFile('dtype.safetensors', { w: { dtype: 'F33', shape: [4], data_offsets: [0, 16] } }, data4)), /unknown dtype "F33"/],
    ['wrong byte length', () => readTensors(rawFile('blen.safetensors', { w: { dtype: 'F32', shape: [3], data_offsets: [0, 16] } }, data4)), /needs 12 bytes but data_offsets span 16/],
    ['overlap', () => readTensors(rawFile('overlap.safetensors', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, data4)), /overlapping data_offsets/],
    ['reversed', () => readTensors(rawFile('rev.safetensors', { a: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, data4)), /reversed/],
    ['negative dim', () => readTensors(rawFile('neg.safetensors', { a: { dtype: 'F32', shape: [-4], data_offsets: [0, 16] } }, data4)), /non-negative integers/],
    ['fractional dim', () => readTensors(rawFile('frac.safetensors', { a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 16] } }, data4)), /non-negative integers/],
    ['overflowing shape', () => readTensors(rawFile('ovf.safetensors', { a: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 16] } }, data4)), /overflows/],
    ['offsets not ints', () => readTensors(rawFile('offs.safetensors', { a: { dtype: 'F32', shape: [4], data_offsets: ['0', 16] } }, data4)), /data_offsets must be two non-negative integers/],
    ['missing offsets', () => readTensors(rawFile('nooffs.safetensors', { a: { dtype: 'F32', shape: [4] } }, data4)), /data_offsets/],
    ['bad metadata', () => readTensors(rawFile('meta.safetensors', { __metadata__: { a: 1 }, ...ok }, data4)), /__metadata__.a must be a string/],
    ['undecodable dtype', () => readTensors(rawFile('i64.safetensors', { a: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, data4)), /dtype I64; only F32, F16 and BF16/],
  ];
  for (const [what, fn, re] of cases) {
    assert.throws(fn, (e: Error) => re.test(e.message) && e.message.startsWith('helora: safetensors'), `${what}: expected ${re}`);
  }
  // The header-only reader lists non-float dtypes without failing.
  assert.equal(readSafetensorsHeader(join(dir, 'i64.safetensors')).get('a')!.dtype, 'I64');
});
