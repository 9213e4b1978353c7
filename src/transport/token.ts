// Bearer tokens: where `helora serve` and `helora train` read one from, and the strength rule.
//
// Strength: a token is refused unless it holds at least 128 bits by this count (we cannot measure
// how random a string is, only refuse ones too short to be random enough):
//   - only hex digits [0-9a-fA-F]:                        4 bits per character -> at least 32 characters
//   - otherwise only base64 / base64url characters
//     [A-Za-z0-9+/_-] (and '=' padding, not counted):     6 bits per character -> at least 22 characters
//   - otherwise printable ASCII (0x21..0x7e) only:         counted as 6 bits too  -> at least 22 characters
// Whitespace, control characters and non-ASCII are refused (a token travels in an HTTP header).
// Generate one with `openssl rand -hex 32` (256 bits) or `openssl rand -base64 32`.

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

export const MIN_TOKEN_BITS = 128;
/** The environment variable both `helora serve` and `helora train` read the token from. */
export const TOKEN_ENV = 'HELORA_TOKEN';

/** Bits a token is credited with (see the header comment); throws on characters a token may not hold. */
export function tokenBits(token: string): number {
  if (!/^[\x21-\x7e]+$/.test(token)) throw new Error('helora: a bearer token must be non-empty printable ASCII without spaces');
  if (/^[0-9a-fA-F]+$/.test(token)) return 4 * token.length;
  return 6 * token.replace(/=+$/, '').length;
}

/** Throws unless the token is at least MIN_TOKEN_BITS strong (never prints the token). */
export function checkTokenStrength(token: string): void {
  const bits = tokenBits(token);
  if (bits < MIN_TOKEN_BITS) {
    throw new Error(`helora: the bearer token is too weak (${bits} bits counted, at least ${MIN_TOKEN_BITS} needed: `
      + '32 hex or 22 base64 characters); make one with `openssl rand -hex 32`');
  }
}

export interface TokenSources {
  /** --token on the command line (visible in ps and the shell history). */
  token?: string;
  /** --token-file: the first line of the file. */
  tokenFile?: string;
  /** The environment (HELORA_TOKEN). */
  env?: NodeJS.ProcessEnv;
}

/**
 * The token from exactly one of --token, --token-file or HELORA_TOKEN (none: undefined). More than
 * one is refused, so that the one in use is never a surprise.
 */
export function resolveToken({ token, tokenFile, env = process.env }: TokenSources): { token: string; source: 'option' | 'file' | 'env' } | undefined {
  const fromEnv = env[TOKEN_ENV];
  const given = [token !== undefined, tokenFile !== undefined, fromEnv !== undefined && fromEnv !== ''].filter(Boolean).length;
  if (given > 1) throw new Error(`helora: give the bearer token one way only (--token, --token-file or ${TOKEN_ENV})`);
  if (token !== undefined) return { token, source: 'option' };
  if (tokenFile !== undefined) {
    const text = readFileSync(tokenFile, 'utf8');
    if (text.length > 4096) throw new Error(`helora: --token-file ${tokenFile} is larger than a token (${text.length} characters)`);
    const first = text.split(/\r?\n/)[0];
    if (first.length === 0) throw new Error(`helora: --token-file ${tokenFile} is empty`);
    return { token: first, source: 'file' };
  }
  if (fromEnv !== undefined && fromEnv !== '') return { token: fromEnv, source: 'env' };
  return undefined;
}

/**
 * A short public name of a token for logs (the audit logs of both sides): the first 16 hex digits
 * of SHA-256("helora-token-id-v1\n" + token). It names which token was used without giving it away
 * (a 64-bit digest of a 128-bit or stronger secret).
 */
export function tokenFingerprint(token: string): string {
  return createHash('sha256').update(`helora-token-id-v1\n${token}`, 'utf8').digest('hex').slice(0, 16);
}
