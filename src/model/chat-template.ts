// Chat conversations rendered with a model's own chat template (the Jinja `chat_template` of
// tokenizer_config.json, or chat_template.jinja), run by @huggingface/jinja, with the loss on the
// assistant turns only, the way TRL's assistant-only loss does it: the whole conversation is
// rendered and tokenized once, and a token is a loss target when it overlaps the characters of an
// assistant turn (transformers' `return_assistant_tokens_mask`).
//
// Where the assistant turns are in the rendered text:
//  - a template with `{% generation %}...{% endgeneration %}` blocks (the markers TRL requires)
//    marks them itself: the blocks are rendered as private-use sentinel characters, whose
//    positions are the spans, and then removed;
//  - any other template is rendered incrementally: assistant turn i starts where the rendering of
//    the messages before it with the generation prompt ends (that rendering must be a prefix of
//    the whole conversation's), and ends after the first special token that follows its content
//    with only whitespace between (Llama-3 <|eot_id|>, ChatML <|im_end|>, Gemma <end_of_turn>,
//    Mistral </s>), so the model learns to end its turn. A template where either cannot be found is
//    refused with a message that asks for generation markers.
// Message contents that hold a special token's text (which the tokenizer would turn into that
// special token) or a sentinel character are refused: a conversation cannot forge turn structure.

import { Template } from '@huggingface/jinja';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatTemplateOptions {
  /** Values the template reads as `bos_token`, `eos_token`, ... (transformers passes the special tokens map). */
  specialTokenValues: Record<string, string>;
  /** Text of every special token of the tokenizer (added tokens with special = true). */
  specialTokens: readonly string[];
}

/** A rendered conversation and the [start, end) character spans of its assistant turns. */
export interface RenderedChat {
  text: string;
  assistantSpans: Array<[number, number]>;
}

const GENERATION_START = '\uE000';
const GENERATION_END = '\uE001';
const GENERATION_TAG = /\{%(-?)\s*(end)?generation\s*(-?)%\}/g;

/** Most characters of a chat template source (real ones are a few kB). */
export const MAX_CHAT_TEMPLATE_CHARS = 1 << 20;

export class ChatTemplate {
  private readonly template: Template;
  private readonly hasGenerationMarkers: boolean;
  private readonly specialTokens: readonly string[];

  constructor(
    source: string,
    private readonly opts: ChatTemplateOptions,
  ) {
    if (source.length > MAX_CHAT_TEMPLATE_CHARS) throw new Error(`helora: the chat template is ${source.length} characters, more than the limit of ${MAX_CHAT_TEMPLATE_CHARS}`);
    this.hasGenerationMarkers = GENERATION_TAG.test(source);
    GENERATION_TAG.lastIndex = 0;
    // @huggingface/jinja drops generation tags; turn them into output of sentinel characters first.
    const withSentinels = source.replace(GENERATION_TAG, (_m, lstrip: string, end: string | undefined, rstrip: string) =>
      `{{${lstrip} ${end ? '__helora_generation_end' : '__helora_generation_start'} ${rstrip}}}`);
    try {
      this.template = new Template(withSentinels);
    } catch (e) {
      throw new Error(`helora: cannot parse the model's chat template: ${(e as Error).message}`);
    }
    // Longest first, so that a token that contains another is found as itself.
    this.specialTokens = [...opts.specialTokens].filter((t) => t.length > 0).sort((a, b) => b.length - a.length);
  }

  /** The template's output for these messages (sentinels included when the template has generation markers). */
  private renderRaw(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string {
    try {
      return this.template.render({
        ...this.opts.specialTokenValues,
        messages: messages.map((m) => ({ role: m.role, content: m.content })),
        add_generation_prompt: addGenerationPrompt,
        __helora_generation_start: GENERATION_START,
        __helora_generation_end: GENERATION_END,
      });
    } catch (e) {
      throw new Error(`helora: the model's chat template failed on this conversation: ${(e as Error).message}`);
    }
  }

  /** Renders a conversation for inference or display (no spans). */
  render(messages: readonly ChatMessage[], addGenerationPrompt = false): string {
    this.checkMessages(messages);
    return stripSentinels(this.renderRaw(messages, addGenerationPrompt));
  }

  /** Renders a whole conversation for training, with the character spans of its assistant turns. */
  renderForTraining(messages: readonly ChatMessage[]): RenderedChat {
    this.checkMessages(messages);
    return this.hasGenerationMarkers ? this.spansFromMarkers(messages) : this.spansByIncrementalRendering(messages);
  }

  private checkMessages(messages: readonly ChatMessage[]): void {
    for (const [i, m] of messages.entries()) {
      for (const field of [m.role, m.content]) {
        if (field.includes(GENERATION_START) || field.includes(GENERATION_END)) {
          throw new Error(`helora: message ${i + 1} holds the reserved character U+E000 or U+E001`);
        }
        const special = this.specialTokens.find((t) => field.includes(t));
        if (special !== undefined) throw new Error(`helora: message ${i + 1} holds the special token ${JSON.stringify(special)} in its text (refused: it would forge the conversation's structure)`);
      }
    }
  }

  private spansFromMarkers(messages: readonly ChatMessage[]): RenderedChat {
    const raw = this.renderRaw(messages, false);
    let text = '';
    const assistantSpans: Array<[number, number]> = [];
    let openAt = -1;
    for (const ch of raw) {
      if (ch === GENERATION_START) {
        if (openAt >= 0) throw new Error('helora: the chat template opens a {% generation %} block inside another');
        openAt = text.length;
      } else if (ch === GENERATION_END) {
        if (openAt < 0) throw new Error('helora: the chat template closes a {% generation %} block it did not open');
        if (text.length > openAt) assistantSpans.push([openAt, text.length]);
        openAt = -1;
      } else {
        text += ch;
      }
    }
    if (openAt >= 0) throw new Error('helora: the chat template leaves a {% generation %} block open');
    return { text, assistantSpans };
  }

  private spansByIncrementalRendering(messages: readonly ChatMessage[]): RenderedChat {
    const text = this.renderRaw(messages, false);
    const assistantSpans: Array<[number, number]> = [];
    const advice = 'add {% generation %} ... {% endgeneration %} around the assistant turns of the template (as TRL requires for assistant-only loss)';
    for (const [i, m] of messages.entries()) {
      if (m.role !== 'assistant') continue;
      const before = this.renderRaw(messages.slice(0, i), true);
      if (!text.startsWith(before)) {
        throw new Error(`helora: cannot find assistant turn ${i + 1} in the rendered conversation: the chat template does not render the conversation before it as a prefix of the whole; ${advice}`);
      }
      const start = before.length;
      const content = m.content.trim();
      const contentAt = content.length === 0 ? start : text.indexOf(content, start);
      if (contentAt < 0 || text.slice(start, contentAt).trim().length > 0) {
        throw new Error(`helora: cannot find the content of assistant turn ${i + 1} right after its header in the rendered conversation; ${advice}`);
      }
      let endOfTurn = contentAt + content.length;
      while (endOfTurn < text.length && /\s/.test(text[endOfTurn]!)) endOfTurn++;
      const special = this.specialTokens.find((t) => text.startsWith(t, endOfTurn));
      if (special === undefined) {
        throw new Error(`helora: assistant turn ${i + 1} is not followed by a special end-of-turn token in the rendered conversation; ${advice}`);
      }
      assistantSpans.push([start, endOfTurn + special.length]);
    }
    return { text, assistantSpans };
  }
}

function stripSentinels(s: string): string {
  return s.replaceAll(GENERATION_START, '').replaceAll(GENERATION_END, '');
}

/** Encodes text to token ids without adding special tokens (a chat template writes its own). */
export type EncodeText = (text: string) => number[];

/**
 * Token ids of a rendered conversation and, per token, whether it is a loss target: a token is a
 * target when its characters overlap an assistant span. The text is tokenized once as a whole;
 * the tokens before a character position p are the common prefix of encode(text) and
 * encode(text[0, p)) (equal tokens after equal tokens cover equal characters), and a token that
 * straddles p is counted on the span's side, as transformers' char_to_token does.
 */
export function tokenizeRenderedChat(chat: RenderedChat, encode: EncodeText): { ids: number[]; lossMask: boolean[] } {
  const ids = encode(chat.text);
  const lossMask = ids.map(() => false);
  const tokensBefore = (position: number): { whole: number; straddles: boolean } => {
    const prefix = encode(chat.text.slice(0, position));
    let n = 0;
    while (n < prefix.length && n < ids.length && prefix[n] === ids[n]) n++;
    return { whole: n, straddles: prefix.length > n };
  };
  for (const [start, end] of chat.assistantSpans) {
    const first = tokensBefore(start).whole;
    const last = tokensBefore(end);
    const stop = last.whole + (last.straddles ? 1 : 0);
    for (let t = first; t < stop && t < ids.length; t++) lossMask[t] = true;
  }
  return { ids, lossMask };
}
