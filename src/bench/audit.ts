// npm run bench:audit: what the audit logs cost per request. Both sides hash every request and
// answer message (SHA-256, node:crypto on the main thread) and append one line; this times the
// hash over frames of 1, 16 and 64 MiB and one AuditLog.append, and turns them into the overhead of
// the requests of one 2048-token micro-batch of a named shape (sizes from train/estimate.ts).
//   --shape smollm2-135m  --tokens 2048  --masks table|fresh  --seconds 2 (per measurement)

import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { paramsById } from '../crypto/index.js';
import type { MaskMode } from '../linear/types.js';
import { microBatchRequests, NAMED_SHAPES } from '../train/estimate.js';
import { exchangeFields } from '../transport/audit.js';
import { AuditLog } from '../util/audit-log.js';
import { benchLogger, intOption, option, printResult } from './common.js';

const args = process.argv.slice(2);
const log = benchLogger('audit');
const shapeName = option(args, 'shape') ?? 'smollm2-135m';
const shape = NAMED_SHAPES[shapeName];
if (!shape) throw new Error(`helora: --shape must be one of ${Object.keys(NAMED_SHAPES).join(', ')}`);
const tokens = intOption(args, 'tokens', 2048);
const masks = (option(args, 'masks') ?? 'table') as MaskMode;
const seconds = intOption(args, 'seconds', 2);

/** Mean ms of fn over at least `seconds` (after one warm-up call). */
function time(fn: () => void): number {
  fn();
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) { fn(); n++; }
  return (performance.now() - t0) / n;
}

const buf = randomBytes(64 << 20);
const hash: Record<string, number> = {};
// The overhead uses the 16 MiB figure (training frames are some MB to some tens of MB).
let msPerMiB = 0;
for (const mib of [1, 16, 64]) {
  const b = buf.subarray(0, mib << 20);
  const ms = time(() => createHash('sha256').update(b).digest('hex'));
  hash[`${mib}_mib_ms`] = +ms.toFixed(2);
  if (mib === 16) msPerMiB = ms / mib;
  log(`${mib} MiB: ${ms.toFixed(2)} ms (${(mib / ms * 1000).toFixed(0)} MiB/s)`);
}

const dir = mkdtempSync(join(tmpdir(), 'helora-bench-audit-'));
let appendMs: number;
try {
  const audit = AuditLog.open(join(dir, 'a.jsonl'));
  const fields = exchangeFields({
    direction: 'forward', layer: 3, group: 'gate_up', tokens, masks, requestId: 12345n, bytesUp: 1e7, bytesDown: 1e7,
    upSha256: 'ab'.repeat(32), downSha256: 'cd'.repeat(32), ms: 12.5,
  });
  appendMs = time(() => audit.append('request', fields));
  audit.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const reqs = microBatchRequests(shape, tokens, { params: paramsById(1), actBits: 8, maxTokensPerRequest: 4096, maskMode: masks });
const bytes = reqs.reduce((s, r) => s + r.uploadBytes + r.downloadBytes, 0);
const perBatchMs = (bytes / 2 ** 20) * msPerMiB + reqs.length * appendMs;
printResult({
  bench: 'audit', shape: shapeName, tokens, masks,
  hash_mib_per_s: +(1000 / msPerMiB).toFixed(0), hash, append_ms: +appendMs.toFixed(4),
  requests_per_microbatch: reqs.length, mb_per_request: +(bytes / reqs.length / 1e6).toFixed(2),
  overhead_ms_per_request: +(perBatchMs / reqs.length).toFixed(2), overhead_s_per_microbatch: +(perBatchMs / 1000).toFixed(2),
});
