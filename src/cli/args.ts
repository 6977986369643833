import { parseArgs } from 'util';
import { ConfigError } from '../errors';

export type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;

/** Strict option parsing: unknown options and missing values are one-line errors naming the option. */
export function parseOptions(argv: string[], spec: OptionSpec): { values: Record<string, any>; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args: argv, options: spec, allowPositionals: true, strict: true });
    return { values, positionals };
  } catch (e) {
    const message = (e as Error).message;
    const unknown = /Unknown option '([^']+)'/.exec(message);
    throw new ConfigError(unknown ? `unknown option ${unknown[1]} (see --help)` : message.split('\n')[0].replace(/\. To specify.*$/, ''));
  }
}

export function intOption(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^-?\d+$/.test(value)) throw new ConfigError(`--${name} must be an integer, got "${value}"`);
  return Number(value);
}

export function choiceOption<T extends string>(value: string | undefined, name: string, choices: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (!(choices as readonly string[]).includes(value)) throw new ConfigError(`--${name} must be one of ${choices.join(', ')}, got "${value}"`);
  return value as T;
}

export function listOption<T extends string>(value: string | undefined, name: string, choices: readonly T[]): T[] | undefined {
  if (value === undefined) return undefined;
  const items = value.split(',').map((s) => s.trim()).filter(Boolean);
  for (const item of items) choiceOption(item, name, choices);
  if (items.length === 0) throw new ConfigError(`--${name} needs at least one of ${choices.join(', ')}`);
  return items as T[];
}
