/**
 * The package as users get it (issue 12, items 11 and 14): `npm pack`, then fresh throwaway apps
 * that install the tarball from the npm registry's point of view and run README.md's snippets
 * exactly as printed (`npm install llava-vision-tfjs` installs the tarball instead):
 *
 * - contents: LICENSE, the sources the source maps point to, the examples; no tests or tools;
 * - a CommonJS app: the quick start, the API snippet (type-checked with --strict + skipLibCheck),
 *   the training example; one tfjs-core; no "already registered" / "Platform" lines;
 * - an ESM app: the API snippet as an ES module; `npx llava-vision-tfjs` outside any project;
 * - the README's CLI examples (encode, preprocess, inspect, a dataset folder) as printed, in that app
 *   holding the tiny LLaVA-1.5 fixture under the names they use (`llava-v1.5-7b`, ...; the hub example
 *   needs a hub: test/readme.test.ts runs it against a fake one);
 * - checking your own checkpoint (README): the check of the demo's reference as printed; the
 *   `llava-vision-tfjs/testing` subpath from CommonJS (the README's suite under Jest, type-checked
 *   with @types/jest), from an ES module and under Vitest (type-checked too);
 * - an app pinning `@tensorflow/tfjs@4.20.0`: the plain install is refused (no second tfjs-core),
 *   the README's pinned install gives one tfjs-core 4.20.0, the snippet and the training example
 *   (gradients from that tfjs-layers) run next to the app's own tfjs bundle without warnings.
 *
 * Needs the npm registry (CI has it) and ~3 minutes; prints "package-test: N passed, M failed".
 *   npm run test:package [-- --keep]
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { packageRoot } from '../src/version';
import { readmeSnippets, snippetNamed, stageReadmeModels, typeErrors, writeTsSnippet } from './readme_snippets';
import { Checks } from './checks';

const ROOT = packageRoot();
const PINNED = '4.20.0';
const NPM_QUIET = '--no-audit --no-fund --loglevel=error';
const TFJS_NOISE = /already registered|Platform .* has already been set/;
/** The test frameworks the apps install, at this repository's versions. */
const DEV_VERSION = (name: string) =>
  (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> })
    .devDependencies[name];
const JEST = DEV_VERSION('jest');
const TYPES_JEST = DEV_VERSION('@types/jest');
const VITEST = DEV_VERSION('vitest');

const checks = new Checks(12);
const { check } = checks;

function sh(command: string, cwd: string): { status: number | null; out: string; err: string } {
  const env = { ...process.env };
  delete env.LLAVA_VISION_BACKEND;
  const r = spawnSync('bash', ['-e', '-c', command], { cwd, env, encoding: 'utf8', maxBuffer: 64 << 20 });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

function newApp(base: string, name: string, fields: Record<string, unknown> = {}): string {
  const dir = path.join(base, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(
    path.join(dir, 'package.json'),
    JSON.stringify({ name, version: '1.0.0', private: true, ...fields }, null, 2),
  );
  return dir;
}

/** Distinct tfjs-core folders in the app's tree. */
function tfjsCoreCopies(app: string): string[] {
  const r = sh('npm ls --all --parseable @tensorflow/tfjs-core 2>/dev/null || true', app);
  return [...new Set(r.out.trim().split('\n').filter(Boolean))];
}

function coreVersion(app: string): string {
  return (
    JSON.parse(fs.readFileSync(path.join(app, 'node_modules', '@tensorflow', 'tfjs-core', 'package.json'), 'utf8')) as {
      version: string;
    }
  ).version;
}

function main(): void {
  const keep = process.argv.includes('--keep');
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-package-test-'));
  process.env.TMPDIR = base; // what the apps write to the temp folder (the example's work folder) goes with them
  const readme = readmeSnippets(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8'));
  const quickStart = snippetNamed(readme, 'quick-start').code;
  const api = snippetNamed(readme, 'api').code;
  const example = snippetNamed(readme, 'example').code;
  const pinnedInstall = snippetNamed(readme, 'pinned-install').code;
  const checkSnippet = snippetNamed(readme, 'check').code;
  const paritySuite = snippetNamed(readme, 'parity-suite').code;
  try {
    // --- the tarball
    const pack = sh(`npm pack --silent --pack-destination ${JSON.stringify(base)}`, ROOT);
    const tarball = path.join(base, pack.out.trim().split('\n').pop() ?? '');
    if (pack.status !== 0 || !fs.existsSync(tarball)) throw new Error(`npm pack failed: ${pack.err}`);
    const install = (line: string) =>
      line.replace(/^npm install llava-vision-tfjs\b/, `npm install ${NPM_QUIET} ${JSON.stringify(tarball)}`);
    const files = new Set(
      sh(`tar -tzf ${JSON.stringify(tarball)}`, base)
        .out.split('\n')
        .filter(Boolean)
        .map((f) => f.replace(/^package\//, '')),
    );
    const missing = [
      'LICENSE',
      'README.md',
      'src/index.ts',
      'examples/train_projector.ts',
      'dist/examples/train_projector.js',
      'dist/src/index.d.ts',
      'weights/demo/model.safetensors',
      'dist/src/testing/index.js',
      'dist/src/testing/index.d.ts',
      'python/llava_vision_reference.py',
      'weights/demo/reference.safetensors',
    ].filter((f) => !files.has(f));
    check(
      'tarball holds LICENSE, the sources, the examples and the demo',
      missing.length === 0,
      `missing: ${missing.join(', ')}`,
    );
    check(
      'tarball holds no tests or tools',
      ![...files].some((f) => f.startsWith('test/') || f.startsWith('dist/tools/') || f.startsWith('tools/')),
    );
    const unpacked = path.join(base, 'unpacked');
    fs.mkdirSync(unpacked);
    sh(`tar -xzf ${JSON.stringify(tarball)} -C ${JSON.stringify(unpacked)}`, base);
    const licenseFile = path.join(unpacked, 'package', 'LICENSE');
    const license = fs.existsSync(licenseFile) ? fs.readFileSync(licenseFile, 'utf8') : '';
    check(
      'LICENSE is the Apache License 2.0 text',
      /Apache License\s+Version 2\.0, January 2004/.test(license) && /END OF TERMS AND CONDITIONS/.test(license),
    );
    const unresolved: string[] = [];
    for (const f of files) {
      if (!f.endsWith('.js.map')) continue;
      const map = JSON.parse(fs.readFileSync(path.join(unpacked, 'package', f), 'utf8')) as {
        sources: string[];
        sourceRoot?: string;
      };
      for (const s of map.sources) {
        const target = path.posix.normalize(path.posix.join(path.posix.dirname(f), map.sourceRoot ?? '', s));
        if (!files.has(target)) unresolved.push(`${f} -> ${target}`);
      }
    }
    check(
      'every source map points to a source in the tarball',
      unresolved.length === 0,
      unresolved.slice(0, 5).join('\n'),
    );

    // --- a CommonJS app: the README as printed
    const cjs = newApp(base, 'cjs-app');
    const qs = sh(quickStart.split('\n').map(install).join('\n'), cjs);
    check(
      'quick start runs (CommonJS app)',
      qs.status === 0 && fs.existsSync(path.join(cjs, 'tokens.safetensors')),
      qs.err,
    );
    check('quick start prints no tfjs registration noise', !TFJS_NOISE.test(qs.err), qs.err);
    const copies = tfjsCoreCopies(cjs);
    check(`one tfjs-core (${coreVersion(cjs)}) in a fresh app`, copies.length === 1, copies.join('\n'));
    const cjsSnippet = writeTsSnippet(api, cjs, 'api');
    const cjsErrors = typeErrors(cjsSnippet.ts, 'commonjs', [path.join(ROOT, 'node_modules', '@types')]);
    check('API snippet type-checks (strict, skipLibCheck, CommonJS)', cjsErrors.length === 0, cjsErrors.join('\n'));
    const cjsRun = sh(`node ${JSON.stringify(cjsSnippet.js)}`, cjs);
    check(
      'API snippet runs (CommonJS)',
      cjsRun.status === 0 && cjsRun.out.startsWith('[ 576, 128 ]') && !TFJS_NOISE.test(cjsRun.err),
      cjsRun.err + cjsRun.out,
    );
    const ex = sh(example, cjs);
    check(
      'training example runs from the package on the demo',
      ex.status === 0 && /encoded 2 images once/.test(ex.out),
      ex.err + ex.out,
    );
    cliExamples(cjs, readme);
    checkYourOwn(cjs, checkSnippet, paritySuite);

    // --- an ESM app, and npx outside any project
    const esm = newApp(base, 'esm-app', { type: 'module' });
    const esmInstall = sh(install('npm install llava-vision-tfjs'), esm);
    const esmSnippet = writeTsSnippet(api, esm, 'api', 'esm');
    const esmErrors = typeErrors(esmSnippet.ts, 'esm', [path.join(ROOT, 'node_modules', '@types')]);
    check(
      'API snippet type-checks as an ES module',
      esmInstall.status === 0 && esmErrors.length === 0,
      esmInstall.err + esmErrors.join('\n'),
    );
    const esmRun = sh(`node ${JSON.stringify(esmSnippet.js)}`, esm);
    check(
      'API snippet runs as an ES module',
      esmRun.status === 0 && esmRun.out.startsWith('[ 576, 128 ]'),
      esmRun.err + esmRun.out,
    );
    testingFromEsm(esm, paritySuite);
    const nowhere = fs.mkdtempSync(path.join(base, 'no-project-'));
    const npx = sh(`npx --yes ${JSON.stringify(`file:${tarball}`)} --help`, nowhere); // = npx llava-vision-tfjs --help
    check(
      'npx llava-vision-tfjs outside a project runs the CLI',
      npx.status === 0 && /encode/.test(npx.out + npx.err),
      npx.err,
    );

    // --- an app that pins another TensorFlow.js
    const pinned = newApp(base, 'pinned-app');
    const own = sh(`npm install ${NPM_QUIET} @tensorflow/tfjs@${PINNED}`, pinned);
    const refused = sh(install('npm install llava-vision-tfjs'), pinned);
    check(
      `plain install next to @tensorflow/tfjs@${PINNED} is refused by npm (no second tfjs-core)`,
      own.status === 0 && refused.status !== 0 && /ERESOLVE/.test(refused.err),
      own.err + refused.err,
    );
    const pinnedRun = sh(pinnedInstall.split('\n').map(install).join('\n'), pinned);
    const pinnedCopies = tfjsCoreCopies(pinned);
    check(
      `README's pinned install: one tfjs-core, ${PINNED}`,
      pinnedRun.status === 0 && pinnedCopies.length === 1 && coreVersion(pinned) === PINNED,
      pinnedRun.err + pinnedCopies.join('\n'),
    );
    const pinnedSnippet = writeTsSnippet(api, pinned, 'api');
    const withBundle = sh(`node -r @tensorflow/tfjs ${JSON.stringify(pinnedSnippet.js)}`, pinned);
    check(
      "API snippet runs after the app's own tfjs bundle, without registration noise",
      withBundle.status === 0 && withBundle.out.startsWith('[ 576, 128 ]') && !TFJS_NOISE.test(withBundle.err),
      withBundle.err,
    );
    const pinnedEx = sh(example, pinned);
    check(
      `training example (gradients from tfjs-layers ${PINNED}) runs`,
      pinnedEx.status === 0 && /loss .* -> .* on the TOY target/.test(pinnedEx.out),
      pinnedEx.err + pinnedEx.out,
    );
  } catch (e) {
    check('package test ran to the end', false, (e as Error).stack ?? String(e));
  } finally {
    if (keep) console.log(`kept ${base}`);
    else fs.rmSync(base, { recursive: true, force: true });
  }
  console.log(`package-test: ${checks.passed} passed, ${checks.failed} failed`);
  process.exitCode = checks.failed ? 1 : 0;
}

/** The README's CLI examples, run as printed next to toy-size models named as in the README. */
function cliExamples(app: string, readme: ReturnType<typeof readmeSnippets>): void {
  stageReadmeModels(app, ROOT);
  const expected: [string, string[]][] = [
    ['encode-files', ['tokens.safetensors', 'pretrain-tokens.safetensors', 'hs.safetensors']],
    ['preprocess', ['pv.safetensors', 'tokens-from-pv.safetensors']],
    ['inspect', []],
    ['dataset', ['photos.tokens/manifest.jsonl', 'photos.split/part-0-of-2/manifest.jsonl']],
  ];
  for (const [name, outputs] of expected) {
    const r = sh(snippetNamed(readme, name).code, app);
    const missing = outputs.filter((f) => !fs.existsSync(path.join(app, f)));
    check(
      `README CLI example "${name}" runs as printed`,
      r.status === 0 && missing.length === 0 && !/bundled demo/.test(r.err),
      r.err + (missing.length ? `\nmissing: ${missing.join(', ')}` : ''),
    );
  }
}

/** The README's "Check your own checkpoint" in a CommonJS app: the check as printed, the suite under Jest. */
function checkYourOwn(app: string, checkSnippet: string, suite: string): void {
  const checked = sh(checkSnippet, app);
  check(
    "README check of the demo's PyTorch reference runs as printed and passes",
    checked.status === 0 && /all 9 tensors within the bound\n$/.test(checked.out),
    checked.err + checked.out,
  );
  const required = sh(
    `node -e "const t = require('llava-vision-tfjs/testing'); console.log(typeof t.matchers.toMatchReference, typeof t.readReference)"`,
    app,
  );
  check(
    'llava-vision-tfjs/testing from CommonJS (require)',
    required.status === 0 && required.out.trim() === 'function function',
    required.err,
  );
  const jest = sh(`npm install ${NPM_QUIET} --no-save jest@${JEST} @types/jest@${TYPES_JEST}`, app);
  const files = writeTsSnippet(suite, app, 'parity.test');
  const errors = typeErrors(
    files.ts,
    'commonjs',
    [path.join(app, 'node_modules', '@types'), path.join(ROOT, 'node_modules', '@types')],
    ['node', 'jest'],
  );
  check(
    'README parity suite type-checks with @types/jest (strict, skipLibCheck)',
    jest.status === 0 && errors.length === 0,
    jest.err + errors.join('\n'),
  );
  fs.rmSync(files.ts);
  const run = sh(
    `npx jest --ci --config '${JSON.stringify({ testEnvironment: 'node', transform: {} })}' parity.test.js`,
    app,
  );
  check(
    'README parity suite passes under Jest (the matchers from the subpath export)',
    run.status === 0 && /Tests:\s+1 passed, 1 total/.test(run.err),
    run.err + run.out,
  );
}

/** The subpath export from an ES module, and the README's suite under Vitest. */
function testingFromEsm(app: string, suite: string): void {
  fs.writeFileSync(
    path.join(app, 'testing.mjs'),
    "import { matchers, readReference } from 'llava-vision-tfjs/testing';\nconsole.log(typeof matchers.toBeAllClose, typeof readReference);\n",
  );
  const imported = sh('node testing.mjs', app);
  check(
    'llava-vision-tfjs/testing from an ES module (import)',
    imported.status === 0 && imported.out.trim() === 'function function',
    imported.err,
  );
  const vitest = sh(`npm install ${NPM_QUIET} --no-save vitest@${VITEST}`, app);
  const files = writeTsSnippet(`import { expect, test } from 'vitest';\n${suite}`, app, 'parity.test', 'esm');
  const errors = typeErrors(files.ts, 'esm', [path.join(ROOT, 'node_modules', '@types')]);
  check(
    "README parity suite with Vitest's import type-checks as an ES module (strict, skipLibCheck)",
    vitest.status === 0 && errors.length === 0,
    vitest.err + errors.join('\n'),
  );
  fs.rmSync(files.js);
  const run = sh('NO_COLOR=1 npx vitest run parity.test.mts', app);
  check(
    'README parity suite passes under Vitest',
    run.status === 0 && /Tests\s+1 passed \(1\)/.test(run.out),
    run.err + run.out,
  );
}

main();
