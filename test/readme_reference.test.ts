/**
 * README.md's reference tables against the code they describe (issue 24): a CLI option, a command, a
 * field of `LoadOptions` / `ImageJobOptions` / the results, or an error class that is added or removed
 * without its row fails here, naming it.
 *
 * The options of a command are the ones it really parses: `util.parseArgs` is watched while
 * `llava-vision COMMAND --help` runs (every command parses its whole option spec first), and an option
 * that the command then refuses as another command's (check refuses encode's `--out`, ...) is left out.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ts from 'typescript';
import { main } from '../src/cli/main';
import * as api from '../src/index';
import { tableAfter } from '../tools/readme_snippets';

import util = require('util'); // the module object itself (src reads parseArgs from it at each call)

const ROOT = path.join(__dirname, '..');
const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');

type Spec = Record<string, { type: 'string' | 'boolean' }>;

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

/** The commands `llava-vision --help` lists under "Commands:". */
async function commands(): Promise<string[]> {
  const help = (await cli(['--help'])).out;
  const block = help.split('Commands:\n')[1].split('\n\n')[0];
  return block.split('\n').map((line) => line.trim().split(/\s+/)[0]);
}

/** The option spec a command parses, watched through util.parseArgs. */
async function parsedSpec(command: string): Promise<Spec> {
  const spy = jest.spyOn(util, 'parseArgs');
  try {
    const r = await cli([command, '--help']);
    expect(r.code).toBe(0);
    expect(spy).toHaveBeenCalledTimes(1);
    return (spy.mock.calls[0][0] as { options: Spec }).options;
  } finally {
    spy.mockRestore();
  }
}

/** The options a command accepts: its spec, less `--help` and the options it refuses as another command's. */
async function acceptedOptions(command: string): Promise<string[]> {
  const accepted: string[] = [];
  for (const [name, o] of Object.entries(await parsedSpec(command))) {
    if (name === 'help') continue;
    // Nothing runs: the option checks come first, then a required argument is missing (exit 2), or with
    // check's --reference alone, its file "x" (exit 1), before any model is loaded.
    const r = await cli([command, `--${name}`, ...(o.type === 'string' ? ['x'] : [])]);
    expect([name, [1, 2].includes(r.code)]).toEqual([name, true]);
    if (!/is an option of \w+, not of/.test(r.err)) accepted.push(name);
  }
  return accepted.sort();
}

/** The options a README table lists: the first cell of each row, `--name ARG`. */
function listedOptions(rows: string[][]): string[] {
  expect(rows[0][0]).toBe('option');
  return rows
    .slice(1)
    .map((row) => {
      const m = /^`--([a-z][a-z0-9-]*)(?: [^`]*)?`$/.exec(row[0]);
      if (!m) throw new Error(`README CLI table: ${JSON.stringify(row[0])} is not an option cell`);
      return m[1];
    })
    .sort();
}

describe('CLI reference', () => {
  test('every command has its section, and every section a command', async () => {
    const listed = [...README.matchAll(/^### `llava-vision (\S+)`$/gm)].map((m) => m[1]);
    expect(listed.sort()).toEqual((await commands()).sort());
  });

  test.each(['encode', 'preprocess', 'inspect', 'download', 'check'])(
    '%s: the table lists exactly the options the command accepts, each with a default',
    async (command) => {
      const rows = tableAfter(README, `### \`llava-vision ${command}\``);
      expect(listedOptions(rows)).toEqual(await acceptedOptions(command));
      for (const row of rows.slice(1)) expect([row[0], row[1]]).toEqual([row[0], expect.stringMatching(/\S/)]);
    },
  );

  test('the exit codes table names 0, 1 and 2', () => {
    const rows = tableAfter(README, '| exit code |');
    expect(rows.slice(1, 4).map((r) => r[0])).toEqual(['0', '1', '2']);
  });
});

/** The property names of an exported type of src/index.ts, inherited ones included. */
function typeFields(program: ts.Program, typeName: string): string[] {
  const checker = program.getTypeChecker();
  const index = program.getSourceFile(path.join(ROOT, 'src', 'index.ts'))!;
  const symbol = checker.getExportsOfModule(checker.getSymbolAtLocation(index)!).find((s) => s.name === typeName);
  if (!symbol) throw new Error(`src/index.ts exports no ${typeName}`);
  const resolved = symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol;
  return checker
    .getPropertiesOfType(checker.getDeclaredTypeOfSymbol(resolved))
    .map((p) => p.name)
    .sort();
}

/** `name`, or `a`, `b`, `c` in a cell: the backticked names. */
const cellNames = (cell: string) => [...cell.matchAll(/`(\w+)`/g)].map((m) => m[1]);

describe('API reference', () => {
  let program: ts.Program;
  beforeAll(() => {
    program = ts.createProgram([path.join(ROOT, 'src', 'index.ts')], {
      strict: true,
      skipLibCheck: true,
      noEmit: true,
      types: ['node'],
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.CommonJS,
    });
  });

  test.each([
    ['LoadOptions', '### Loading'],
    ['ImageJobOptions', 'The options of `encodeImages` (`ImageJobOptions`'],
  ])('%s: the table lists exactly its fields', (typeName, anchor) => {
    const rows = tableAfter(README, anchor);
    expect(rows[0][0]).toBe('field');
    expect(
      rows
        .slice(1)
        .flatMap((r) => cellNames(r[0]))
        .sort(),
    ).toEqual(typeFields(program, typeName));
  });

  test('results and failures: ImageJobResult, ImageFailure, EncodedTensor and EncodeResult, field by field', () => {
    const rows = tableAfter(README, '### Results and failures').slice(1);
    const byType = new Map<string, string[]>();
    let current = '';
    for (const [type, fields] of rows) {
      if (type) current = cellNames(type)[0];
      byType.set(current, [...(byType.get(current) ?? []), ...cellNames(fields)]);
    }
    expect([...byType.keys()].sort()).toEqual(['EncodeResult', 'EncodedTensor', 'ImageFailure', 'ImageJobResult']);
    for (const [type, fields] of byType) expect([type, fields.sort()]).toEqual([type, typeFields(program, type)]);
  });

  test('errors: the table lists every exported error class', () => {
    const rows = tableAfter(README, '### Errors').slice(1);
    const exported = Object.entries(api)
      .filter(
        ([, v]) =>
          typeof v === 'function' && (v === api.LlavaVisionError || v.prototype instanceof api.LlavaVisionError),
      )
      .map(([name]) => name)
      .sort();
    expect(rows.map((r) => cellNames(r[0])[0]).sort()).toEqual(exported);
  });
});

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens. */
const anchorOf = (heading: string) =>
  heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');

function anchorsOf(file: string): Set<string> {
  const text = fs.readFileSync(file, 'utf8').replace(/^```[\s\S]*?^```/gm, ''); // no headings inside code blocks
  return new Set([...text.matchAll(/^#{1,6} (.+)$/gm)].map((m) => anchorOf(m[1])));
}

test.each(['README.md', 'DEVELOPING.md', ...fs.readdirSync(path.join(ROOT, 'docs')).map((f) => `docs/${f}`)])(
  '%s: every relative link names a file and a heading that exist',
  (doc) => {
    const file = path.join(ROOT, doc);
    const text = fs.readFileSync(file, 'utf8').replace(/^```[\s\S]*?^```/gm, '');
    const broken = [...text.matchAll(/\]\(([^)\s]+)\)/g)]
      .map((m) => m[1])
      .filter((link) => !/^[a-z]+:/.test(link))
      .filter((link) => {
        const [target, anchor] = link.split('#');
        const linked = target ? path.resolve(path.dirname(file), target) : file;
        if (!fs.existsSync(linked)) return true;
        return anchor !== undefined && linked.endsWith('.md') && !anchorsOf(linked).has(anchor);
      });
    expect(broken).toEqual([]);
  },
);
