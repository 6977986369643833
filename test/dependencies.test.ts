/**
 * How the package depends on TensorFlow.js (issue 12, item 11): tfjs-core + tfjs-layers + backends as
 * peers (the app's copy is used), never the whole bundle, every gradient registered, and a missing peer
 * named in one line. The installs themselves (one tfjs-core next to an app's pinned @tensorflow/tfjs)
 * are tools/package_test.ts's; which tfjs versions are installed is the lockfile's business, not a test's.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '../src/tf';
import { readJson } from './helpers/json';

const ROOT = path.join(__dirname, '..');
type Deps = Record<string, string>;
const pkg = readJson<{
  dependencies: Deps;
  devDependencies: Deps;
  peerDependencies: Deps;
  peerDependenciesMeta: Record<string, unknown>;
}>(path.join(ROOT, 'package.json'));
const CORE_DIST = path.join(path.dirname(require.resolve('@tensorflow/tfjs-core/package.json')), 'dist');

test('tfjs-core, tfjs-layers and the backends are peer dependencies (a 4.x range); the bundle is not a dependency', () => {
  expect(Object.keys(pkg.dependencies).filter((d) => d.startsWith('@tensorflow/'))).toEqual([]);
  for (const peer of [
    '@tensorflow/tfjs-core',
    '@tensorflow/tfjs-layers',
    '@tensorflow/tfjs-backend-wasm',
    '@tensorflow/tfjs-backend-cpu',
  ]) {
    expect(pkg.peerDependencies[peer]).toBe('^4.20.0');
  }
  // Required peers are installed by npm 7+; cpu is optional (it comes with wasm) so that an app's
  // @tensorflow/tfjs@4.x, which brings its own cpu, does not make npm pick another version.
  // The GPU route (webgpu on Dawn) is optional like tfjs-node.
  expect(Object.keys(pkg.peerDependenciesMeta).sort()).toEqual([
    '@tensorflow/tfjs-backend-cpu',
    '@tensorflow/tfjs-backend-webgpu',
    '@tensorflow/tfjs-node',
    '@tensorflow/tfjs-node-gpu',
    'webgpu',
  ]);
  expect(pkg.peerDependencies['@tensorflow/tfjs-backend-webgpu']).toBe('^4.20.0');
});

test('every gradient tfjs-core defines is registered by our tf (training needs them all)', () => {
  const files = fs.readdirSync(path.join(CORE_DIST, 'gradients')).filter((f) => f.endsWith('_grad.js'));
  const kernels = files.map(
    (f) => /kernelName: (\w+)/.exec(fs.readFileSync(path.join(CORE_DIST, 'gradients', f), 'utf8'))![1],
  );
  expect(kernels.length).toBeGreaterThan(90);
  const missing = kernels.filter((k) => !tf.getGradient((tf as unknown as Record<string, string>)[k]));
  expect(missing).toEqual([]);
});

test('a missing peer is one line naming it and the install command, not a require stack', () => {
  // An app whose node_modules has the package (its package.json and built dist/src) but no TensorFlow.js.
  const app = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-peers-'));
  try {
    const installed = path.join(app, 'node_modules', 'llava-vision-tfjs');
    fs.cpSync(path.join(ROOT, 'dist', 'src'), path.join(installed, 'dist', 'src'), { recursive: true });
    fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(installed, 'package.json'));
    const r = spawnSync(process.execPath, ['-e', "require('llava-vision-tfjs')"], { cwd: app, encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(
      /ConfigError: llava-vision-tfjs needs @tensorflow\/tfjs-core, @tensorflow\/tfjs-layers \(peer dependencies\): npm install @tensorflow\/tfjs-core@4\.22\.0 @tensorflow\/tfjs-layers@4\.22\.0 @tensorflow\/tfjs-backend-wasm@4\.22\.0\n/,
    );
  } finally {
    fs.rmSync(app, { recursive: true, force: true });
  }
});

test('the CLI without the tfjs peers: --help, --version and download work; the other commands say in one line what to install', () => {
  // An app with the package (package.json, bin, built dist/src) and its own dependencies, but no TensorFlow.js,
  // as `npm install --legacy-peer-deps` (or yarn 1, pnpm) leaves it.
  const app = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-peers-cli-'));
  try {
    const installed = path.join(app, 'node_modules', 'llava-vision-tfjs');
    fs.cpSync(path.join(ROOT, 'dist', 'src'), path.join(installed, 'dist', 'src'), { recursive: true });
    fs.cpSync(path.join(ROOT, 'bin'), path.join(installed, 'bin'), { recursive: true });
    fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(installed, 'package.json'));
    for (const dep of fs.readdirSync(path.join(ROOT, 'node_modules'))) {
      if (dep !== '@tensorflow' && !dep.startsWith('.'))
        fs.symlinkSync(path.join(ROOT, 'node_modules', dep), path.join(app, 'node_modules', dep));
    }
    const cli = (...args: string[]) => {
      const r = spawnSync(process.execPath, [path.join(installed, 'bin', 'llava-vision.js'), ...args], {
        cwd: app,
        encoding: 'utf8',
        env: { ...process.env, HF_HUB_OFFLINE: '1', HF_HUB_CACHE: path.join(app, 'cache') },
      });
      return { code: r.status, out: r.stdout, err: r.stderr };
    };
    const install =
      'npm install @tensorflow/tfjs-core@4.22.0 @tensorflow/tfjs-layers@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0';
    const needs = `llava-vision-tfjs needs @tensorflow/tfjs-core, @tensorflow/tfjs-layers (peer dependencies): ${install}`;

    const help = cli('--help');
    expect({ code: help.code, err: help.err }).toEqual({ code: 0, err: '' });
    expect(help.out).toMatch(/^Usage:\n {2}llava-vision encode /m);
    expect(help.out).toContain(
      `\nencode, preprocess, inspect, check: cannot run here (their options are listed once they can): ${needs}\n`,
    );
    expect(help.out).toContain('\ndownload: a model from the HuggingFace hub');
    const { version } = readJson<{ version: string }>(path.join(ROOT, 'package.json'));
    expect(cli('--version')).toEqual({ code: 0, out: `llava-vision-tfjs ${version}\n`, err: '' });
    expect(cli('download', '--help')).toMatchObject({ code: 0, err: '' });
    // download needs no TensorFlow.js: it runs (here into its offline error)
    expect(cli('download', 'org/name')).toMatchObject({
      code: 1,
      err: expect.stringMatching(
        /^llava-vision: org\/name at revision main: it is not in the HF cache .*HF_HUB_OFFLINE=1 forbids downloading/,
      ) as unknown,
    });
    for (const args of [
      ['encode', 'a.png', '--out', 'o.safetensors'],
      ['preprocess', 'a.png', '--out', 'o.safetensors'],
      ['inspect', 'x'],
      ['check', '--reference', 'r.safetensors'],
      ['encode', '--help'],
    ]) {
      expect({ args, ...cli(...args) }).toEqual({ args, code: 1, out: '', err: `llava-vision: ${needs}\n` });
    }
  } finally {
    fs.rmSync(app, { recursive: true, force: true });
  }
});
