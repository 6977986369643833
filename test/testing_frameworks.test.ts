/**
 * llava-vision-tfjs/testing in the frameworks themselves, through the package's subpath export as an
 * app resolves it (a throwaway app whose node_modules/llava-vision-tfjs links to this checkout's build):
 *
 * - the typings, in strict TypeScript projects (Jest and Vitest also without skipLibCheck): Jest's
 *   global expect (@types/jest), Jest's `@jest/globals`, Vitest; a wrong option is a type error in each;
 * - the matchers under real Vitest: at the boundary, one ulp past it with the message, `.not`.
 * (Under Jest: test/testing_matchers.test.ts; the README's suite under both: test/readme.test.ts.)
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ts from 'typescript';

const ROOT = path.join(__dirname, '..');
let app: string;

beforeAll(() => {
  app = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-frameworks-'));
  fs.writeFileSync(
    path.join(app, 'package.json'),
    JSON.stringify({ name: 'frameworks-app', version: '1.0.0', private: true }),
  );
  const modules = path.join(app, 'node_modules');
  fs.mkdirSync(path.join(modules, '@types'), { recursive: true });
  fs.symlinkSync(ROOT, path.join(modules, 'llava-vision-tfjs'), 'dir');
  for (const dep of ['vitest', '@jest', 'expect', '@types/jest', '@types/node'])
    fs.symlinkSync(path.join(ROOT, 'node_modules', dep), path.join(modules, dep), 'dir');
});
afterAll(() => fs.rmSync(app, { recursive: true, force: true }));

/** Strict; the libraries' declarations checked too unless `skipLibCheck`. */
function compile(file: string, types: string[], esm: boolean, skipLibCheck = false): string[] {
  const program = ts.createProgram([file], {
    noEmit: true,
    strict: true,
    skipLibCheck,
    target: ts.ScriptTarget.ES2022,
    module: esm ? ts.ModuleKind.Node16 : ts.ModuleKind.CommonJS,
    moduleResolution: esm ? ts.ModuleResolutionKind.Node16 : ts.ModuleResolutionKind.Node10,
    types,
    typeRoots: [path.join(app, 'node_modules', '@types')],
  });
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const text = ts.flattenDiagnosticMessageText(d.messageText, ' ');
    if (!d.file || d.start === undefined) return text;
    return `${path.basename(d.file.fileName)}(${d.file.getLineAndCharacterOfPosition(d.start).line + 1}): ${text}`;
  });
}

const BODY = `
expect.extend(matchers);
test('typed', () => {
  const ref = readReference('ref.safetensors');
  expect(new Float32Array(4)).toBeAllClose([[0, 0], [0, 0]], { atol: 1e-6, rtol: 0, equalNaN: true });
  expect(new Float32Array(4)).toMatchReference(ref.features, { bound: 8 });
  expect({ dtype: 'F32', shape: [2], data: new Float32Array(2) }).not.toHaveShape([3]);
  // @ts-expect-error: not an option of toBeAllClose
  expect([1]).toBeAllClose([1], { tolerance: 1 });
  // @ts-expect-error: a shape is a list of numbers
  expect([1]).toHaveShape(['1']);
});
`;

// Our declarations are checked with the libraries' (no skipLibCheck) once per framework; the other
// module systems for resolution and the augmentation only.
const SUITES: { name: string; imports: string; types: string[]; esm: boolean; skipLibCheck: boolean }[] = [
  {
    name: 'Jest, global expect (@types/jest), CommonJS',
    imports: '',
    types: ['node', 'jest'],
    esm: false,
    skipLibCheck: false,
  },
  {
    name: 'Jest, global expect (@types/jest), ES module',
    imports: '',
    types: ['node', 'jest'],
    esm: true,
    skipLibCheck: true,
  },
  {
    name: 'Jest, @jest/globals',
    imports: "import { expect, test } from '@jest/globals';\n",
    types: ['node'],
    esm: false,
    skipLibCheck: true,
  },
  {
    name: 'Vitest',
    imports: "import { expect, test } from 'vitest';\n",
    types: ['node'],
    esm: true,
    skipLibCheck: false,
  },
];
const file = (stem: string, esm: boolean) =>
  path.join(app, `${stem}-${Math.random().toString(36).slice(2)}.${esm ? 'mts' : 'ts'}`);

test.each(SUITES)(
  'typings: $name, strict (skipLibCheck $skipLibCheck): the matchers are on expect(...), their options typed',
  ({ imports, types, esm, skipLibCheck }) => {
    const typed = file('typed', esm);
    fs.writeFileSync(typed, `${imports}import { matchers, readReference } from 'llava-vision-tfjs/testing';\n${BODY}`);
    expect(compile(typed, types, esm, skipLibCheck)).toEqual([]);
  },
);

test.each([SUITES[0], SUITES[3]])(
  "typings: $name: without the import, the same call is a type error (the augmentation is the module's)",
  ({ imports, types, esm }) => {
    const untyped = file('untyped', esm);
    fs.writeFileSync(untyped, `${imports}export {};\ntest('untyped', () => { expect([1]).toBeAllClose([1]); });\n`);
    expect(compile(untyped, types, esm, true).join('\n')).toMatch(/Property 'toBeAllClose' does not exist/);
  },
);

test('under real Vitest: passes at the boundary, fails one ulp past it with the message, .not', () => {
  const dir = fs.mkdtempSync(path.join(app, 'vitest-'));
  fs.writeFileSync(
    path.join(dir, 'matchers.test.ts'),
    `
import { expect, test } from 'vitest';
import { matchers } from 'llava-vision-tfjs/testing';

expect.extend(matchers);
const truth = { name: 'features', shape: [2], data: new Float32Array([2, -3]), meta: { torch_fp32_max_abs_err: 0.25, f32_storage_max_abs_err: 0.125 } };

test('toBeAllClose at and past the boundary', () => {
  expect(new Float64Array([1.75, 0.75])).toBeAllClose([1, 2], { atol: 0.25, rtol: 0.5 });
  expect(() => expect(new Float64Array([1.75, 0.75 - 2 ** -52])).toBeAllClose([1, 2], { atol: 0.25, rtol: 0.5 }))
    .toThrow(/out of tolerance: 1 of 2 elements \\(50\\.0%\\)\\nworst at \\[1\\]: received 0\\.7499999999999998, expected 2/);
  expect([1, 2]).not.toBeAllClose([1, 3]);
  expect(() => expect([1, 2]).not.toBeAllClose([1, 2])).toThrow(/expect\\(received\\)\\.not\\.toBeAllClose\\(expected\\)/);
});

test('toMatchReference at and past the bound', () => {
  expect(new Float32Array([3.125, -3])).toMatchReference(truth);
  expect(() => expect(new Float32Array([3.1250002, -3])).toMatchReference(truth)).toThrow(/max abs error \\/ PyTorch fp32's error: 4\\.50 \\(bound 4\\)/);
  expect(() => expect([2, -3]).toMatchReference({ ...truth, meta: {} })).toThrow(/has no torch_fp32_max_abs_err/);
});

test('toHaveShape', () => {
  expect([[1], [2]]).toHaveShape([2, 1]);
  expect(() => expect([[1], [2]]).toHaveShape([1, 2])).toThrow('shape: received [2, 1], expected [1, 2]');
});
`,
  );
  const r = spawnSync(
    process.execPath,
    [path.join(ROOT, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--root', dir],
    { cwd: dir, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } },
  );
  expect(r.stdout).toMatch(/Tests\s+3 passed \(3\)/);
  expect(r.status).toBe(0);
});
