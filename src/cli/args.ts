// Argument parsers shared by the helora commands: clear commander errors for malformed values.

import { InvalidArgumentError } from 'commander';
import { isProjectionName, PROJECTION_NAMES, type ProjectionName } from '../model/projections.js';

export function positiveInt(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive integer, got "${v}"`);
  return n;
}

export function nonNegativeInt(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) throw new InvalidArgumentError(`expected a non-negative integer, got "${v}"`);
  return n;
}

export function positiveNumber(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`expected a positive number, got "${v}"`);
  return n;
}

export function nonNegativeNumber(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`expected a non-negative number, got "${v}"`);
  return n;
}

export function probability(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !(n >= 0 && n < 1)) throw new InvalidArgumentError(`expected a number in [0, 1), got "${v}"`);
  return n;
}

export function port(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n > 65535) throw new InvalidArgumentError(`expected a port number 0..65535, got "${v}"`);
  return n;
}

export function targets(v: string): ProjectionName[] {
  const list = v.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (list.length === 0) throw new InvalidArgumentError('expected a comma-separated list of modules');
  for (const t of list) {
    if (!isProjectionName(t)) throw new InvalidArgumentError(`unknown module "${t}" (choose from ${PROJECTION_NAMES.join(',')})`);
  }
  return list as ProjectionName[];
}
