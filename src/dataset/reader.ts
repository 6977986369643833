/**
 * Reading an encoded dataset folder (written by `writeEncodedDataset` / `encode --out-dir`), all its
 * parts as one dataset: per-image access by global index, iteration in index order, and shuffled
 * mini-batches for training. Only the manifest is read up front; an image's tensors are read from its
 * shard when asked for, and a shuffled epoch holds only a few shards' worth of one tensor at a time.
 */
import * as fs from 'fs';
import * as path from 'path';
import { ensureBackend } from '../backend';
import * as tf from '../tf';
import { CheckpointError, ConfigError, shapeText } from '../errors';
import { DType } from '../io/dtype';
import { SafetensorsFile } from '../io/safetensors';
import { seededRandom, shuffleInPlace } from '../random';
import {
  DATASET_JSON,
  DatasetInfo,
  IDENTITY_FIELDS,
  MANIFEST,
  identityDifferences,
  listParts,
  readDatasetInfo,
  readManifest,
  shardMismatch,
} from './format';

export interface StoredTensor {
  /** The dtype stored in the shard; `data` is float32 whatever it is (F16 / BF16 widen exactly). */
  dtype: DType;
  shape: number[];
  data: Float32Array;
}

export interface EncodedImage {
  index: number;
  source: string;
  /** [width, height] of the image as decoded. */
  imageSize: [number, number];
  /** By name within the image: `merged`, `features`, `hidden_states.3`, ... */
  tensors: Record<string, StoredTensor>;
}

export interface DatasetFailure {
  index: number;
  source: string;
  error: string;
}

export interface BatchOptions {
  /** The tensor to batch, by its name within an image (`features`, `merged`, ...). */
  name: string;
  batchSize: number;
  /** Default true: shard order shuffled, then images shuffled within a window of `shardsInMemory` shards. */
  shuffle?: boolean;
  /** Seed of the shuffle (use a different one per epoch). Default 0. */
  seed?: number;
  /** Shards whose images are shuffled together (the memory bound). Default 4. */
  shardsInMemory?: number;
  /** Leave out a last, smaller batch. Default false. */
  dropLast?: boolean;
}

export interface Batch {
  /** Global indices of the images, in batch order. */
  indices: number[];
  /** [B, ...shape], one image's [1, ...shape] taking one row (dispose it when done). */
  tensor: tf.Tensor;
}

const FAILED = -1;
/** Open shard files kept (each is a file descriptor): iteration in index order alternates between parts. */
const OPEN_SHARDS = 8;

/** A growable list of 32-bit integers (a plain array of a million numbers is several times bigger). */
class IntList {
  data = new Int32Array(1024);
  length = 0;
  push(x: number): void {
    if (this.length === this.data.length) {
      const bigger = new Int32Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.length++] = x;
  }
}

interface Part {
  dir: string;
  info: DatasetInfo;
}

export class EncodedDataset {
  /**
   * The images the manifests list (stored or failed), by ascending global index: `indices[p]` is the
   * global index of position p. Sized by the lines read, never by an index a line claims, so a
   * tampered line cannot make the reader allocate gigabytes.
   */
  private readonly indices: Int32Array;
  /** Per position: shard id, or FAILED. */
  private readonly shardOf: Int32Array;
  private readonly sources: string[];
  private readonly sizes: Int32Array;
  /** Tensor shapes per position, interned (nearly every image of a dataset has the same ones). */
  private readonly specOf: Int32Array;
  private readonly specs: Record<string, number[]>[];
  private readonly errors: Map<number, string>;
  /** Per shard id: its file and the part whose dataset.json it must agree with; checked on first open. */
  private readonly shardFiles: { file: string; part: number; checked: boolean }[];
  private readonly open = new Map<number, SafetensorsFile>();
  private readonly stored: number;

  private constructor(
    readonly dir: string,
    /** dataset.json of each part found (one for an unsplit dataset). */
    readonly parts: { dir: string; info: DatasetInfo }[],
    /** Size of the global index space: the number of inputs. */
    readonly length: number,
    listed: Listed,
  ) {
    const n = listed.index.length;
    // Positions sorted by global index; an index listed twice is a damaged manifest.
    const order = new Int32Array(n);
    for (let p = 0; p < n; p++) order[p] = p;
    const idx = listed.index.data;
    order.sort((a, b) => idx[a] - idx[b] || a - b);
    this.indices = new Int32Array(n);
    this.shardOf = new Int32Array(n);
    this.specOf = new Int32Array(n);
    this.sizes = new Int32Array(2 * n);
    this.sources = new Array<string>(n);
    let stored = 0;
    for (let p = 0; p < n; p++) {
      const q = order[p];
      const index = idx[q];
      if (p > 0 && this.indices[p - 1] === index) {
        throw new CheckpointError(
          `${listed.partDirs[listed.part.data[q]]}: image ${index} is listed twice in ${MANIFEST} (run the encode command that made it again: it rebuilds the manifest from the shards)`,
        );
      }
      this.indices[p] = index;
      this.shardOf[p] = listed.shard.data[q];
      this.specOf[p] = listed.spec.data[q];
      this.sizes[2 * p] = listed.size.data[2 * q];
      this.sizes[2 * p + 1] = listed.size.data[2 * q + 1];
      this.sources[p] = listed.sources[q];
      if (this.shardOf[p] >= 0) stored++;
    }
    this.errors = listed.errors;
    this.specs = listed.specs;
    this.shardFiles = listed.shardFiles;
    this.stored = stored;
  }

  /** Opens `dir`: a dataset folder, or one split into part-K-of-N folders (all parts read as one dataset). */
  static open(dir: string): EncodedDataset {
    const found = listParts(dir);
    let parts: Part[];
    if (found.length) {
      const counts = new Set(found.map((p) => p.count));
      if (counts.size > 1)
        throw new CheckpointError(`${dir}: parts of different splits (${found.map((p) => p.name).join(', ')})`);
      parts = found.flatMap((p) => {
        const partDir = path.join(dir, p.name);
        const info = readDatasetInfo(partDir);
        if (info && (info.part?.index !== p.index || info.part.count !== p.count)) {
          throw new CheckpointError(
            `${partDir}/${DATASET_JSON} describes ${info.part ? `part ${info.part.index} of ${info.part.count}` : 'an unsplit dataset'}, not the folder's part ${p.index} of ${p.count}`,
          );
        }
        return info ? [{ dir: partDir, info }] : [];
      });
      if (parts.length === 0) throw new CheckpointError(`${dir}: its part folders hold no ${DATASET_JSON} yet`);
      for (const p of parts.slice(1)) {
        const diff = identityDifferences(
          parts[0].info,
          p.info,
          IDENTITY_FIELDS.filter((f) => f !== 'part'),
          ['first part', 'this part'],
          true,
        );
        if (diff.length)
          throw new CheckpointError(
            `${p.dir} was made with other settings than ${parts[0].dir}: ${diff.join('; ')} (the parts of a dataset are made alike: encode this one again, into an empty folder, as the first)`,
          );
      }
    } else {
      const info = readDatasetInfo(dir);
      if (!info)
        throw new CheckpointError(`${dir}: not an encoded dataset (no ${DATASET_JSON} and no part-K-of-N folders)`);
      if (info.part)
        throw new CheckpointError(
          `${dir}/${DATASET_JSON} describes part ${info.part.index} of ${info.part.count}: open the folder that holds the part-K-of-N folders`,
        );
      parts = [{ dir, info }];
    }
    const listed = readManifests(parts);
    const length = Math.max(0, ...parts.map((p) => p.info.inputs.count));
    const ds = new EncodedDataset(dir, parts, length, listed);
    // A dataset.json edited by hand disagrees with every shard: found here, not at the first read.
    for (let part = 0; part < parts.length; part++) {
      const id = ds.shardFiles.findIndex((s) => s.part === part);
      if (id >= 0 && fs.existsSync(ds.shardFiles[id].file)) ds.shard(id);
    }
    ds.close();
    return ds;
  }

  /** dataset.json (of the first part): model, options, stored dtype, producer. */
  get info(): DatasetInfo {
    return this.parts[0].info;
  }

  /** Number of images stored (encoded, not failed). */
  get encodedCount(): number {
    return this.stored;
  }

  /** Images that could not be encoded, as the manifest records them. */
  get failures(): DatasetFailure[] {
    return [...this.errors.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([index, error]) => ({ index, source: this.sources[this.position(index)], error }));
  }

  /** Indices neither stored nor failed: a run not finished yet, or a part not run. */
  get missing(): number[] {
    const out: number[] = [];
    let p = 0;
    for (let i = 0; i < this.length; i++) {
      if (p < this.indices.length && this.indices[p] === i) p++;
      else out.push(i);
    }
    return out;
  }

  /** Is image `index` stored. */
  has(index: number): boolean {
    const p = this.position(index);
    return p >= 0 && this.shardOf[p] >= 0;
  }

  /** Source path of image `index` (stored or failed). */
  source(index: number): string | undefined {
    const p = this.position(index);
    return p >= 0 ? this.sources[p] : undefined;
  }

  /** Tensor names and shapes of image `index`, without reading them. */
  shapes(index: number): Record<string, number[]> {
    return this.specs[this.specOf[this.check(index)]];
  }

  /** Image `index`: its tensors (all, or the `names` given), read from its shard only. */
  read(index: number, names?: string[]): EncodedImage {
    return this.readAt(this.check(index), names);
  }

  /** The stored images in index order (failed and missing ones skipped). */
  async *[Symbol.asyncIterator](): AsyncGenerator<EncodedImage> {
    for (let p = 0; p < this.indices.length; p++) if (this.shardOf[p] >= 0) yield this.readAt(p);
  }

  private readAt(p: number, names?: string[]): EncodedImage {
    const index = this.indices[p];
    const spec = this.specs[this.specOf[p]];
    const wanted = names ?? Object.keys(spec);
    const file = this.shard(this.shardOf[p]);
    const tensors: Record<string, StoredTensor> = {};
    for (const name of wanted) {
      if (!Object.hasOwn(spec, name))
        throw new ConfigError(`image ${index} has no tensor "${name}" (it has ${Object.keys(spec).join(', ')})`);
      const key = `images.${index}.${name}`;
      const { dtype, shape } = file.info(key);
      if (!tf.util.arraysEqual(shape, spec[name])) {
        throw new CheckpointError(
          `${file.path}: ${key} is ${shapeText(shape)} but ${MANIFEST} lists ${shapeText(spec[name])} (a damaged or edited manifest)`,
        );
      }
      tensors[name] = { dtype, shape, data: file.readFloat32(key) };
    }
    return { index, source: this.sources[p], imageSize: [this.sizes[2 * p], this.sizes[2 * p + 1]], tensors };
  }

  /** Position of global `index` among the listed images, or -1. */
  private position(index: number): number {
    if (!Number.isInteger(index)) return -1;
    let [lo, hi] = [0, this.indices.length - 1];
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = this.indices[mid];
      if (v === index) return mid;
      if (v < index) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /**
   * One epoch of mini-batches of tensor `name` over the stored images. Shuffled (default): the shards
   * in a seeded random order, taken `shardsInMemory` at a time, their images shuffled together (what
   * is left of a window after its full batches joins the next one), so memory holds a few shards of
   * that tensor, never the dataset. Unshuffled: index order.
   */
  async *batches(options: BatchOptions): AsyncGenerator<Batch> {
    const { name, batchSize } = options;
    const shardsInMemory = options.shardsInMemory ?? 4;
    if (!Number.isInteger(batchSize) || batchSize < 1)
      throw new ConfigError(`batches: batchSize must be a positive integer, got ${batchSize}`);
    if (!Number.isInteger(shardsInMemory) || shardsInMemory < 1)
      throw new ConfigError(`batches: shardsInMemory must be a positive integer, got ${shardsInMemory}`);
    const stored: number[] = [];
    for (let p = 0; p < this.indices.length; p++) {
      if (this.shardOf[p] < 0) continue;
      const i = this.indices[p];
      if (!Object.hasOwn(this.specs[this.specOf[p]], name))
        throw new ConfigError(
          `batches: image ${i} has no tensor "${name}" (it has ${Object.keys(this.specs[this.specOf[p]]).join(', ')})`,
        );
      stored.push(p);
    }
    // Tensors are made here: on the backend LlavaVision.load would choose (wasm), not tfjs's pure-JS fallback.
    await ensureBackend();
    if (options.shuffle === false) {
      for (let k = 0; k < stored.length; k += batchSize) {
        const chunk = stored.slice(k, k + batchSize);
        if (chunk.length < batchSize && options.dropLast) return;
        yield this.stack(
          chunk.map((i) => this.one(i, name)),
          name,
        );
      }
      return;
    }
    const rand = seededRandom(options.seed ?? 0);
    const byShard = new Map<number, number[]>();
    for (const p of stored) {
      const list = byShard.get(this.shardOf[p]) ?? [];
      byShard.set(this.shardOf[p], list);
      list.push(p);
    }
    const order = shuffleInPlace(
      [...byShard.keys()].sort((a, b) => a - b),
      rand,
    );
    let pending: { index: number; data: Float32Array; shape: number[] }[] = [];
    for (let k = 0; k < order.length; k += shardsInMemory) {
      const window = order.slice(k, k + shardsInMemory).flatMap((s) => byShard.get(s)!);
      pending = shuffleInPlace(pending.concat(window.map((i) => this.one(i, name))), rand);
      while (pending.length >= batchSize) yield this.stack(pending.splice(0, batchSize), name);
    }
    if (pending.length && !options.dropLast) yield this.stack(pending, name);
  }

  /** Closes the open shard files. */
  close(): void {
    for (const f of this.open.values()) f.close();
    this.open.clear();
  }

  /** The tensor `name` of the image at position `p`. */
  private one(p: number, name: string): { index: number; data: Float32Array; shape: number[] } {
    const t = this.readAt(p, [name]).tensors[name];
    return { index: this.indices[p], data: t.data, shape: t.shape };
  }

  /** Images' tensors as one [B, ...] tensor: a leading 1 (one tile) is the batch row. */
  private stack(items: { index: number; data: Float32Array; shape: number[] }[], name: string): Batch {
    const rowShape = (s: number[]) => (s[0] === 1 ? s.slice(1) : s);
    const row = rowShape(items[0].shape);
    for (const it of items) {
      if (!tf.util.arraysEqual(rowShape(it.shape), row)) {
        throw new ConfigError(
          `batches: "${name}" of image ${it.index} is ${shapeText(it.shape)} and of image ${items[0].index} ${shapeText(items[0].shape)}: they cannot be stacked (anyres tile counts or merged lengths differ); use batchSize 1 or read images one by one`,
        );
      }
    }
    const per = items[0].data.length;
    const data = new Float32Array(per * items.length);
    items.forEach((it, k) => data.set(it.data, k * per));
    return { indices: items.map((it) => it.index), tensor: tf.tensor(data, [items.length, ...row]) };
  }

  /** The position of a stored image `index`; a clear error for any other index. */
  private check(index: number): number {
    if (!Number.isInteger(index) || index < 0 || index >= this.length)
      throw new ConfigError(`image index ${index} is out of range (the dataset has ${this.length} inputs)`);
    const p = this.position(index);
    if (p < 0)
      throw new ConfigError(
        `image ${index} is not in ${this.dir} (not encoded yet${this.parts.length > 1 || this.parts[0].info.part ? ', or its part has not run' : ''})`,
      );
    if (this.shardOf[p] === FAILED)
      throw new ConfigError(`image ${index} (${this.sources[p]}) failed to encode: ${this.errors.get(index)}`);
    return p;
  }

  private shard(id: number): SafetensorsFile {
    let f = this.open.get(id);
    if (f) {
      this.open.delete(id); // re-inserted below: the map's order is least recently used first
    } else {
      if (this.open.size >= OPEN_SHARDS) {
        const [oldest, file] = this.open.entries().next().value as [number, SafetensorsFile];
        file.close();
        this.open.delete(oldest);
      }
      const shard = this.shardFiles[id];
      f = SafetensorsFile.open(shard.file);
      if (!shard.checked) {
        const { info, dir } = this.parts[shard.part];
        const { settings_digest: digest, settings } = f.metadata;
        const mismatch =
          digest === undefined || settings === undefined
            ? 'it records no settings_digest'
            : shardMismatch({ settingsDigest: digest, settings }, info);
        if (mismatch) {
          f.close();
          throw new CheckpointError(
            `${shard.file} was made with other settings than ${path.join(dir, DATASET_JSON)}: ${mismatch}; a dataset is never mixed (a shard copied in from another dataset, or a ${DATASET_JSON} edited by hand)`,
          );
        }
        shard.checked = true;
      }
    }
    this.open.set(id, f);
    return f;
  }
}

/** What the manifests of a dataset list, gathered line by line into compact arrays. */
interface Listed {
  index: IntList;
  part: IntList;
  shard: IntList;
  spec: IntList;
  size: IntList;
  sources: string[];
  errors: Map<number, string>;
  specs: Record<string, number[]>[];
  shardFiles: { file: string; part: number; checked: boolean }[];
  partDirs: string[];
}

/**
 * Every part's manifest, streamed: each line is checked (types, ranges), its index must be one of its
 * part's (below dataset.json's inputs.count, ≡ K mod N); a torn last line (a run killed mid-append, or
 * still writing) is left out. A damaged line is an error naming it.
 */
function readManifests(parts: Part[]): Listed {
  const listed: Listed = {
    index: new IntList(),
    part: new IntList(),
    shard: new IntList(),
    spec: new IntList(),
    size: new IntList(),
    sources: [],
    errors: new Map(),
    specs: [],
    shardFiles: [],
    partDirs: parts.map((p) => p.dir),
  };
  const specIds = new Map<string, number>();
  let lastSpec = -1;
  parts.forEach(({ dir, info }, part) => {
    const shardIds = new Map<string, number>();
    const file = path.join(dir, MANIFEST);
    readManifest(dir, (e, line) => {
      if (e.index >= info.inputs.count) {
        throw new CheckpointError(
          `${file} line ${line}: image ${e.index} is beyond the dataset's ${info.inputs.count} inputs (${DATASET_JSON} inputs.count): a damaged or edited manifest`,
        );
      }
      if (info.part && e.index % info.part.count !== info.part.index) {
        throw new CheckpointError(
          `${file} line ${line}: image ${e.index} is not in part ${info.part.index} of ${info.part.count}`,
        );
      }
      listed.index.push(e.index);
      listed.part.push(part);
      listed.sources.push(e.source);
      if (e.error !== undefined) {
        listed.errors.set(e.index, e.error);
        listed.shard.push(FAILED);
        listed.spec.push(-1);
        listed.size.push(0);
        listed.size.push(0);
        return;
      }
      let id = shardIds.get(e.shard);
      if (id === undefined)
        shardIds.set(
          e.shard,
          (id = listed.shardFiles.push({ file: path.join(dir, e.shard), part, checked: false }) - 1),
        );
      listed.shard.push(id);
      // Nearly every line has the shapes of the line before: compared first, before a lookup by JSON.
      if (lastSpec < 0 || !sameShapes(listed.specs[lastSpec], e.tensors!)) {
        const key = JSON.stringify(e.tensors);
        let spec = specIds.get(key);
        if (spec === undefined) specIds.set(key, (spec = listed.specs.push(e.tensors!) - 1));
        lastSpec = spec;
      }
      listed.spec.push(lastSpec);
      listed.size.push(e.image_size![0]);
      listed.size.push(e.image_size![1]);
    });
  });
  return listed;
}

/** Same tensor names, in the same order, with the same shapes. */
function sameShapes(a: Record<string, number[]>, b: Record<string, number[]>): boolean {
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (let k = 0; k < ka.length; k++) {
    if (ka[k] !== kb[k]) return false;
    const [x, y] = [a[ka[k]], b[kb[k]]];
    if (x.length !== y.length) return false;
    for (let d = 0; d < x.length; d++) if (x[d] !== y[d]) return false;
  }
  return true;
}

/** Opens an encoded dataset folder (see EncodedDataset). */
export function openEncodedDataset(dir: string): EncodedDataset {
  return EncodedDataset.open(dir);
}
