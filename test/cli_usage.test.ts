/**
 * The CLI as people type it (issue 12): negative numbers as option values (item 4), one rule for --save
 * (item 5), the demo warning under --quiet, --version and exit codes (item 7).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { UsageError, parseOptions } from '../src/cli/args';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors';
import { goldenPixelValues, loadCase } from './helpers/golden';
import { isolatedTempDir } from './helpers/isolation';
import { readJson } from './helpers/json';
import { runCli } from './helpers/cli';

const ROOT = path.join(__dirname, '..');
const CHELSEA = path.join(ROOT, 'weights', 'demo', 'images', 'chelsea.png');
const tempDir = isolatedTempDir('llava-usage-');

/** tiny_llava_linear_sel-1_patch (config: select layer -1, a linear projector) with its first image's golden pixel values. */
function tinyLlava(): { model: string[]; pv: string } {
  const gc = loadCase('tiny_llava_linear_sel-1_patch');
  const id = gc.json.images[0].id;
  const pv = path.join(tempDir(), 'pv1.safetensors');
  if (!fs.existsSync(pv)) {
    writeSafetensors(pv, {
      pixel_values: { dtype: 'F32', ...goldenPixelValues(gc, id) },
    });
  }
  return { model: ['--model', path.join(gc.dir, 'llava'), '--vision-tower', path.join(gc.dir, 'clip_tower')], pv };
}

function readAll(file: string): { keys: string[]; tensors: Record<string, Buffer>; options: Record<string, unknown> } {
  const st = SafetensorsFile.open(file);
  try {
    const keys = st.keys();
    const tensors = Object.fromEntries(keys.map((k) => [k, Buffer.from(st.read(k).data)]));
    return { keys, tensors, options: JSON.parse(st.metadata.options) as Record<string, unknown> };
  } finally {
    st.close();
  }
}

describe('item 4: negative numbers are option values', () => {
  const spec = { 'select-layer': { type: 'string' }, quiet: { type: 'boolean' }, out: { type: 'string' } } as const;

  test.each([
    [['--select-layer', '-2'], '-2'],
    [['--select-layer=-2'], '-2'],
    [['--select-layer', '-12'], '-12'],
    [['--select-layer', '-0.5'], '-0.5'],
    [['--select-layer', '-2,-5'], '-2,-5'],
  ])('%j', (argv, value) => {
    expect(parseOptions(['a.png', ...argv, '--quiet'], spec)).toEqual({
      values: { 'select-layer': value, quiet: true },
      positionals: ['a.png'],
    });
  });

  test('after --, an argument starting with - is a positional, even a negative number', () => {
    expect(parseOptions(['--out', 'x', '--', '-2', '-a.png'], spec).positionals).toEqual(['-2', '-a.png']);
  });

  test('the hint of an error is kept on its one line', () => {
    const message = (argv: string[]) => {
      try {
        parseOptions(argv, spec);
      } catch (e) {
        expect(e).toBeInstanceOf(UsageError);
        return (e as Error).message;
      }
      throw new Error('no error');
    };
    expect(message(['--out', '--quiet'])).toBe(
      '--out needs a value, and the next argument is an option; for a value starting with "-", write --out=-VALUE',
    );
    expect(message(['--out'])).toBe('--out needs a value (see --help)');
    expect(message(['-x'])).toBe(
      'unknown option -x (see --help; a file name starting with "-" goes after --, e.g. -- -x)',
    );
    expect(message(['--bogus'])).toBe('unknown option --bogus (see --help)');
    expect(message(['--quiet=yes'])).toBe('--quiet takes no value');
  });

  test('--select-layer -2 on a model whose config says -1: features are hidden state L-1 without CLS, same as --select-layer=-2', async () => {
    const { model, pv } = tinyLlava();
    const outs = [];
    for (const form of [['--select-layer', '-2'], ['--select-layer=-2']]) {
      const out = path.join(tempDir(), `sel${outs.length}.safetensors`);
      const r = await runCli([
        'encode',
        ...model,
        '--pixel-values',
        pv,
        ...form,
        '--save',
        'hidden_states,features',
        '--quiet',
        '--out',
        out,
      ]);
      expect(r).toEqual({ code: 0, out: '', err: '' });
      outs.push(readAll(out));
    }
    const [a, b] = outs;
    expect(a.options.select_layer).toBe(-2);
    expect(a.tensors).toEqual(b.tensors);
    const st = SafetensorsFile.open(path.join(tempDir(), 'sel0.safetensors'));
    const layers = a.keys.filter((k) => k.includes('hidden_states')).length; // L + 1
    const name = `images.0.hidden_states.${layers - 2}`;
    const [, tokens, width] = st.info(name).shape;
    const expected = st.readFloat32(name).slice(width); // CLS dropped
    expect(st.info('images.0.features').shape).toEqual([1, tokens - 1, width]);
    expect(Array.from(st.readFloat32('images.0.features'))).toEqual(Array.from(expected));
    st.close();
  });

  test.each([
    [['encode', '--batch-size', '-1', '--out', 'o', 'a.png'], '--batch-size must be at least 1, got -1'],
    [['encode', '--workers', '-3', '--out', 'o', 'a.png'], '--workers must be at least 1, got -3'],
    [['encode', '--select-layer', '-2.5', '--out', 'o', 'a.png'], '--select-layer must be an integer, got "-2.5"'],
    [['download', 'org/name', '--timeout', '-5'], '--timeout must be at least 1 second, got -5'],
  ])('every numeric option takes a negative value to its own check: %j', async (args, message) => {
    const r = await runCli(args);
    expect(r).toEqual({ code: 2, out: '', err: `llava-vision: ${message}\n` });
  });
});

describe('item 5: --save lists exactly what is written; comma lists and repeats accumulate', () => {
  test.each([
    [
      ['--save', 'projected', '--save', 'features'],
      ['features', 'projected'],
    ],
    [
      ['--save', 'projected,features'],
      ['features', 'projected'],
    ],
    [
      ['--save', 'features', '--save', 'merged,features'],
      ['features', 'merged'],
    ],
    [['--save', 'merged'], ['merged']],
    [[], ['merged']],
  ])('encode IMAGE %j writes %j', async (save, names) => {
    const { model } = tinyLlava();
    const gc = loadCase('tiny_llava_linear_sel-1_patch');
    const out = path.join(tempDir(), 'save.safetensors');
    const r = await runCli([
      'encode',
      ...model,
      ...save,
      '--quiet',
      path.join(gc.dir, gc.json.images[0].file),
      '--out',
      out,
    ]);
    expect(r.code).toBe(0);
    const { keys, options } = readAll(out);
    expect(keys).toEqual(names.map((n) => `images.0.${n}`).sort());
    expect(options.save).toEqual(names);
  });

  test('the rule is stated in --help', async () => {
    const help = (await runCli(['encode', '--help'])).out;
    expect(help).toMatch(/a comma list, repeatable/);
    expect(help).toMatch(/It replaces the default/);
  });
});

describe('item 7: warning, --version, exit codes', () => {
  test('--quiet keeps the demo checkpoint warning, and only that', async () => {
    const out = path.join(tempDir(), 'demo.safetensors');
    const r = await runCli(['encode', '--quiet', CHELSEA, '--out', out]);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(
      /^llava-vision: no --model given: using the bundled demo checkpoint .* \(generated weights, not a trained model\)\n$/,
    );
    const p = await runCli(['preprocess', '--quiet', CHELSEA, '--out', path.join(tempDir(), 'demo-pv.safetensors')]);
    expect(p.code).toBe(0);
    expect(p.err).toMatch(/^llava-vision: no --model given: .*not a trained model\)\n$/);
  });

  test('--version prints the package version, in-process and from the installed bin', async () => {
    const { version } = readJson<{ version: string }>(path.join(ROOT, 'package.json'));
    expect(await runCli(['--version'])).toEqual({ code: 0, out: `llava-vision-tfjs ${version}\n`, err: '' });
    const bin = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'llava-vision.js'), '--version'], {
      encoding: 'utf8',
    });
    expect([bin.status, bin.stdout]).toEqual([0, `llava-vision-tfjs ${version}\n`]);
  });

  test('exit codes: 2 for usage errors, 1 for failures, 0 for help; the help says so', async () => {
    expect((await runCli([])).code).toBe(2);
    expect((await runCli(['--help'])).code).toBe(0);
    expect((await runCli(['encode', '--help'])).code).toBe(0);
    expect((await runCli(['unknown-command'])).code).toBe(2);
    expect((await runCli(['encode', '--no-such-option'])).code).toBe(2);
    expect((await runCli(['encode', CHELSEA])).code).toBe(2); // no --out
    expect((await runCli(['preprocess', '--out', path.join(tempDir(), 'p.safetensors')])).code).toBe(2); // no images
    expect((await runCli(['download'])).code).toBe(2);
    expect((await runCli(['download', '../evil'])).code).toBe(2);
    expect((await runCli(['inspect'])).code).toBe(2);
    // Failures of the work: a file that cannot be read, an image that cannot be decoded.
    expect(
      (
        await runCli([
          'encode',
          '--quiet',
          path.join(tempDir(), 'missing.png'),
          '--out',
          path.join(tempDir(), 'm.safetensors'),
        ])
      ).code,
    ).toBe(1);
    const broken = path.join(tempDir(), 'broken.png');
    fs.writeFileSync(broken, 'not a png');
    expect((await runCli(['encode', '--quiet', broken, '--out', path.join(tempDir(), 'b.safetensors')])).code).toBe(1);
    expect((await runCli(['inspect', path.join(tempDir(), 'nope')])).code).toBe(1);
    expect((await runCli(['--help'])).out).toMatch(/Exit codes: 0 done; 1 the work failed .*\n.*; 2 usage error/);
    const bin = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'llava-vision.js'), 'encode', '--select-layer'], {
      encoding: 'utf8',
    });
    expect([bin.status, bin.stderr]).toEqual([2, 'llava-vision: --select-layer needs a value (see --help)\n']);
  });
});

describe('every usage error exits 2 and does nothing (issue 20)', () => {
  const dir = () => path.join(tempDir(), 'usage-dataset');
  const out = () => path.join(tempDir(), 'usage-out.safetensors');
  const gc = loadCase('tiny_llava_linear_sel-1_patch');
  const model = ['--model', path.join(gc.dir, 'llava'), '--vision-tower', path.join(gc.dir, 'clip_tower')];
  const saved = { ...process.env };
  // Nothing may reach a hub, nor the user's cache, should a check be missing.
  beforeAll(() => Object.assign(process.env, { HF_HUB_OFFLINE: '1', HF_HUB_CACHE: path.join(tempDir(), 'hf-cache') }));
  afterAll(() => (process.env = saved));
  test.each<[string[], RegExp]>([
    // --out-dir: options that do not go together, --part out of range or malformed
    [['encode', '<img>', '--out-dir', '<dir>', '--part', '2/2'], /--part 2\/2: K must be 0\.\.1/],
    [['encode', '<img>', '--out-dir', '<dir>', '--part', 'x'], /--part must be K\/N/],
    [['encode', '<img>', '--out-dir', '<dir>', '--part', '0/0'], /--part 0\/0: N must be at least 1/],
    [['encode', '<img>', '--out-dir', '<dir>', '--out', '<out>'], /give either --out FILE or --out-dir DIR, not both/],
    [['encode', '--out-dir', '<dir>', '--pixel-values', '<out>'], /--pixel-values works with --out FILE/],
    [['encode', '<img>', '--out-dir', '<dir>', '--force'], /--force has no use with --out-dir/],
    [['encode', '--out-dir', '<dir>'], /encode --out-dir needs images/],
    // --out: the dataset options
    [['encode', '<img>', '--out', '<out>', '--dtype', 'F16'], /--dtype works with --out-dir DIR/],
    [['encode', '<img>', '--out', '<out>', '--inputs', 'list.txt'], /--inputs works with --out-dir DIR/],
    [['encode', '<img>', '--out', '<out>', '--shard-size', '3'], /--shard-size works with --out-dir DIR/],
    [['encode', '<img>', '--out', '<out>', '--part', '0/2'], /--part works with --out-dir DIR/],
    // a projector type LLaVA has no builder for, whatever the checkpoint
    [
      ['encode', '<img>', '--out', '<out>', '<model>', '--projector-type', 'mlp0x_relu'],
      /--projector-type: Unknown projector type: mlp0x_relu/,
    ],
    [
      ['encode', '<img>', '--out-dir', '<dir>', '<model>', '--projector-type', 'mlp99x_gelu'],
      /--projector-type: projector type "mlp99x_gelu" has 99 linear layers/,
    ],
    // download: the file list and revision
    [['download', 'org/name', '--files', ','], /--files needs at least one file name/],
    [
      ['download', 'org/name', '--files', '../config.json'],
      /--files: file "\.\.\/config\.json" must be a plain file name/,
    ],
    [
      ['download', 'org/name', '--files', 'config.json,sub/x.json'],
      /--files: file "sub\/x\.json" must be a plain file name/,
    ],
    [['download', 'org/name', '--revision', 'a..b'], /--revision "a\.\.b" is not a branch, tag or commit name/],
    [['download', 'org/name', '--revision', ''], /--revision "" is not a branch, tag or commit name/],
  ])('%j', async (template, message) => {
    const args = template.flatMap((a) =>
      a === '<dir>' ? dir() : a === '<out>' ? out() : a === '<img>' ? CHELSEA : a === '<model>' ? model : a,
    );
    const r = await runCli(args);
    expect({ code: r.code, out: r.out }).toEqual({ code: 2, out: '' });
    expect(r.err).toMatch(message);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect([fs.existsSync(dir()), fs.existsSync(out())]).toEqual([false, false]); // nothing done
  });
});
