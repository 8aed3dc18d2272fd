/** Ordinal string comparison by Unicode code point (what Python's `<` does on str).
 *
 * JavaScript's `<` compares UTF-16 code units, which differs from code-point order only when
 * a surrogate pair meets a BMP character above U+D7FF; keys are ASCII in practice, but the
 * rules must be a total function identical to the Python one, so never localeCompare. */
export function cmpStr(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) {
      const xs = x >= 0xd800 && x <= 0xdfff;
      const ys = y >= 0xd800 && y <= 0xdfff;
      if (xs === ys) return x < y ? -1 : 1;
      // a surrogate (code point >= U+10000) sorts after any BMP character that is not one
      return xs ? 1 : -1;
    }
  }
  return a.length < b.length ? -1 : a.length > b.length ? 1 : 0;
}

/** Lexicographic comparison of string tuples, each element by code point. */
export function cmpTuple(a: readonly string[], b: readonly string[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const c = cmpStr(a[i]!, b[i]!);
    if (c !== 0) return c;
  }
  return a.length - b.length;
}

/** Sorted copy of strings by code point, ascending. */
export function sortedStrings(xs: Iterable<string>): string[] {
  return [...xs].sort(cmpStr);
}
