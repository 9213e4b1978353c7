// Helpers for the transport tests: a tiny random Llama folder and a server in a child process.

import { fork, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, type LlamaConfig } from '../model/config.js';
import { writeModelFolder } from '../model/loader.js';
import { tinyModel } from '../train/test-fixtures.js';

/** Writes the shared tiny random model (train/test-fixtures.ts) to a temp folder; returns its path and config (caller removes it). */
export function writeTinyModel(): { dir: string; config: LlamaConfig; configJson: Record<string, unknown>; root: string } {
  const root = mkdtempSync(join(tmpdir(), 'helora-transport-'));
  const dir = join(root, 'model');
  const { configJson, tensors } = tinyModel();
  writeModelFolder(dir, configJson, tensors);
  return { dir, config: parseConfig(configJson), configJson, root };
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

/** GET `path` from a running server (ws:// URL), with a bearer token when given: status and body. */
export function httpGet(serverUrl: string, path: string, token?: string | null): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${serverUrl.replace(/^ws/, 'http')}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}
