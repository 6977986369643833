/**
 * JSON from files we do not trust (safetensors headers, index files, configs), parsed with limits.
 *
 * Why not JSON.parse alone: it accepts any nesting depth, and every later recursive walk of the
 * value (validation, JSON.stringify in an error message) then overflows the stack on a file nested
 * 20,000 deep; and it silently keeps the last of duplicate keys, where a duplicated tensor name is a
 * corrupt or hand-crafted file. One linear, non-recursive pass over the text checks both first.
 */
import { oneLine, quote } from '../errors';

export interface JsonLimits {
  /** Deepest nesting of objects and arrays the format needs (`{}` = 1, `{"a": []}` = 2). */
  maxDepth: number;
  /** Refuse an object with the same key twice (at the same level). */
  rejectDuplicateKeys?: boolean;
}

/**
 * `JSON.parse(text)` after the limit checks. `fail` turns a problem into the caller's error, naming
 * the file: it gets a predicate such as `has the key "x" twice` or `is not valid JSON (...)`.
 */
export function parseJsonWithLimits(text: string, limits: JsonLimits, fail: (problem: string) => Error): unknown {
  scanJson(text, limits, fail);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw fail(`is not valid JSON (${oneLine((e as Error).message, 200)})`);
  }
}

/** The structural pass: nesting depth and per-object keys. Malformed text is left to JSON.parse. */
function scanJson(text: string, { maxDepth, rejectDuplicateKeys }: JsonLimits, fail: (problem: string) => Error): void {
  // One entry per open container: the keys seen so far for an object, null for an array.
  const open: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // '"': skip the string, noting it when it is an object key
      let j = i + 1;
      while (j < text.length && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      const keys = open.length ? open[open.length - 1] : null;
      if (expectKey && keys && rejectDuplicateKeys) {
        const key = decodeKey(text.slice(i, j + 1));
        if (key !== null && keys.has(key)) throw fail(`has the key ${quote(key)} twice`);
        if (key !== null) keys.add(key);
      }
      expectKey = false;
      i = j;
    } else if (c === 0x7b || c === 0x5b) {
      // '{' '['
      open.push(c === 0x7b ? new Set() : null);
      if (open.length > maxDepth)
        throw fail(`nests objects/arrays more than ${maxDepth} levels deep (the format needs at most ${maxDepth})`);
      expectKey = c === 0x7b;
    } else if (c === 0x7d || c === 0x5d) {
      // '}' ']'
      open.pop();
      expectKey = false;
    } else if (c === 0x2c) {
      // ','
      expectKey = open.length > 0 && open[open.length - 1] !== null;
    }
  }
}

/** A quoted key's value ("a\u0062" is "ab"), or null when it is malformed (JSON.parse reports that). */
function decodeKey(quoted: string): string | null {
  if (!quoted.includes('\\')) return quoted.slice(1, -1);
  try {
    return JSON.parse(quoted) as string;
  } catch {
    return null;
  }
}

/** JSON with object keys sorted: equal values give equal strings (a value already checked for depth). */
export function canonicalJson(x: unknown): string {
  if (Array.isArray(x)) return `[${x.map(canonicalJson).join(',')}]`;
  if (x !== null && typeof x === 'object') {
    const obj = x as Record<string, unknown>;
    return `{${Object.keys(obj)
      .sort()
      .filter((k) => obj[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(x) ?? 'null';
}
