/**
 * Datasets at the scale of LLaVA's 558k pretraining images (issue 20), scaled to what `npm test` can
 * afford: 200k images is past where spreading an array into a call overflowed the stack (~125k);
 * `npm run bench:dataset-scale` measures 600k (docs/datasets.md). Synthetic shards
 * (tools/synthetic_dataset.ts) stand for encoded ones; missing files stand for images where only the
 * bookkeeping is under test. And the input edge cases: lines too long to be paths, names that are
 * not UTF-8, part numbers that are not whole numbers.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { LlavaVision } from '../src/api/llava_vision';
import { openEncodedDataset } from '../src/dataset/reader';
import { identityOf } from '../src/dataset/format';
import { DatasetWriteSummary, writeEncodedDataset } from '../src/dataset/writer';
import { expandInputs, parseInputList } from '../src/dataset/inputs';
import { writeSyntheticDataset } from '../tools/synthetic_dataset';
import { makeImages } from './helpers/dataset';
import { isolatedTempDir } from './helpers/isolation';
import { runCli } from './helpers/cli';

const ROOT = path.join(__dirname, '..');
const BIN = path.join(ROOT, 'bin', 'llava-vision.js');
const DEMO = path.join(ROOT, 'weights', 'demo');
const tempDir = isolatedTempDir('llava-dataset-scale-');
const N = 200_000;
const source = (i: number) => `/data/images/img-${String(i).padStart(7, '0')}.jpg`;

let model: LlavaVision;
beforeAll(async () => {
  model = await LlavaVision.load(DEMO, { log: null });
}, 60_000);
afterAll(() => model.dispose());

describe('scale', () => {
  test(`a ${N}-image dataset opens, iterates in index order and batches (no call-stack overflow, no per-index allocation)`, async () => {
    const dir = path.join(tempDir(), 'big');
    writeSyntheticDataset(dir, { images: N, shardSize: 1000, failEvery: 997 });
    const ds = openEncodedDataset(dir);
    const failed = Math.floor(N / 997);
    expect([ds.length, ds.encodedCount, ds.failures.length, ds.missing.length]).toEqual([N, N - failed, failed, 0]);
    expect(ds.read(N - 1).tensors.features.data).toEqual(Float32Array.from([N - 1, N, N + 1, N + 2]));
    let count = 0;
    let last = -1;
    let wrong = 0;
    for await (const image of ds) {
      if (image.index <= last || image.tensors.features.data[0] !== image.index) wrong++;
      last = image.index;
      count++;
    }
    expect([count, wrong]).toEqual([N - failed, 0]);
    let batched = 0;
    for await (const b of ds.batches({ name: 'features', batchSize: 4096, seed: 3 })) {
      batched += b.indices.length;
      b.tensor.dispose();
    }
    expect(batched).toBe(N - failed);
    ds.close();
  }, 180_000);

  test(`a ${N}-line input list is read and expanded, and resumed into a ${N}-image dataset: only the new inputs are done`, async () => {
    const list = Array.from({ length: N }, (_, i) => source(i));
    const extra = [path.join(tempDir(), 'missing-a.png'), path.join(tempDir(), 'missing-b.png')];
    const parsed = parseInputList(Buffer.from([...list, ...extra].join('\n') + '\n'));
    expect(parsed.length).toBe(N + 2);
    const inputs = expandInputs([], parsed);
    expect(inputs.slice(-2)).toEqual(extra);

    // The same dataset as `encode` with the demo model would have made it (its identity), with tiny shards.
    const { datasetInfoFor } = await import('../src/dataset/writer');
    const info = await datasetInfoFor(model, N, { outputs: ['features'], shardSize: 1000 });
    const dir = path.join(tempDir(), 'resume-big');
    writeSyntheticDataset(dir, { images: N, shardSize: 1000, identity: identityOf(info) });
    const summary = await writeEncodedDataset(model, inputs, dir, { outputs: ['features'], shardSize: 1000 });
    expect(summary).toMatchObject({ images: N + 2, skipped: N, encoded: 0, failedTotal: 2, shards: 1 });
    const ds = openEncodedDataset(dir);
    expect([ds.length, ds.encodedCount, ds.failures.map((f) => f.index)]).toEqual([N + 2, N, [N, N + 1]]);
    ds.close();
  }, 180_000);

  test("the writer's cost per image does not grow with the shard size (no rescan of the shard per image)", async () => {
    const missing = Array.from({ length: 30_000 }, (_, i) => path.join(tempDir(), 'nowhere', `${i}.png`));
    const time = async (shardSize: number) => {
      const t0 = performance.now();
      const summary = await writeEncodedDataset(model, missing, path.join(tempDir(), `cost-${shardSize}`), {
        outputs: ['features'],
        shardSize,
      });
      expect(summary.failedTotal).toBe(missing.length);
      return performance.now() - t0;
    };
    const small = await time(1000);
    const big = await time(30_000);
    // 5600a37 checked every image of the shard after each image: 4.5e8 checks at 30,000 (~7x slower than at 1000 here).
    expect(big).toBeLessThan(2 * small + 2000);
  }, 180_000);

  test('thousands of missing inputs: the first 20 named on stderr, the rest counted; the summary keeps the first 1000, the manifest all', async () => {
    const missing = Array.from({ length: 5000 }, (_, i) => path.join(tempDir(), 'absent', `${i}.png`));
    const list = path.join(tempDir(), 'missing.txt');
    fs.writeFileSync(list, missing.join('\n'));
    const dir = path.join(tempDir(), 'many-missing');
    const r = await runCli(['encode', '--inputs', list, '--out-dir', dir, '--quiet', '--shard-size', '1000']);
    expect(r.code).toBe(1);
    const lines = r.err.trim().split('\n');
    expect(lines.length).toBeLessThanOrEqual(22);
    expect(lines.filter((l) => /^llava-vision: image \d+: .*: no such file$/.test(l))).toHaveLength(20);
    expect(lines[lines.length - 1]).toMatch(
      /5000 of 5000 image\(s\) failed, recorded in .*manifest\.jsonl; the first 20 of this run are named above; the others were written/,
    );
    const ds = openEncodedDataset(dir);
    expect(ds.failures.length).toBe(5000);
    ds.close();
    const summary: DatasetWriteSummary = await writeEncodedDataset(
      model,
      missing,
      path.join(tempDir(), 'many-missing-api'),
      { outputs: ['features'], shardSize: 1000 },
    );
    expect([summary.failures.length, summary.failed, summary.failedTotal]).toEqual([1000, 5000, 5000]);
  }, 120_000);
});

describe('inputs', () => {
  test('a line too long to be a path: refused before any model is loaded, naming the line; through the API too', async () => {
    const [good] = await makeImages(path.join(tempDir(), 'img'), 1);
    const list = path.join(tempDir(), 'long.txt');
    fs.writeFileSync(list, `${good}\n/data/${'x'.repeat(60 << 20)}.png\n`);
    const dir = path.join(tempDir(), 'long-out');
    const r = spawnSync(
      process.execPath,
      [BIN, 'encode', '--model', '/nonexistent-model', '--inputs', list, '--out-dir', dir],
      { encoding: 'utf8' },
    );
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toMatch(
      /^llava-vision: --inputs .*long\.txt line 2: 62914570 bytes long, longer than any path \(4096\): not an image path$/,
    );
    expect(fs.existsSync(dir)).toBe(false);
    await expect(
      writeEncodedDataset(model, [good, `/data/${'y'.repeat(5000)}.png`], dir, { outputs: ['features'] }),
    ).rejects.toThrow(/input 1 is 5010 bytes long, longer than any path \(4096\)/);
  }, 60_000);

  test('names that are not UTF-8: a folder walk and a list refuse them, naming the entry, instead of making two files one path', async () => {
    const dir = path.join(tempDir(), 'latin1');
    const [png] = await makeImages(path.join(tempDir(), 'latin1-src'), 1);
    fs.mkdirSync(dir);
    // 'caf\xe9.png' and 'caf\xe8.png' (Latin-1) both decode to 'caf\ufffd.png'.
    for (const byte of [0xe9, 0xe8])
      fs.copyFileSync(png, Buffer.concat([Buffer.from(dir + '/caf'), Buffer.from([byte]), Buffer.from('.png')]));
    fs.copyFileSync(png, path.join(dir, 'plain.png'));
    fs.writeFileSync(
      Buffer.concat([Buffer.from(dir + '/notes-'), Buffer.from([0xff]), Buffer.from('.txt')]),
      'not an image: skipped like any other',
    );
    const r = await runCli([
      'encode',
      '--model',
      '/nonexistent-model',
      dir,
      '--out-dir',
      path.join(tempDir(), 'latin1-out'),
    ]);
    expect(r.code).toBe(1);
    expect(r.err.trim()).toMatch(
      /^llava-vision: .*latin1\/caf\\x(e9|e8)\.png: the name of this image is not valid UTF-8, so a dataset cannot record it; rename it/,
    );
    expect(fs.existsSync(path.join(tempDir(), 'latin1-out'))).toBe(false);
    expect(() =>
      parseInputList(
        Buffer.concat([Buffer.from('a.png\n/data/caf'), Buffer.from([0xe9]), Buffer.from('.png\n')]),
        '--inputs list.txt',
      ),
    ).toThrow(/^--inputs list\.txt line 2: "\/data\/caf\\xe9\.png" is not valid UTF-8, so a dataset cannot record it/);
  });

  test.each([
    ['0/1000000000000000000000', /--part must be K\/N, two whole numbers/],
    ['0/1e21', /--part must be K\/N, two whole numbers/],
    ['0x1/4', /--part must be K\/N, two whole numbers/],
    ['1.0/4', /--part must be K\/N, two whole numbers/],
    ['0/2000000', /--part 0\/2000000: N must be at most 1000000/],
  ])('--part %s: a usage error before anything is written', async (part, message) => {
    const dir = path.join(tempDir(), 'never');
    const r = await runCli(['encode', '--model', '/nonexistent-model', 'a.png', '--part', part, '--out-dir', dir]);
    expect(r.code).toBe(2);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toMatch(message);
    expect(fs.existsSync(dir)).toBe(false);
  });
});
