/**
 * README.md's snippets run exactly as printed (issue 12, item 14; issue 24: every command a user copies),
 * here against this checkout's build (dist/, built by npm test) in a throwaway app whose
 * node_modules/llava-vision-tfjs is a link to this folder, as `npm install` would lay it out. The CLI
 * examples name real checkpoints (`llava-v1.5-7b`, ...): the app holds the tiny LLaVA-1.5 fixture under
 * those names (stageReadmeModels), and the hub example downloads from a fake hub on 127.0.0.1. The
 * snippet's `npm install llava-vision-tfjs` needs the registry: tools/package_test.ts (run by .ci/run)
 * runs every line, in fresh apps installing the packed tarball.
 */
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { SafetensorsFile } from '../src/io/safetensors';
import {
  RunResult,
  readmeSnippets,
  runShell,
  snippetNamed,
  stageReadmeModels,
  typeErrors,
  writeTsSnippet,
} from '../tools/readme_snippets';
import { FakeHub } from './helpers/fake_hub';
import { readJson } from './helpers/json';

const ROOT = path.join(__dirname, '..');
const snippets = readmeSnippets(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8'));
let app: string;
let clipTower: string;

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
  clipTower = stageReadmeModels(app, ROOT);
});
afterAll(() => fs.rmSync(app, { recursive: true, force: true }));

/** The environment of a user's shell: the default backend, an HF cache of the app's own, no hub settings. */
const env = () => {
  const e: NodeJS.ProcessEnv = { ...process.env, HF_HUB_CACHE: path.join(app, 'hf-cache') };
  for (const k of [
    'LLAVA_VISION_BACKEND',
    'LLAVA_VISION_DOWNLOAD',
    'HF_ENDPOINT',
    'HF_TOKEN',
    'HF_HOME',
    'HF_HUB_OFFLINE',
  ])
    delete e[k];
  return e;
};

/** `runShell` without blocking the event loop (the fake hub answers from this process). */
function runShellAsync(code: string, cwd: string, environment: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-e', '-c', code], { cwd, env: environment });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** name -> shape of every tensor of a safetensors file the app holds. */
function shapes(file: string): Record<string, number[]> {
  const st = SafetensorsFile.open(path.join(app, file));
  try {
    return Object.fromEntries(st.keys().map((n) => [n, st.info(n).shape]));
  } finally {
    st.close();
  }
}

const readTensor = (file: string, name: string): Float32Array => {
  const st = SafetensorsFile.open(path.join(app, file));
  try {
    return st.readFloat32(name);
  } finally {
    st.close();
  }
};

const manifestIndices = (dir: string): number[] =>
  fs
    .readFileSync(path.join(app, dir, 'manifest.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((line) => (JSON.parse(line) as { index: number; error?: string }).index);

test('the marked snippets are there: quick start, API, example, checking your own checkpoint', () => {
  expect(snippets.map((s) => `${s.name}:${s.lang}`)).toEqual(
    expect.arrayContaining([
      'quick-start:sh',
      'api:ts',
      'example:sh',
      'reference-python:python',
      'check:sh',
      'parity-suite:ts',
      'encode-files:sh',
      'preprocess:sh',
      'inspect:sh',
      'hub:sh',
      'dataset:sh',
    ]),
  );
});

test('every code block a user copies is a marked snippet, run by these tests', () => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8').split('\n');
  const tested = new Set(snippets.map((s) => s.line));
  const untested = readme.flatMap((line, i) =>
    /^```(sh|bash|ts|js|python)$/.test(line) && !tested.has(i + 1) ? [i + 1] : [],
  );
  expect(untested).toEqual([]);
});

describe("the README's CLI examples, on the tiny LLaVA-1.5 laid out under the names they use", () => {
  test('encode files: LLaVA-1.5 + its tower, the pretrain projector on CLIP, CLIP hidden states', () => {
    const r = runShell(snippetNamed(snippets, 'encode-files').code, app, env());
    expect(r.stderr).not.toMatch(/bundled demo/);
    expect(r.status).toBe(0);
    expect(shapes('tokens.safetensors')).toEqual({ 'images.0.merged': [576, 128] });
    expect(shapes('pretrain-tokens.safetensors')).toEqual({ 'images.0.merged': [576, 128] });
    expect(shapes('hs.safetensors')).toEqual({
      ...Object.fromEntries([0, 1, 2, 3, 4].map((k) => [`images.0.hidden_states.${k}`, [1, 577, 64]])),
      'images.0.pooler_output': [1, 64],
    });
  });

  test('preprocess, then encode --pixel-values: the same tokens as encoding the image', () => {
    if (!fs.existsSync(path.join(app, 'tokens.safetensors')))
      expect(runShell(snippetNamed(snippets, 'encode-files').code, app, env()).status).toBe(0);
    const r = runShell(snippetNamed(snippets, 'preprocess').code, app, env());
    expect(r.status).toBe(0);
    expect(shapes('pv.safetensors')).toEqual({ 'images.0.pixel_values': [1, 3, 336, 336] });
    const direct = readTensor('tokens.safetensors', 'images.0.merged');
    const viaPixels = readTensor('tokens-from-pv.safetensors', 'images.0.merged');
    expect(Buffer.from(viaPixels.buffer).equals(Buffer.from(direct.buffer))).toBe(true);
  });

  test('inspect: the checkpoint kind, the tower folder given, what would be loaded', () => {
    const r = runShell(snippetNamed(snippets, 'inspect').code, app, env());
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^kind:\s+llava — original LLaVA/m);
    expect(r.stdout).toMatch(/resolved:\s+clip-vit-large-patch14-336\n/);
    expect(r.stdout).toMatch(/projector — loaded \(4 tensors/);
  });

  test('hub: download prints the snapshot folder, encode finds the model in the cache by its id', async () => {
    const hub = await new FakeHub().addRepo('openai/clip-vit-large-patch14-336', clipTower).start();
    try {
      expect(fs.existsSync(path.join(app, 'openai'))).toBe(false); // not a local folder of that name
      const r = await runShellAsync(snippetNamed(snippets, 'hub').code, app, { ...env(), HF_ENDPOINT: hub.endpoint });
      expect(r.stderr).not.toMatch(/bundled demo/);
      expect(r.status).toBe(0);
      const cache = path.join(app, 'hf-cache', 'models--openai--clip-vit-large-patch14-336', 'snapshots');
      expect(r.stdout.trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`^${cache}/[0-9a-f]{40}$`))]);
      expect(shapes('features.safetensors')).toEqual({ 'images.0.features': [1, 576, 64] });
      expect(hub.count('cdn', 'GET')).toBeGreaterThan(0);
    } finally {
      await hub.close();
    }
  });

  test('dataset: a folder walked recursively, resumed by running the command again, and part 0 of 2', () => {
    const r = runShell(snippetNamed(snippets, 'dataset').code, app, env());
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/photos\.tokens: encoded 3 image\(s\) into 1 new shard\(s\) \(F16\)/);
    expect(r.stderr).toMatch(/encoded 0 image\(s\) into 0 new shard\(s\) \(F16\); 3 were already there/);
    expect(manifestIndices('photos.tokens')).toEqual([0, 1, 2]);
    expect(manifestIndices(path.join('photos.split', 'part-0-of-2'))).toEqual([0, 2]);
  });
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
