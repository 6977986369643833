/**
 * `npm run device:bundle`: the git-ignored folder `.device/` that `tools/device_check.sh` needs on a bare
 * GPU host (no Node.js, no network, a 64 MiB limit on the tree plus what is carried). It holds:
 *
 *   node.xz          this machine's `node`, stripped, xz-compressed with the x86 filter
 *   native.tar.xz    the native binaries: Dawn (webgpu's linux-x64 dawn.node, stripped), jest's resolver
 *   sharp.tar.xz     sharp and libvips, when they fit the budget (`--sharp auto|yes|no`; the auto rule keeps
 *                    1 MiB spare)
 *   runtime.tar.xz   dist/ (every .ts of src, tools, test, examples compiled; the parity suites run as
 *                    JavaScript, with no ts-jest or TypeScript there) and node_modules/ pruned to what runs:
 *                    the dependency closure of the package's dependencies, the tfjs backends, webgpu and
 *                    jest, without docs, maps, type declarations and other platforms' binaries; without
 *                    libvips, a `sharp` that says it was left out
 *   debs/            Debian's Vulkan loader and GL dispatch libraries (amd64), unpacked there with dpkg -x
 *   manifest.json    what is inside, the node version, and the digest of the sources dist/ was built from
 *                    (device_check.sh refuses a bundle older than the tree)
 *
 * and prints the budget: tracked files + untracked files that git does not ignore + .device/, against 64 MiB.
 * Exits 1 when over it. The compressed parts are cached in .cache/device-bundle/ by the hash of their input.
 *
 *   npm run device:bundle [-- --sharp auto|yes|no] [--out .device] [--limit-mib 64]
 *   node dist/tools/device/bundle.js --verify      (where it is unpacked: is dist/ this tree's?)
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { packageRoot } from '../../src/version';

const MiB = 2 ** 20;

/** The packages the device check runs, beside package.json's dependencies: the tfjs peers, Dawn, jest. */
const EXTRA_ROOTS = [
  '@tensorflow/tfjs-core',
  '@tensorflow/tfjs-layers',
  '@tensorflow/tfjs-backend-cpu',
  '@tensorflow/tfjs-backend-wasm',
  '@tensorflow/tfjs-backend-webgpu',
  'webgpu',
  'jest',
  // The benchmarks' clock measurement assembles its loop (tools/cpu_clock.ts).
  'wabt',
];

/** Debian packages of the Vulkan loader and GL dispatch (the device README's list, minus desktop GL). */
const DEBS = ['libvulkan1', 'libegl1', 'libglvnd0', 'libgles2', 'libopengl0'];

/** Packages nothing here runs: jest's watch mode (jest-haste-map requires it only when watching). */
const NOT_RUN = /^@parcel\/watcher/;

/** tfjs packages: their Node entry point is one bundled file; dist/ also holds ESM copies of every module. */
const SINGLE_FILE_PACKAGES = /^@tensorflow\/tfjs-/;

/** Files no package needs at run time. */
const DROP_FILE =
  /(\.map|\.d\.ts|\.d\.mts|\.d\.cts|\.tsbuildinfo|\.md|\.markdown|\.flow|\.c|\.h|\.cc|\.cpp|\.gyp|\.gypi)$|(^|\/)(Makefile|\.npmignore|\.eslintrc[^/]*|\.editorconfig|\.travis\.yml)$/;
/** Top-level folders of a package that hold no run-time code. */
const DROP_DIR = /^(docs?|tests?|__tests__|examples?|benchmarks?|bench|coverage|man|\.github|website)\//;

interface Options {
  out: string;
  sharp: 'auto' | 'yes' | 'no';
  limitMiB: number;
  verify: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { out: '.device', sharp: 'auto', limitMiB: 64, verify: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--out') o.out = value();
    else if (a === '--sharp') {
      const v = value();
      if (v !== 'auto' && v !== 'yes' && v !== 'no') throw new Error(`--sharp must be auto, yes or no, got ${v}`);
      o.sharp = v;
    } else if (a === '--limit-mib') o.limitMiB = Number(value());
    else if (a === '--verify') o.verify = true;
    else if (a === '--help' || a === '-h') {
      console.log('usage: npm run device:bundle -- [--sharp auto|yes|no] [--out .device] [--limit-mib 64] | --verify');
      process.exit(0);
    } else throw new Error(`unknown argument ${a} (see --help)`);
  }
  if (!(o.limitMiB > 0)) throw new Error('--limit-mib must be a positive number');
  return o;
}

function run(cmd: string, args: string[], opts: { cwd?: string; input?: Buffer } = {}): string {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, input: opts.input, maxBuffer: 256 * MiB, encoding: 'buffer' });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.toString().trim()}`);
  return r.stdout.toString();
}

const mib = (bytes: number) => `${(bytes / MiB).toFixed(2)} MiB`;

// ------------------------------------------------------------------------------ the packages that run

interface LockEntry {
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

/**
 * The installed package folders (`node_modules/...`, as package-lock.json names them) that `roots`
 * need, resolved as Node does: a nested node_modules first, then each folder above. Optional and peer
 * dependencies count where they are installed (the platform packages npm chose for this machine).
 */
export function packageClosure(root: string, roots: string[]): string[] {
  const lock = JSON.parse(fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, LockEntry>;
  };
  const installed = (key: string) => key in lock.packages && fs.existsSync(path.join(root, key, 'package.json'));
  const resolve = (from: string, name: string): string | null => {
    for (let dir = from; ;) {
      const key = `${dir ? `${dir}/` : ''}node_modules/${name}`;
      if (installed(key)) return key;
      if (!dir) return null;
      const up = dir.lastIndexOf('/node_modules/');
      dir = up < 0 ? '' : dir.slice(0, up);
    }
  };
  const seen = new Set<string>();
  const visit = (from: string, name: string, required: boolean) => {
    if (NOT_RUN.test(name)) return;
    const key = resolve(from, name);
    if (!key) {
      if (required) throw new Error(`${name} (needed by ${from || 'package.json'}) is not installed: run npm ci`);
      return;
    }
    if (seen.has(key)) return;
    seen.add(key);
    const e = lock.packages[key];
    for (const dep of Object.keys(e.dependencies ?? {})) visit(key, dep, true);
    for (const dep of [...Object.keys(e.optionalDependencies ?? {}), ...Object.keys(e.peerDependencies ?? {})])
      visit(key, dep, false);
  };
  for (const name of roots) visit('', name, true);
  return [...seen].sort();
}

function walk(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const d of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${d.name}` : d.name;
    if (d.isDirectory()) out.push(...walk(dir, r));
    else if (d.isFile()) out.push(r);
  }
  return out;
}

/** A package's files that run (relative to its folder), native binaries apart. */
function runtimeFiles(root: string, key: string): { js: string[]; native: string[] } {
  const dir = path.join(root, key);
  const name = key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { main?: string };
  let files = walk(dir).filter((f) => !f.startsWith('node_modules/'));
  if (SINGLE_FILE_PACKAGES.test(name)) {
    const main = path.posix.normalize(pkg.main ?? 'index.js');
    files = files.filter((f) => f === 'package.json' || f === main || f.endsWith('.wasm') || /^LICENSE/.test(f));
  } else if (name === 'webgpu') {
    files = files.filter((f) => !f.startsWith('dist/') || f.startsWith(`dist/linux-x64/`));
    files = files.filter((f) => !f.startsWith('build/'));
  } else if (name === 'wabt') {
    files = files.filter((f) => !f.startsWith('bin/')); // command-line tools: index.js is the library
  }
  files = files.filter((f) => f === 'package.json' || (!DROP_FILE.test(f) && !DROP_DIR.test(f)));
  const isNative = (f: string) => /\.node$|\.so(\.\d+)*$/.test(f);
  return { js: files.filter((f) => !isNative(f)), native: files.filter(isNative) };
}

// --------------------------------------------------------------------------------------- the sources

/**
 * The files dist/ is compiled from (every .ts of src, tools, test, examples) and node_modules is installed
 * from, found by walking the folders (the host has no git), in code-unit order.
 */
export function sourceFiles(root: string): string[] {
  const ts = ['src', 'tools', 'test', 'examples'].flatMap((dir) =>
    fs.existsSync(path.join(root, dir)) ? walk(root, dir).filter((f) => f.endsWith('.ts')) : [],
  );
  const top = fs.readdirSync(root).filter((f) => /^(package-lock\.json|tsconfig(\.\w+)?\.json)$/.test(f));
  return [...ts, ...top].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * `--verify` (tools/device_check.sh, where the bundle was unpacked): whether the tree's sources are those
 * the bundle's dist/ was compiled from. Prints one line; exit code 0 when they are.
 */
function verify(root: string, out: string): number {
  const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8')) as {
    sourceDigest: string;
    sources: string[];
    commit: string;
  };
  const sources = sourceFiles(root);
  const digest = sourceDigest(root, sources);
  if (digest === manifest.sourceDigest) {
    console.log(
      `device bundle: built from these sources (${sources.length} files, commit ${manifest.commit.slice(0, 12)})`,
    );
    return 0;
  }
  const had = new Set(manifest.sources);
  const added = sources.filter((f) => !had.has(f));
  const removed = manifest.sources.filter((f) => !sources.includes(f));
  const changed = added.length || removed.length ? '' : ' (file contents differ)';
  console.log(
    `device bundle: STALE, built from other sources (commit ${manifest.commit.slice(0, 12)})${changed}` +
      (added.length ? `; new here: ${added.slice(0, 5).join(', ')}` : '') +
      (removed.length ? `; gone here: ${removed.slice(0, 5).join(', ')}` : ''),
  );
  return 1;
}

/** `sha256sum FILE... | sha256sum` in the repository root (what device_check.sh computes there). */
export function sourceDigest(root: string, files: string[]): string {
  const lines = files
    .map(
      (f) =>
        `${createHash('sha256')
          .update(fs.readFileSync(path.join(root, f)))
          .digest('hex')}  ${f}\n`,
    )
    .join('');
  return createHash('sha256').update(lines).digest('hex');
}

// ----------------------------------------------------------------------------------------- the parts

/** The sha256 of each part's uncompressed input, as the last bundle left them (.cache/device-bundle/inputs.json). */
let previousInputs: Record<string, string> = {};
const inputs: Record<string, string> = {};

function fileSha256(file: string): string {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(MiB);
  const fd = fs.openSync(file, 'r');
  try {
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0;) hash.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

function xz(input: string, output: string, x86: boolean): void {
  const sha = fileSha256(input);
  inputs[path.basename(output)] = sha;
  if (previousInputs[path.basename(output)] === sha && fs.existsSync(output)) return; // compressed already
  const filters = x86 ? ['--x86', '--lzma2=preset=9e,dict=128MiB'] : ['--lzma2=preset=9e,dict=64MiB'];
  const out = fs.openSync(`${output}.tmp`, 'w');
  try {
    const r = spawnSync('xz', ['-c', '-T1', ...filters, input], { stdio: ['ignore', out, 'pipe'] });
    if (r.error || r.status !== 0) throw new Error(`xz ${input}: ${r.error?.message ?? r.stderr.toString()}`);
  } finally {
    fs.closeSync(out);
  }
  fs.renameSync(`${output}.tmp`, output);
}

/** A tar of `stage` (paths relative to it, reproducible order and owners), xz-compressed to `output`. */
function tarXz(stage: string, output: string, x86: boolean): void {
  const tar = `${output}.tar`;
  run('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-C', stage, '-cf', tar, '.']);
  xz(tar, output, x86);
  fs.rmSync(tar);
}

function copyInto(stage: string, from: string, rel: string): void {
  const to = path.join(stage, rel);
  fs.mkdirSync(path.dirname(to), { recursive: true });
  fs.copyFileSync(from, to);
}

/** Strips symbols from a copy (debug info is most of node's size); a missing `strip` keeps the file as it is. */
function stripped(file: string, tmp: string): string {
  const copy = path.join(tmp, path.basename(file));
  fs.copyFileSync(file, copy);
  fs.chmodSync(copy, 0o755);
  const r = spawnSync('strip', [copy]);
  if (r.error || r.status !== 0) console.log(`device:bundle: strip unavailable, ${path.basename(file)} kept whole`);
  return copy;
}

/** What `sharp` becomes without libvips: loading works, decoding says why it cannot. */
const SHARP_STAND_IN = `'use strict';
// Written by tools/device/bundle.ts: libvips did not fit the device bundle's budget. Our own decoders
// (PNG, GIF, BMP, uncompressed TIFF) need no sharp; JPEG, WebP and compressed TIFF do.
function sharp() {
  throw new Error('sharp (libvips) was left out of this device bundle to fit its size limit: JPEG, WebP and compressed TIFF cannot be decoded here (npm run device:bundle -- --sharp yes)');
}
module.exports = sharp;
module.exports.default = sharp;
module.exports.leftOutOfDeviceBundle = true;
`;

function downloadDebs(dir: string): string[] {
  const have = () => fs.readdirSync(dir).filter((f) => f.endsWith('.deb'));
  if (DEBS.every((p) => have().some((f) => f.startsWith(`${p}_`)))) return have();
  const lists = path.join(os.tmpdir(), 'llava-device-apt-amd64');
  fs.mkdirSync(path.join(lists, 'partial'), { recursive: true });
  const o = ['-oAPT::Architecture=amd64', '-oAPT::Architectures=amd64', `-oDir::State::Lists=${lists}`];
  run('apt-get', [...o, '-qq', 'update']);
  run('apt-get', [...o, '-qq', 'download', ...DEBS], { cwd: dir });
  return have();
}

// -------------------------------------------------------------------------------------------- budget

interface Budget {
  trackedBytes: number;
  trackedFiles: number;
  untrackedBytes: number;
  untrackedFiles: number;
}

function treeBudget(root: string, out: string): Budget {
  const size = (files: string[]) => files.reduce((s, f) => s + (fs.lstatSync(path.join(root, f)).size ?? 0), 0);
  const list = (args: string[]) =>
    run('git', ['ls-files', '-z', ...args], { cwd: root })
      .split('\0')
      .filter((f) => f && fs.existsSync(path.join(root, f)));
  const tracked = list([]);
  const outRel = path.relative(root, out);
  const untracked = list(['--others', '--exclude-standard']).filter((f) => !f.startsWith(`${outRel}/`));
  return {
    trackedBytes: size(tracked),
    trackedFiles: tracked.length,
    untrackedBytes: size(untracked),
    untrackedFiles: untracked.length,
  };
}

// ---------------------------------------------------------------------------------------------- main

function main(): number {
  const o = parseArgs(process.argv.slice(2));
  const root = packageRoot();
  const out = path.resolve(root, o.out);
  if (o.verify) return verify(root, out);
  fs.mkdirSync(path.join(out, 'debs'), { recursive: true });
  const ignored = spawnSync('git', ['check-ignore', '-q', `${path.relative(root, out)}/`], { cwd: root }).status === 0;
  if (!ignored) throw new Error(`${o.out} is not ignored by git: it would travel twice (add it to .gitignore)`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-device-bundle-'));
  try {
    const t0 = Date.now();
    const step = (what: string) => console.log(`device:bundle: ${what} (${((Date.now() - t0) / 1000).toFixed(0)} s)`);

    step('compiling src, tools, test and examples');
    const sources = sourceFiles(root);
    const digest = sourceDigest(root, sources);
    const jsStage = path.join(tmp, 'js');
    const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    run(process.execPath, [
      tsc,
      '-p',
      path.join(root, 'tsconfig.json'),
      '--outDir',
      path.join(jsStage, 'dist'),
      '--declaration',
      'false',
      '--sourceMap',
      'false',
    ]);
    // The compiled suites find their fixtures next to them (test/helpers/golden.ts: __dirname/../fixtures).
    fs.symlinkSync(path.join('..', '..', 'test', 'fixtures'), path.join(jsStage, 'dist', 'test', 'fixtures'));

    step('node_modules: the packages that run');
    const deps = Object.keys(
      (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { dependencies: object }).dependencies,
    );
    const packages = packageClosure(root, [...deps, ...EXTRA_ROOTS]);
    const nativeStage = path.join(tmp, 'native');
    const sharpStage = path.join(tmp, 'sharp');
    let jsFiles = 0;
    for (const key of packages) {
      const { js, native } = runtimeFiles(root, key);
      const sharpPart = /node_modules\/(sharp|@img\/sharp-[^/]+)$/.test(key);
      for (const f of js) copyInto(sharpPart ? sharpStage : jsStage, path.join(root, key, f), `${key}/${f}`);
      for (const f of native) {
        const from = key.endsWith('node_modules/webgpu')
          ? stripped(path.join(root, key, f), tmp)
          : path.join(root, key, f);
        copyInto(sharpPart ? sharpStage : nativeStage, from, `${key}/${f}`);
      }
      jsFiles += js.length;
    }
    fs.writeFileSync(path.join(jsStage, 'node_modules', '.device-bundle'), `${digest}\n`);

    // Every compressed part is made in .cache/device-bundle (git-ignored) and kept there with the hash of
    // its input: an unchanged part is not compressed again (node and Dawn take minutes at xz -9e).
    const cache = path.join(root, '.cache', 'device-bundle');
    fs.mkdirSync(cache, { recursive: true });
    try {
      previousInputs = JSON.parse(fs.readFileSync(path.join(cache, 'inputs.json'), 'utf8')) as Record<string, string>;
    } catch {
      previousInputs = {};
    }
    const cached = (name: string) => path.join(cache, name);
    step('node (stripped, xz)');
    xz(stripped(process.execPath, tmp), cached('node.xz'), true);
    step('Dawn (xz)');
    tarXz(nativeStage, cached('native.tar.xz'), true);
    step('sharp and libvips (xz, carried if they fit)');
    tarXz(sharpStage, cached('sharp.tar.xz'), true);
    step('Debian packages (apt-get download, amd64)');
    const debs = downloadDebs(path.join(out, 'debs'));

    // The budget decides sharp: the runtime with sharp's JS and with the stand-in, then the sums.
    const sizeOf = (f: string) => fs.statSync(f).size;
    const sharpStandIn = path.join(jsStage, 'node_modules', 'sharp');
    step('runtime (xz), with the stand-in for sharp');
    fs.mkdirSync(sharpStandIn, { recursive: true });
    fs.writeFileSync(path.join(sharpStandIn, 'index.js'), SHARP_STAND_IN);
    fs.writeFileSync(
      path.join(sharpStandIn, 'package.json'),
      JSON.stringify({ name: 'sharp', version: '0.0.0-left-out-of-device-bundle', main: 'index.js' }, null, 1) + '\n',
    );
    tarXz(jsStage, cached('runtime-no-sharp.tar.xz'), false);
    fs.rmSync(sharpStandIn, { recursive: true });
    step("runtime (xz), with sharp's JavaScript");
    fs.cpSync(path.join(sharpStage, 'node_modules'), path.join(jsStage, 'node_modules'), {
      recursive: true,
      filter: (src) => !/\.node$|\.so(\.\d+)*$/.test(src),
    });
    tarXz(jsStage, cached('runtime-sharp.tar.xz'), false);
    fs.writeFileSync(path.join(cache, 'inputs.json'), JSON.stringify(inputs, null, 1) + '\n');

    const tree = treeBudget(root, out);
    const debBytes = debs.reduce((sum, f) => sum + sizeOf(path.join(out, 'debs', f)), 0);
    const limit = o.limitMiB * MiB;
    const fixed =
      tree.trackedBytes +
      tree.untrackedBytes +
      sizeOf(cached('node.xz')) +
      sizeOf(cached('native.tar.xz')) +
      debBytes +
      64 * 1024; // manifest.json
    const totalWithSharp = fixed + sizeOf(cached('runtime-sharp.tar.xz')) + sizeOf(cached('sharp.tar.xz'));
    // A margin of 1 MiB for the tree growing between the bundle and the run.
    const withSharp = o.sharp === 'yes' || (o.sharp === 'auto' && totalWithSharp + MiB <= limit);
    if (!withSharp && o.sharp === 'auto')
      console.log(
        `device:bundle: sharp + libvips (${mib(sizeOf(cached('sharp.tar.xz')))}) do not fit (${mib(totalWithSharp)} of ${mib(limit)} with them, 1 MiB kept spare): the stand-in instead`,
      );
    fs.copyFileSync(cached('node.xz'), path.join(out, 'node.xz'));
    fs.copyFileSync(cached('native.tar.xz'), path.join(out, 'native.tar.xz'));
    fs.copyFileSync(
      cached(withSharp ? 'runtime-sharp.tar.xz' : 'runtime-no-sharp.tar.xz'),
      path.join(out, 'runtime.tar.xz'),
    );
    if (withSharp) fs.copyFileSync(cached('sharp.tar.xz'), path.join(out, 'sharp.tar.xz'));

    const parts = ['node.xz', 'native.tar.xz', 'runtime.tar.xz', ...(withSharp ? ['sharp.tar.xz'] : [])];
    const manifest = {
      format: 'llava-vision-device-bundle/1',
      created: new Date().toISOString(),
      commit: run('git', ['rev-parse', 'HEAD'], { cwd: root }).trim(),
      node: process.version,
      sharp: withSharp,
      packages: packages.length,
      packageFiles: jsFiles,
      parts: Object.fromEntries(parts.map((p) => [p, sizeOf(path.join(out, p))])),
      debs,
      sourceDigest: digest,
      sources,
    };
    fs.writeFileSync(path.join(out, 'manifest.json'), JSON.stringify(manifest, null, 1) + '\n');
    // Parts left from an earlier bundle would travel too.
    const keep = new Set([...parts, 'manifest.json', 'debs']);
    for (const f of fs.readdirSync(out)) if (!keep.has(f)) fs.rmSync(path.join(out, f), { recursive: true });

    const carried = walk(out).reduce((s, f) => s + sizeOf(path.join(out, f)), 0);
    const total = tree.trackedBytes + tree.untrackedBytes + carried;
    const rows: [string, number][] = [
      [`tracked files (${tree.trackedFiles})`, tree.trackedBytes],
      [`untracked files git does not ignore (${tree.untrackedFiles})`, tree.untrackedBytes],
      ...parts.map((p): [string, number] => [`${o.out}/${p}`, sizeOf(path.join(out, p))]),
      [`${o.out}/debs (${debs.length} .deb)`, debBytes],
      [`${o.out}/manifest.json`, sizeOf(path.join(out, 'manifest.json'))],
    ];
    console.log('\ndevice bundle budget (what a run sends: the tree and the carried folder)');
    for (const [what, bytes] of rows) console.log(`  ${what.padEnd(52)} ${mib(bytes).padStart(11)}`);
    console.log(
      `  ${'total'.padEnd(52)} ${mib(total).padStart(11)} of ${mib(limit)} (${mib(limit - total)} ${total <= limit ? 'spare' : 'OVER'})`,
    );
    console.log(`  sharp + libvips: ${withSharp ? 'carried' : 'left out (JPEG/WebP decoding is not checked there)'}`);
    console.log(
      `  built from ${manifest.commit.slice(0, 12)}, sources digest ${digest.slice(0, 12)}, node ${process.version}`,
    );
    step('done');
    return total <= limit ? 0 : 1;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (require.main === module) {
  try {
    process.exitCode = main();
  } catch (e) {
    console.error(`device:bundle: ${(e as Error).message}`);
    process.exitCode = 1;
  }
}
