/**
 * README.md's quick start, API snippet and example run exactly as printed (issue 12, item 14), here
 * against this checkout's build (dist/, built by npm test) in a throwaway app whose
 * node_modules/llava-vision-tfjs is a link to this folder, as `npm install` would lay it out. The
 * snippet's `npm install llava-vision-tfjs` needs the registry: tools/package_test.ts (run by .ci/run)
 * runs every line, in fresh apps installing the packed tarball.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { SafetensorsFile } from '../src/io/safetensors';
import { readmeSnippets, runShell, snippetNamed, typeErrors, writeTsSnippet } from '../tools/readme_snippets';
import { readJson } from './helpers/json';

const ROOT = path.join(__dirname, '..');
const snippets = readmeSnippets(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8'));
let app: string;

beforeAll(() => {
  app = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-readme-'));
  fs.writeFileSync(
    path.join(app, 'package.json'),
    JSON.stringify({ name: 'readme-app', version: '1.0.0', private: true }),
  );
  fs.mkdirSync(path.join(app, 'node_modules', '.bin'), { recursive: true });
  fs.symlinkSync(ROOT, path.join(app, 'node_modules', 'llava-vision-tfjs'), 'dir');
  const pkg = readJson<{ bin: Record<string, string> }>(path.join(ROOT, 'package.json'));
  for (const [name, file] of Object.entries<string>(pkg.bin))
    fs.symlinkSync(path.join(ROOT, file), path.join(app, 'node_modules', '.bin', name));
});
afterAll(() => fs.rmSync(app, { recursive: true, force: true }));

const env = () => {
  const e = { ...process.env };
  delete e.LLAVA_VISION_BACKEND;
  return e;
};

test('the marked snippets are there: quick start, API, example, checking your own checkpoint', () => {
  expect(snippets.map((s) => `${s.name}:${s.lang}`)).toEqual(
    expect.arrayContaining([
      'quick-start:sh',
      'api:ts',
      'example:sh',
      'reference-python:python',
      'check:sh',
      'parity-suite:ts',
    ]),
  );
});

test("quick start: the CLI line writes the demo tokens (the npm install line is the package test's)", () => {
  const { code } = snippetNamed(snippets, 'quick-start');
  expect(code).toMatch(/^npm install llava-vision-tfjs\n/);
  const r = runShell(code.replace(/^npm install llava-vision-tfjs\n/, ''), app, env());
  expect(r).toMatchObject({ status: 0, stdout: '' });
  expect(r.stderr).toMatch(/tfjs backend "wasm"/);
  const out = SafetensorsFile.open(path.join(app, 'tokens.safetensors'));
  expect(out.info('images.0.merged').shape).toEqual([576, 128]);
  out.close();
});

test('npx llava-vision-tfjs runs the CLI too (outside a project: tools/package_test.ts)', () => {
  const r = runShell('npx llava-vision-tfjs --help', app, env());
  expect(r.status).toBe(0);
  expect(r.stdout + r.stderr).toMatch(/encode/);
});

test('API snippet: type-checks with --strict + skipLibCheck and runs, printing what its comments say', () => {
  const files = writeTsSnippet(snippetNamed(snippets, 'api').code, app, 'api');
  expect(typeErrors(files.ts, 'commonjs', [path.join(ROOT, 'node_modules', '@types')])).toEqual([]);
  const r = runShell(`node ${JSON.stringify(files.js)}`, app, env());
  expect(r.stderr).toMatch(/^llava-vision: tfjs backend "wasm"/);
  expect(r.status).toBe(0);
  expect(r.stdout.trim().split('\n')).toEqual(['[ 576, 128 ] 73728', '[ 0 ]', '5', '[ 1, 576, 64 ]']);
});

test('the training example runs from the installed package (here the link resolves to the checkout, which uses its fixtures)', () => {
  const r = runShell(snippetNamed(snippets, 'example').code, app, { ...env(), TMPDIR: app }); // its work folder goes with the app
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/encoded \d+ images once/);
  expect(r.stdout).toMatch(/saved .*mm_projector\.safetensors: model\.mm_projector\.0\.bias/);
});

describe('check your own checkpoint', () => {
  test('step 1, Python: the snippet parses and calls write_reference with parameters it has', () => {
    const script = [
      'import ast, sys',
      'snippet = ast.parse(sys.stdin.read())',
      'writer = ast.parse(open(sys.argv[1]).read())',
      'fn = next(n for n in writer.body if isinstance(n, ast.FunctionDef) and n.name == "write_reference")',
      'params = {a.arg for a in fn.args.args + fn.args.kwonlyargs}',
      'calls = [n for n in ast.walk(snippet) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "write_reference"]',
      'print(len(calls), sorted({k.arg for c in calls for k in c.keywords} - params))',
    ].join('\n');
    const r = spawnSync('python3', ['-c', script, path.join(ROOT, 'python', 'llava_vision_reference.py')], {
      input: snippetNamed(snippets, 'reference-python').code,
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('2 []');
  });

  test('step 2: the check of the bundled demo against its PyTorch reference runs as printed and passes', () => {
    const r = runShell(snippetNamed(snippets, 'check').code, app, env());
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(
      /\npixel_values\[chelsea\.png\]\s+\[1, 3, 336, 336\]\s+0\s+exact\s+-\s+1\s+ok \(bit-identical\)\n/,
    );
    expect(r.stdout.trim().split('\n').pop()).toBe('llava-vision check: all 9 tensors within the bound');
  });

  test('step 3: the parity suite type-checks (strict) and passes under Jest, and under Vitest with its import', () => {
    const suite = snippetNamed(snippets, 'parity-suite').code;
    const jestDir = fs.mkdtempSync(path.join(app, 'jest-'));
    const jestFiles = writeTsSnippet(suite, jestDir, 'parity.test');
    expect(typeErrors(jestFiles.ts, 'commonjs', [path.join(ROOT, 'node_modules', '@types')], ['node', 'jest'])).toEqual(
      [],
    );
    fs.rmSync(jestFiles.ts); // the suite as Jest runs it without a TypeScript transform
    const config = JSON.stringify({ rootDir: jestDir, testEnvironment: 'node', transform: {} });
    const jest = spawnSync(
      process.execPath,
      [path.join(ROOT, 'node_modules', 'jest', 'bin', 'jest.js'), '--ci', '--config', config],
      { cwd: jestDir, env: env(), encoding: 'utf8' },
    );
    expect(jest.stderr).toMatch(/Tests:\s+1 passed, 1 total/);
    expect(jest.status).toBe(0);

    fs.symlinkSync(path.join(ROOT, 'node_modules', 'vitest'), path.join(app, 'node_modules', 'vitest'), 'dir');
    const vitestDir = fs.mkdtempSync(path.join(app, 'vitest-'));
    const vitestFiles = writeTsSnippet(
      `import { expect, test } from 'vitest';\n${suite}`,
      vitestDir,
      'parity.test',
      'esm',
    );
    expect(typeErrors(vitestFiles.ts, 'esm', [path.join(ROOT, 'node_modules', '@types')])).toEqual([]);
    fs.rmSync(vitestFiles.js);
    const vitest = spawnSync(
      process.execPath,
      [path.join(ROOT, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--root', vitestDir],
      { cwd: vitestDir, env: { ...env(), NO_COLOR: '1' }, encoding: 'utf8' },
    );
    expect(vitest.stdout).toMatch(/Tests\s+1 passed \(1\)/);
    expect(vitest.status).toBe(0);
  });
});
