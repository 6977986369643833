/**
 * The projector-training example runs end to end on the tiny fixture, its loss falls, its file loads;
 * it uses the package as an app does, trains on the images it can read, and leaves no temp folder.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '../src/tf';
import { main } from '../examples/train_projector';
import { SafetensorsFile } from '../src/io/safetensors';
import { openEncodedDataset } from '../src/api/dataset_reader';

const ROOT = path.join(__dirname, '..');
const IMAGES = path.join(__dirname, 'fixtures', 'images');

test('examples/train_projector: encodes once into a dataset folder, trains on streamed batches, loss decreases, saves LLaVA names', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'train-example-'));
  const lines: string[] = [];
  try {
    const before = tf.memory().numTensors;
    const result = await main(
      ['--cache', path.join(dir, 'cache'), '--out', path.join(dir, 'mm_projector.safetensors'), '--steps', '60'],
      (l) => lines.push(l),
    );
    const out = lines.join('\n');
    expect(out).toMatch(/TOY EXAMPLE/);
    expect(out).toMatch(/NOT LLaVA's pretraining objective/);
    expect(result.images.length).toBeGreaterThanOrEqual(5);
    expect(result.skipped).toEqual([]);
    expect(result.finalLoss).toBeLessThan(0.5 * result.firstLoss);
    // Decreasing at every printed point.
    result.losses.slice(1).forEach(([, loss], i) => expect(loss).toBeLessThan(result.losses[i][1]));

    const cache = openEncodedDataset(result.cacheDir);
    expect(cache.encodedCount).toBe(result.images.length);
    expect(cache.read(0).tensors.features.shape).toEqual([1, 16, 64]);
    expect(fs.readdirSync(result.cacheDir).filter((f) => f.startsWith('shard-')).length).toBe(
      Math.ceil(result.images.length / 4),
    );
    cache.close();

    const st = SafetensorsFile.open(result.projectorFile);
    expect(st.keys()).toEqual([
      'model.mm_projector.0.bias',
      'model.mm_projector.0.weight',
      'model.mm_projector.2.bias',
      'model.mm_projector.2.weight',
    ]);
    expect(st.info('model.mm_projector.0.weight').shape).toEqual([32, 64]);
    st.close();
    expect(tf.memory().numTensors).toBe(before);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('an unreadable image is skipped and recorded, the others trained on; nothing is left in the temp folder', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'train-example-tmp-'));
  const images = path.join(tmp, 'images');
  fs.mkdirSync(images);
  const good = fs
    .readdirSync(IMAGES)
    .filter((f) => /\.png$/.test(f))
    .sort()
    .slice(0, 5);
  for (const f of good) fs.copyFileSync(path.join(IMAGES, f), path.join(images, f));
  fs.writeFileSync(path.join(images, 'aaa-broken.png'), 'not a png'); // sorts first
  fs.writeFileSync(path.join(images, 'truncated.jpg'), fs.readFileSync(path.join(IMAGES, good[0])).subarray(0, 40));
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = path.join(tmp, 'os-tmp'); // where the example's own temp folder goes (os.tmpdir())
  fs.mkdirSync(process.env.TMPDIR);
  const lines: string[] = [];
  try {
    const result = await main(['--images', images, '--steps', '20'], (l) => lines.push(l));
    expect(result.images).toHaveLength(good.length + 2);
    expect(result.skipped.map((s) => path.basename(s.source))).toEqual(['aaa-broken.png', 'truncated.jpg']);
    expect(result.skipped[0].error).toMatch(/aaa-broken\.png/);
    expect(lines.join('\n')).toMatch(/skipped .*aaa-broken\.png: /);
    expect(lines.join('\n')).toMatch(new RegExp(`on ${good.length} images`));
    expect(result.finalLoss).toBeLessThan(result.firstLoss);
    // Its cache and projector were in a temp folder under os.tmpdir(): gone.
    expect(fs.readdirSync(process.env.TMPDIR)).toEqual([]);
    expect(fs.existsSync(result.cacheDir)).toBe(false);
    // ... also when the run fails.
    const empty = path.join(tmp, 'no-good-images');
    fs.mkdirSync(empty);
    fs.writeFileSync(path.join(empty, 'x.png'), 'nope');
    await expect(main(['--images', empty, '--steps', '2', '--quiet'])).rejects.toThrow(
      /none of the 1 images .* could be encoded/,
    );
    expect(fs.readdirSync(process.env.TMPDIR)).toEqual([]);
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('the example imports the package by its name, as an app does, not its sources', () => {
  const source = fs.readFileSync(path.join(ROOT, 'examples', 'train_projector.ts'), 'utf8');
  const imports = [...source.matchAll(/^import [^;]*? from '([^']+)';$/gm)].map((m) => m[1]); // multi-line ones too
  expect(imports.filter((m) => !['fs', 'os', 'path', 'util'].includes(m))).toEqual(['llava-vision-tfjs']);
});
