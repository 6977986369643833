/**
 * Dataset-scale encoding: an image list streamed through the model into a dataset folder (format in
 * dataset_format.ts). Images are decoded a few ahead of the model and encoded one unit at a time (on
 * this thread or the worker pool); only the shard being filled is held, so memory does not grow with
 * the number of images. Shards are written atomically and in order, and each one's manifest lines are
 * appended only after it is in place: a killed run loses at most the shard in progress, and running
 * the same job again does only what is missing.
 */
import * as fs from 'fs';
import * as path from 'path';
import { ConfigError, CheckpointError } from '../errors';
import { appendFileDurable, writeFileAtomic } from '../io/atomic';
import { toHalfBits } from '../io/dtype';
import { TensorToWrite, writeSafetensors } from '../io/safetensors';
import { packageVersion } from '../version';
import {
  DATASET_JSON, DatasetInfo, FORMAT, FORMAT_VERSION, MANIFEST, ManifestEntry, SHARD_FORMAT, STORED_DTYPES, StoredDType, TEMP_NAME,
  canonicalJson, identityDifferences, listParts, listShards, partDirName, readDatasetInfo, readManifest, shardEntries, shardName, shardNumber,
} from './dataset_format';
import { EncodeUnit, ImageFailure, ImageJobOptions, ImageSettings, PreparedImage, SaveName, defaultImageOutput, encodeUnits, imageSettings, prepareImage } from './encode_job';
import { inputFileProblem } from './inputs';
import { LlavaVision } from './llava_vision';
import { EncoderPool, workerSpec } from './worker_pool';

/**
 * Images per shard. 64 keeps a shard of LLaVA-1.5 `merged` tokens (576 × 4096 per image) at ~600 MB
 * in F32 / ~300 MB in F16 — the size range dataset readers stream well, and well under the model's own
 * ~2.3 GB in memory while it fills — and a kill then costs at most ~20 minutes of ViT-L work on a
 * 2-core machine; LLaVA's 558K pretraining images make ~8.7K files. Lower it for big outputs
 * (`hidden_states` of ViT-L are ~59 MB per image in F32).
 */
export const DEFAULT_SHARD_SIZE = 64;

export interface DatasetPart {
  /** K in 0..count-1: this run encodes the inputs whose index ≡ K (mod count). */
  index: number;
  count: number;
}

export interface DatasetProgress {
  /** Images of this part already in the folder when the run started. */
  skipped: number;
  /** Images finished by this run (encoded or failed). */
  done: number;
  /** Images this run has to do. */
  todo: number;
  /** Failed images of this part, earlier runs included. */
  failed: number;
}

export interface DatasetWriteOptions extends Omit<ImageJobOptions, 'onProgress'> {
  /** Stored dtype of every output (rounded to nearest even from float32). Default F32. */
  dtype?: StoredDType;
  /** Images per shard; default DEFAULT_SHARD_SIZE. Can change between runs (it does not change any value). */
  shardSize?: number;
  /** Encode only one part of the inputs, into `<dir>/part-K-of-N/`. */
  part?: DatasetPart;
  onProgress?: (progress: DatasetProgress) => void;
  /** Called for each image that cannot be encoded (it is recorded in the manifest too). */
  onFailure?: (failure: ImageFailure) => void;
}

export interface DatasetWriteSummary {
  /** The folder written: `dir`, or its part folder. */
  dir: string;
  /** Images of this part (all of them without `part`). */
  images: number;
  /** Already in the folder before this run. */
  skipped: number;
  /** Encoded by this run. */
  encoded: number;
  /** Failed in this run. */
  failures: ImageFailure[];
  /** Failed images of this part, earlier runs included. */
  failedTotal: number;
  /** Shards written by this run. */
  shards: number;
}

type ImageResult = { tensors: Record<string, TensorToWrite>; imageSize: [number, number] } | { error: string };

/**
 * Checks, without writing anything, that `dir` can hold this dataset (or part): not a file, not a
 * folder of something else, not split into a different number of parts. Returns the folder the run
 * writes. `label` names the folder in messages (e.g. `--out-dir`).
 */
export function checkDatasetDir(dir: string, part?: DatasetPart, label = 'dataset folder'): string {
  if (part) checkPart(part);
  let stat: fs.Stats | null = null;
  try {
    stat = fs.statSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOTDIR') throw new ConfigError(`${label} ${dir}: a part of its path is a file`);
  }
  if (stat && !stat.isDirectory()) throw new ConfigError(`${label} ${dir} is a file, not a folder`);
  const partDir = part ? path.join(dir, partDirName(part.index, part.count)) : dir;
  if (!stat) return partDir;
  const parts = listParts(dir);
  if (part) {
    if (fs.existsSync(path.join(dir, DATASET_JSON))) {
      throw new ConfigError(`${label} ${dir} holds a dataset that is not split into parts; part ${part.index} of ${part.count} would mix with it (use another folder)`);
    }
    const other = parts.find((p) => p.count !== part.count);
    if (other) throw new ConfigError(`${label} ${dir} is split into ${other.count} parts (${other.name}), this run is part ${part.index} of ${part.count}`);
    const strangers = fs.readdirSync(dir).filter((f) => !parts.some((p) => p.name === f));
    if (strangers.length) throw new ConfigError(`${label} ${dir} holds other files (${strangers.slice(0, 3).join(', ')}): give a new or empty folder`);
    if (fs.existsSync(partDir)) checkOwnFolder(partDir, label);
  } else {
    if (parts.length) throw new ConfigError(`${label} ${dir} is split into ${parts[0].count} parts (${parts.map((p) => p.name).join(', ')}): add to one with --part K/${parts[0].count}`);
    checkOwnFolder(dir, label);
  }
  return partDir;
}

/** An existing folder must be empty or hold a dataset (dataset.json): we never write shards among someone's files. */
function checkOwnFolder(dir: string, label: string): void {
  const names = fs.readdirSync(dir).filter((f) => !TEMP_NAME.test(f));
  if (names.length && !names.includes(DATASET_JSON)) {
    throw new ConfigError(`${label} ${dir} is not empty and holds no ${DATASET_JSON} (${names.slice(0, 3).join(', ')}${names.length > 3 ? ', ...' : ''}): give a new or empty folder`);
  }
}

function checkPart(part: DatasetPart): void {
  if (!Number.isInteger(part.count) || part.count < 1) throw new ConfigError(`part count must be a positive integer, got ${part.count}`);
  if (!Number.isInteger(part.index) || part.index < 0 || part.index >= part.count) {
    throw new ConfigError(`part ${part.index} of ${part.count} is out of range: K must be 0..${part.count - 1} (counted from 0, like SLURM_ARRAY_TASK_ID with --array=0-${part.count - 1} and JOB_COMPLETION_INDEX)`);
  }
}

/**
 * Encodes `inputs` (image paths; their order is the global index) into the dataset folder `dir`,
 * resuming what an earlier run of the same job left. A bad input (missing, a folder, empty,
 * undecodable) is recorded as that image's failure; the others are still written.
 */
export async function writeEncodedDataset(model: LlavaVision, inputs: string[], dir: string, options: DatasetWriteOptions): Promise<DatasetWriteSummary> {
  const shardSize = options.shardSize ?? DEFAULT_SHARD_SIZE;
  if (!Number.isInteger(shardSize) || shardSize < 1) throw new ConfigError(`shard size must be a positive integer, got ${shardSize}`);
  const dtype = options.dtype ?? 'F32';
  if (!STORED_DTYPES.includes(dtype)) throw new ConfigError(`dtype must be one of ${STORED_DTYPES.join(', ')}, got ${String(dtype)}`);
  const workers = options.workers ?? 1;
  if (!Number.isInteger(workers) || workers < 1) throw new ConfigError(`workers must be a positive integer, got ${workers}`);
  const batchSize = options.batchSize ?? 1;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ConfigError(`batch size must be a positive integer, got ${batchSize}`);
  if (inputs.length === 0) throw new ConfigError('no images to encode');
  const partDir = checkDatasetDir(dir, options.part);
  const settings = imageSettings(model, options);
  const outputs = options.outputs ?? [defaultImageOutput(model)];
  const jobOptions = { outputs, batchSize, interpolatePosEncoding: options.interpolatePosEncoding, mergeType: settings.mergeType };
  encodeUnits(model, [], jobOptions); // checks the outputs against the model before anything is written

  const info = datasetInfo(model, settings, { ...options, outputs }, dtype, inputs.length, shardSize);
  openDatasetFolder(partDir, info);
  const { images, todo, failedBefore, nextShard } = planRun(partDir, inputs, options.part);
  const plans: number[][] = [];
  for (let k = 0; k < todo.length; k += shardSize) plans.push(todo.slice(k, k + shardSize));
  const summary: DatasetWriteSummary = { dir: partDir, images, skipped: images - todo.length, encoded: 0, failures: [], failedTotal: failedBefore, shards: 0 };

  // Results wait here until their shard is complete; shards are written in order.
  const results = new Map<number, ImageResult>();
  let written = 0;
  const metadata = { format: SHARD_FORMAT, format_version: String(FORMAT_VERSION), producer: info.producer, dataset: canonicalJson({ model: info.model, options: info.options, part: info.part }) };
  const resolve = (index: number, result: ImageResult) => {
    results.set(index, result);
    if ('error' in result) summary.failedTotal++;
    else summary.encoded++;
    options.onProgress?.({ skipped: summary.skipped, done: summary.encoded + summary.failures.length, todo: todo.length, failed: summary.failedTotal });
    while (written < plans.length && plans[written].every((i) => results.has(i))) {
      writeShard(partDir, shardName(nextShard + written), plans[written], results, inputs, metadata);
      written++;
      summary.shards++;
    }
  };
  const fail = (failure: ImageFailure) => {
    summary.failures.push(failure);
    options.onFailure?.(failure);
    resolve(failure.index, { error: failure.message });
  };
  const deliver = (tensors: Record<string, TensorToWrite>, units: EncodeUnit[]) => {
    const byImage = new Map<number, Record<string, TensorToWrite>>(units.map((u) => [u.index, {}]));
    for (const [key, t] of Object.entries(tensors)) {
      const m = /^images\.(\d+)\.(.+)$/.exec(key)!;
      byImage.get(Number(m[1]))![m[2]] = stored(t, dtype);
    }
    for (const u of units) resolve(u.index, { tensors: byImage.get(u.index)!, imageSize: u.imageSize! });
  };

  const prepared = prefetch(todo.length, 2 * workers + 2, (k) => prepareInput(model, inputs[todo[k]], todo[k], settings));
  await encodeStream(model, prepared, { workers: Math.min(workers, Math.max(todo.length, 1)), batchSize, jobOptions }, deliver, fail);
  if (written !== plans.length) throw new Error(`internal: ${plans.length - written} shard(s) of ${partDir} were not written`);
  return summary;
}

/**
 * Runs the prepared images through the model as they come: on this thread in groups of up to
 * `batchSize` tiles (as encodeUnits groups them), or one at a time on a pool of `workers` instances.
 * Encoded units go to `onEncoded` (out of order with workers), failures to `onFailure`.
 */
async function encodeStream(
  model: LlavaVision,
  next: () => Promise<PreparedImage | null>,
  options: { workers: number; batchSize: number; jobOptions: Parameters<typeof encodeUnits>[2] },
  onEncoded: (tensors: Record<string, TensorToWrite>, units: EncodeUnit[]) => void,
  onFailure: (failure: ImageFailure) => void,
): Promise<void> {
  const { workers, batchSize, jobOptions } = options;
  if (workers > 1) {
    const pool = await EncoderPool.start(workers - 1, workerSpec(model), (u) => encodeUnits(model, [u], jobOptions), jobOptions);
    try {
      const nextUnit = async (): Promise<EncodeUnit | null> => {
        for (let p = await next(); p; p = await next()) {
          if (!('failure' in p)) return p.unit;
          onFailure(p.failure);
        }
        return null;
      };
      await pool.run(nextUnit, (unit, tensors) => onEncoded(tensors, [unit]));
    } finally {
      await pool.close();
    }
    return;
  }
  let group: EncodeUnit[] = [];
  let tiles = 0;
  const flush = () => {
    const units = group;
    [group, tiles] = [[], 0];
    if (units.length) onEncoded(encodeUnits(model, units, jobOptions), units);
  };
  for (let p = await next(); p; p = await next()) {
    if ('failure' in p) {
      onFailure(p.failure);
      continue;
    }
    if (group.length && tiles + p.unit.shape[0] > batchSize) flush();
    group.push(p.unit);
    tiles += p.unit.shape[0];
    if (tiles >= batchSize) flush();
  }
  flush();
}

/**
 * What this run has to do: this part's indices not yet in the folder (after the folder is made
 * consistent). Its own function so the manifest's entries are garbage once planned, not held for the run.
 */
function planRun(dir: string, inputs: string[], part?: DatasetPart): { images: number; todo: number[]; failedBefore: number; nextShard: number } {
  const { done, nextShard } = recover(dir);
  checkSources(dir, done, inputs, part);
  const mine = inputs.map((_, i) => i).filter((i) => !part || i % part.count === part.index);
  let failedBefore = 0;
  for (const e of done.values()) if (e.error !== undefined) failedBefore++;
  return { images: mine.length, todo: mine.filter((i) => !done.has(i)), failedBefore, nextShard };
}

/** The input checked as a file first (so a folder, a pipe or an empty file is a clear failure, never a hang in the decoder). */
async function prepareInput(model: LlavaVision, source: string, index: number, settings: ImageSettings): Promise<PreparedImage> {
  const problem = inputFileProblem(source);
  if (problem) return { index, failure: { index, source, message: `${source}: ${problem}` } };
  return prepareImage(model, source, index, settings);
}

/**
 * `count` results of `start(k)`, handed out in order by successive calls (null after the last), with
 * up to `depth` started ahead, so decoding the next images overlaps encoding the current one.
 * Safe for concurrent callers: each call takes the next result in order.
 */
function prefetch<T>(count: number, depth: number, start: (k: number) => Promise<T>): () => Promise<T | null> {
  const started: Promise<T>[] = [];
  let next = 0;
  const fill = () => {
    while (started.length < depth && next < count) {
      const p = start(next++);
      p.catch(() => undefined); // rejections surface when taken; not an unhandled rejection while queued
      started.push(p);
    }
  };
  return async () => {
    fill();
    const p = started.shift();
    fill();
    return p ?? null;
  };
}

/** A float32 output in the dataset's stored dtype (F16/BF16: round to nearest even). */
function stored(t: TensorToWrite, dtype: StoredDType): TensorToWrite {
  if (dtype === 'F32' || t.dtype !== 'F32') return t;
  return { dtype, shape: t.shape, data: toHalfBits(t.data as Float32Array, dtype) };
}

function writeShard(dir: string, name: string, indices: number[], results: Map<number, ImageResult>, inputs: string[], metadata: Record<string, string>): void {
  const tensors: Record<string, TensorToWrite> = {};
  const entries: ManifestEntry[] = indices.map((index) => {
    const r = results.get(index)!;
    results.delete(index);
    const source = inputs[index];
    if ('error' in r) return { index, source, shard: name, error: r.error };
    const shapes: Record<string, number[]> = {};
    for (const key of Object.keys(r.tensors).sort()) {
      tensors[`images.${index}.${key}`] = r.tensors[key];
      shapes[key] = r.tensors[key].shape;
    }
    return { index, source, shard: name, image_size: r.imageSize, tensors: shapes };
  });
  writeSafetensors(path.join(dir, name), tensors, { ...metadata, entries: JSON.stringify(entries) });
  // Only now that the shard is in place: a manifest line never points at a shard that does not exist.
  appendFileDurable(path.join(dir, MANIFEST), Buffer.from(entries.map((e) => JSON.stringify(e) + '\n').join(''), 'utf8'));
}

function datasetInfo(model: LlavaVision, settings: ImageSettings, options: DatasetWriteOptions & { outputs: SaveName[] }, dtype: StoredDType, count: number, shardSize: number): DatasetInfo {
  return {
    format: FORMAT,
    format_version: FORMAT_VERSION,
    producer: `llava-vision-tfjs ${packageVersion()}`,
    model: {
      dir: path.resolve(model.modelDir),
      layout: model.layout,
      vision_tower: model.layout === 'llava' ? path.resolve(model.tower.visionTowerName) : null,
      projector: model.loadOptions.projector ? path.resolve(model.loadOptions.projector) : null,
      projector_type: model.projectorConfig?.type ?? null,
      backend: model.backend,
    },
    options: {
      save: [...options.outputs],
      dtype,
      aspect: settings.aspect,
      grid_pinpoints: settings.aspect === 'anyres' ? settings.gridPinpoints ?? null : null,
      merge: settings.mergeType,
      select_layer: model.settings.selectLayer,
      select_feature: model.settings.selectFeature,
      interpolate_pos_encoding: !!options.interpolatePosEncoding,
      auto_orient: !!options.autoOrient,
    },
    part: options.part ? { index: options.part.index, count: options.part.count } : null,
    inputs: { count },
    shard_size: shardSize,
  };
}

/** A new folder gets dataset.json; an existing dataset must have been made the same way (never a mixed dataset). */
function openDatasetFolder(dir: string, info: DatasetInfo): void {
  const existing = readDatasetInfo(dir);
  if (existing) {
    const diff = identityDifferences(existing, info);
    if (diff.length) {
      throw new ConfigError(`${dir} holds a dataset made with other settings, and datasets are never mixed: ${diff.join('; ')} (same options to resume it, or another folder)`);
    }
    if (existing.inputs?.count === info.inputs.count && existing.shard_size === info.shard_size) return;
  }
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new ConfigError(`cannot create the dataset folder ${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  writeFileAtomic(path.join(dir, DATASET_JSON), Buffer.from(JSON.stringify(info, null, 2) + '\n', 'utf8'));
}

/**
 * What the folder already holds, with the manifest made to agree with the shards: a torn last line
 * (kill mid-append) or a shard renamed in place whose lines never made it (kill between the two) are
 * rebuilt from the shards' own metadata; lines of a shard that was deleted are dropped (its images are
 * done again). Temp files of dead writers are removed.
 */
function recover(dir: string): { done: Map<number, ManifestEntry>; nextShard: number } {
  removeStaleTemps(dir);
  const shards = listShards(dir);
  const onDisk = new Set(shards);
  const { entries, intact } = readManifest(dir);
  let rewrite = !intact;
  const byShard = new Map<string, ManifestEntry[]>();
  for (const e of entries) {
    if (!onDisk.has(e.shard)) {
      rewrite = true;
      continue;
    }
    if (!byShard.has(e.shard)) byShard.set(e.shard, []);
    byShard.get(e.shard)!.push(e);
  }
  // Appends are sequential, so only the last shard listed can be listed in part.
  const lastListed = [...byShard.keys()].pop();
  for (const shard of shards) {
    if (byShard.has(shard) && shard !== lastListed) continue;
    const own = shardEntries(path.join(dir, shard));
    if (byShard.get(shard)?.length !== own.length) {
      byShard.set(shard, own);
      rewrite = true;
    }
  }
  const done = new Map<number, ManifestEntry>();
  const ordered = shards.filter((s) => byShard.has(s));
  for (const shard of ordered) {
    for (const e of byShard.get(shard)!) {
      const other = done.get(e.index);
      if (other) throw new CheckpointError(`${dir}: image ${e.index} is in both ${other.shard} and ${shard}; delete one of the two shards and run again`);
      done.set(e.index, e);
    }
  }
  if (rewrite) {
    const lines = ordered.flatMap((s) => byShard.get(s)!).map((e) => JSON.stringify(e) + '\n').join('');
    writeFileAtomic(path.join(dir, MANIFEST), Buffer.from(lines, 'utf8'));
  }
  const nextShard = shards.length ? shardNumber(shards[shards.length - 1])! + 1 : 0;
  return { done, nextShard };
}

/** Temp files whose writer is gone (killed mid-write): safe to delete. A live writer's are left alone. */
function removeStaleTemps(dir: string): void {
  for (const name of fs.readdirSync(dir)) {
    const m = TEMP_NAME.exec(name);
    if (!m || isAlive(Number(m[1]))) continue;
    try {
      fs.unlinkSync(path.join(dir, name));
    } catch {
      // gone already, or not ours to delete: harmless
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** An image already stored must be the same input at the same index now: otherwise the indices have shifted. */
function checkSources(dir: string, done: Map<number, ManifestEntry>, inputs: string[], part?: DatasetPart): void {
  for (const e of done.values()) {
    const now = inputs[e.index];
    if (part && e.index % part.count !== part.index) {
      throw new CheckpointError(`${dir}: holds image ${e.index}, which is not in part ${part.index} of ${part.count}`);
    }
    if (now !== e.source) {
      const what = now === undefined ? `and this run has only ${inputs.length} inputs` : `and is ${now} now`;
      throw new ConfigError(`${dir}: image ${e.index} was ${e.source} when this dataset was written, ${what}: the inputs changed (same inputs in the same order to resume, or another folder)`);
    }
  }
}
