/**
 * Dataset-scale encoding (issue 11), API level on the demo model: shards + manifest + dataset.json,
 * bad inputs as failures, bit-identity with encoding each image alone, resume and repair, dtypes,
 * parts read back as one dataset, the reader's access and shuffled batches.
 */
jest.mock('worker_threads', () =>
  jest
    .requireActual<typeof import('./helpers/worker_threads_spy')>('./helpers/worker_threads_spy')
    .spiedWorkerThreads(),
);
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '../src/tf';
import { encodeImages } from '../src/api/encode_job';
import { LlavaVision } from '../src/api/llava_vision';
import { openEncodedDataset } from '../src/dataset/reader';
import { checkDatasetDir, writeEncodedDataset } from '../src/dataset/writer';
import { f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '../src/io/dtype';
import { SafetensorsFile } from '../src/io/safetensors';
import { DatasetInfo, ManifestEntry } from '../src/dataset/format';
import { readJson } from './helpers/json';
import { folderHashes, makeImages, shardTensors } from './helpers/dataset';
import { isolatedTempDir } from './helpers/isolation';
import { hostTag } from '../src/io/host';
import { threadMark, encodeThreadsSince } from './helpers/worker_threads_spy';

const DEMO = path.join(__dirname, '..', 'weights', 'demo');
const tempDir = isolatedTempDir('llava-dataset-');
const OUTPUTS = ['merged', 'features'] as const;

let model: LlavaVision;
let good: string[];
let inputs: string[];
/** The reference dataset: all inputs, shard size 3, F32. */
let refDir: string;

beforeAll(async () => {
  model = await LlavaVision.load(DEMO, { log: null });
  good = await makeImages(path.join(tempDir(), 'images'), 7);
  const bad = path.join(tempDir(), 'bad');
  fs.mkdirSync(path.join(bad, 'a-folder'), { recursive: true });
  fs.writeFileSync(path.join(bad, 'empty.png'), '');
  fs.writeFileSync(path.join(bad, 'broken.png'), Buffer.from('\x89PNG\r\n\x1a\nnot really a png'));
  // index:  0        1 (missing)                    2        3 (folder)                   4        5 (empty)                     6        7 (undecodable)               8        9        10
  inputs = [
    good[0],
    path.join(bad, 'missing.png'),
    good[1],
    path.join(bad, 'a-folder'),
    good[2],
    path.join(bad, 'empty.png'),
    good[3],
    path.join(bad, 'broken.png'),
    good[4],
    good[5],
    good[6],
  ];
  refDir = path.join(tempDir(), 'ref');
  await writeEncodedDataset(model, inputs, refDir, { outputs: [...OUTPUTS], shardSize: 3 });
}, 120_000);
afterAll(() => model.dispose());

const lines = (dir: string) =>
  fs
    .readFileSync(path.join(dir, 'manifest.jsonl'), 'utf8')
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as ManifestEntry);
const copy = (from: string, name: string) => {
  const to = path.join(tempDir(), name);
  fs.cpSync(from, to, { recursive: true });
  return to;
};

describe('writing', () => {
  test('shards of N images, a manifest line per image, dataset.json; bad inputs are recorded failures', () => {
    expect(Object.keys(folderHashes(refDir))).toEqual([
      'dataset.json',
      'manifest.jsonl',
      'shard-00000.safetensors',
      'shard-00001.safetensors',
      'shard-00002.safetensors',
      'shard-00003.safetensors',
    ]);
    const manifest = lines(refDir);
    expect(manifest.map((e) => e.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(manifest.map((e) => e.shard)).toEqual(
      [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3].map((n) => `shard-0000${n}.safetensors`),
    );
    expect(manifest.map((e) => e.source)).toEqual(inputs);
    const errors = Object.fromEntries(manifest.filter((e) => e.error).map((e) => [e.index, e.error]));
    expect(Object.keys(errors).map(Number)).toEqual([1, 3, 5, 7]);
    expect(errors[1]).toMatch(/missing\.png: no such file/);
    expect(errors[3]).toMatch(/a-folder: is a directory/);
    expect(errors[5]).toMatch(/empty\.png: empty file/);
    expect(errors[7]).toMatch(/cannot decode image .*broken\.png/);
    expect(manifest[0]).toMatchObject({
      image_size: [24, 20],
      tensors: { merged: [576, 128], features: [1, 576, 64] },
    });

    const tensors = shardTensors(refDir);
    expect([...tensors.keys()].sort()).toEqual(
      [0, 2, 4, 6, 8, 9, 10].flatMap((i) => [`images.${i}.features`, `images.${i}.merged`]).sort(),
    );
    for (const e of manifest.filter((x) => !x.error))
      expect(tensors.get(`images.${e.index}.merged`)!.shard).toBe(e.shard);

    // A shard describes itself: its __metadata__ carries its manifest lines.
    const st = SafetensorsFile.open(path.join(refDir, 'shard-00001.safetensors'));
    expect(JSON.parse(st.metadata.entries)).toEqual(manifest.slice(3, 6));
    expect(st.metadata.format).toBe('llava-vision-dataset shard');
    st.close();
    const info = readJson<DatasetInfo>(path.join(refDir, 'dataset.json'));
    expect(info).toMatchObject({
      format: 'llava-vision-dataset',
      part: null,
      inputs: { count: 11 },
      shard_size: 3,
      options: { save: ['merged', 'features'], dtype: 'F32', aspect: 'pad' },
    });
    expect(info.producer).toMatch(/^llava-vision-tfjs \d+\.\d+\.\d+/);
  });

  test('every stored tensor is bit-identical to encoding that image alone', async () => {
    const tensors = shardTensors(refDir);
    for (const [i, file] of inputs.entries()) {
      if (!good.includes(file)) continue;
      const alone = await encodeImages(model, [file], { outputs: [...OUTPUTS] });
      for (const name of OUTPUTS) {
        const t = alone.tensors[`images.0.${name}`];
        const stored = tensors.get(`images.${i}.${name}`)!;
        expect(stored.shape).toEqual(t.shape);
        if (!stored.bytes.equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)))
          throw new Error(`images.${i}.${name} differs from image ${file} encoded alone`);
      }
    }
  });

  test('nothing leaks: no tensor left behind by a dataset encode', async () => {
    const before = tf.memory().numTensors;
    await writeEncodedDataset(model, good.slice(0, 2), path.join(tempDir(), 'leak'), {
      outputs: ['merged'],
      shardSize: 1,
    });
    expect(tf.memory().numTensors).toBe(before);
  });

  test('2 model instances (--workers 2): a second thread starts and encodes, and the files are byte-identical', async () => {
    const dir = path.join(tempDir(), 'workers');
    const mark = threadMark();
    await writeEncodedDataset(model, inputs, dir, { outputs: [...OUTPUTS], shardSize: 3, workers: 2 });
    const threads = encodeThreadsSince(mark);
    expect(threads).toHaveLength(1);
    expect(threads[0].done).toBeGreaterThan(0);
    expect(folderHashes(dir)).toEqual(folderHashes(refDir));
  }, 60_000);

  test('F16 / BF16: the float32 outputs rounded to nearest even; read back widened exactly', async () => {
    const ref = shardTensors(refDir);
    const f32 = (key: string) => {
      const b = ref.get(key)!.bytes;
      return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
    };
    for (const [dtype, toBits] of [
      ['F16', f32ToF16Bits],
      ['BF16', f32ToBf16Bits],
    ] as const) {
      const dir = path.join(tempDir(), `dtype-${dtype}`);
      await writeEncodedDataset(model, inputs.slice(0, 3), dir, { outputs: [...OUTPUTS], dtype, shardSize: 2 });
      const stored = shardTensors(dir);
      for (const key of ['images.0.merged', 'images.2.features']) {
        const t = stored.get(key)!;
        expect(t.dtype).toBe(dtype);
        const bits = new Uint16Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 2);
        expect(
          Buffer.from(bits.buffer, bits.byteOffset, bits.byteLength).equals(
            Buffer.from(Uint16Array.from(f32(key), toBits).buffer),
          ),
        ).toBe(true);
      }
      const ds = openEncodedDataset(dir);
      const merged = ds.read(0).tensors.merged;
      expect(merged.dtype).toBe(dtype);
      const bits = Uint16Array.from(f32('images.0.merged'), toBits);
      const widened =
        dtype === 'F16'
          ? Float32Array.from(bits, f16BitsToF32)
          : new Float32Array(Uint32Array.from(bits, (b) => b << 16).buffer);
      expect(Buffer.from(merged.data.buffer).equals(Buffer.from(widened.buffer))).toBe(true);
      ds.close();
    }
  });
});

describe('resuming', () => {
  test('a complete folder: nothing to do, nothing rewritten', async () => {
    const dir = copy(refDir, 'resume-complete');
    const before = folderHashes(dir);
    const summary = await writeEncodedDataset(model, inputs, dir, { outputs: [...OUTPUTS], shardSize: 3 });
    expect(summary).toMatchObject({ images: 11, skipped: 11, encoded: 0, shards: 0, failedTotal: 4 });
    expect(summary.failures).toEqual([]);
    expect(folderHashes(dir)).toEqual(before);
  });

  test("kill during a manifest append: the torn last line is dropped, the lost shard redone; dead writers' temp files removed, nothing else", async () => {
    const dir = copy(refDir, 'resume-torn');
    // The shard in progress is lost (shard 3: only its temp file is left) and the append before it was cut mid-line.
    fs.rmSync(path.join(dir, 'shard-00003.safetensors'));
    const kept = lines(dir)
      .filter((e) => e.shard !== 'shard-00003.safetensors')
      .map((e) => JSON.stringify(e) + '\n')
      .join('');
    fs.writeFileSync(path.join(dir, 'manifest.jsonl'), kept + '{"index":9,"source":"/x');
    const deadPid = 2 ** 22 + 12345; // above Linux's largest pid_max: no such process
    const temp = (pid: number, host = hostTag(), target = 'shard-00003.safetensors') =>
      `${target}.llava-vision-tmp-${host}-${pid}-00aa11bb22cc`;
    fs.writeFileSync(path.join(dir, temp(deadPid)), 'partial');
    fs.writeFileSync(path.join(dir, temp(deadPid, hostTag(), 'manifest.jsonl')), 'partial');
    // Kept: a live writer's file (another process on this host), a fresh one from another host (its pid
    // means nothing here), and files that merely look like temp files.
    const keep = [
      temp(process.ppid),
      temp(deadPid, '0badc0de'),
      'notes.tmp-2024-12',
      `shard-00003.safetensors.tmp-${deadPid}-00aa11`,
      temp(deadPid, hostTag(), 'notes.txt'),
    ];
    for (const name of keep) fs.writeFileSync(path.join(dir, name), 'not to be deleted');
    const oldOther = temp(deadPid, 'feedf00d');
    fs.writeFileSync(path.join(dir, oldOther), 'abandoned on another host');
    const longAgo = new Date(Date.now() - 3_600_000);
    fs.utimesSync(path.join(dir, oldOther), longAgo, longAgo);

    const progress: number[] = [];
    const summary = await writeEncodedDataset(model, inputs, dir, {
      outputs: [...OUTPUTS],
      shardSize: 3,
      onProgress: (p) => progress.push(p.done),
    });
    expect(summary).toMatchObject({ skipped: 9, encoded: 2, shards: 1, failedTotal: 4 });
    expect(progress).toEqual([1, 2]);
    for (const name of keep) expect(fs.readFileSync(path.join(dir, name), 'utf8')).toBe('not to be deleted');
    for (const name of keep) fs.rmSync(path.join(dir, name));
    expect(folderHashes(dir)).toEqual(folderHashes(refDir));
  });

  test("kill between a shard's rename and its manifest append: the lines are rebuilt from the shard, nothing redone", async () => {
    const dir = copy(refDir, 'resume-unlisted');
    for (const cut of ['shard-00003.safetensors', 'shard-00002.safetensors']) {
      // Shards 2 and 3 in place, the manifest listing neither (and, second time, only part of shard 2's lines).
      const kept = lines(dir)
        .filter((e) => e.shard < cut)
        .map((e) => JSON.stringify(e) + '\n');
      fs.writeFileSync(
        path.join(dir, 'manifest.jsonl'),
        kept.slice(0, cut.endsWith('3.safetensors') ? kept.length : kept.length - 2).join(''),
      );
      const summary = await writeEncodedDataset(model, inputs, dir, { outputs: [...OUTPUTS], shardSize: 3 });
      expect(summary).toMatchObject({ skipped: 11, encoded: 0, shards: 0 });
      expect(folderHashes(dir)).toEqual(folderHashes(refDir));
    }
  });

  test('a deleted shard: its images are encoded again, into a new shard', async () => {
    const dir = copy(refDir, 'resume-deleted');
    fs.rmSync(path.join(dir, 'shard-00001.safetensors'));
    const summary = await writeEncodedDataset(model, inputs, dir, { outputs: [...OUTPUTS], shardSize: 3 });
    expect(summary).toMatchObject({ skipped: 8, encoded: 1, shards: 1, failedTotal: 4 });
    expect(
      lines(dir)
        .slice(-3)
        .map((e) => [e.index, e.shard]),
    ).toEqual([
      [3, 'shard-00004.safetensors'],
      [4, 'shard-00004.safetensors'],
      [5, 'shard-00004.safetensors'],
    ]);
    const [a, b] = [shardTensors(dir), shardTensors(refDir)];
    expect(a.get('images.4.merged')!.shard).toBe('shard-00004.safetensors');
    for (const [key, t] of b) expect(a.get(key)!.bytes.equals(t.bytes)).toBe(true);
  });

  test('other options, another model or changed inputs: a clear error, the folder untouched', async () => {
    const dir = copy(refDir, 'resume-mismatch');
    const before = folderHashes(dir);
    await expect(writeEncodedDataset(model, inputs, dir, { outputs: [...OUTPUTS], dtype: 'F16' })).rejects.toThrow(
      /never mixed: options\.dtype: "F32" \(dataset\) vs "F16" \(this run\)/,
    );
    await expect(writeEncodedDataset(model, inputs, dir, { outputs: ['merged'] })).rejects.toThrow(
      /options\.save: \["merged","features"\] \(dataset\) vs \["merged"\] \(this run\)/,
    );
    await expect(writeEncodedDataset(model, inputs, dir, { outputs: [...OUTPUTS], aspect: 'square' })).rejects.toThrow(
      /options\.aspect: "pad" \(dataset\) vs "square"/,
    );
    const clip = await LlavaVision.load(path.join(DEMO, 'clip_tower'), { log: null });
    try {
      await expect(writeEncodedDataset(clip, inputs, dir, { outputs: ['features'] })).rejects.toThrow(
        /model: another model by content \(sha256:[0-9a-f]{12}… made from .*weights\/demo \(dataset\) vs sha256:[0-9a-f]{12}… from .*clip_tower \(this run\)\)/,
      );
    } finally {
      clip.dispose();
    }
    const swapped = [inputs[2], ...inputs.slice(1, 2), inputs[0], ...inputs.slice(3)];
    await expect(writeEncodedDataset(model, swapped, dir, { outputs: [...OUTPUTS], shardSize: 3 })).rejects.toThrow(
      /image 0 was .*img-000\.png when this dataset was written, and is .*img-001\.png now: the inputs changed/,
    );
    expect(folderHashes(dir)).toEqual(before);
  });

  test('more inputs than last time: only the new ones are encoded', async () => {
    const dir = path.join(tempDir(), 'grow');
    await writeEncodedDataset(model, good.slice(0, 3), dir, { outputs: ['merged'], shardSize: 2 });
    const summary = await writeEncodedDataset(model, good.slice(0, 5), dir, { outputs: ['merged'], shardSize: 2 });
    expect(summary).toMatchObject({ skipped: 3, encoded: 2, shards: 1 });
    const ds = openEncodedDataset(dir);
    expect([ds.length, ds.encodedCount]).toEqual([5, 5]);
    ds.close();
  });
});

describe('parts', () => {
  test('part-K-of-N folders hold the indices ≡ K (mod N) and read back as the unsplit dataset', async () => {
    const dir = path.join(tempDir(), 'parts');
    for (const index of [0, 2]) {
      const summary = await writeEncodedDataset(model, inputs, dir, {
        outputs: [...OUTPUTS],
        shardSize: 2,
        part: { index, count: 3 },
      });
      expect(summary.dir).toBe(path.join(dir, `part-${index}-of-3`));
      expect(summary.images).toBe(index === 0 ? 4 : 3);
    }
    let ds = openEncodedDataset(dir);
    expect(ds.length).toBe(11);
    expect(ds.missing).toEqual([1, 4, 7, 10]); // part 1 has not run
    expect(ds.failures.map((f) => f.index)).toEqual([3, 5]);
    expect(() => ds.read(4)).toThrow(/image 4 is not in .* its part has not run/);
    ds.close();
    expect(lines(path.join(dir, 'part-0-of-3')).map((e) => e.index)).toEqual([0, 3, 6, 9]);

    await writeEncodedDataset(model, inputs, dir, {
      outputs: [...OUTPUTS],
      shardSize: 2,
      part: { index: 1, count: 3 },
    });
    ds = openEncodedDataset(dir);
    const ref = openEncodedDataset(refDir);
    expect(ds.missing).toEqual([]);
    expect(ds.failures).toEqual(ref.failures);
    for (let i = 0; i < 11; i++) {
      expect(ds.has(i)).toBe(ref.has(i));
      if (!ref.has(i)) continue;
      const [a, b] = [ds.read(i), ref.read(i)];
      expect(a.source).toBe(b.source);
      for (const name of OUTPUTS)
        expect(Buffer.from(a.tensors[name].data.buffer).equals(Buffer.from(b.tensors[name].data.buffer))).toBe(true);
    }
    ds.close();
    ref.close();
  });

  test('a folder that cannot take this run is refused before anything is written', () => {
    const parts = path.join(tempDir(), 'parts');
    const file = path.join(tempDir(), 'a-file');
    fs.writeFileSync(file, 'x');
    const foreign = path.join(tempDir(), 'foreign');
    fs.mkdirSync(foreign);
    fs.writeFileSync(path.join(foreign, 'notes.txt'), 'mine');
    expect(() => checkDatasetDir(parts)).toThrow(
      /split into 3 parts \(part-0-of-3, part-1-of-3, part-2-of-3\): add to one with --part K\/3/,
    );
    expect(() => checkDatasetDir(parts, { index: 0, count: 2 })).toThrow(
      /split into 3 parts .* this run is part 0 of 2/,
    );
    expect(() => checkDatasetDir(refDir, { index: 0, count: 2 })).toThrow(/not split into parts/);
    expect(() => checkDatasetDir(file)).toThrow(/a-file is a file, not a folder/);
    expect(() => checkDatasetDir(path.join(file, 'sub'))).toThrow(/a part of its path is a file/);
    expect(() => checkDatasetDir(foreign)).toThrow(/foreign is not empty and holds no dataset\.json \(notes\.txt\)/);
    expect(() => checkDatasetDir(foreign, { index: 3, count: 3 })).toThrow(
      /part 3 of 3 is out of range: K must be 0\.\.2/,
    );
    expect(checkDatasetDir(path.join(tempDir(), 'new'), { index: 1, count: 2 })).toBe(
      path.join(tempDir(), 'new', 'part-1-of-2'),
    );
  });
});

describe('reading', () => {
  test('index access, iteration in index order, failures; only the needed shard is read', async () => {
    const ds = openEncodedDataset(refDir);
    expect([ds.length, ds.encodedCount]).toEqual([11, 7]);
    expect(ds.failures.map((f) => [f.index, f.source])).toEqual([1, 3, 5, 7].map((i) => [i, inputs[i]]));
    expect(ds.info.options.dtype).toBe('F32');
    const seen: number[] = [];
    for await (const img of ds) {
      seen.push(img.index);
      expect(img.source).toBe(inputs[img.index]);
      expect(Object.keys(img.tensors).sort()).toEqual(['features', 'merged']);
    }
    expect(seen).toEqual([0, 2, 4, 6, 8, 9, 10]);
    expect(ds.read(2, ['merged']).imageSize).toEqual([31, 25]);
    expect(() => ds.read(3)).toThrow(/image 3 .*a-folder\) failed to encode: .*is a directory/);
    expect(() => ds.read(11)).toThrow(/out of range/);
    expect(() => ds.read(0, ['pooler_output'])).toThrow(/no tensor "pooler_output" \(it has features, merged\)/);
    ds.close();

    const damaged = copy(refDir, 'read-damaged');
    fs.rmSync(path.join(damaged, 'shard-00001.safetensors'));
    const partial = openEncodedDataset(damaged);
    expect(partial.read(0).tensors.merged.shape).toEqual([576, 128]); // shard 0 alone
    expect(partial.read(10).tensors.merged.shape).toEqual([576, 128]);
    expect(() => partial.read(4)).toThrow(/shard-00001\.safetensors: cannot open/);
    partial.close();
  });

  test('batches: seeded shuffle, each image once per epoch, a window of shards at a time; unshuffled in index order', async () => {
    const ds = openEncodedDataset(refDir);
    const before = tf.memory().numTensors;
    const epoch = async (options: Partial<Parameters<typeof ds.batches>[0]>) => {
      const out: number[][] = [];
      for await (const b of ds.batches({ name: 'features', batchSize: 2, ...options })) {
        expect(b.tensor.shape).toEqual([b.indices.length, 576, 64]);
        out.push(b.indices);
        b.tensor.dispose();
      }
      return out;
    };
    const a = await epoch({ seed: 1 });
    expect(a.map((b) => b.length)).toEqual([2, 2, 2, 1]);
    expect(a.flat().sort((x, y) => x - y)).toEqual([0, 2, 4, 6, 8, 9, 10]);
    expect(await epoch({ seed: 1 })).toEqual(a);
    expect((await epoch({ seed: 2 })).flat()).not.toEqual(a.flat());
    expect(await epoch({ shuffle: false })).toEqual([[0, 2], [4, 6], [8, 9], [10]]);
    expect((await epoch({ shuffle: false, dropLast: true })).length).toBe(3);
    // One shard in memory: the images of each shard come out together.
    const shardOf = (i: number) => Math.floor(i / 3);
    for (const seed of [1, 2, 3]) {
      const order = (await epoch({ seed, batchSize: 1, shardsInMemory: 1 })).flat().map(shardOf);
      const runs = order.filter((s, k) => k === 0 || s !== order[k - 1]);
      expect(new Set(runs).size).toBe(runs.length);
    }
    // The batch rows are the images' tensors.
    for await (const b of ds.batches({ name: 'merged', batchSize: 3, seed: 5 })) {
      const rows = b.indices.map((i) => ds.read(i, ['merged']).tensors.merged.data);
      const data = b.tensor.dataSync();
      rows.forEach((r, k) =>
        expect(
          Buffer.from(data.buffer, data.byteOffset + k * r.byteLength, r.byteLength).equals(Buffer.from(r.buffer)),
        ).toBe(true),
      );
      b.tensor.dispose();
      break; // leaving an epoch early is fine
    }
    expect(tf.memory().numTensors).toBe(before);
    ds.close();
  });
});
