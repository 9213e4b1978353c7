import { test } from 'node:test';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { RLWE_N2048_Q44, SecretKey } from '../crypto/index.js';
import { stackBackwardInput } from '../linear/client.js';
import type { FrozenLinearProvider } from '../model/frozen.js';
import type { ProjectionGroup } from '../model/projections.js';
import { LlamaModel } from '../model/llama.js';
import { loadModelFolder } from '../model/loader.js';
import { LoraAdapter } from '../model/lora.js';
import { prepareBackwardInput, quantizePerToken } from '../quant/quantize.js';
import { decodeEncryptedInput } from '../protocol/wire.js';
import { RemoteEncryptedProvider } from './client.js';
import { ModelServer } from './model-server.js';
import { startServer } from './server.js';
import { removeDir, writeTinyModel } from './test-support.js';

/** Shortest needle: 8 bytes, so a chance match in ~30 MB of uniform bytes has probability ~2e-12 per needle. */
const MIN_NEEDLE = 8;

interface Hit { what: string; channel: number; offset: number }

/** Finds any needle in any haystack (prefix map on the first 4 bytes, then a full compare). */
function findAny(haystacks: Uint8Array[], needles: { what: string; bytes: Uint8Array }[]): Hit | null {
  const byPrefix = new Map<number, { what: string; bytes: Uint8Array }[]>();
  for (const n of needles) {
    assert.ok(n.bytes.length >= MIN_NEEDLE, `needle ${n.what} is too short`);
    const k = new DataView(n.bytes.buffer, n.bytes.byteOffset, 4).getUint32(0, true);
    const list = byPrefix.get(k);
    if (list) list.push(n); else byPrefix.set(k, [n]);
  }
  for (let h = 0; h < haystacks.length; h++) {
    const hay = haystacks[h];
    const dv = new DataView(hay.buffer, hay.byteOffset, hay.byteLength);
    for (let i = 0; i + 4 <= hay.length; i++) {
      const list = byPrefix.get(dv.getUint32(i, true));
      if (!list) continue;
      for (const n of list) {
        if (i + n.bytes.length > hay.length) continue;
        let same = true;
        for (let j = 4; j < n.bytes.length && same; j++) same = hay[i + j] === n.bytes[j];
        if (same) return { what: n.what, channel: h, offset: i };
      }
    }
  }
  return null;
}

/** Windows of `width` bytes, one every `stride` bytes; windows that are mostly zero bytes are skipped (headers hold zero runs). */
function windows(what: string, bytes: Uint8Array, width: number, stride: number): { what: string; bytes: Uint8Array }[] {
  const out: { what: string; bytes: Uint8Array }[] = [];
  for (let i = 0; i + width <= bytes.length; i += stride) {
    const w = bytes.subarray(i, i + width);
    let zeros = 0;
    for (const b of w) if (b === 0) zeros++;
    if (zeros <= width / 2) out.push({ what: `${what}@${i}`, bytes: w });
  }
  return out;
}

const f32Bytes = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const f64Bytes = (a: ArrayLike<number>): Uint8Array => new Uint8Array(Float64Array.from(a).buffer);

/** Records the plaintext that goes into and comes out of every frozen product. */
class Recorder implements FrozenLinearProvider {
  readonly plain: { what: string; values: Float32Array; cols: number; T: number; backward: boolean }[] = [];
  constructor(private readonly inner: FrozenLinearProvider, private readonly scales: (l: number, g: ProjectionGroup) => Float32Array[]) {}
  async forward(layer: number, group: ProjectionGroup, x: Float32Array, T: number): Promise<Float32Array[]> {
    this.plain.push({ what: `x ${layer}.${group}`, values: x.slice(), cols: x.length / T, T, backward: false });
    const ys = await this.inner.forward(layer, group, x, T);
    ys.forEach((y, j) => this.plain.push({ what: `y ${layer}.${group}.${j}`, values: y.slice(), cols: y.length / T, T, backward: false }));
    return ys;
  }
  async backward(layer: number, group: ProjectionGroup, dys: Float32Array[], T: number): Promise<Float32Array> {
    dys.forEach((d, j) => this.plain.push({ what: `dy ${layer}.${group}.${j}`, values: d.slice(), cols: d.length / T, T, backward: true }));
    // The stacked, scale-folded input the client quantizes for this product.
    const { stacked, scales, cols } = stackBackwardInput(dys, T, this.scales(layer, group));
    const K = cols.reduce((s, c) => s + c, 0);
    this.plain.push({ what: `dy-stacked ${layer}.${group}`, values: stacked, cols: K, T, backward: true });
    this.quantized.push({ what: `q(dy) ${layer}.${group}`, q: prepareBackwardInput(stacked, T, K, scales, 8).values as Int8Array, T, cols: K });
    const dx = await this.inner.backward(layer, group, dys, T);
    this.plain.push({ what: `dx ${layer}.${group}`, values: dx.slice(), cols: dx.length / T, T, backward: true });
    return dx;
  }
  readonly quantized: { what: string; q: Int8Array; T: number; cols: number }[] = [];
}

for (const masks of ['table', 'fresh'] as const) test(`everything the client sends during a LoRA training step holds no key, tokens, activations, gradients, LoRA weights or loss (${masks} masks)`, async (t) => {
  const { dir, config, root } = writeTinyModel();
  const model = await ModelServer.fromFolder(dir, { threads: 0, maskTables: join(root, 'server-tables') });
  const srv = await startServer({ model, log: () => {} });
  t.after(async () => { await srv.close(); await model.close(); removeDir(root); });

  const captured: Uint8Array[] = [];
  const channels: ('ws' | 'http')[] = [];
  const key = SecretKey.generate(RLWE_N2048_Q44);
  // Every single-use block secret of the table mode is searched for too.
  const blockSecrets: SecretKey[] = [];
  const generateSingleUse = SecretKey.generateSingleUse;
  SecretKey.generateSingleUse = (p) => {
    const s = generateSingleUse(p);
    blockSecrets.push(s);
    return s;
  };
  t.after(() => { SecretKey.generateSingleUse = generateSingleUse; });
  const remote = await RemoteEncryptedProvider.connect({
    url: srv.url, key, masks, tableCache: join(root, 'client-tables'),
    capture: (bytes, channel) => { captured.push(Uint8Array.from(bytes)); channels.push(channel); },
  });
  t.after(() => remote.close());
  const rec = new Recorder(remote, (l, g) => remote.info.scales[l][g]);

  const { tensors } = loadModelFolder(dir);
  const llama = LlamaModel.fromTensors(config, tensors, rec);
  const lora = LoraAdapter.create(config, { rank: 4, alpha: 8, dropout: 0 });
  for (const p of lora.parameters()) if (p.name.endsWith('lora_B')) for (let i = 0; i < p.value.length; i++) p.value[i] = (Math.random() - 0.5) * 0.02;
  const T = 12;
  const tokens = Int32Array.from({ length: T }, () => 3 + Math.floor(Math.random() * (config.vocabSize - 3)));
  const targets = Int32Array.from({ length: T }, (_, i) => (i + 1 < T ? tokens[i + 1] : -100));
  const batch = { T, tokens, targets, positions: Int32Array.from({ length: T }, (_, i) => i), seqIds: new Int32Array(T) };
  const { loss } = await llama.forwardBackward(batch, lora, { dropoutSeed: 'privacy' });
  assert.ok(Number.isFinite(loss) && loss > 0);
  assert.ok(channels.filter((c) => c === 'ws').length >= 2 * 4 + 2 * 3, 'every forward and backward product went over the network');

  const needles: { what: string; bytes: Uint8Array }[] = [];
  // the secret key and every block secret: any 16 consecutive coefficients as int8
  const s = key.toFileBytes().subarray(16, 16 + RLWE_N2048_Q44.ringDegree);
  needles.push(...windows('secret key', s, 16, 1));
  assert.equal(blockSecrets.length > 0, masks === 'table', 'table mode draws a secret per block, fresh mode none');
  blockSecrets.forEach((b, i) => needles.push(...windows(`block secret ${i}`, Uint8Array.from(SecretKey.coefficients(b), (v) => v & 0xff), 16, 1)));
  // token ids as int32 and uint16 runs of four
  needles.push(...windows('tokens i32', new Uint8Array(tokens.buffer), 16, 4));
  needles.push(...windows('tokens u16', new Uint8Array(Uint16Array.from(tokens).buffer), 8, 2));
  // activations, gradients, answers: four floats (f32), two doubles (f64), at every value offset
  for (const p of rec.plain) {
    needles.push(...windows(`${p.what} f32`, f32Bytes(p.values), 16, 4));
    needles.push(...windows(`${p.what} f64`, f64Bytes(p.values), 16, 8));
  }
  // quantized activations / gradients: token-major rows and feature-major columns (the message layout)
  const quantized = [
    ...rec.plain.filter((p) => !p.backward && p.what.startsWith('x ')).map((p) => ({ what: `q(${p.what})`, q: quantizePerToken(p.values, p.T, p.cols, 8).values as Int8Array, T: p.T, cols: p.cols })),
    ...rec.quantized,
  ];
  for (const q of quantized) {
    needles.push(...windows(`${q.what} rows`, new Uint8Array(q.q.buffer, q.q.byteOffset, q.q.byteLength), 16, 1));
    const featureMajor = new Uint8Array(q.T * q.cols);
    for (let tt = 0; tt < q.T; tt++) for (let i = 0; i < q.cols; i++) featureMajor[i * q.T + tt] = q.q[tt * q.cols + i] & 0xff;
    needles.push(...windows(`${q.what} columns`, featureMajor, 12, 1));
  }
  // LoRA weights and gradients
  for (const p of lora.parameters()) {
    needles.push(...windows(`${p.name} f32`, f32Bytes(p.value), 16, 4));
    needles.push(...windows(`${p.name} grad f32`, f32Bytes(p.grad), 16, 4));
    needles.push(...windows(`${p.name} f64`, f64Bytes(p.value), 16, 8));
  }
  // the loss as a double and as decimal text
  needles.push({ what: 'loss f64', bytes: f64Bytes([loss]) });
  for (const text of [String(loss), String(Math.fround(loss)), loss.toFixed(6), loss.toPrecision(8)]) {
    if (text.length >= MIN_NEEDLE) needles.push({ what: `loss text ${text}`, bytes: Buffer.from(text, 'latin1') });
  }
  assert.ok(needles.length > 20000, `only ${needles.length} needles`);
  const hit = findAny(captured, needles);
  assert.equal(hit, null, hit ? `found ${hit.what} in sent message ${hit.channel} (${channels[hit.channel]}) at byte ${hit.offset}` : '');
  // Decimal text of the loss, searched separately without padding in the text channel (HTTP).
  const httpText = captured.filter((_, i) => channels[i] === 'http').map((b) => Buffer.from(b).toString('latin1')).join('\n');
  for (const text of [loss.toFixed(3), loss.toFixed(4)]) assert.ok(!httpText.includes(text));
  // The f32 loss is only 4 bytes: a chance match in megabytes of ciphertext is likely, so it is
  // searched where structure is (HTTP and message headers) and the ciphertext is tested for uniformity.
  const lossF32 = f32Bytes(Float32Array.of(loss));
  const headers = captured.map((b, i) => (channels[i] === 'http' ? b : b.subarray(0, 128)));
  assert.equal(findAny(headers, [{ what: 'loss f32', bytes: Uint8Array.from([...lossF32, ...lossF32]) }]), null);
  for (const h of headers) assert.ok(Buffer.from(h).indexOf(Buffer.from(lossF32)) < 0, 'loss f32 in a header');

  // The ciphertext payload is indistinguishable from uniform bytes (chi-square over 256 bins).
  const hist = new Float64Array(256);
  let n = 0;
  for (let i = 0; i < captured.length; i++) {
    if (channels[i] !== 'ws') continue;
    for (const block of decodeEncryptedInput(captured[i]).blocks) for (const part of block) { for (const b of part) hist[b]++; n += part.length; }
  }
  const expected = n / 256;
  let chi2 = 0;
  for (const c of hist) chi2 += (c - expected) ** 2 / expected;
  // 255 degrees of freedom: mean 255, std 22.6; 450 is 8.6 std above the mean.
  assert.ok(chi2 < 450, `uploaded ciphertext bytes are not uniform: chi2 = ${chi2.toFixed(1)} over ${n} bytes`);
  t.diagnostic(`${needles.length} needles, ${captured.length} messages, ${n} ciphertext bytes, chi2 ${chi2.toFixed(1)}`);
});

test('the needle search finds planted values (the privacy test can fail)', () => {
  const hay = new Uint8Array(100000);
  for (let i = 0; i < hay.length; i++) hay[i] = (i * 7919) & 0xff;
  const acts = Float32Array.from({ length: 8 }, (_, i) => 0.1 * (i + 1));
  const planted = hay.slice();
  planted.set(f32Bytes(acts).subarray(4, 20), 5000);
  const needles = windows('acts', f32Bytes(acts), 16, 4);
  assert.equal(findAny([hay], needles), null);
  const hit = findAny([hay, planted], needles);
  assert.deepEqual(hit, { what: 'acts@4', channel: 1, offset: 5000 });
});
