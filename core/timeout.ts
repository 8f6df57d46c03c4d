/** A promise that rejects if `p` has not settled within `ms` ("<what> did not answer within <ms> ms"). */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
      timer.unref(); // a timeout must never be what keeps a stopping process alive
    }),
  ]).finally(() => clearTimeout(timer));
}
