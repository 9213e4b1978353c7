// `helora eval`: the loss and perplexity of a finished PEFT adapter (or of the base model) on a
// data file, computed locally in fp32 or with the integers of the quantized mode.

import { Command, Option } from 'commander';
import { EVAL_MODES, evaluateAdapter, type EvalMode, type EvaluateAdapterResult } from '../train/evaluate.js';
import { TRAIN_DEFAULTS } from '../train/fine-tune.js';
import { actBitsArg, positiveInt } from './args.js';

export interface EvalCliOptions {
  model: string; adapter?: string; data: string; batchTokens: number; mode: EvalMode; actBits?: number; json: boolean;
}

/** One line of text, or a JSON object with --json. */
export function formatEval(o: EvalCliOptions, r: EvaluateAdapterResult): string {
  if (o.json) {
    return JSON.stringify({
      model: o.model, adapter: o.adapter ?? null, data: o.data, mode: o.mode, ...(o.mode === 'quantized' ? { act_bits: o.actBits ?? 8 } : {}),
      loss: r.loss, ppl: r.ppl, tokens: r.tokens, records: r.records, batches: r.batches,
    });
  }
  const what = o.adapter ? `adapter ${o.adapter}` : 'base model';
  return `${what} on ${o.data} (${r.records} records, ${r.tokens} target tokens, ${o.mode}): loss ${r.loss.toFixed(4)}, perplexity ${r.ppl.toFixed(3)}`;
}

export async function runEval(o: EvalCliOptions): Promise<string> {
  const r = await evaluateAdapter({ model: o.model, adapter: o.adapter, data: o.data, batchTokens: o.batchTokens, mode: o.mode, actBits: o.actBits });
  return formatEval(o, r);
}

export function registerEvalCommand(program: Command): void {
  program
    .command('eval')
    .description('loss and perplexity of a finished LoRA adapter (or the base model) on a data file, computed locally')
    .requiredOption('--model <dir>', 'model folder with its projection weights')
    .option('--adapter <dir>', 'PEFT adapter folder (default: the base model alone)')
    .requiredOption('--data <file>', 'data file (the formats helora train reads)')
    .option('--batch-tokens <n>', 'tokens per micro-batch (the data is packed like training data)', positiveInt, TRAIN_DEFAULTS.batchTokens)
    .addOption(new Option('--mode <mode>', 'fp32, or the integers of the quantized / encrypted training').choices(EVAL_MODES as string[]).default('fp32'))
    .option('--act-bits <n>', 'activation bits of --mode quantized (default 8)', actBitsArg)
    .option('--json', 'print one JSON object', false)
    .action(async (o: EvalCliOptions) => {
      process.stdout.write((await runEval(o)) + '\n');
    });
}
