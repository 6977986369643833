/**
 * Seeded mutation fuzzing of hostile dataset folders (issue 20): manifest lines, dataset.json, shards
 * (their bytes and their __metadata__), special files in their names, part folders, and look-alikes of
 * our temp and lock files, each through the reader (open, read every image, iterate, one epoch of
 * batches) and through a resume's model-free part (resumeDatasetFolder: dataset.json checked, shards
 * verified, manifest rebuilt, stale temp files removed).
 *
 * Every case must end in success or in one of the package's errors (one line), within a time bound,
 * with the process under 1.5 GB. Invariants of a success: each image read has its manifest's shape;
 * a resume deletes nothing but our own temp files, and leaves a folder the reader opens and reads
 * whole. `FUZZ_CASES` (default 150 per target) and `FUZZ_SEED` (default 20) pick the run; `npm run
 * fuzz` runs thousands. A failing case is reported with its target, index, seed and mutation.
 */
import * as fs from 'fs';
import * as path from 'path';
import { openEncodedDataset } from '../src/dataset/reader';
import { checkDatasetDir, resumeDatasetFolder } from '../src/dataset/writer';
import { DatasetInfo, settingsDigest } from '../src/dataset/format';
import { LlavaVisionError } from '../src/errors';
import { SafetensorsFile, TensorToWrite, serializeSafetensors } from '../src/io/safetensors';
import { seededRandom } from '../src/random';
import { syntheticInfo, writeSyntheticDataset } from '../tools/synthetic_dataset';
import { isolatedTempDir } from './helpers/isolation';

const N = Number(process.env.FUZZ_CASES ?? 150);
const SEED = Number(process.env.FUZZ_SEED ?? 20);
const RSS_LIMIT = 1.5 * 2 ** 30;
const CASE_MS = Number(process.env.FUZZ_CASE_MS ?? 4000);
const IMAGES = 24;
const SHARD_SIZE = 5;
const tmp = isolatedTempDir('fuzz-dataset-');
jest.setTimeout(Math.max(120_000, N * 2000));

function rng(seed: number) {
  const next = seededRandom(seed);
  const int = (n: number) => Math.floor(next() * n);
  return { int, pick: <T>(xs: readonly T[]): T => xs[int(xs.length)], chance: (p: number) => next() < p };
}
type Rng = ReturnType<typeof rng>;

const deep = (depth: number): unknown => {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = [v];
  return v;
};
/** What a hostile folder puts where an index, a size, a name or a shape belongs. */
const HOSTILE: unknown[] = [
  0,
  -1,
  1,
  1.5,
  23,
  24,
  25,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 53,
  1e15,
  1e308,
  '7',
  '99',
  '',
  'x'.repeat(20_000),
  null,
  true,
  [],
  [1],
  [9, 9],
  [9, 9, 9],
  ['1', '2'],
  [-1, 4],
  [1e9, 1e9],
  {},
  { a: 1 },
  { features: [1, 4] },
  { features: 'x' },
  { features: [1, 4], extra: [2 ** 31] },
  { __proto__: [1] },
  'shard-00000.safetensors',
  'shard-99999.safetensors',
  'shard-123456789.safetensors',
  '../../etc/passwd',
  'part-0-of-2',
  'sha256:' + '0'.repeat(64),
  deep(40),
  deep(3000),
];
const hostile = (r: Rng) => r.pick(HOSTILE);
/** JSON that survives a 3000-deep value. */
const json = (v: unknown) => {
  try {
    return JSON.stringify(v);
  } catch {
    return '[[[1]]]';
  }
};

interface Failure {
  target: string;
  index: number;
  what: string;
  problem: string;
}
const failures: Failure[] = [];
const outcomes: Record<string, { accepted: number; refused: number }> = {};
let maxRss = 0;

async function fuzzCase(target: string, index: number, what: string, fn: () => unknown): Promise<void> {
  const t0 = Date.now();
  let problem: string | null = null;
  const tally = (outcomes[target] ??= { accepted: 0, refused: 0 });
  try {
    await fn();
    tally.accepted++;
  } catch (e) {
    tally.refused++;
    if (!(e instanceof LlavaVisionError))
      problem = `raw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`.slice(0, 500);
    else if (e.message.includes('\n') || e.message.length > 2000)
      problem = `message of ${e.message.length} chars: ${e.message.slice(0, 200)}`;
    if (process.env.FUZZ_TRACE)
      process.stderr.write(`${target} #${index}: ${what.slice(0, 100)} -> ${(e as Error).message.slice(0, 160)}\n`);
  }
  const ms = Date.now() - t0;
  if (!problem && ms > CASE_MS) problem = `took ${ms} ms`;
  maxRss = Math.max(maxRss, process.memoryUsage().rss);
  if (!problem && process.memoryUsage().rss > RSS_LIMIT)
    problem = `RSS ${Math.round(process.memoryUsage().rss / 2 ** 20)} MB`;
  if (problem) failures.push({ target, index, what, problem });
}

/** Opens `dir` and reads everything it lists: each image's tensors must have their manifest's shapes. */
async function readAll(dir: string): Promise<void> {
  const ds = openEncodedDataset(dir);
  try {
    for (let i = 0; i < Math.min(ds.length, 1000); i++) {
      if (!ds.has(i)) continue;
      const img = ds.read(i);
      const spec = ds.shapes(i);
      for (const [name, t] of Object.entries(img.tensors)) {
        if (json(t.shape) !== json(spec[name]))
          throw new Error(`invariant: image ${i} ${name} is ${json(t.shape)}, manifest says ${json(spec[name])}`);
      }
    }
    let n = 0;
    for await (const img of ds) if (img.index >= 0) n++;
    if (n !== ds.encodedCount) throw new Error(`invariant: iterated ${n} of ${ds.encodedCount} stored images`);
    for await (const b of ds.batches({ name: 'features', batchSize: 3, seed: 1 })) b.tensor.dispose();
  } finally {
    ds.close();
  }
}

const source = (i: number) => `/data/images/img-${String(i).padStart(7, '0')}.jpg`;
const INPUTS = Array.from({ length: IMAGES }, (_, i) => source(i));
const baseOptions = { images: IMAGES, shardSize: SHARD_SIZE, failEvery: 7, source };
const partOptions = (index: number) => ({ ...baseOptions, part: { index, count: 2 } });

/** A resume must delete nothing but our temp files, and leave a folder the reader reads whole. */
async function resume(dir: string, info: DatasetInfo, part?: { index: number; count: number }): Promise<void> {
  // As writeEncodedDataset does before its lock: the folder checked, then made.
  const folder = checkDatasetDir(dir, part);
  const before = fs.existsSync(folder) ? fs.readdirSync(folder).filter((f) => !f.includes('.llava-vision-tmp-')) : [];
  fs.mkdirSync(folder, { recursive: true });
  resumeDatasetFolder(folder, info, INPUTS, part);
  const after = new Set(fs.readdirSync(folder));
  const lost = before.filter((f) => !after.has(f));
  if (lost.length) throw new Error(`invariant: a resume deleted ${lost.join(', ')}`);
  if (!part) await readAll(dir);
}

let unsplit: string;
let split: string;
beforeAll(() => {
  unsplit = path.join(tmp(), 'base');
  writeSyntheticDataset(unsplit, baseOptions);
  split = path.join(tmp(), 'base-parts');
  writeSyntheticDataset(split, partOptions(0));
  writeSyntheticDataset(split, partOptions(1));
});

const fresh = (from: string, i: number, tag: string) => {
  const dir = path.join(tmp(), `${tag}-${i}`);
  fs.cpSync(from, dir, { recursive: true });
  return dir;
};
const shardFiles = (dir: string) =>
  fs
    .readdirSync(dir)
    .filter((f) => f.startsWith('shard-'))
    .sort();
const setAt = (obj: Record<string, unknown>, dotted: string, value: unknown) => {
  const keys = dotted.split('.');
  let o = obj;
  for (const k of keys.slice(0, -1)) o = (o[k] ??= {}) as Record<string, unknown>;
  o[keys[keys.length - 1]] = value;
};

/** Bytes changed at random: flips, a truncation, an insertion, a deletion. */
function mutateBytes(r: Rng, bytes: Buffer): { bytes: Buffer; what: string } {
  const kind = r.int(4);
  if (kind === 0) {
    const out = Buffer.from(bytes);
    const at = r.int(out.length);
    out[at] = r.int(256);
    return { bytes: out, what: `byte ${at} = ${out[at]}` };
  }
  if (kind === 1) {
    const n = r.int(bytes.length);
    return { bytes: bytes.subarray(0, n), what: `truncated to ${n}` };
  }
  const at = r.int(bytes.length);
  const n = 1 + r.int(16);
  if (kind === 2)
    return {
      bytes: Buffer.concat([
        bytes.subarray(0, at),
        Buffer.alloc(n, r.pick([0x20, 0x0a, 0x7b, 0x22, 0x00])),
        bytes.subarray(at),
      ]),
      what: `insert ${n} at ${at}`,
    };
  return { bytes: Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + n)]), what: `remove ${n} at ${at}` };
}

/** One mutation of an unsplit folder; returns what it did. */
function mutateFolder(r: Rng, dir: string): string {
  const manifest = path.join(dir, 'manifest.jsonl');
  const datasetJson = path.join(dir, 'dataset.json');
  const kind = r.int(9);
  if (kind === 0) {
    const lines = fs.readFileSync(manifest, 'utf8').split('\n');
    const k = r.int(lines.length - 1);
    const entry = JSON.parse(lines[k]) as Record<string, unknown>;
    const field = r.pick(['index', 'source', 'shard', 'image_size', 'tensors', 'error', 'tensors.features', 'extra']);
    const value = hostile(r);
    if (r.chance(0.15)) delete entry[field];
    else setAt(entry, field, value);
    lines[k] = json(entry);
    fs.writeFileSync(manifest, lines.join('\n'));
    return `manifest line ${k + 1}: ${field} <- ${json(value).slice(0, 40)}`;
  }
  if (kind === 1) {
    const lines = fs.readFileSync(manifest, 'utf8').split('\n');
    const op = r.int(4);
    const [a, b] = [r.int(lines.length - 1), r.int(lines.length - 1)];
    if (op === 0) lines.splice(a, 0, lines[b]);
    else if (op === 1) lines.splice(a, 1);
    else if (op === 2) [lines[a], lines[b]] = [lines[b], lines[a]];
    else {
      const m = mutateBytes(r, Buffer.from(lines.join('\n')));
      fs.writeFileSync(manifest, m.bytes);
      return `manifest ${m.what}`;
    }
    fs.writeFileSync(manifest, lines.join('\n'));
    return `manifest lines: ${['duplicate', 'delete', 'swap', ''][op]} ${a} ${b}`;
  }
  if (kind === 2) {
    const info = JSON.parse(fs.readFileSync(datasetJson, 'utf8')) as Record<string, unknown>;
    const field = r.pick([
      'format',
      'format_version',
      'producer',
      'model',
      'model.digest',
      'model.layout',
      'numerics',
      'numerics.threads',
      'numerics.backend',
      'options',
      'options.save',
      'options.dtype',
      'options.aspect',
      'part',
      'part.index',
      'inputs.count',
      'shard_size',
      'made_from',
      'settings_digest',
    ]);
    const value = hostile(r);
    setAt(info, field, value);
    const redigest = r.chance(0.5);
    if (redigest) {
      try {
        info.settings_digest = settingsDigest(info as unknown as DatasetInfo);
      } catch {
        // a value canonicalJson cannot walk (the 3000-deep one): left as it is
      }
    }
    fs.writeFileSync(datasetJson, json(info));
    return `dataset.json ${field} <- ${json(value).slice(0, 40)}${redigest ? ' (digest recomputed)' : ''}`;
  }
  if (kind === 3) {
    const m = mutateBytes(r, fs.readFileSync(datasetJson));
    fs.writeFileSync(datasetJson, m.bytes);
    return `dataset.json ${m.what}`;
  }
  const shards = shardFiles(dir);
  const shard = path.join(dir, r.pick(shards));
  if (kind === 4) {
    const st = SafetensorsFile.open(shard);
    const metadata: Record<string, string> = { ...st.metadata };
    const tensors: Record<string, TensorToWrite> = Object.fromEntries(
      st.keys().map((k) => [k, { ...st.info(k), data: st.readBytes(k) }]),
    );
    st.close();
    const op = r.int(5);
    let what: string;
    if (op === 0) {
      const entries = JSON.parse(metadata.entries) as Record<string, unknown>[];
      const k = r.int(entries.length);
      const field = r.pick(['index', 'source', 'shard', 'image_size', 'tensors', 'error']);
      const value = hostile(r);
      setAt(entries[k], field, value);
      metadata.entries = json(entries);
      what = `entry ${k} ${field} <- ${json(value).slice(0, 40)}`;
    } else if (op === 1) {
      const key = r.pick(['settings_digest', 'settings', 'format', 'entries']);
      metadata[key] = json(hostile(r));
      what = `__metadata__.${key} replaced`;
    } else if (op === 2) {
      const keys = Object.keys(tensors);
      if (keys.length) delete tensors[r.pick(keys)];
      what = 'a tensor removed';
    } else if (op === 3) {
      const keys = Object.keys(tensors);
      if (keys.length) {
        const k = r.pick(keys);
        tensors[k] = { dtype: 'F32', shape: [4], data: new Uint8Array(16) };
      }
      what = 'a tensor reshaped';
    } else {
      const other = path.join(dir, r.pick(shards));
      fs.copyFileSync(other, shard);
      return `${path.basename(shard)} replaced by ${path.basename(other)}`;
    }
    fs.writeFileSync(shard, serializeSafetensors(tensors, metadata));
    return `${path.basename(shard)}: ${what}`;
  }
  if (kind === 5) {
    const m = mutateBytes(r, fs.readFileSync(shard));
    fs.writeFileSync(shard, m.bytes);
    return `${path.basename(shard)} ${m.what}`;
  }
  if (kind === 6) {
    const victim = r.pick([manifest, datasetJson, shard]);
    fs.rmSync(victim);
    const op = r.int(4);
    if (op === 0) fs.symlinkSync('/dev/zero', victim);
    else if (op === 1) fs.mkdirSync(victim);
    else if (op === 2) fs.writeFileSync(victim, '');
    else fs.symlinkSync(path.join(unsplit, path.basename(victim)), victim);
    return `${path.basename(victim)} -> ${['/dev/zero', 'a folder', 'empty', 'a link outside'][op]}`;
  }
  if (kind === 7) {
    // Look-alikes of our temp and lock files, and a few of our own dead temp files: only the latter may go.
    const names = [
      'notes.tmp-2024-12',
      `shard-00000.safetensors.tmp-${r.int(99999)}-abcdef`,
      `shard-00001.safetensors.llava-vision-tmp-00000000-${2 ** 22 + 1}-00aa11bb22cc`,
      `.llava-vision-lock-${r.pick([1, 2, 99, 1e20])}`,
      'dataset.json.llava-vision-tmp-zz-1-00aa11bb22cc',
      'shard-7.safetensors',
    ];
    const name = r.pick(names);
    const content = r.pick(['', '{}', json(hostile(r)), 'x'.repeat(100_000)]);
    fs.writeFileSync(path.join(dir, name), content);
    return `added ${name}`;
  }
  // Shards gone or renamed.
  const op = r.int(3);
  if (op === 0) fs.rmSync(shard);
  else if (op === 1)
    fs.renameSync(
      shard,
      path.join(dir, r.pick(['shard-00009.safetensors', 'shard-99999999.safetensors', 'shard-1.safetensors'])),
    );
  else
    fs.renameSync(
      shard,
      path.join(dir, r.pick(shards.filter((s) => path.join(dir, s) !== shard).concat(['shard-00000.safetensors']))),
    );
  return `${path.basename(shard)} ${['deleted', 'renamed', 'renamed over another'][op]}`;
}

/** One mutation of a split folder. */
function mutateParts(r: Rng, dir: string): string {
  const part = path.join(dir, `part-${r.int(2)}-of-2`);
  const kind = r.int(5);
  if (kind === 0) {
    fs.renameSync(
      part,
      path.join(
        dir,
        r.pick(['part-2-of-2', 'part-0-of-3', 'part-01-of-2', 'part-1-of-2x', `part-${2 ** 40}-of-${2 ** 41}`]),
      ),
    );
    return `${path.basename(part)} renamed`;
  }
  if (kind === 1) {
    fs.rmSync(part, { recursive: true });
    fs.writeFileSync(part, 'a file');
    return `${path.basename(part)} is a file`;
  }
  if (kind === 2) {
    fs.mkdirSync(path.join(dir, r.pick(['part-5-of-3', 'part-2-of-4', 'notes'])));
    return 'a stray folder';
  }
  if (kind === 3) {
    fs.rmSync(part, { recursive: true });
    fs.symlinkSync(path.join(split, path.basename(part)), part);
    return `${path.basename(part)} is a link`;
  }
  return `in ${path.basename(part)}: ${mutateFolder(r, part)}`;
}

describe(`fuzz: hostile dataset folders (seed ${SEED}, ${N} cases per target)`, () => {
  afterAll(() => {
    if (process.env.FUZZ_TRACE || N >= 1000)
      process.stderr.write(
        `fuzz_dataset outcomes: ${JSON.stringify(outcomes)}; peak RSS ${Math.round(maxRss / 2 ** 20)} MB\n`,
      );
  });

  test('reader: mutated manifests, dataset.json, shards, special files, temp and lock look-alikes', async () => {
    const r = rng(SEED);
    for (let i = 0; i < N; i++) {
      const dir = fresh(unsplit, i, 'read');
      const what = mutateFolder(r, dir);
      await fuzzCase('reader', i, what, () => readAll(dir));
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(failures.filter((f) => f.target === 'reader')).toEqual([]);
    expect(outcomes.reader.accepted).toBeGreaterThan(0);
    expect(outcomes.reader.refused).toBeGreaterThan(0);
  });

  test('resume: the same mutations through resumeDatasetFolder (nothing foreign deleted; what it accepts, the reader reads)', async () => {
    const r = rng(SEED + 1);
    const info = syntheticInfo(baseOptions);
    for (let i = 0; i < N; i++) {
      const dir = fresh(unsplit, i, 'resume');
      const what = mutateFolder(r, dir);
      await fuzzCase('resume', i, what, () => resume(dir, info));
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(failures.filter((f) => f.target === 'resume')).toEqual([]);
    expect(outcomes.resume.accepted).toBeGreaterThan(0);
    expect(outcomes.resume.refused).toBeGreaterThan(0);
  });

  test('parts: renamed, replaced, linked, stray part folders, and mutations inside a part', async () => {
    const r = rng(SEED + 2);
    const infos = [syntheticInfo(partOptions(0)), syntheticInfo(partOptions(1))];
    for (let i = 0; i < N; i++) {
      const dir = fresh(split, i, 'parts');
      const what = mutateParts(r, dir);
      await fuzzCase('parts-reader', i, what, () => readAll(dir));
      const k = r.int(2);
      await fuzzCase('parts-resume', i, what, () => resume(dir, infos[k], { index: k, count: 2 }));
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(failures.filter((f) => f.target.startsWith('parts'))).toEqual([]);
  });
});
