// `helora generate`: local text generation from a model folder, with or without a PEFT adapter.

import type { LlamaConfig } from '../model/config.js';
import { LocalFp32Provider, type TensorMap } from '../model/frozen.js';
import { generate } from '../model/generate.js';
import { LlamaModel } from '../model/llama.js';
import { loadModelFolder } from '../model/loader.js';
import { LoraAdapter } from '../model/lora.js';
import { loadAdapter } from '../model/peft.js';
import { loadTokenizer, type TextTokenizer } from '../model/tokenizer.js';

export interface GenerateCmdOptions {
  model: string;
  adapter?: string;
  prompt: string;
  maxNewTokens: number;
  temperature: number;
  topP: number;
  seed?: string;
}

export interface LocalModel { config: LlamaConfig; tensors: TensorMap; model: LlamaModel; tokenizer: TextTokenizer }

export function loadLocalModel(dir: string): LocalModel {
  const { config, tensors } = loadModelFolder(dir);
  const model = LlamaModel.fromTensors(config, tensors, LocalFp32Provider.fromTensors(config, tensors));
  return { config, tensors, model, tokenizer: loadTokenizer(dir) };
}

/** Prompt ids: BOS (when the tokenizer or config has one) then the text. */
export function promptIds(m: LocalModel, prompt: string): number[] {
  const bos = m.tokenizer.bosId ?? m.config.bosTokenId;
  const ids = m.tokenizer.encode(prompt, { addSpecialTokens: false });
  return bos !== null && bos !== undefined ? [bos, ...ids] : ids;
}

/** The completion text of a prompt (special tokens dropped). */
export async function complete(m: LocalModel, lora: LoraAdapter | null, prompt: string, o: { maxNewTokens: number; temperature?: number; topP?: number; seed?: string }): Promise<string> {
  const ids = promptIds(m, prompt);
  if (ids.length === 0) throw new Error('helora: the prompt is empty');
  const eos = m.tokenizer.eosId ?? undefined;
  const out = await generate(m.model, lora, ids, { maxNewTokens: o.maxNewTokens, temperature: o.temperature ?? 0, topP: o.topP ?? 1, seed: o.seed, eosTokenId: eos });
  return m.tokenizer.decode(out, { skipSpecialTokens: true });
}

export async function generateCommand(o: GenerateCmdOptions): Promise<string> {
  if (!(o.temperature >= 0)) throw new Error(`helora: --temperature must be >= 0, got ${o.temperature}`);
  if (!(o.topP > 0 && o.topP <= 1)) throw new Error(`helora: --top-p must be in (0, 1], got ${o.topP}`);
  const m = loadLocalModel(o.model);
  const lora = o.adapter ? LoraAdapter.fromTensors(m.config, loadAdapter(o.adapter, m.config)) : null;
  return complete(m, lora, o.prompt, o);
}
