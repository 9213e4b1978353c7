// `helora serve` refuses unsafe setups before loading the model (issue 12, items 1, 7 and 8).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as serveModule from './serve.js';

const { serve } = serveModule;
const defaults = serveModule as unknown as Record<string, number | undefined>;
const NO_MODEL = '/nonexistent/helora-model'; // every refusal below must come before the model is read
const STRONG = 'c0ffee00c0ffee00c0ffee00c0ffee00'; // 32 hex characters

test('item 1: the default burst is at most the default queue, and a larger --burst is refused', async () => {
  assert.equal(typeof defaults.SERVE_DEFAULT_BURST, 'number');
  assert.ok(defaults.SERVE_DEFAULT_BURST! <= defaults.SERVE_DEFAULT_QUEUE!, `burst ${defaults.SERVE_DEFAULT_BURST} > queue ${defaults.SERVE_DEFAULT_QUEUE}`);
  await assert.rejects(serve({ model: NO_MODEL, host: '127.0.0.1', port: 0, rate: 100, burst: 100, maxQueue: 10 } as never), /--burst 100 exceeds the queue of 10/);
});

test('item 7: a non-loopback --host without TLS and a token is refused unless --insecure', async () => {
  await assert.rejects(serve({ model: NO_MODEL, host: '0.0.0.0', port: 0, rate: 100 }), /refusing to listen on 0\.0\.0\.0 .*without TLS/);
  await assert.rejects(serve({ model: NO_MODEL, host: '192.168.1.20', port: 0, rate: 100, token: STRONG }), /without TLS/);
  // with --insecure the refusal is gone: the next failure is the missing model
  await assert.rejects(serve({ model: NO_MODEL, host: '0.0.0.0', port: 0, rate: 100, insecure: true } as never), (e: Error) => !/refusing/.test(e.message));
});

test('item 8: the token comes from --token-file or HELORA_TOKEN (one source), and a weak one is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'helora-token-'));
  try {
    const file = join(dir, 'token');
    writeFileSync(file, 'short\n', { mode: 0o600 });
    await assert.rejects(serve({ model: NO_MODEL, host: '127.0.0.1', port: 0, rate: 100, tokenFile: file } as never), /bearer token is too weak \(30 bits counted, at least 128/);
    await assert.rejects(serve({ model: NO_MODEL, host: '127.0.0.1', port: 0, rate: 100, env: { HELORA_TOKEN: 'abc' } } as never), /too weak/);
    await assert.rejects(serve({ model: NO_MODEL, host: '127.0.0.1', port: 0, rate: 100, tokenFile: file, env: { HELORA_TOKEN: STRONG } } as never), /one way only/);
    writeFileSync(file, `${STRONG}\n`);
    // a strong token from the file passes the checks: the next failure is the missing model
    await assert.rejects(serve({ model: NO_MODEL, host: '127.0.0.1', port: 0, rate: 100, tokenFile: file } as never), (e: Error) => !/token/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
