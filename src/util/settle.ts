/**
 * Waits for every promise, even when one fails (e.g. so that no worker still uses shared scratch
 * memory that the caller is about to reuse), then throws the first failure or returns the values.
 */
export async function settleAll<T>(promises: readonly Promise<T>[]): Promise<T[]> {
  const settled = await Promise.allSettled(promises);
  const failed = settled.find((x): x is PromiseRejectedResult => x.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((x) => (x as PromiseFulfilledResult<T>).value);
}
