/**
 * The layering of src/ (.dependency-cruiser.js, run by `npm run lint`) bites: dependency-cruiser passes
 * on a copy of src/ as it is, and fails on the same copy with an upward import (type-only), a cycle
 * (type-only) and an import of tools/ planted in it. Nothing is planted in src/ itself.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const ROOT = path.join(__dirname, '..');
const CONFIG = '.dependency-cruiser.js';
// Its bin, run with this Node (the package's exports do not expose package.json to resolve).
const DEPCRUISE = path.join(ROOT, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');

/** dependency-cruiser with the project's config, on `dir` (a copy of the repository's src/ and config). */
function cruise(dir: string): { status: number | null; output: string } {
  const r = spawnSync(process.execPath, [DEPCRUISE, 'src', '--config', CONFIG, '--output-type', 'err'], {
    cwd: dir,
    encoding: 'utf8',
  });
  return { status: r.status, output: r.stdout + r.stderr };
}

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-vision-layering-'));
  fs.cpSync(path.join(ROOT, 'src'), path.join(dir, 'src'), { recursive: true });
  for (const f of [CONFIG, 'tsconfig.json']) fs.copyFileSync(path.join(ROOT, f), path.join(dir, f));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test('every file of src/ is in exactly one layer', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the config is plain CommonJS, read as the tool reads it
  const { LAYERS } = require(path.join(ROOT, CONFIG)) as { LAYERS: { name: string; path: string }[] };
  const files = (fs.readdirSync(path.join(ROOT, 'src'), { recursive: true }) as string[])
    .map((f) => `src/${f.split(path.sep).join('/')}`)
    .filter((f) => /\.ts$/.test(f));
  expect(files.length).toBeGreaterThan(100);
  const outside = files.filter((f) => LAYERS.filter((l) => new RegExp(l.path).test(f)).length !== 1);
  expect(outside).toEqual([]);
});

test('the tree passes; a planted upward import, cycle or tools/ import each fails it, naming the rule and files', () => {
  const clean = cruise(dir);
  expect(clean.output).toMatch(/no dependency violations found/);
  expect(clean.status).toBe(0);

  const plant = (file: string, text: string) => fs.writeFileSync(path.join(dir, file), text);
  // Type-only imports: they are checked too (tsPreCompilationDeps).
  plant(
    'src/model/planted.ts',
    "import type { LlavaVision } from '../api/llava_vision';\nexport type M = LlavaVision;\n",
  );
  plant('src/io/planted_a.ts', "import type { B } from './planted_b';\nexport interface A {\n  b?: B;\n}\n");
  plant('src/io/planted_b.ts', "import type { A } from './planted_a';\nexport interface B {\n  a?: A;\n}\n");
  fs.mkdirSync(path.join(dir, 'tools'));
  plant('tools/helper.ts', 'export const helper = 1;\n');
  plant('src/api/planted.ts', "import { helper } from '../../tools/helper';\nexport const h = helper;\n");
  const planted = cruise(dir);
  expect(planted.status).not.toBe(0);
  expect(planted.output).toMatch(/error layer-core: src\/model\/planted\.ts → src\/api\/llava_vision\.ts/);
  expect(planted.output).toMatch(/error no-circular: src\/io\/planted_(a|b)\.ts/);
  expect(planted.output).toMatch(/error src-not-to-dev: src\/api\/planted\.ts → tools\/helper\.ts/);
  expect(planted.output).toMatch(/x 3 dependency violations/);
}, 60_000);
