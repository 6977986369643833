/**
 * What a dataset folder must never do (issue 20): lose a file that is not its own, write outside
 * itself through a link, mix shards made with other settings or a hand-edited dataset.json, tell two
 * byte-identical models apart by their paths; and what a tampered folder must not do to the reader
 * (huge allocations, a hang on a FIFO, /dev/zero read forever, loose types). Cases that could hang or
 * eat memory on a broken reader run in a child process with a timeout and a memory limit.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { LlavaVision } from '../src/api/llava_vision';
import { openEncodedDataset } from '../src/dataset/reader';
import { writeEncodedDataset } from '../src/dataset/writer';
import { DatasetInfo } from '../src/dataset/format';
import { setGemmChoice } from '../src/model/kernels/gemm';
import { folderHashes, makeImages } from './helpers/dataset';
import { isolatedTempDir } from './helpers/isolation';
import { readJson } from './helpers/json';
import { runCli } from './helpers/cli';

const ROOT = path.join(__dirname, '..');
const DEMO = path.join(ROOT, 'weights', 'demo');
const tempDir = isolatedTempDir('llava-dataset-integrity-');

let model: LlavaVision;
let images: string[];
/** 6 images, shard size 2, F32, features. */
let refDir: string;
beforeAll(async () => {
  model = await LlavaVision.load(DEMO, { log: null });
  images = await makeImages(path.join(tempDir(), 'images'), 6);
  refDir = path.join(tempDir(), 'ref');
  await writeEncodedDataset(model, images, refDir, { outputs: ['features'], shardSize: 2 });
}, 60_000);
afterAll(() => model.dispose());

const copy = (from: string, name: string) => {
  const to = path.join(tempDir(), name);
  fs.cpSync(from, to, { recursive: true, verbatimSymlinks: true });
  return to;
};
const write = (dir: string, options: Parameters<typeof writeEncodedDataset>[3] = {}, m = model, inputs = images) =>
  writeEncodedDataset(m, inputs, dir, { outputs: ['features'], shardSize: 2, ...options });
const oneLine = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
  } catch (e) {
    const message = (e as Error).message;
    expect(message.split('\n')).toHaveLength(1);
    return message;
  }
  throw new Error('expected a refusal');
};

describe('nothing that is not ours is deleted', () => {
  test('a folder holding only look-alikes of temp files is not empty: refused, every file kept', async () => {
    const dir = path.join(tempDir(), 'look-alikes');
    fs.mkdirSync(dir);
    const names = [
      'notes.tmp-2024-12',
      'shard-00000.safetensors.tmp-99999999-abcdef',
      'draft.llava-vision-tmp-0badc0de-1-00aa11bb22cc',
    ];
    for (const n of names) fs.writeFileSync(path.join(dir, n), 'mine');
    expect(await oneLine(write(dir))).toMatch(
      /look-alikes is not empty and holds no dataset\.json \(.*notes\.tmp-2024-12.*\): give a new or empty folder/,
    );
    expect(fs.readdirSync(dir).sort()).toEqual([...names].sort());
  });
});

describe('nothing outside the folder is written: links are refused, never written through', () => {
  test('manifest.jsonl a link to a file outside: resume refused in one line, the target untouched', async () => {
    const dir = copy(refDir, 'link-manifest');
    const outside = path.join(tempDir(), 'outside-manifest.txt');
    fs.renameSync(path.join(dir, 'manifest.jsonl'), outside);
    fs.symlinkSync(outside, path.join(dir, 'manifest.jsonl'));
    const before = fs.readFileSync(outside);
    fs.rmSync(path.join(dir, 'shard-00002.safetensors')); // a resume that would append lines
    expect(await oneLine(write(dir))).toMatch(
      /manifest\.jsonl is a symbolic link: a dataset folder's files are its own, never written through a link/,
    );
    expect(fs.readFileSync(outside).equals(before)).toBe(true);
  });

  test('dataset.json or a shard a link: refused', async () => {
    const dir = copy(refDir, 'link-json');
    const outside = path.join(tempDir(), 'outside.json');
    fs.renameSync(path.join(dir, 'dataset.json'), outside);
    fs.symlinkSync(outside, path.join(dir, 'dataset.json'));
    expect(await oneLine(write(dir))).toMatch(/dataset\.json is a symbolic link/);
    const shardLink = copy(refDir, 'link-shard');
    const target = path.join(tempDir(), 'outside.safetensors');
    fs.renameSync(path.join(shardLink, 'shard-00001.safetensors'), target);
    fs.symlinkSync(target, path.join(shardLink, 'shard-00001.safetensors'));
    expect(await oneLine(write(shardLink))).toMatch(
      /shard-00001\.safetensors is a symbolic link: a dataset folder's shards must be its own files/,
    );
  });

  test('part-K-of-N a link to a folder outside: refused, nothing written there', async () => {
    const dir = path.join(tempDir(), 'link-part');
    const outside = path.join(tempDir(), 'outside-part');
    fs.mkdirSync(dir);
    fs.mkdirSync(outside);
    fs.symlinkSync(outside, path.join(dir, 'part-0-of-2'));
    expect(await oneLine(write(dir, { part: { index: 0, count: 2 } }))).toMatch(
      /part-0-of-2 is a symbolic link: a part is written in its own folder, never where a link points/,
    );
    expect(await oneLine(write(dir, { part: { index: 1, count: 2 } }))).toMatch(/part-0-of-2 is a symbolic link/);
    expect(fs.readdirSync(outside)).toEqual([]);
  });
});

describe('a dataset is never mixed', () => {
  let f16Dir: string;
  beforeAll(async () => {
    f16Dir = path.join(tempDir(), 'f16');
    await write(f16Dir, { dtype: 'F16' });
  });

  test('a shard copied in from a dataset made with other settings: refused by resume and by the reader, naming what differs', async () => {
    for (const [name, target] of [
      ['shard-replaced', 'shard-00001.safetensors'],
      ['shard-added', 'shard-00003.safetensors'],
    ] as const) {
      const dir = copy(refDir, name);
      fs.copyFileSync(path.join(f16Dir, 'shard-00001.safetensors'), path.join(dir, target));
      if (target === 'shard-00003.safetensors') fs.rmSync(path.join(dir, 'shard-00001.safetensors'));
      const before = folderHashes(dir);
      expect(await oneLine(write(dir))).toMatch(
        new RegExp(
          `${target.replace('.', '\\.')} was made with other settings than .*dataset\\.json: options\\.dtype: "F16" \\(shard\\) vs "F32" \\(dataset\\.json\\); a dataset is never mixed`,
        ),
      );
      expect(folderHashes(dir)).toEqual(before);
    }
    // The reader, on the shard it reads (a replaced shard keeps its manifest lines).
    const dir = path.join(tempDir(), 'shard-replaced');
    const ds = openEncodedDataset(dir);
    expect(ds.read(0).tensors.features.dtype).toBe('F32');
    expect(() => ds.read(2)).toThrow(
      /shard-00001\.safetensors was made with other settings than .*dataset\.json: options\.dtype: "F16" \(shard\) vs "F32" \(dataset\.json\)/,
    );
    ds.close();
  });

  test('a hand-edited dataset.json: refused by the reader at open and by resume, whether or not its digest was edited too', async () => {
    const edited = copy(refDir, 'edited-json');
    const file = path.join(edited, 'dataset.json');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('"dtype": "F32"', '"dtype": "F16"'));
    expect(() => openEncodedDataset(edited)).toThrow(
      /dataset\.json: its settings do not match its settings_digest: the file was edited by hand/,
    );
    expect(await oneLine(write(edited, { dtype: 'F16' }))).toMatch(/edited by hand/);

    // Edited with care (digest recomputed): every shard now disagrees with it.
    const careful = copy(refDir, 'edited-json-digest');
    const info = readJson<DatasetInfo>(path.join(careful, 'dataset.json'));
    info.options.dtype = 'F16';
    const { settingsDigest } = await import('../src/dataset/format');
    info.settings_digest = settingsDigest(info);
    fs.writeFileSync(path.join(careful, 'dataset.json'), JSON.stringify(info));
    expect(() => openEncodedDataset(careful)).toThrow(
      /shard-00000\.safetensors was made with other settings than .*dataset\.json: options\.dtype: "F32" \(shard\) vs "F16" \(dataset\.json\)/,
    );
    expect(await oneLine(write(careful, { dtype: 'F16' }))).toMatch(
      /shard-00000\.safetensors was made with other settings/,
    );
  });
});

describe('the model is known by its content, not its path', () => {
  let copyDir: string;
  let linkDir: string;
  beforeAll(() => {
    copyDir = copy(DEMO, 'model-copy');
    linkDir = path.join(tempDir(), 'model-link');
    fs.symlinkSync(DEMO, linkDir);
  });

  test('parts made from byte-identical copies of a model join; a resume through a symlinked model path goes on', async () => {
    const dir = path.join(tempDir(), 'parts-copies');
    const copied = await LlavaVision.load(copyDir, { log: null });
    const linked = await LlavaVision.load(linkDir, { log: null });
    try {
      await write(dir, { part: { index: 0, count: 2 } });
      await write(dir, { part: { index: 1, count: 2 } }, copied);
      const ds = openEncodedDataset(dir);
      expect([ds.length, ds.encodedCount]).toEqual([6, 6]);
      ds.close();
      const resumed = copy(refDir, 'resume-through-link');
      fs.rmSync(path.join(resumed, 'shard-00002.safetensors'));
      await expect(write(resumed, {}, linked)).resolves.toMatchObject({ skipped: 4, encoded: 2 });
    } finally {
      copied.dispose();
      linked.dispose();
    }
  });

  test('a model that differs in one weight is another model: refused by resume, its part refused by the reader', async () => {
    const tweaked = copy(DEMO, 'model-tweaked');
    const weights = path.join(tweaked, 'clip_tower', 'model.safetensors');
    const bytes = fs.readFileSync(weights);
    const header = 8 + Number(bytes.readBigUInt64LE(0));
    const at = header + Math.floor((bytes.length - header) / 2 / 4) * 4;
    bytes.writeFloatLE(bytes.readFloatLE(at) + 1e-3, at);
    fs.writeFileSync(weights, bytes);
    const other = await LlavaVision.load(tweaked, { log: null });
    try {
      const dir = copy(refDir, 'resume-tweaked');
      expect(await oneLine(write(dir, {}, other))).toMatch(
        /never mixed: model: another model by content \(sha256:[0-9a-f]{12}… made from .*weights\/demo \(dataset\) vs sha256:[0-9a-f]{12}… from .*model-tweaked \(this run\)\)/,
      );
      const parts = path.join(tempDir(), 'parts-tweaked');
      await write(parts, { part: { index: 0, count: 2 } });
      await write(parts, { part: { index: 1, count: 2 } }, other);
      expect(() => openEncodedDataset(parts)).toThrow(
        /part-1-of-2 was made with other settings than .*part-0-of-2: model\.digest: "sha256:[0-9a-f]+" \(first part\) vs "sha256:[0-9a-f]+" \(this part\)/,
      );
    } finally {
      other.dispose();
    }
  });
});

describe('the numerics that change the bits are part of the identity: threads, GEMM', () => {
  // Tensor-parallel sums at 1 and 2 threads round differently: the stored bytes differ (checked below).
  let one: LlavaVision;
  let two: LlavaVision;
  beforeAll(async () => {
    one = await LlavaVision.load(DEMO, { log: null, threads: 1 });
    two = await LlavaVision.load(DEMO, { log: null, threads: 2 });
  }, 60_000);
  afterAll(() => {
    one.dispose();
    two.dispose();
  });
  const THREADS_DIFFER =
    /numerics\.threads: 1 \((first part|dataset)\) vs 2 \((this part|this run)\) — run with --threads 1 \(threads: 1\) to match/;

  test('parts encoded at 1 and 2 threads are refused when joined, naming the thread counts and how to match', async () => {
    const dir = path.join(tempDir(), 'parts-threads');
    await write(dir, { part: { index: 0, count: 2 } }, one);
    await write(dir, { part: { index: 1, count: 2 } }, two);
    let message = '';
    try {
      openEncodedDataset(dir);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message.split('\n')).toHaveLength(1);
    expect(message).toMatch(/part-1-of-2 was made with other settings than .*part-0-of-2: /);
    expect(message).toMatch(THREADS_DIFFER);
    // Why: the same image's bytes differ between the two thread counts.
    const ref1 = path.join(tempDir(), 'threads-ref-1');
    const ref2 = path.join(tempDir(), 'threads-ref-2');
    await write(ref1, { shardSize: 6 }, one, images.slice(0, 1));
    await write(ref2, { shardSize: 6 }, two, images.slice(0, 1));
    const [a, b] = [openEncodedDataset(ref1), openEncodedDataset(ref2)];
    expect(
      Buffer.from(a.read(0).tensors.features.data.buffer).equals(Buffer.from(b.read(0).tensors.features.data.buffer)),
    ).toBe(false);
    a.close();
    b.close();
  });

  test('a resume at another thread count is refused, nothing written; at the same count it goes on, and parts join', async () => {
    const dir = path.join(tempDir(), 'resume-threads');
    await write(dir, {}, one);
    fs.rmSync(path.join(dir, 'shard-00002.safetensors'));
    const before = folderHashes(dir);
    const message = await oneLine(write(dir, {}, two));
    expect(message).toMatch(/holds a dataset made with other settings, and datasets are never mixed: /);
    expect(message).toMatch(THREADS_DIFFER);
    expect(folderHashes(dir)).toEqual(before);
    await expect(write(dir, {}, one)).resolves.toMatchObject({ skipped: 4, encoded: 2 });

    const parts = path.join(tempDir(), 'parts-same-threads');
    await write(parts, { part: { index: 0, count: 2 } }, two);
    await write(parts, { part: { index: 1, count: 2 } }, two);
    const ds = openEncodedDataset(parts);
    expect([ds.length, ds.encodedCount, ds.info.numerics.threads]).toEqual([6, 6, 2]);
    ds.close();
  });

  test('the CLI: a resume with another --threads is one line saying which --threads matches', async () => {
    const dir = path.join(tempDir(), 'cli-threads');
    const args = ['encode', ...images.slice(0, 2), '--save', 'features', '--quiet', '--out-dir', dir];
    expect((await runCli([...args, '--threads', '1'])).code).toBe(0);
    const r = await runCli([...args, '--threads', '2']);
    expect(r.code).toBe(1);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toMatch(THREADS_DIFFER);
  });

  test('the GEMM too: parts made with XNNPACK and with our kernel are refused when joined, naming LLAVA_VISION_GEMM', async () => {
    setGemmChoice('xnnpack');
    const xnnpack = await LlavaVision.load(DEMO, { log: null, threads: 1 });
    setGemmChoice('auto');
    try {
      expect([xnnpack.gemm, one.gemm === 'xnnpack']).toEqual(['xnnpack', false]);
      const dir = path.join(tempDir(), 'parts-gemm');
      await write(dir, { part: { index: 0, count: 2 } }, one);
      await write(dir, { part: { index: 1, count: 2 } }, xnnpack);
      let message = '';
      try {
        openEncodedDataset(dir);
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message.split('\n')).toHaveLength(1);
      expect(message).toContain(
        `numerics.gemm: "${one.gemm}" (first part) vs "xnnpack" (this part) — run with LLAVA_VISION_GEMM=${one.gemm} to match`,
      );
    } finally {
      xnnpack.dispose();
    }
  });
});

describe('a tampered folder in the reader: a one-line error, fast, in bounded memory', () => {
  /** Opens `dir` in a child process (600 MB address-space headroom, 30 s): its message, or 'opened'. */
  function openInChild(dir: string): { out: string; status: number | null; ms: number } {
    const index = path.join(ROOT, 'dist', 'src', 'index.js');
    const script = `
      try { const ds = require(${JSON.stringify(index)}).openEncodedDataset(${JSON.stringify(dir)}); ds.read(0); console.log('opened', ds.length); }
      catch (e) { console.log(e.constructor.name + ': ' + e.message); }`;
    const t0 = Date.now();
    const r = spawnSync('bash', ['-c', `ulimit -v 4000000; exec "${process.execPath}" -e "$0"`, script], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    return { out: (r.stdout + r.stderr).trim(), status: r.status, ms: Date.now() - t0 };
  }

  test('an absurd index in one manifest line: refused, no huge allocation', () => {
    for (const index of [1e15, 2 ** 31 + 5, 123_456_789]) {
      const dir = copy(refDir, `absurd-${index}`);
      const file = path.join(dir, 'manifest.jsonl');
      const lines = fs.readFileSync(file, 'utf8').split('\n');
      lines[1] = lines[1].replace(/"index":1,/, `"index":${index},`);
      fs.writeFileSync(file, lines.join('\n'));
      const r = openInChild(dir);
      expect(r.out).toMatch(
        /^CheckpointError: .*manifest\.jsonl line 2: (not a manifest entry \(index \d+ is not an image index|image \d+ is beyond the dataset's 6 inputs)/,
      );
    }
  });

  test('a FIFO as manifest.jsonl (or as a shard): refused, no hang', () => {
    const dir = copy(refDir, 'fifo');
    fs.rmSync(path.join(dir, 'manifest.jsonl'));
    expect(spawnSync('mkfifo', [path.join(dir, 'manifest.jsonl')]).status).toBe(0);
    const r = openInChild(dir);
    expect(r.status).toBe(0);
    expect(r.out).toMatch(/^CheckpointError: .*manifest\.jsonl: the manifest is not a regular file \(a FIFO\)$/);

    const shard = copy(refDir, 'fifo-shard');
    fs.rmSync(path.join(shard, 'shard-00000.safetensors'));
    expect(spawnSync('mkfifo', [path.join(shard, 'shard-00000.safetensors')]).status).toBe(0);
    expect(openInChild(shard).out).toMatch(
      /^CheckpointError: .*shard-00000\.safetensors: not a regular file \(a FIFO\)$/,
    );
  });

  test('dataset.json a link to /dev/zero, or a huge file: refused by type and size, not read forever', () => {
    const dir = copy(refDir, 'dev-zero');
    fs.rmSync(path.join(dir, 'dataset.json'));
    fs.symlinkSync('/dev/zero', path.join(dir, 'dataset.json'));
    expect(openInChild(dir).out).toMatch(
      /^CheckpointError: .*dataset\.json: the dataset description is not a regular file \(a character device\)$/,
    );
    const big = copy(refDir, 'big-json');
    fs.appendFileSync(path.join(big, 'dataset.json'), Buffer.alloc(3 << 20, 0x20));
    expect(openInChild(big).out).toMatch(
      /^CheckpointError: .*dataset\.json: the dataset description is \d+ bytes, more than the 1048576 such a file can be$/,
    );
  });

  test('loose types are refused: image_size "99", a string index, a tensor shape of strings, a part folder whose dataset.json names another part', async () => {
    const cases: [string, (line: string) => string, RegExp][] = [
      [
        'size-string',
        (l) => l.replace(/"image_size":\[\d+,\d+\]/, '"image_size":"99"'),
        /image_size "99" is not \[width, height\]/,
      ],
      [
        'size-three',
        (l) => l.replace(/"image_size":\[(\d+),(\d+)\]/, '"image_size":[$1,$2,3]'),
        /is not \[width, height\]/,
      ],
      ['index-string', (l) => l.replace(/"index":1,/, '"index":"1",'), /index "1" is not an image index/],
      [
        'shape-strings',
        (l) => l.replace(/"features":\[1,(\d+),(\d+)\]/, '"features":["1","$1","$2"]'),
        /shape of features is not a list of sizes/,
      ],
      ['no-tensors', (l) => l.replace(/,"tensors":\{.*\}\}$/, '}'), /neither tensors nor error/],
    ];
    for (const [name, edit, message] of cases) {
      const dir = copy(refDir, `loose-${name}`);
      const file = path.join(dir, 'manifest.jsonl');
      const lines = fs.readFileSync(file, 'utf8').split('\n');
      lines[1] = edit(lines[1]);
      fs.writeFileSync(file, lines.join('\n'));
      expect(() => openEncodedDataset(dir)).toThrow(message);
    }
    const parts = path.join(tempDir(), 'parts-renamed');
    await write(parts, { part: { index: 0, count: 2 } });
    fs.renameSync(path.join(parts, 'part-0-of-2'), path.join(parts, 'part-1-of-2'));
    expect(() => openEncodedDataset(parts)).toThrow(
      /part-1-of-2\/dataset\.json describes part 0 of 2, not the folder's part 1 of 2/,
    );
  });
});

describe("the reader's backend", () => {
  test("batches in a script that loaded no model run on the default backend (wasm), not on tfjs's pure-JS fallback", () => {
    const index = path.join(ROOT, 'dist', 'src', 'index.js');
    const tfCore = require.resolve('@tensorflow/tfjs-core');
    const script = `
      (async () => {
        const { openEncodedDataset } = require(${JSON.stringify(index)});
        const ds = openEncodedDataset(${JSON.stringify(refDir)});
        for await (const b of ds.batches({ name: 'features', batchSize: 2 })) { b.tensor.dispose(); }
        console.log('backend', require(${JSON.stringify(tfCore)}).getBackend());
      })();`;
    const r = spawnSync(process.execPath, ['-e', script], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, LLAVA_VISION_BACKEND: '' },
    });
    expect(r.stdout.trim()).toBe('backend wasm');
    expect(r.stderr).toMatch(/llava-vision: tfjs backend "wasm"/);
  });
});
