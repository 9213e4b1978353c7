/** `helora pretrain`: train the small base model (models/helora-tiny) from scratch. */

import type { Command } from 'commander';
import { nonNegativeInt, positiveInt, positiveNumber } from './args.js';
import { pretrain, PRETRAIN_DEFAULTS, type PretrainOptions } from '../train/pretrain.js';

export interface PretrainCliOptions {
  out: string; steps: number; hidden: number; layers: number; heads: number; kvHeads: number; intermediate: number;
  vocab: number; seqLen: number; batchTokens: number; lr: number; seed: number; warmup?: number; evalEvery?: number;
  checkpointEvery: number; resume?: boolean; corpus?: string;
}

/** Runs the command with parsed options (also usable without commander). */
export async function runPretrain(o: PretrainCliOptions): Promise<void> {
  const d = PRETRAIN_DEFAULTS;
  const same = (Object.keys(d) as Array<keyof typeof d>).every((k) => k === 'out' || o[k] === d[k]);
  const opts: PretrainOptions = {
    out: o.out, steps: o.steps, hidden: o.hidden, layers: o.layers, heads: o.heads, kvHeads: o.kvHeads, intermediate: o.intermediate,
    vocab: o.vocab, seqLen: o.seqLen, batchTokens: o.batchTokens, lr: o.lr, seed: o.seed, warmupSteps: o.warmup, evalEvery: o.evalEvery,
    checkpointEvery: o.checkpointEvery, resume: o.resume ?? false, corpusDir: o.corpus,
    command: same ? `helora pretrain --out ${d.out}   # every other default is the shipped model's` : undefined,
  };
  const r = await pretrain(opts);
  process.stdout.write(JSON.stringify({ out: o.out, params: r.params, steps: r.steps, tokens: r.trainTokens, seconds: Math.round(r.seconds), initialValLoss: r.initialValLoss, finalValLoss: r.finalValLoss }) + '\n');
}

export function registerPretrainCommand(program: Command): void {
  const d = PRETRAIN_DEFAULTS;
  program
    .command('pretrain')
    .description('train a small Llama-architecture base model from scratch on nlp-corpus (the defaults rebuild models/helora-tiny)')
    .option('--out <dir>', 'output model folder', d.out)
    .option('--steps <n>', 'optimizer steps', positiveInt, d.steps)
    .option('--hidden <n>', 'hidden size', positiveInt, d.hidden)
    .option('--layers <n>', 'decoder layers', positiveInt, d.layers)
    .option('--heads <n>', 'attention heads', positiveInt, d.heads)
    .option('--kv-heads <n>', 'key/value heads (grouped-query attention)', positiveInt, d.kvHeads)
    .option('--intermediate <n>', 'MLP intermediate size', positiveInt, d.intermediate)
    .option('--vocab <n>', 'BPE vocabulary size (special token included)', positiveInt, d.vocab)
    .option('--seq-len <n>', 'longest training sequence in tokens', positiveInt, d.seqLen)
    .option('--batch-tokens <n>', 'tokens per optimizer step', positiveInt, d.batchTokens)
    .option('--lr <x>', 'peak learning rate', positiveNumber, d.lr)
    .option('--seed <n>', 'seed of initialization and data order', nonNegativeInt, d.seed)
    .option('--warmup <n>', 'warmup steps (default: 10% of the steps, at most 100)', nonNegativeInt)
    .option('--eval-every <n>', 'validation every n steps (default: steps / 10)', positiveInt)
    .option('--checkpoint-every <n>', 'checkpoint every n steps into OUT/checkpoint.safetensors (0: only at the end)', nonNegativeInt, 50)
    .option('--resume', 'continue from OUT/checkpoint.safetensors')
    .option('--corpus <dir>', 'folder of nlp-corpus doc-N.json files (default: node_modules/nlp-corpus/builds)')
    .action(async (o: PretrainCliOptions) => {
      await runPretrain(o);
    });
}
