// `npm run bench:estimate`: how close `helora estimate` comes to a real run on this machine.
// Calibrates (helora calibrate's measurement), measures loopback WebSocket throughput (the
// "bandwidth" of a server on the same machine), then fine-tunes the shipped model through an
// encrypted loopback server (`helora train` code, WordNet glosses as in the demo) and prints one
// JSON object: the estimate next to the measurement, bytes and time, in total and per part.
//
// Flags: --steps N (default 10), --batch-tokens N (2048), --examples N (1500), --quick (small calibration model).

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket, WebSocketServer } from 'ws';
import { runEstimate } from '../cli/estimate.js';
import { demoGlosses, DEMO_DEFAULTS } from '../train/gloss-demo.js';
import { runTrain } from '../cli/train.js';
import { TRAIN_DEFAULTS } from '../train/fine-tune.js';
import { glossPair } from '../train/wordnet.js';
import { measureCalibration, QUICK_CALIBRATION_SHAPE } from '../train/calibrate.js';
import { ModelServer } from '../transport/model-server.js';
import { startServer } from '../transport/server.js';
import { benchLogger, flag, intOption, printResult, runBench } from './common.js';

const log = benchLogger('bench:estimate');

/** One-way throughput of binary WebSocket messages over loopback, bytes per second (each message acknowledged, as a request is answered). */
async function loopbackBytesPerS(messageBytes: number, messages: number): Promise<number> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: messageBytes + 1024, perMessageDeflate: false });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  wss.on('connection', (ws) => ws.on('message', () => ws.send(new Uint8Array(1))));
  const port = (wss.address() as { port: number }).port;
  const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject); });
  const payload = new Uint8Array(messageBytes).fill(7);
  const roundTrip = (): Promise<void> => new Promise((resolve) => { ws.once('message', () => resolve()); ws.send(payload); });
  await roundTrip();
  const t0 = performance.now();
  for (let i = 0; i < messages; i++) await roundTrip();
  const s = (performance.now() - t0) / 1000;
  ws.close();
  await new Promise<void>((resolve) => wss.close(() => resolve()));
  return (messageBytes * messages) / s;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const steps = intOption(args, 'steps', 10);
  const batchTokens = intOption(args, 'batch-tokens', DEMO_DEFAULTS.batchTokens, 2);
  const examples = intOption(args, 'examples', DEMO_DEFAULTS.examples);
  const quick = flag(args, 'quick');
  const work = mkdtempSync(join(tmpdir(), 'helora-bench-estimate-'));
  try {
    log('calibrating');
    const calibration = await measureCalibration({ say: log, ...(quick ? { shape: QUICK_CALIBRATION_SHAPE, tokens: 512, seqLen: 128 } : {}) });
    const calibrationFile = join(work, 'calibration.json');
    writeFileSync(calibrationFile, JSON.stringify(calibration));
    log('loopback throughput');
    const bandwidth = await loopbackBytesPerS(16 << 20, 24);
    const dataFile = join(work, 'glosses.jsonl');
    writeFileSync(dataFile, demoGlosses(examples, DEMO_DEFAULTS.seed).map((g) => JSON.stringify(glossPair(g))).join('\n') + '\n');

    const settings = { steps, batchTokens, rank: DEMO_DEFAULTS.rank, seed: DEMO_DEFAULTS.seed, targets: [...TRAIN_DEFAULTS.targets] };
    const { estimate } = runEstimate({
      ...settings, model: DEMO_DEFAULTS.model, data: dataFile, gradAccum: 1, maskMode: 'fresh', actBits: 8, maxTokensPerRequest: 4096,
      bandwidth: `${(bandwidth / 1e6).toFixed(3)}MB/s`, rttMs: 0, serverPricePerHour: 0, egressPricePerGb: 0,
      serverCalibration: calibrationFile, clientCalibration: calibrationFile,
    });

    log(`encrypted run: ${steps} steps of ${batchTokens} tokens on ${DEMO_DEFAULTS.model}`);
    const model = await ModelServer.fromFolder(DEMO_DEFAULTS.model, { maxTokens: 4096 });
    const server = await startServer({ model, rateLimit: { perSecond: 1e6, burst: 1e6 }, log: () => {} });
    let run;
    try {
      run = await runTrain({
        ...TRAIN_DEFAULTS, ...settings, lr: DEMO_DEFAULTS.lr, model: DEMO_DEFAULTS.model, data: dataFile, out: join(work, 'run'), mode: 'encrypted',
        server: server.url, resume: false, checkpointEvery: 1000, progress: false, say: () => {},
      });
    } finally {
      await server.close();
      await model.close();
    }
    const measuredS = run.history[run.history.length - 1]!.elapsedS;
    const t = estimate.total;
    const remote = run.remote!;
    printResult({
      bench: 'estimate',
      model: DEMO_DEFAULTS.model,
      steps, batch_tokens: batchTokens, quick_calibration: quick,
      calibration: calibration.rates,
      loopback_bytes_per_s: Math.round(bandwidth),
      bytes_up: { measured: remote.bytesUp, estimated: t.uploadBytes },
      bytes_down: { measured: remote.bytesDown, estimated: t.downloadBytes },
      requests: { measured: remote.requests, estimated: t.requests },
      wall_s: { measured: measuredS, estimated: t.wallS, ratio: t.wallS / measuredS },
      // The client's own view of where the time went (crypto on its pools; waiting = server + transfer + queue).
      crypto_s: { measured: remote.cryptoMs / 1000, estimated: t.cryptoS },
      server_wait_s: { measured: remote.serverWaitMs / 1000, estimated: t.serverS + t.transferS + t.requestOverheadS },
      client_rest_s: { measured: measuredS - (remote.cryptoMs + remote.serverWaitMs) / 1000, estimated: t.clientComputeS },
    });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

runBench(main);
