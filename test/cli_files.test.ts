/**
 * The CLI never loses a user's file and checks its files before any work: issue 12, items 1-3.
 */
import * as fs from 'fs';
import * as path from 'path';
import { OutputError } from '../src/errors';
import { writeFileAtomic } from '../src/io/atomic';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors';
import { isolatedTempDir } from './helpers/isolation';
import { runCli } from './helpers/cli';

const DEMO_IMAGES = path.join(__dirname, '..', 'weights', 'demo', 'images');
const tempDir = isolatedTempDir('llava-files-');

function copyOf(file: string, name: string): string {
  const target = path.join(tempDir(), name);
  fs.copyFileSync(file, target);
  return target;
}

/** Nothing but the listed names in the folder: no output, no temp file left behind. */
function expectOnly(dir: string, names: string[]): void {
  expect(fs.readdirSync(dir).sort()).toEqual([...names].sort());
}

describe('a swapped --out never overwrites a user file', () => {
  test('encode --out photo.png tokens2.safetensors leaves photo.png byte-identical and writes nothing', async () => {
    const dir = fs.mkdtempSync(path.join(tempDir(), 'swap-'));
    const photo = path.join(dir, 'photo.png');
    fs.copyFileSync(path.join(DEMO_IMAGES, 'chelsea.png'), photo);
    const before = fs.readFileSync(photo);
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      const r = await runCli(['encode', '--quiet', '--out', 'photo.png', 'tokens2.safetensors']);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/--out photo\.png exists and is not a safetensors file; refusing to overwrite it/);
    } finally {
      process.chdir(cwd);
    }
    expect(Buffer.compare(fs.readFileSync(photo), before)).toBe(0);
    expectOnly(dir, ['photo.png']);
  });

  test('the same for preprocess', async () => {
    const photo = copyOf(path.join(DEMO_IMAGES, 'rocket.jpg'), 'rocket-pre.jpg');
    const before = fs.readFileSync(photo);
    const r = await runCli([
      'preprocess',
      '--preprocessor',
      path.join(__dirname, '..', 'weights', 'demo'),
      '--out',
      photo,
      photo,
    ]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/is also an input of this run|not a safetensors file/);
    expect(Buffer.compare(fs.readFileSync(photo), before)).toBe(0);
  });

  test('--out naming an input of the run is refused even when it is a safetensors file', async () => {
    const pv = path.join(tempDir(), 'pv-in.safetensors');
    writeSafetensors(pv, {
      pixel_values: { dtype: 'F32', shape: [1, 3, 336, 336], data: new Float32Array(3 * 336 * 336) },
    });
    const before = fs.readFileSync(pv);
    const r = await runCli(['encode', '--quiet', '--pixel-values', pv, '--out', pv]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/is also an input of this run/);
    expect(Buffer.compare(fs.readFileSync(pv), before)).toBe(0);
  });

  test('--out inside the model folder naming one of its files is refused', async () => {
    const model = path.join(tempDir(), 'model-copy');
    fs.cpSync(path.join(__dirname, '..', 'weights', 'demo'), model, { recursive: true });
    const weights = fs.readdirSync(model).find((f) => f.endsWith('.safetensors'))!;
    const before = fs.readFileSync(path.join(model, weights));
    const r = await runCli([
      'encode',
      '--quiet',
      '--model',
      model,
      path.join(DEMO_IMAGES, 'chelsea.png'),
      '--out',
      path.join(model, weights),
    ]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/is also an input of this run/);
    expect(Buffer.compare(fs.readFileSync(path.join(model, weights)), before)).toBe(0);
  });

  test('--force overwrites a non-safetensors file; an earlier output is replaced without --force', async () => {
    const target = path.join(tempDir(), 'notes.txt');
    fs.writeFileSync(target, 'my notes');
    const image = path.join(DEMO_IMAGES, 'chelsea.png');
    expect((await runCli(['encode', '--quiet', image, '--out', target])).code).toBe(1);
    expect(fs.readFileSync(target, 'utf8')).toBe('my notes');
    expect((await runCli(['encode', '--quiet', '--force', image, '--out', target])).code).toBe(0);
    expect(SafetensorsFile.open(target).keys()).toEqual(['images.0.merged']);
    // Our own output (a safetensors file) is replaced as before.
    expect((await runCli(['encode', '--quiet', image, image, '--out', target])).code).toBe(0);
    expect(SafetensorsFile.open(target).keys()).toEqual(['images.0.merged', 'images.1.merged']);
  });
});

describe('inputs are checked before the model loads', () => {
  test('missing file, folder, empty file: one line each, naming the path, and no model is opened', async () => {
    const empty = path.join(tempDir(), 'empty.png');
    fs.writeFileSync(empty, '');
    const missing = path.join(tempDir(), 'missing.jpg');
    const folder = path.join(tempDir(), 'a-folder');
    fs.mkdirSync(folder);
    const good = path.join(DEMO_IMAGES, 'chelsea.png');
    // A model folder that does not exist: had it been opened, the error would be about it.
    const r = await runCli([
      'encode',
      '--model',
      '/nonexistent-model',
      good,
      missing,
      folder,
      empty,
      '--out',
      path.join(tempDir(), 'x.safetensors'),
    ]);
    expect(r.code).toBe(1);
    expect(r.err.trim().split('\n')).toEqual([
      `llava-vision: ${missing}: no such file`,
      `llava-vision: ${folder}: is a directory, not an image file`,
      `llava-vision: ${empty}: empty file`,
    ]);
    expect(fs.existsSync(path.join(tempDir(), 'x.safetensors'))).toBe(false);
  });

  test('a missing --pixel-values or --projector file is named before the model loads', async () => {
    const out = path.join(tempDir(), 'y.safetensors');
    const r1 = await runCli([
      'encode',
      '--model',
      '/nonexistent-model',
      '--pixel-values',
      '/nope/pv.safetensors',
      '--out',
      out,
    ]);
    expect(r1.err).toBe('llava-vision: /nope/pv.safetensors: no such file\n');
    const r2 = await runCli([
      'encode',
      '--model',
      '/nonexistent-model',
      '--projector',
      '/nope/mm_projector.bin',
      path.join(DEMO_IMAGES, 'chelsea.png'),
      '--out',
      out,
    ]);
    expect(r2.err).toBe('llava-vision: /nope/mm_projector.bin: no such file\n');
  });
});

describe('--out folders', () => {
  test('missing parent folders are created; the output is written there', async () => {
    const out = path.join(tempDir(), 'newdir', 'sub', 'x.safetensors');
    const r = await runCli(['encode', '--quiet', path.join(DEMO_IMAGES, 'chelsea.png'), '--out', out]);
    expect(r.code).toBe(0);
    expect(SafetensorsFile.open(out).keys()).toEqual(['images.0.merged']);
    expectOnly(path.dirname(out), ['x.safetensors']);
  });

  test.each([
    ['an existing folder', (d: string) => d, /is a folder: give a file name, e.g. .*tokens\.safetensors/],
    ['a path ending in /', (d: string) => path.join(d, 'not-yet') + '/', /names a folder: give a file name/],
    [
      'a path under a file',
      (d: string) => path.join(d, 'file.txt', 'x.safetensors'),
      /cannot create its folder .*a part of its path is a file/,
    ],
  ])('--out as %s is refused up front, naming --out, never a temp file', async (_what, outOf, message) => {
    const dir = fs.mkdtempSync(path.join(tempDir(), 'outdir-'));
    fs.writeFileSync(path.join(dir, 'file.txt'), 'x');
    const r = await runCli([
      'encode',
      '--model',
      '/nonexistent-model',
      path.join(DEMO_IMAGES, 'chelsea.png'),
      '--out',
      outOf(dir),
    ]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/--out /);
    expect(r.err).toMatch(message);
    expect(r.err).not.toMatch(/tmp-\d+/);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expectOnly(dir, ['file.txt']);
  });

  test('a write that fails anyway names the target, not the temp file, and leaves nothing behind', () => {
    const dir = fs.mkdtempSync(path.join(tempDir(), 'atomic-'));
    const target = path.join(dir, 'gone', 'x.safetensors');
    expect(() => writeFileAtomic(target, new Uint8Array(4))).toThrow(OutputError);
    expect(() => writeFileAtomic(target, new Uint8Array(4))).toThrow(
      `cannot write ${target}: its folder does not exist`,
    );
    fs.mkdirSync(path.join(dir, 'folder'));
    expect(() => writeFileAtomic(path.join(dir, 'folder'), new Uint8Array(4))).toThrow(
      /cannot write .*folder: it is a folder$/,
    );
    expectOnly(dir, ['folder']);
  });
});

test('no image encoded: no output file at all', async () => {
  const bad = path.join(tempDir(), 'broken.png');
  fs.writeFileSync(bad, Buffer.from('\x89PNG\r\n\x1a\nnot really a png'));
  const out = path.join(tempDir(), 'none.safetensors');
  const r = await runCli(['encode', '--quiet', bad, bad, '--out', out]);
  expect(r.code).toBe(1);
  expect(r.err).toMatch(/none of the 2 image\(s\) could be encoded; nothing written/);
  expect(fs.existsSync(out)).toBe(false);
  const r2 = await runCli([
    'preprocess',
    '--preprocessor',
    path.join(__dirname, '..', 'weights', 'demo'),
    bad,
    '--out',
    out,
  ]);
  expect(r2.code).toBe(1);
  expect(fs.existsSync(out)).toBe(false);
});

describe('--out never replaces an input however it was found, nor weights it did not write (issue 20)', () => {
  const CASE = path.join(__dirname, 'fixtures', 'cases', 'tiny_llava_linear_sel-1_patch');
  const IMAGE = path.join(__dirname, 'fixtures', 'images', 'tiny_rgb_37x23.png');
  const COMMIT = 'c'.repeat(40);
  /** A LLaVA folder whose mm_vision_tower names `tower` (a path relative to the folder, or a hub id). */
  function llavaNaming(tower: string): string {
    const dir = fs.mkdtempSync(path.join(tempDir(), 'llava-'));
    fs.cpSync(path.join(CASE, 'llava'), dir, { recursive: true });
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, mm_vision_tower: tower }));
    return dir;
  }
  /** The tower in an HF cache laid out as huggingface_hub does (snapshot entries link to blobs). */
  function cacheWithTower(repo: string): { cache: string; snapshot: string; blobs: string } {
    const cache = fs.mkdtempSync(path.join(tempDir(), 'hf-cache-'));
    const repoDir = path.join(cache, `models--${repo.replace('/', '--')}`);
    const snapshot = path.join(repoDir, 'snapshots', COMMIT);
    const blobs = path.join(repoDir, 'blobs');
    fs.mkdirSync(snapshot, { recursive: true });
    fs.mkdirSync(blobs);
    fs.mkdirSync(path.join(repoDir, 'refs'));
    fs.writeFileSync(path.join(repoDir, 'refs', 'main'), COMMIT);
    for (const f of fs.readdirSync(path.join(CASE, 'clip_tower'))) {
      fs.copyFileSync(path.join(CASE, 'clip_tower', f), path.join(blobs, `blob-${f}`));
      fs.symlinkSync(path.join('..', '..', 'blobs', `blob-${f}`), path.join(snapshot, f));
    }
    return { cache, snapshot, blobs };
  }
  async function refusedOut(args: string[], out: string, message: RegExp): Promise<void> {
    const before = fs.readFileSync(out);
    for (const force of [[], ['--force']]) {
      const r = await runCli([...args, ...force, '--out', out]);
      expect({ force, code: r.code }).toEqual({ force, code: 1 });
      expect(r.err).toMatch(message);
      expect(Buffer.compare(fs.readFileSync(out), before)).toBe(0);
    }
  }

  test('the tower found through mm_vision_tower, as a folder beside the model: its files are inputs, --force or not', async () => {
    const llava = llavaNaming('tower');
    fs.cpSync(path.join(CASE, 'clip_tower'), path.join(llava, 'tower'), { recursive: true });
    const args = ['encode', '--quiet', '--model', llava, IMAGE];
    for (const f of ['model.safetensors', 'config.json', 'preprocessor_config.json']) {
      await refusedOut(args, path.join(llava, 'tower', f), /is also an input of this run .*refusing to overwrite it/);
    }
    await refusedOut(
      ['preprocess', '--quiet', '--model', llava, IMAGE],
      path.join(llava, 'tower', 'model.safetensors'),
      /is also an input of this run/,
    );
  });

  test('the tower found through mm_vision_tower in the HF cache: the snapshot entries and the blobs they link to', async () => {
    const { cache, snapshot, blobs } = cacheWithTower('org/tiny-tower');
    const llava = llavaNaming('org/tiny-tower');
    const saved = { ...process.env };
    Object.assign(process.env, { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: '1' });
    try {
      const args = ['encode', '--quiet', '--model', llava, IMAGE];
      await refusedOut(args, path.join(snapshot, 'model.safetensors'), /is also an input of this run/);
      await refusedOut(args, path.join(blobs, 'blob-model.safetensors'), /is also an input of this run/);
      // --vision-tower as a hub id, found in the cache, the same
      await refusedOut(
        [...args, '--vision-tower', 'org/tiny-tower'],
        path.join(blobs, 'blob-model.safetensors'),
        /is also an input of this run/,
      );
      // and the run itself works, writing elsewhere
      expect((await runCli([...args, '--out', path.join(tempDir(), 'from-cache.safetensors')])).code).toBe(0);
    } finally {
      process.env = saved;
    }
  });

  test('a safetensors file llava-vision did not write is replaced only with --force; its own outputs as before', async () => {
    const weights = path.join(tempDir(), 'someone-elses.safetensors');
    fs.copyFileSync(path.join(CASE, 'clip_tower', 'model.safetensors'), weights);
    const before = fs.readFileSync(weights);
    const args = [
      'encode',
      '--quiet',
      '--model',
      path.join(CASE, 'llava'),
      '--vision-tower',
      path.join(CASE, 'clip_tower'),
      IMAGE,
    ];
    const r = await runCli([...args, '--out', weights]);
    expect(r.code).toBe(1);
    expect(r.err).toBe(
      `llava-vision: --out ${weights} is a safetensors file llava-vision did not write (no producer recorded: weights?); refusing to overwrite it (check the argument order, or add --force)\n`,
    );
    expect(Buffer.compare(fs.readFileSync(weights), before)).toBe(0);
    const other = path.join(tempDir(), 'other-producer.safetensors');
    writeSafetensors(
      other,
      { x: { dtype: 'F32', shape: [1], data: new Float32Array(1) } },
      { producer: 'my trainer 1.0' },
    );
    expect((await runCli([...args, '--out', other])).err).toMatch(
      /llava-vision did not write \(producer "my trainer 1\.0": weights\?\)/,
    );
    expect((await runCli([...args, '--force', '--out', weights])).code).toBe(0);
    // Now ours: replaced without --force.
    expect((await runCli([...args, IMAGE, '--out', weights])).code).toBe(0);
    expect(SafetensorsFile.open(weights).keys()).toEqual(['images.0.merged', 'images.1.merged']);
  });
});
