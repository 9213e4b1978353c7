// Vetting the regular expressions a tokenizer.json carries (pre-tokenizer / normalizer "Regex"
// patterns). JavaScript's regex engine backtracks, so a pattern like `(a+)+$` takes exponential time
// on a short input, and a regex cannot be interrupted on the thread that runs it.
//
// Choice: reject, not time-box. Time-boxing would need every encode to run in a worker that can be
// killed; instead each pattern is vetted once, at load, by rules that exclude the exponential
// backtracking shapes and that every real tokenizer pattern (GPT-2, Llama-3, Qwen2, cl100k, o200k,
// SmolLM2's) passes:
//   - at most MAX_PATTERN_CHARS characters;
//   - no backreferences (\1..\9, \k<name>);
//   - no quantified group whose body holds an unbounded quantifier or an alternation: a group
//     followed by *, +, {n,} or {n,m} with m > 16 may only hold plain atoms and bounded ones
//     (`(?:ab)+` passes, `(a+)+`, `(a|a)*` and `(a*b?)*` are refused).
// Adjacent quantifiers over overlapping classes (`\s*[\r\n]+`) can still be polynomial in one
// pre-token; that is bounded by the caller's own text, which the data owner supplies.

export const MAX_PATTERN_CHARS = 1024;
/** A {n,m} quantifier with m above this counts as unbounded. */
const MAX_BOUNDED_REPEAT = 16;

interface GroupState {
  /** The group's body holds an unbounded quantifier or an alternation. */
  risky: boolean;
}

/** Throws (naming the rule) unless `pattern` passes the rules above. */
export function vetTokenizerRegex(pattern: string, where: string): void {
  const refuse = (why: string): never => {
    throw new Error(`helora: ${where}: regular expression ${JSON.stringify(pattern.slice(0, 80))} refused: ${why} (it could backtrack for exponential time)`);
  };
  if (pattern.length > MAX_PATTERN_CHARS) refuse(`longer than ${MAX_PATTERN_CHARS} characters`);
  const stack: GroupState[] = [{ risky: false }];
  let i = 0;
  /** Reads a quantifier at i (if any): 'unbounded', 'bounded' or null; advances i past it (and a lazy/possessive mark). */
  const quantifier = (): 'unbounded' | 'bounded' | null => {
    const c = pattern[i];
    let kind: 'unbounded' | 'bounded' | null = null;
    if (c === '*' || c === '+') { kind = 'unbounded'; i++; }
    else if (c === '?') { kind = 'bounded'; i++; }
    else if (c === '{') {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(pattern.slice(i));
      if (m) {
        kind = m[2] === undefined ? 'bounded' : m[3] === '' || Number(m[3]) > MAX_BOUNDED_REPEAT ? 'unbounded' : 'bounded';
        i += m[0].length;
      }
    }
    if (kind && (pattern[i] === '?' || pattern[i] === '+')) i++;
    return kind;
  };
  while (i < pattern.length) {
    const c = pattern[i];
    const top = stack[stack.length - 1];
    if (c === '\\') {
      const next = pattern[i + 1] ?? '';
      if (/[1-9]/.test(next) || next === 'k') refuse('backreference');
      // \p{..} / \P{..} / \u{..} / \x.. are one atom
      const m = /^\\[pPu]\{[^}]*\}/.exec(pattern.slice(i));
      i += m ? m[0].length : 2;
      if (quantifier() === 'unbounded') top.risky = true;
    } else if (c === '[') {
      // a character class is one atom: skip to its closing bracket (escapes inside honoured)
      i++;
      if (pattern[i] === '^') i++;
      if (pattern[i] === ']') i++;
      while (i < pattern.length && pattern[i] !== ']') i += pattern[i] === '\\' ? 2 : 1;
      if (i >= pattern.length) refuse('unterminated character class');
      i++;
      if (quantifier() === 'unbounded') top.risky = true;
    } else if (c === '(') {
      stack.push({ risky: false });
      i++;
      if (pattern[i] === '?') {
        // (?:  (?=  (?!  (?<=  (?<!  (?<name>  (?i:  — skip the group's prefix
        const m = /^\?(<[=!]|[:=!>]|<[A-Za-z_][A-Za-z0-9_]*>|[imsx-]+:)/.exec(pattern.slice(i));
        i += m ? m[0].length : 1;
      }
    } else if (c === ')') {
      if (stack.length === 1) refuse('unbalanced parenthesis');
      const group = stack.pop()!;
      i++;
      const q = quantifier();
      if (q === 'unbounded' && group.risky) refuse('a repeated group holds a repetition or an alternation');
      const parent = stack[stack.length - 1];
      if (group.risky || q === 'unbounded') parent.risky = true;
    } else if (c === '|') {
      top.risky = true;
      i++;
    } else {
      i++;
      if (quantifier() === 'unbounded') top.risky = true;
    }
  }
  if (stack.length !== 1) refuse('unbalanced parenthesis');
}

/** Vets every {"Regex": pattern} anywhere in a tokenizer.json document (depth-limited walk). */
export function vetTokenizerJsonRegexes(doc: unknown, where: string): number {
  let count = 0;
  const walk = (v: unknown, depth: number): void => {
    if (depth > 64) throw new Error(`helora: ${where} is nested deeper than 64 levels`);
    if (Array.isArray(v)) {
      // the vocabulary and merges are long arrays of strings: nothing to vet there
      for (const x of v) if (typeof x === 'object' && x !== null) walk(x, depth + 1);
    } else if (typeof v === 'object' && v !== null) {
      for (const [k, x] of Object.entries(v)) {
        if (k === 'Regex') {
          if (typeof x !== 'string') throw new Error(`helora: ${where}: "Regex" must be a string`);
          vetTokenizerRegex(x, where);
          count++;
        } else if (k !== 'vocab' && k !== 'merges' && typeof x === 'object' && x !== null) {
          walk(x, depth + 1);
        }
      }
    }
  };
  walk(doc, 0);
  return count;
}
