/**
 * Reading an encoded dataset folder (written by `writeEncodedDataset` / `encode --out-dir`), all its
 * parts as one dataset: per-image access by global index, iteration in index order, and shuffled
 * mini-batches for training. Only the manifest is read up front; an image's tensors are read from its
 * shard when asked for, and a shuffled epoch holds only a few shards' worth of one tensor at a time.
 */
import * as path from 'path';
import * as tf from '../tf';
import { CheckpointError, ConfigError, shapeText } from '../errors';
import { DType } from '../io/dtype';
import { SafetensorsFile } from '../io/safetensors';
import { seededRandom, shuffleInPlace } from '../random';
import { DATASET_JSON, DatasetInfo, ManifestEntry, listParts, readDatasetInfo, readManifest, identityDifferences } from './dataset_format';

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

const NONE = -1;
const FAILED = -2;
/** Open shard files kept (each is a file descriptor): iteration in index order alternates between parts. */
const OPEN_SHARDS = 8;

export class EncodedDataset {
  /** Per global index: shard id, or NONE / FAILED. */
  private readonly shardOf: Int32Array;
  private readonly sources: string[] = [];
  private readonly sizes: Int32Array;
  /** Tensor shapes per image, interned (nearly every image of a dataset has the same ones). */
  private readonly specOf: Int32Array;
  private readonly specs: Record<string, number[]>[] = [];
  private readonly errors = new Map<number, string>();
  private readonly shardFiles: string[] = [];
  private readonly open = new Map<number, SafetensorsFile>();

  private constructor(
    readonly dir: string,
    /** dataset.json of each part found (one for an unsplit dataset). */
    readonly parts: { dir: string; info: DatasetInfo }[],
    /** Size of the global index space: the number of inputs. */
    readonly length: number,
    entries: { dir: string; entry: ManifestEntry }[],
  ) {
    this.shardOf = new Int32Array(length).fill(NONE);
    this.sizes = new Int32Array(2 * length);
    this.specOf = new Int32Array(length).fill(NONE);
    const shardIds = new Map<string, number>();
    const specIds = new Map<string, number>();
    for (const { dir: partDir, entry: e } of entries) {
      if (this.shardOf[e.index] !== NONE) throw new CheckpointError(`${partDir}: image ${e.index} is listed twice`);
      this.sources[e.index] = e.source;
      if (e.error !== undefined) {
        this.shardOf[e.index] = FAILED;
        this.errors.set(e.index, e.error);
        continue;
      }
      const file = path.join(partDir, e.shard);
      let id = shardIds.get(file);
      if (id === undefined) shardIds.set(file, (id = this.shardFiles.push(file) - 1));
      this.shardOf[e.index] = id;
      const key = JSON.stringify(e.tensors);
      let spec = specIds.get(key);
      if (spec === undefined) specIds.set(key, (spec = this.specs.push(e.tensors!) - 1));
      this.specOf[e.index] = spec;
      this.sizes.set(e.image_size ?? [0, 0], 2 * e.index);
    }
  }

  /** Opens `dir`: a dataset folder, or one split into part-K-of-N folders (all parts read as one dataset). */
  static open(dir: string): EncodedDataset {
    const found = listParts(dir);
    let parts: { dir: string; info: DatasetInfo }[];
    if (found.length) {
      const counts = new Set(found.map((p) => p.count));
      if (counts.size > 1) throw new CheckpointError(`${dir}: parts of different splits (${found.map((p) => p.name).join(', ')})`);
      parts = found.flatMap((p) => {
        const partDir = path.join(dir, p.name);
        const info = readDatasetInfo(partDir);
        return info ? [{ dir: partDir, info }] : [];
      });
      if (parts.length === 0) throw new CheckpointError(`${dir}: its part folders hold no ${DATASET_JSON} yet`);
      for (const p of parts.slice(1)) {
        const diff = identityDifferences(parts[0].info, p.info, ['format', 'format_version', 'producer', 'model', 'options']);
        if (diff.length) throw new CheckpointError(`${p.dir} was made with other settings than ${parts[0].dir}: ${diff.join('; ').replace(/\(dataset\)/g, '(first part)').replace(/\(this run\)/g, '(this part)')}`);
      }
    } else {
      const info = readDatasetInfo(dir);
      if (!info) throw new CheckpointError(`${dir}: not an encoded dataset (no ${DATASET_JSON} and no part-K-of-N folders)`);
      parts = [{ dir, info }];
    }
    const entries = parts.flatMap((p) => readManifest(p.dir).entries.map((entry) => ({ dir: p.dir, entry })));
    const length = Math.max(0, ...parts.map((p) => p.info.inputs?.count ?? 0), ...entries.map((e) => e.entry.index + 1));
    return new EncodedDataset(dir, parts, length, entries);
  }

  /** dataset.json (of the first part): model, options, stored dtype, producer. */
  get info(): DatasetInfo {
    return this.parts[0].info;
  }

  /** Number of images stored (encoded, not failed). */
  get encodedCount(): number {
    let n = 0;
    for (const s of this.shardOf) if (s >= 0) n++;
    return n;
  }

  /** Images that could not be encoded, as the manifest records them. */
  get failures(): DatasetFailure[] {
    return [...this.errors.entries()].sort((a, b) => a[0] - b[0]).map(([index, error]) => ({ index, source: this.sources[index], error }));
  }

  /** Indices neither stored nor failed: a run not finished yet, or a part not run. */
  get missing(): number[] {
    const out: number[] = [];
    this.shardOf.forEach((s, i) => s === NONE && out.push(i));
    return out;
  }

  /** Is image `index` stored. */
  has(index: number): boolean {
    return index >= 0 && index < this.length && this.shardOf[index] >= 0;
  }

  /** Source path of image `index` (stored or failed). */
  source(index: number): string | undefined {
    return this.sources[index];
  }

  /** Tensor names and shapes of image `index`, without reading them. */
  shapes(index: number): Record<string, number[]> {
    this.check(index);
    return this.specs[this.specOf[index]];
  }

  /** Image `index`: its tensors (all, or the `names` given), read from its shard only. */
  read(index: number, names?: string[]): EncodedImage {
    const spec = this.shapes(index);
    const wanted = names ?? Object.keys(spec);
    const file = this.shard(this.shardOf[index]);
    const tensors: Record<string, StoredTensor> = {};
    for (const name of wanted) {
      if (!(name in spec)) throw new ConfigError(`image ${index} has no tensor "${name}" (it has ${Object.keys(spec).join(', ')})`);
      const key = `images.${index}.${name}`;
      const { dtype, shape } = file.info(key);
      tensors[name] = { dtype, shape, data: file.readFloat32(key) };
    }
    return { index, source: this.sources[index], imageSize: [this.sizes[2 * index], this.sizes[2 * index + 1]], tensors };
  }

  /** The stored images in index order (failed and missing ones skipped). */
  async *[Symbol.asyncIterator](): AsyncGenerator<EncodedImage> {
    for (let i = 0; i < this.length; i++) if (this.has(i)) yield this.read(i);
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
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new ConfigError(`batches: batchSize must be a positive integer, got ${batchSize}`);
    if (!Number.isInteger(shardsInMemory) || shardsInMemory < 1) throw new ConfigError(`batches: shardsInMemory must be a positive integer, got ${shardsInMemory}`);
    const stored: number[] = [];
    for (let i = 0; i < this.length; i++) {
      if (!this.has(i)) continue;
      if (!(name in this.specs[this.specOf[i]])) throw new ConfigError(`batches: image ${i} has no tensor "${name}" (it has ${Object.keys(this.specs[this.specOf[i]]).join(', ')})`);
      stored.push(i);
    }
    if (options.shuffle === false) {
      for (let k = 0; k < stored.length; k += batchSize) {
        const chunk = stored.slice(k, k + batchSize);
        if (chunk.length < batchSize && options.dropLast) return;
        yield this.stack(chunk.map((i) => this.one(i, name)), name);
      }
      return;
    }
    const rand = seededRandom(options.seed ?? 0);
    const byShard = new Map<number, number[]>();
    for (const i of stored) {
      const list = byShard.get(this.shardOf[i]) ?? [];
      byShard.set(this.shardOf[i], list);
      list.push(i);
    }
    const order = shuffleInPlace([...byShard.keys()].sort((a, b) => a - b), rand);
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

  private one(index: number, name: string): { index: number; data: Float32Array; shape: number[] } {
    const t = this.read(index, [name]).tensors[name];
    return { index, data: t.data, shape: t.shape };
  }

  /** Images' tensors as one [B, ...] tensor: a leading 1 (one tile) is the batch row. */
  private stack(items: { index: number; data: Float32Array; shape: number[] }[], name: string): Batch {
    const rowShape = (s: number[]) => (s[0] === 1 ? s.slice(1) : s);
    const row = rowShape(items[0].shape);
    for (const it of items) {
      if (!tf.util.arraysEqual(rowShape(it.shape), row)) {
        throw new ConfigError(`batches: "${name}" of image ${it.index} is ${shapeText(it.shape)} and of image ${items[0].index} ${shapeText(items[0].shape)}: they cannot be stacked (anyres tile counts or merged lengths differ); use batchSize 1 or read images one by one`);
      }
    }
    const per = items[0].data.length;
    const data = new Float32Array(per * items.length);
    items.forEach((it, k) => data.set(it.data, k * per));
    return { indices: items.map((it) => it.index), tensor: tf.tensor(data, [items.length, ...row]) };
  }

  private check(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) throw new ConfigError(`image index ${index} is out of range (the dataset has ${this.length} inputs)`);
    if (this.shardOf[index] === FAILED) throw new ConfigError(`image ${index} (${this.sources[index]}) failed to encode: ${this.errors.get(index)}`);
    if (this.shardOf[index] === NONE) throw new ConfigError(`image ${index} is not in ${this.dir} (not encoded yet${this.parts.length > 1 || this.parts[0].info.part ? ', or its part has not run' : ''})`);
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
      f = SafetensorsFile.open(this.shardFiles[id]);
    }
    this.open.set(id, f);
    return f;
  }
}

/** Opens an encoded dataset folder (see EncodedDataset). */
export function openEncodedDataset(dir: string): EncodedDataset {
  return EncodedDataset.open(dir);
}
