import { parseArgs } from 'util';
import { Pinpoints, parseGridPinpoints } from '../config/llava';
import { ConfigError } from '../errors';

export type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;

/**
 * A command line that cannot be right whatever the files say: an unknown option, a missing or malformed
 * value, a missing required argument. The CLI exits with 2 for these and 1 for failures of the work itself.
 */
export class UsageError extends ConfigError {}

/** A negative number (`-2`, `-0.5`, `-2,-5`): after an option that takes a value, it is that value. */
const NEGATIVE_NUMBER = /^-\d/;

/** A parsed command line's values: per option a string or a boolean (a list of them for `multiple`), absent when not given. */
export type OptionValues<S extends OptionSpec> = {
  [K in keyof S]?: S[K]['multiple'] extends true ? OptionValue<S[K]>[] : OptionValue<S[K]>;
};
type OptionValue<O extends OptionSpec[string]> = O['type'] extends 'boolean' ? boolean : string;

/** Strict option parsing: unknown options and missing values are one-line usage errors naming the option. */
export function parseOptions<S extends OptionSpec>(
  argv: string[],
  spec: S,
): { values: OptionValues<S>; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({
      args: joinNegativeValues(argv, spec),
      options: spec,
      allowPositionals: true,
      strict: true,
    });
    return { values, positionals };
  } catch (e) {
    throw new UsageError(usageMessage(e as Error & { code?: string }));
  }
}

/**
 * util.parseArgs reads `--select-layer -2` as an option followed by a short option `-2` and refuses it as
 * ambiguous; LLaVA's own default is -2, so `--opt -N` is rewritten to `--opt=-N` for every option taking a value.
 */
function joinNegativeValues(argv: string[], spec: OptionSpec): string[] {
  const takesValue = new Set<string>();
  for (const [name, o] of Object.entries(spec)) {
    if (o.type !== 'string') continue;
    takesValue.add(`--${name}`);
    if (o.short) takesValue.add(`-${o.short}`);
  }
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--') {
      out.push(...argv.slice(i));
      break;
    }
    if (takesValue.has(argv[i]) && i + 1 < argv.length && NEGATIVE_NUMBER.test(argv[i + 1])) {
      out.push(`${argv[i]}=${argv[++i]}`);
    } else {
      out.push(argv[i]);
    }
  }
  return out;
}

/** parseArgs' messages span several lines; ours keep their hint on the one line. */
function usageMessage(e: Error & { code?: string }): string {
  const message = e.message;
  const unknown = /^Unknown option '([^']+)'/.exec(message);
  if (unknown) {
    const hint = unknown[1].startsWith('--')
      ? ''
      : `; a file name starting with "-" goes after --, e.g. -- ${unknown[1]}`;
    return `unknown option ${unknown[1]} (see --help${hint})`;
  }
  const missing = /^Option '(?:-\w, )?(--[\w-]+) <value>' argument missing/.exec(message);
  if (missing) return `${missing[1]} needs a value (see --help)`;
  const ambiguous = /^Option '(?:-\w, )?(--[\w-]+)' argument is ambiguous/.exec(message);
  if (ambiguous) {
    return `${ambiguous[1]} needs a value, and the next argument is an option; for a value starting with "-", write ${ambiguous[1]}=-VALUE`;
  }
  const noArgument = /^Option '(?:-\w, )?(--[\w-]+)' does not take an argument/.exec(message);
  if (noArgument) return `${noArgument[1]} takes no value`;
  return message.split('\n').join(' ');
}

export function intOption(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^-?\d+$/.test(value)) throw new UsageError(`--${name} must be an integer, got "${value}"`);
  return Number(value);
}

export function choiceOption<T extends string>(
  value: string | undefined,
  name: string,
  choices: readonly T[],
): T | undefined {
  if (value === undefined) return undefined;
  if (!(choices as readonly string[]).includes(value))
    throw new UsageError(`--${name} must be one of ${choices.join(', ')}, got "${value}"`);
  return value as T;
}

/**
 * A list option given as comma lists, repeated or both (`--save a,b --save c`): every item of every
 * occurrence counts, each once, in the order of `choices`.
 */
export function listOption<T extends string>(
  value: string | string[] | undefined,
  name: string,
  choices: readonly T[],
): T[] | undefined {
  if (value === undefined) return undefined;
  const items = (Array.isArray(value) ? value : [value])
    .flatMap((v) => v.split(','))
    .map((s) => s.trim())
    .filter(Boolean);
  for (const item of items) choiceOption(item, name, choices);
  if (items.length === 0) throw new UsageError(`--${name} needs at least one of ${choices.join(', ')}`);
  return choices.filter((c) => items.includes(c));
}

/** Runs a check of an option's value (e.g. a parser shared with config files) and reports its failure as a usage error. */
export function usageCheck<T>(check: () => T): T {
  try {
    return check();
  } catch (e) {
    if (e instanceof ConfigError && !(e instanceof UsageError)) throw new UsageError(e.message);
    throw e;
  }
}

/** `--grid-pinpoints` as JSON ([[w, h], ...]), checked as a config's `image_grid_pinpoints` is. */
export function gridPinpointsOption(value: string | undefined): Pinpoints | undefined {
  if (value === undefined) return undefined;
  return usageCheck(() => {
    let json: unknown;
    try {
      json = JSON.parse(value);
    } catch {
      throw new UsageError(`--grid-pinpoints must be JSON, e.g. [[336,672],[672,336]], got ${value}`);
    }
    return parseGridPinpoints(json, '--grid-pinpoints');
  });
}
