import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelServer } from '../transport/model-server.js';
import { startServer } from '../transport/server.js';
import { formatEstimate, parseBandwidth, runEstimate, type EstimateCliOptions } from './estimate.js';
import { writeTinyModelFolder } from './fixtures.js';
import { runTrain } from './train.js';
import { TRAIN_DEFAULTS } from '../train/fine-tune.js';

const work = mkdtempSync(join(tmpdir(), 'helora-estimate-test-'));
after(() => rmSync(work, { recursive: true, force: true }));

function estimateOptions(over: Partial<EstimateCliOptions>): EstimateCliOptions {
  return {
    model: 'smollm2-135m', batchTokens: 2048, gradAccum: 1, targets: [...TRAIN_DEFAULTS.targets], rank: 8, maskMode: 'fresh', actBits: 8,
    maxTokensPerRequest: 4096, seed: 0, bandwidth: '1gbit', rttMs: 0, serverPricePerHour: 0, egressPricePerGb: 0, ...over,
  };
}

test('--bandwidth units', () => {
  assert.equal(parseBandwidth('1gbit'), 125e6);
  assert.equal(parseBandwidth('100Mbit'), 12.5e6);
  assert.equal(parseBandwidth('2.5gbps'), 312.5e6);
  assert.equal(parseBandwidth('10MB/s'), 10e6);
  for (const bad of ['1', 'fast', '10mb/s', '-1gbit', '0gbit']) assert.throws(() => parseBandwidth(bad), /--bandwidth/);
});

for (const maskMode of ['fresh', 'table'] as const) test(`the estimate holds a real encrypted run over loopback to the byte: upload, download, mask table and requests (token chunks, K-chunk terms, two epochs; ${maskMode} masks)`, async () => {
  const modelDir = join(work, `model-${maskMode}`);
  const pairs = writeTinyModelFolder(modelDir);
  const dataPath = join(work, 'data.jsonl');
  writeFileSync(dataPath, pairs.slice(0, 40).map((p) => JSON.stringify(p)).join('\n') + '\n');
  // max_tokens 100 < the 256-token micro-batches: every product goes as three token chunks.
  const model = await ModelServer.fromFolder(modelDir, { threads: 1, maxTokens: 100, maskTables: maskMode === 'table' ? join(work, 'server-tables') : false });
  // (in-flight cap above the 3 concurrent token chunks: a Busy answer would make the client resend, which no estimate counts)
  const server = await startServer({ model, rateLimit: { perSecond: 1e6, burst: 64 }, maxInFlightPerConnection: 8, log: () => {} });
  try {
    const settings = { batchTokens: 256, gradAccum: 2, epochs: 1.5, seed: 4, rank: 4, targets: ['q_proj', 'down_proj'] as const };
    const { estimate } = runEstimate(estimateOptions({ ...settings, targets: [...settings.targets], model: modelDir, data: dataPath, maxTokensPerRequest: 100, maskMode }));
    assert.equal(estimate.epochs.length, 2, 'the run spans two epochs');
    const run = await runTrain({
      ...TRAIN_DEFAULTS, ...settings, targets: [...settings.targets], model: modelDir, data: dataPath, out: join(work, `run-${maskMode}`), mode: 'encrypted', server: server.url,
      resume: false, checkpointEvery: 100, progress: false, say: () => {}, masks: maskMode, tableCache: join(work, 'client-tables'),
    });
    assert.equal(run.totalSteps, estimate.total.optimizerSteps);
    assert.equal(run.remote!.requests, estimate.total.requests);
    // A loaded machine can make the client resend a request (a reconnect): that traffic is counted apart, the rest is exact.
    const r = run.remote!;
    const why = `reconnects ${r.reconnects}, resent ${r.resentBytesUp} B up, overload answers ${r.overloadBytesDown} B down`;
    assert.equal(r.bytesUp - r.resentBytesUp, estimate.total.uploadBytes, why);
    assert.equal(r.bytesDown - r.overloadBytesDown, estimate.total.downloadBytes, why);
    assert.equal(run.remote!.tableBytesDown, estimate.maskTable?.bytes ?? 0);
    assert.equal(run.history.reduce((s, h) => s + h.tokens, 0), estimate.total.tokenSlots);
    // The totals are the epochs plus the session setup (GET /v1/model-info once); every micro-batch sends the same requests.
    const epochsUp = estimate.epochs.reduce((s, e) => s + e.uploadBytes, 0);
    assert.equal(estimate.total.uploadBytes - epochsUp, estimate.sessionSetup.uploadBytes);
    assert.equal(estimate.total.downloadBytes - estimate.epochs.reduce((s, e) => s + e.downloadBytes, 0), estimate.sessionSetup.downloadBytes);
    for (const e of estimate.epochs) assert.equal(e.uploadBytes, (e.microBatches * epochsUp) / estimate.total.microBatches);
    assert.equal(estimate.epochs.reduce((s, e) => s + e.optimizerSteps, 0), run.totalSteps);
    const text = formatEstimate(estimate, { model: modelDir, data: dataPath, batch_tokens: 256, grad_accum: 2, rank: 4, targets: settings.targets, bandwidth_bytes_per_s: 125e6, rtt_ms: 0, server_price_per_hour: 0, egress_price_per_gb: 0 });
    assert.match(text, /^total /m);
  } finally {
    await server.close();
    await model.close();
  }
});

test('named shapes: SmolLM2-135M bytes per token equal the README measurement; table mode halves the download and needs a table', () => {
  const fresh = runEstimate(estimateOptions({ tokens: 2048, steps: 1 })).estimate;
  // README "Private training end to end": upload 1262406 B/token, download 2022916 B/token (bench:train, T = 2048).
  const step = fresh.epochs[0]!;
  assert.equal(Math.round(step.uploadBytes / 2048), 1262406);
  assert.equal(Math.round(step.downloadBytes / 2048), 2022916);
  assert.equal(fresh.maskTable, null);
  const table = runEstimate(estimateOptions({ tokens: 2048, steps: 1, maskMode: 'table' })).estimate;
  assert.equal(table.epochs[0]!.uploadBytes, fresh.epochs[0]!.uploadBytes);
  // Same headers, the a halves (4 bytes per decrypted value) gone; the server runs at its b-only rate.
  assert.equal(fresh.epochs[0]!.downloadBytes - table.epochs[0]!.downloadBytes, table.total.decryptedValues * 4);
  assert.equal(fresh.total.serverS, fresh.total.serverMacs / fresh.rates.server.serverMacsPerS);
  assert.equal(table.total.serverS, table.total.serverMacs / table.rates.server.serverBOnlyMacsPerS);
  assert.ok(table.maskTable!.bytes > 0);
  assert.throws(() => runEstimate(estimateOptions({ data: 'x.jsonl' })), /--data needs the model's tokenizer/);
  assert.throws(() => runEstimate(estimateOptions({})), /either --data FILE or --tokens N/);
  assert.throws(() => runEstimate(estimateOptions({ model: 'gpt-9', tokens: 5 })), /neither a model folder with config.json nor a named shape/);
});
