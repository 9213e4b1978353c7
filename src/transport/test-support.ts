// Helpers for the transport tests: a tiny random Llama folder and a server in a child process.

import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, type LlamaConfig } from '../model/config.js';
import { expectedTensorShapes, writeModelFolder } from '../model/loader.js';

export const TINY_CONFIG_JSON: Record<string, unknown> = {
  model_type: 'llama',
  architectures: ['LlamaForCausalLM'],
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 96,
  rms_norm_eps: 1e-5,
  max_position_embeddings: 256,
  rope_theta: 10000,
  tie_word_embeddings: true,
  hidden_act: 'silu',
};

/** Writes a random tiny model folder; returns its path and config (caller removes it). */
export function writeTinyModel(): { dir: string; config: LlamaConfig; root: string } {
  const root = mkdtempSync(join(tmpdir(), 'helora-transport-'));
  const dir = join(root, 'model');
  const config = parseConfig(TINY_CONFIG_JSON);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape] of expectedTensorShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const isNorm = name.endsWith('norm.weight');
    for (let i = 0; i < n; i++) data[i] = isNorm ? 1 + 0.1 * (Math.random() - 0.5) : (Math.random() * 2 - 1) * 0.08;
    tensors.set(name, { shape, data });
  }
  writeModelFolder(dir, TINY_CONFIG_JSON, tensors);
  return { dir, config, root };
}

export function removeDir(root: string): void {
  rmSync(root, { recursive: true, force: true });
}

export interface ChildServer {
  child: ChildProcess;
  url: string;
  port: number;
  logs: Record<string, unknown>[];
  /** Resolves when the child has exited. */
  exited: Promise<number | null>;
}

/** Forks serve-process.js and waits for its "listening" log line. */
export function forkServer(args: string[], timeoutMs = 20_000): Promise<ChildServer> {
  const script = new URL('./serve-process.js', import.meta.url);
  const child = fork(script, args, { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  const logs: Record<string, unknown>[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
  return new Promise<ChildServer>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server child did not start in ${timeoutMs} ms: ${stderr}`));
    }, timeoutMs);
    let buf = '';
    child.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let ev: Record<string, unknown>;
        try { ev = JSON.parse(line) as Record<string, unknown>; } catch { ev = { unparsed: line }; }
        logs.push(ev);
        if (ev.event === 'listening') {
          clearTimeout(timer);
          const url = String(ev.url);
          resolve({ child, url, port: Number(new URL(url.replace(/^ws/, 'http')).port), logs, exited });
        }
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server child exited with ${code} before listening: ${stderr}`));
    });
  });
}
