// Shared plumbing of the benchmarks: flags (also settable as HELORA_BENCH_<NAME> environment
// variables), progress on stderr, and the one JSON object on stdout with the machine it ran on.

import { cpus, platform, release } from 'node:os';

export function benchLogger(name: string): (msg: string) => void {
  return (msg) => process.stderr.write(`[${name}] ${msg}\n`);
}

function envName(name: string): string {
  return `HELORA_BENCH_${name.toUpperCase().replace(/-/g, '_')}`;
}

/** The value of --name V, --name=V or HELORA_BENCH_NAME. */
export function option(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  if (i >= 0) return args[i + 1];
  const eq = args.find((a) => a.startsWith(`--${name}=`));
  if (eq) return eq.slice(name.length + 3);
  return process.env[envName(name)];
}

export function intOption(args: string[], name: string, fallback: number, min = 1): number {
  const v = option(args, name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`helora: --${name} must be an integer >= ${min}, got ${v}`);
  return n;
}

export function flag(args: string[], name: string): boolean {
  const env = process.env[envName(name)];
  return args.includes(`--${name}`) || env === '1' || env === 'true';
}

/** Adds peak memory and the machine, then prints the result as one JSON line. */
export function printResult(result: Record<string, unknown>): void {
  result.peak_rss_mb = Math.round(process.resourceUsage().maxRSS / 1024);
  const cpu = cpus();
  result.machine = { cpu: cpu[0]?.model ?? 'unknown', cores: cpu.length, os: `${platform()} ${release()}` };
  result.node = process.version;
  process.stdout.write(JSON.stringify(result) + '\n');
}

/** Runs a benchmark's main, reporting a failure on stderr with a non-zero exit. */
export function runBench(main: () => Promise<void>): void {
  main().catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    process.exit(1);
  });
}

/** Counters of a remote provider around one measured step (RemoteEncryptedProvider.stats()). */
interface StepCounters { cryptoMs: number; serverWaitMs: number; bytesUp: number; bytesDown: number; requests: number }

/**
 * The figures of one encrypted training step from the provider's counters before and after it and
 * the server's own compute time: throughput, traffic per token and where the time went.
 */
export function encryptedStepFigures(tokens: number, stepS: number, loss: number, s0: StepCounters, s1: StepCounters, serverS: number) {
  const cryptoS = (s1.cryptoMs - s0.cryptoMs) / 1000;
  const waitS = (s1.serverWaitMs - s0.serverWaitMs) / 1000;
  return {
    encrypted_tokens_per_s: tokens / stepS,
    encrypted_step_s: stepS,
    encrypted_loss: loss,
    upload_bytes_per_token: (s1.bytesUp - s0.bytesUp) / tokens,
    download_bytes_per_token: (s1.bytesDown - s0.bytesDown) / tokens,
    requests_per_step: s1.requests - s0.requests,
    time_split: { client_compute_s: Math.max(0, stepS - cryptoS - waitS), crypto_s: cryptoS, server_s: serverS, transfer_s: Math.max(0, waitS - serverS) },
  };
}
