#!/usr/bin/env node
// The `helora` command.

import { Command, InvalidArgumentError } from 'commander';
import { matmulDemo, MATMUL_DEMO_DEFAULTS } from './matmul-demo.js';

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive integer, got "${v}"`);
  return n;
}

const program = new Command();
program
  .name('helora')
  .description('Private LoRA fine-tuning of open LLMs: the server computes the frozen linear products on RLWE-encrypted activations.')
  .showHelpAfterError();

program
  .command('matmul-demo')
  .description('one frozen linear layer computed on encrypted activations, compared with fp32 and the plaintext 8-bit path')
  .option('--d-in <n>', 'input features', positiveInt, MATMUL_DEMO_DEFAULTS.dIn)
  .option('--d-out <n>', 'output features', positiveInt, MATMUL_DEMO_DEFAULTS.dOut)
  .option('--tokens <n>', 'tokens (2048 fill one ciphertext column block)', positiveInt, MATMUL_DEMO_DEFAULTS.tokens)
  .option('--threads <n>', 'server threads', positiveInt, MATMUL_DEMO_DEFAULTS.threads)
  .action(async (o: { dIn: number; dOut: number; tokens: number; threads: number }) => {
    await matmulDemo({ dIn: o.dIn, dOut: o.dOut, tokens: o.tokens, threads: o.threads });
  });

program.parseAsync(process.argv).catch((e: unknown) => {
  process.stderr.write(`helora: ${e instanceof Error ? e.message.replace(/^helora: /, '') : String(e)}\n`);
  process.exit(1);
});
