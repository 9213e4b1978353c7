#!/usr/bin/env node
// The `helora` command.

import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { matmulDemo, MATMUL_DEMO_DEFAULTS } from './matmul-demo.js';
import { serve, SERVE_DEFAULT_BURST, SERVE_DEFAULT_QUEUE, SERVE_DEFAULT_RATE } from './serve.js';
import { DEFAULT_SERVER_LIMITS } from '../transport/server.js';
import { DEFAULT_TOKENS_PER_CHECK } from '../transport/integrity.js';
import { runTrain } from './train.js';
import { TRAIN_DEFAULTS, TRAIN_MODES, type TrainMode } from '../train/fine-tune.js';
import { DEMO_DEFAULTS } from '../train/gloss-demo.js';
import { generateCommand } from './generate-cmd.js';
import { runDemo } from './demo.js';
import type { ProjectionName } from '../model/projections.js';
import { registerPretrainCommand } from './pretrain.js';
import { registerEstimateCommands } from './estimate.js';
import { registerAuditCommands } from './audit.js';
import { registerEvalCommand } from './eval.js';
import { registerSweepCommand } from './sweep.js';
import { actBitsArg, addTrainingHyperparameters, fraction, layerList, nonNegativeInt, nonNegativeNumber, port, positiveInt, positiveNumber } from './args.js';

const program = new Command();
program
  .name('helora')
  .description('Private LoRA fine-tuning of open LLMs: the server computes the frozen linear products on RLWE-encrypted activations.')
  .showHelpAfterError();

program
  .command('serve')
  .description('serve a model folder: quantize and hash its projection weights, compute encrypted products for clients')
  .requiredOption('--model <dir>', 'Hugging Face model folder (config.json, safetensors)')
  .option('--host <host>', 'address to listen on', '127.0.0.1')
  .option('--port <n>', 'port (0: a free one)', port, 0)
  .option('--threads <n>', 'kernel worker threads (default: every core)', positiveInt)
  .option('--token-file <file>', 'file whose first line is the bearer token clients must present (or set HELORA_TOKEN); at least 128 bits: 32 hex or 22 base64 characters')
  .option('--token <t>', 'bearer token on the command line (shows in ps: prefer --token-file or HELORA_TOKEN)')
  .option('--tls-cert <file>', 'PEM certificate chain (serve wss://)')
  .option('--tls-key <file>', 'PEM private key')
  .option('--insecure', 'allow a non-loopback --host without TLS or without a token', false)
  .option('--rate <n>', 'frames per second per connection', positiveNumber, SERVE_DEFAULT_RATE)
  .option('--burst <n>', `frames a connection may send at once (default ${SERVE_DEFAULT_BURST}, at most --max-queue)`, positiveInt)
  .option('--max-queue <n>', 'requests waiting for the kernels, all connections', positiveInt, SERVE_DEFAULT_QUEUE)
  .option('--max-in-flight <n>', 'requests in flight per connection', positiveInt, DEFAULT_SERVER_LIMITS.maxInFlightPerConnection)
  .option('--max-connections <n>', 'simultaneous connections', positiveInt, DEFAULT_SERVER_LIMITS.maxConnections)
  .option('--max-connections-per-address <n>', 'simultaneous connections from one address', positiveInt, DEFAULT_SERVER_LIMITS.maxConnectionsPerAddress)
  .option('--max-tokens <n>', 'most tokens per request', positiveInt)
  .option('--act-bits <n>', 'activation width the products are sized for (default 8; fewer bits: fewer K-chunk terms, less download; clients may use fewer, never more)', actBitsArg)
  .option('--mask-tables <dir>', 'folder of the public mask tables, computed once per model (default: helora-mask-tables in the temp folder)')
  .option('--no-mask-tables', 'offer no mask tables (clients use fresh masks)')
  .option('--audit-log <file>', 'hash-chained log of every answered request (sizes, frame SHA-256s, token fingerprint; no payload); continued when it exists')
  .action(async (o: {
    model: string; host: string; port: number; threads?: number; token?: string; tokenFile?: string; tlsCert?: string; tlsKey?: string; insecure: boolean;
    rate: number; burst?: number; maxQueue: number; maxInFlight: number; maxConnections: number; maxConnectionsPerAddress: number; maxTokens?: number; actBits?: number;
    maskTables?: string | boolean; auditLog?: string;
  }) => {
    const s = await serve({ ...o, maskTables: o.maskTables === true ? undefined : o.maskTables, env: process.env });
    const stop = (): void => {
      void s.close().then(() => process.exit(0));
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });

addTrainingHyperparameters(program
  .command('train')
  .description('LoRA fine-tuning; the frozen products run encrypted on a server (default), or locally (quantized / fp32)')
  .option('--server <url>', 'server URL, ws://host:port (encrypted mode)')
  .requiredOption('--model <dir>', 'model folder (tokenizer, embeddings, norms, LM head; projection weights optional in encrypted mode)')
  .requiredOption('--data <file>', 'training data: JSONL {"text"}, {"prompt","completion"}, chat {"messages"} (the model\'s chat template), or plain text')
  .requiredOption('--out <dir>', 'output folder (loss.csv, loss.png, adapter/, checkpoints/)')
  .addOption(new Option('--mode <mode>', 'where the frozen products run').choices(TRAIN_MODES as string[]).default(TRAIN_DEFAULTS.mode))
  .option('--steps <n>', 'optimizer steps', positiveInt)
  .option('--epochs <n>', 'epochs over the data (default 1 when --steps is not given)', positiveNumber))
  .option('--layers <list>', 'decoder layers that get LoRA, e.g. 8-15 (default: all); backward stops at the lowest', layerList)
  .addOption(new Option('--masks <mode>', "encrypted mode: the server's public mask tables (half the download and server work) or fresh masks per request (default: table when the server offers it)").choices(['table', 'fresh']))
  .option('--table-cache <dir>', 'folder for downloaded mask tables (default: ~/.cache/helora/mask-tables)')
  .option('--seed <n>', 'seed of the LoRA init, data order and dropout', nonNegativeInt, TRAIN_DEFAULTS.seed)
  .option('--token-file <file>', 'file whose first line is the bearer token for the server (or set HELORA_TOKEN)')
  .option('--token <t>', 'bearer token for the server on the command line (shows in ps: prefer --token-file or HELORA_TOKEN)')
  .option('--expect-hash <h>', "the server's model hash to insist on")
  .option('--no-verify-results', 'do not check the server\'s results against the public weights (the check needs the projection weights in --model; without them it cannot run)')
  .option('--check-tokens <n>', 'encrypted mode: tokens of each request whose results are checked against the public weights (0: every token)', nonNegativeInt, DEFAULT_TOKENS_PER_CHECK)
  .option('--allow-unverified', "train through a server whose model hash cannot be checked (no --expect-hash and no projection weights in --model)", false)
  .option('--ca <file>', 'PEM CA certificate to trust (a wss:// server with a self-signed certificate)')
  .option('--act-bits <n>', "bits of the quantized activations and gradients in quantized and encrypted mode (default 8; encrypted: at most the server's width, which is the default there; the width is never sent)", actBitsArg)
  .option('--eval-data <file>', 'held-out data (same formats as --data): loss and perplexity before the first step, every --eval-every steps and after the last')
  .option('--eval-split <f>', 'hold out this fraction of the --data records (seeded by --seed) instead of --eval-data', fraction)
  .option('--eval-every <n>', 'steps between held-out evaluations (default: only before the first and after the last step)', positiveInt)
  .option('--resume', 'continue from the newest checkpoint in --out', false)
  .option('--checkpoint-every <n>', 'steps between checkpoints', positiveInt, TRAIN_DEFAULTS.checkpointEvery)
  .option('--audit-log <file>', 'encrypted mode: hash-chained log of every exchange with the server (default: audit.jsonl in --out); no secrets, no loss')
  .option('--no-audit-log', 'encrypted mode: keep no audit log')
  .option('--threads <n>', 'client threads: the native model kernels and, in encrypted mode, the encryption and decryption workers (default: every core, or HELORA_THREADS)', positiveInt)
  .option('--no-progress', 'no progress output')
  .addOption(new Option('--stop-after <n>', 'stop after this many steps without finishing the run (testing crash recovery)').argParser(positiveInt).hideHelp())
  .action(async (o: {
    server?: string; model: string; data: string; out: string; mode: TrainMode; steps?: number; epochs?: number; batchTokens: number; gradAccum: number;
    lr: number; warmup: number; schedule: 'cosine' | 'linear' | 'constant'; rank: number; alpha: number; dropout: number; targets: ProjectionName[]; layers?: number[]; masks?: 'table' | 'fresh'; tableCache?: string; seed: number;
    token?: string; tokenFile?: string; allowUnverified: boolean; verifyResults: boolean; checkTokens: number; expectHash?: string; ca?: string; resume: boolean; checkpointEvery: number; progress: boolean; stopAfter?: number;
    auditLog: string | boolean; evalData?: string; evalSplit?: number; evalEvery?: number; actBits?: number; threads?: number;
  }) => {
    const r = await runTrain({ ...o, env: process.env, ca: o.ca !== undefined ? readFileSync(o.ca, 'utf8') : undefined });
    const last = r.history[r.history.length - 1];
    process.stdout.write(JSON.stringify({
      event: 'done', mode: o.mode, steps: r.history.length, total_steps: r.totalSteps, resumed_from: r.startStep,
      final_loss: last?.loss ?? null, ...(o.actBits !== undefined ? { act_bits: o.actBits } : {}), csv: r.csvPath, plot: r.pngPath, adapter: r.adapterDir, model_hash: r.modelHash, hash_check: r.hashCheck,
      bytes_up: last?.bytesUp ?? 0, bytes_down: last?.bytesDown ?? 0, audit_log: r.auditLog,
      ...(r.evals.length > 0 ? { final_eval_loss: r.finalEval?.loss ?? null, final_eval_ppl: r.finalEval?.ppl ?? null, eval_tokens: r.evals[0]!.tokens } : {}),
    }) + '\n');
  });

program
  .command('generate')
  .description('generate text locally, with or without a LoRA adapter')
  .requiredOption('--model <dir>', 'model folder')
  .option('--adapter <dir>', 'PEFT adapter folder')
  .requiredOption('--prompt <text>', 'prompt text')
  .option('--max-new-tokens <n>', 'most tokens to generate', positiveInt, 64)
  .option('--temperature <t>', '0 = greedy', nonNegativeNumber, 0)
  .option('--top-p <p>', 'nucleus sampling mass', positiveNumber, 1)
  .option('--seed <s>', 'sampling seed (default: random)')
  .action(async (o: { model: string; adapter?: string; prompt: string; maxNewTokens: number; temperature: number; topP: number; seed?: string }) => {
    const text = await generateCommand(o);
    process.stdout.write(text + '\n');
  });

program
  .command('demo')
  .description('fine-tune the shipped tiny model on WordNet glosses through a loopback server: encrypted vs quantized vs fp32')
  .option('--model <dir>', 'base model folder', DEMO_DEFAULTS.model)
  .option('--out <dir>', 'output folder (default ./runs/demo-<timestamp>)')
  .option('--steps <n>', 'optimizer steps per mode', positiveInt, DEMO_DEFAULTS.steps)
  .option('--batch-tokens <n>', 'tokens per micro-batch', positiveInt, DEMO_DEFAULTS.batchTokens)
  .option('--examples <n>', 'WordNet glosses to train on', positiveInt, DEMO_DEFAULTS.examples)
  .option('--held-out <n>', `other WordNet glosses for the held-out loss (before the first step, every ${DEMO_DEFAULTS.evalEvery} steps and after the last; 0: none)`, nonNegativeInt, DEMO_DEFAULTS.heldOut)
  .option('--lr <x>', 'peak learning rate', positiveNumber, DEMO_DEFAULTS.lr)
  .option('--rank <r>', 'LoRA rank', positiveInt, DEMO_DEFAULTS.rank)
  .option('--seed <n>', 'seed', nonNegativeInt, DEMO_DEFAULTS.seed)
  .option('--threads <n>', 'server threads', positiveInt)
  .option('--modes <list>', 'modes to run, comma-separated', DEMO_DEFAULTS.modes.join(','))
  .action(async (o: { model: string; out?: string; steps: number; batchTokens: number; examples: number; heldOut: number; lr: number; rank: number; seed: number; threads?: number; modes: string }) => {
    const modes = o.modes.split(',').map((s) => s.trim()) as TrainMode[];
    for (const m of modes) if (!TRAIN_MODES.includes(m)) throw new Error(`--modes: unknown mode "${m}" (${TRAIN_MODES.join(', ')})`);
    await runDemo({ ...o, modes });
  });

registerPretrainCommand(program);
registerEstimateCommands(program);
registerAuditCommands(program);
registerEvalCommand(program);
registerSweepCommand(program);

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
