// `npm run bench:load`: a real `helora serve`-style server process on loopback, K honest clients
// doing encrypted products, first alone (the baseline), then with abusers running at the same time:
// a queue flooder, a client that never reads, 50 idle sockets, a slow-frame sender, a
// malformed-frame storm and a reconnect storm. Every loop is bounded (phase time, counts). Each
// abuser connects from its own loopback address (127.0.0.2 ...), as abusers on a network would
// come from their own hosts. Prints one JSON object.
//
// Flags (or HELORA_BENCH_<NAME>): --clients K (4), --seconds S per phase (15), --tokens T per
// request (64), --threads server kernel threads (1).

import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import WebSocket from 'ws';
import { HeLinearClient } from '../linear/client.js';
import { loadModelFolder } from '../model/loader.js';
import { encodeEncryptedInput, MessageType, Op } from '../protocol/wire.js';
import { RemoteEncryptedProvider } from '../transport/client.js';
import { repoRoot } from '../util/paths.js';
import { benchLogger, intOption, printResult } from './common.js';

const say = benchLogger('load');
const args = process.argv.slice(2);
const CLIENTS = intOption(args, 'clients', 4);
const SECONDS = intOption(args, 'seconds', 15);
const TOKENS = intOption(args, 'tokens', 64);
const THREADS = intOption(args, 'threads', 1);
const MODEL = join(repoRoot(), 'models/helora-tiny');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Server { url: string; port: number; pid: number; exited: () => number | null | undefined; stop(): Promise<void> }

function startServerProcess(): Promise<Server> {
  const script = join(repoRoot(), 'dist/transport/serve-process.js');
  const limits = { sendTimeoutMs: 3000, pingIntervalMs: 2000, idleTimeoutMs: 60_000, frameTimeoutMs: 3000, maxQueue: 64 };
  const child = fork(script, ['--model', MODEL, '--threads', String(THREADS), '--rate', '2000', '--burst', '32', '--max-tokens', '2048', '--limits', JSON.stringify(limits)],
    { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  let exitCode: number | null | undefined;
  child.once('exit', (code) => { exitCode = code; });
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      if (buf.length > 1 << 20) buf = buf.slice(-4096); // logs are not kept
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.includes('"listening"')) continue;
        const url = String((JSON.parse(line) as { url: string }).url);
        resolve({
          url, port: Number(new URL(url.replace(/^ws/, 'http')).port), pid: child.pid!, exited: () => exitCode,
          stop: () => new Promise((r) => { child.once('exit', () => r()); child.kill('SIGTERM'); setTimeout(() => child.kill('SIGKILL'), 5000).unref(); }),
        });
      }
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code} before listening`)));
  });
}

/** The server's peak resident memory (VmHWM), MB. */
function peakRssMb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : -1;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

/** K honest clients, each doing encrypted forward products one after another until `until`. */
async function honestClients(url: string, until: number): Promise<{ latencies: number[]; failed: number; errors: string[] }> {
  const latencies: number[] = [];
  let failed = 0;
  const errors: string[] = [];
  await Promise.all(Array.from({ length: CLIENTS }, async (_, k) => {
    const p = await RemoteEncryptedProvider.connect({ url, threads: 1, requestTimeoutMs: 120_000 });
    const C = p.info.shape.hiddenSize;
    const x = Float32Array.from({ length: TOKENS * C }, (_, i) => Math.sin(i * 0.37 + k));
    try {
      for (let i = 0; Date.now() < until && i < 100_000; i++) {
        const t0 = performance.now();
        try {
          await p.forward(i % p.info.shape.numLayers, 'qkv', x, TOKENS);
          latencies.push(performance.now() - t0);
        } catch (e) {
          failed++;
          if (errors.length < 5) errors.push((e as Error).message.slice(0, 200));
        }
      }
    } finally {
      await p.close();
    }
  }));
  return { latencies: latencies.sort((a, b) => a - b), failed, errors };
}

/** A WebSocket upgrade by hand (so the abuser controls every byte and never reads or pongs). */
function rawUpgrade(port: number, localAddress: string): Promise<{ socket: Socket; status: number }> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress });
    socket.on('error', () => resolve({ socket, status: -1 }));
    socket.write(`GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    let head = '';
    const onData = (c: Buffer): void => {
      head += c.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      resolve({ socket, status: Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1] ?? 0) });
    };
    socket.on('data', onData);
  });
}

/** A masked client frame (zero mask key). */
function frame(payload: Uint8Array): Buffer {
  const n = payload.length;
  const len = n < 126 ? Buffer.from([0x80 | n]) : n < 65536 ? Buffer.from([0x80 | 126, n >> 8, n & 255]) : (() => {
    const b = Buffer.alloc(9); b[0] = 0x80 | 127; b.writeBigUInt64BE(BigInt(n), 1); return b;
  })();
  return Buffer.concat([Buffer.from([0x82]), len, Buffer.alloc(4), payload]);
}

function openWs(url: string, localAddress: string): Promise<WebSocket | number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url}/v1/ws`, { localAddress, handshakeTimeout: 10_000 });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_q, res) => { resolve(res.statusCode ?? -1); ws.terminate(); });
    ws.on('error', () => resolve(-1)); // also after opening: a dropped abuser is expected
  });
}

interface AbuseReport { [k: string]: Record<string, number | boolean> }

/** Every abuser at once until `until`; each loop is bounded by time and by count. */
async function abusers(url: string, port: number, until: number, request: Uint8Array): Promise<AbuseReport> {
  const report: AbuseReport = {};
  const alive = (): boolean => Date.now() < until;

  const flooder = async (): Promise<void> => {
    const r = report.queue_flooder = { sent: 0, outputs: 0, refused_busy_or_rate: 0, connections: 0 };
    while (alive() && r.connections < 50) {
      const ws = await openWs(url, '127.0.0.2');
      if (typeof ws === 'number') { await sleep(100); continue; }
      r.connections++;
      ws.on('message', (d: Buffer) => { if (d[6] === MessageType.Error) r.refused_busy_or_rate++; else r.outputs++; });
      while (alive() && ws.readyState === WebSocket.OPEN && r.sent < 2_000_000) {
        if (ws.bufferedAmount < 8 << 20) { for (let i = 0; i < 20; i++) ws.send(request); r.sent += 20; }
        await sleep(5);
      }
      ws.terminate();
    }
  };

  const neverReader = async (): Promise<void> => {
    const r = report.never_reading = { connections: 0, dropped: 0, sent: 0 };
    while (alive() && r.connections < 20) {
      const { socket, status } = await rawUpgrade(port, '127.0.0.3');
      if (status !== 101) { socket.destroy(); await sleep(200); continue; }
      r.connections++;
      socket.pause();
      const bytes = frame(request);
      let closed = false;
      socket.once('close', () => { closed = true; });
      while (alive() && !closed && !socket.destroyed) {
        // the kernel buffers fill up; then writes wait (bounded by the write buffer check)
        if (socket.writableLength < 8 << 20) { socket.write(bytes); r.sent++; }
        await sleep(10);
      }
      if (closed) r.dropped++;
      socket.destroy();
    }
  };

  const idle = async (): Promise<void> => {
    const r = report.idle_sockets = { opened: 0, refused: 0 };
    const sockets: WebSocket[] = [];
    const results = await Promise.all(Array.from({ length: 50 }, () => openWs(url, '127.0.0.4')));
    for (const x of results) { if (typeof x === 'number') r.refused++; else { r.opened++; sockets.push(x); } }
    while (alive()) await sleep(100);
    for (const s of sockets) s.terminate();
  };

  const slowFrame = async (): Promise<void> => {
    const r = report.slow_frame = { connections: 0, dropped: 0, bytes: 0 };
    while (alive() && r.connections < 20) {
      const { socket, status } = await rawUpgrade(port, '127.0.0.5');
      if (status !== 101) { socket.destroy(); await sleep(200); continue; }
      r.connections++;
      let closed = false;
      socket.once('close', () => { closed = true; });
      socket.resume();
      const bytes = frame(request);
      for (let i = 0; alive() && !closed && i < bytes.length; i++) {
        socket.write(bytes.subarray(i, i + 1));
        r.bytes++;
        await sleep(100);
      }
      if (closed) r.dropped++;
      socket.destroy();
    }
  };

  const malformed = async (): Promise<void> => {
    const r = report.malformed_storm = { sent: 0, answers: 0, connections: 0, closed_by_server: 0 };
    const garbage = request.slice(0, 200); // a readable header, a truncated payload
    while (alive() && r.connections < 200) {
      const ws = await openWs(url, '127.0.0.6');
      if (typeof ws === 'number') { await sleep(100); continue; }
      r.connections++;
      let closedByServer = false;
      ws.on('message', () => { r.answers++; });
      ws.once('close', (code) => { closedByServer = code !== 1005 && code !== 1000; });
      while (alive() && ws.readyState === WebSocket.OPEN && r.sent < 5_000_000) {
        for (let i = 0; i < 50; i++) ws.send(garbage);
        r.sent += 50;
        await sleep(5);
      }
      await sleep(20);
      if (closedByServer) r.closed_by_server++;
      ws.terminate();
    }
  };

  const reconnectStorm = async (): Promise<void> => {
    const r = report.reconnect_storm = { attempts: 0, opened: 0, refused: 0 };
    while (alive() && r.attempts < 20_000) {
      const batch = await Promise.all(Array.from({ length: 10 }, () => openWs(url, '127.0.0.7')));
      for (const x of batch) {
        r.attempts++;
        if (typeof x === 'number') r.refused++; else { r.opened++; x.terminate(); }
      }
    }
  };

  await Promise.all([flooder(), neverReader(), idle(), slowFrame(), malformed(), reconnectStorm()]);
  return report;
}

/** A well-formed encrypted forward request of TOKENS tokens (what the flooders send). */
async function validRequest(): Promise<Uint8Array> {
  const { config } = loadModelFolder(MODEL, () => false);
  const he = new HeLinearClient({ threads: 1 });
  const C = config.hiddenSize;
  const enc = he.encryptIntegersReference(new Int8Array(TOKENS * C).map((_, i) => (i % 17) - 8), TOKENS, [C]);
  await he.close();
  return encodeEncryptedInput({ masks: 'fresh', paramsId: 1, requestId: 7n, op: Op.Forward, layer: 0, group: 'qkv', cols: [C], tokens: TOKENS, seed: enc.seed, blocks: enc.blocks.map((b) => [b]) });
}

/** The abusers run in their own process, so that their loops do not slow the honest clients' event loop. */
function runAbusersProcess(url: string, port: number, until: number): Promise<AbuseReport> {
  const child = fork(new URL(import.meta.url), ['--abusers', url, String(port), String(until), '--tokens', String(TOKENS)], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => { out += c.toString(); });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => {
      try { resolve(JSON.parse(out) as AbuseReport); } catch { reject(new Error(`abuser process exited with ${code}: ${out.slice(0, 300)}`)); }
    });
  });
}

async function main(): Promise<void> {
  if (args[0] === '--abusers') {
    const report = await abusers(args[1], Number(args[2]), Number(args[3]), await validRequest());
    process.stdout.write(JSON.stringify(report));
    process.exit(0);
  }
  const server = await startServerProcess();
  say(`server ${server.url} (pid ${server.pid}); ${CLIENTS} honest clients, ${SECONDS} s per phase, ${TOKENS} tokens per request`);
  try {

    say('phase 1: honest clients alone');
    const base = await honestClients(server.url, Date.now() + SECONDS * 1000);
    const rssBase = peakRssMb(server.pid);
    say('phase 2: honest clients with the abusers');
    const until = Date.now() + SECONDS * 1000;
    const [loaded, abuse] = await Promise.all([honestClients(server.url, until), runAbusersProcess(server.url, server.port, until)]);
    const peak = peakRssMb(server.pid);
    const crashed = server.exited() !== undefined;
    const p99Base = percentile(base.latencies, 0.99);
    const p99Load = percentile(loaded.latencies, 0.99);
    printResult({
      bench: 'load',
      clients: CLIENTS, seconds_per_phase: SECONDS, tokens_per_request: TOKENS, server_threads: THREADS,
      honest_completed: loaded.latencies.length, honest_failed: loaded.failed, honest_errors: loaded.errors,
      baseline_completed: base.latencies.length, baseline_failed: base.failed,
      p50_ms: { baseline: +percentile(base.latencies, 0.5).toFixed(1), under_abuse: +percentile(loaded.latencies, 0.5).toFixed(1) },
      p99_ms: { baseline: +p99Base.toFixed(1), under_abuse: +p99Load.toFixed(1) },
      p99_ratio: +(p99Load / p99Base).toFixed(2),
      abusers: abuse,
      server_peak_rss_mb: { after_baseline: rssBase, after_abuse: peak },
      server_crashes: crashed ? 1 : 0,
    });
  } finally {
    await server.stop();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
