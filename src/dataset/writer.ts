/**
 * Dataset-scale encoding: an image list streamed through the model into a dataset folder (format in
 * format.ts). Images are decoded a few ahead of the model and encoded one unit at a time (on
 * this thread or the worker pool); only the shard being filled is held, so memory does not grow with
 * the number of images. Shards are written atomically and in order, and each one's manifest lines are
 * appended only after it is in place: a killed run loses at most the shard in progress, and running
 * the same job again does only what is missing.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { ConfigError, CheckpointError, quote } from '../errors';
import { appendFileDurable, parseTempName, writeAllSync, writeFileAtomic } from '../io/atomic';
import { toHalfBits } from '../io/dtype';
import { FolderLock, FolderLockedError, LOCK_LEASE_MS, heldMessage, lockState } from '../io/folder_lock';
import { hostTag } from '../io/host';
import { staleness } from '../io/lock_file';
import { TensorToWrite, writeSafetensors } from '../io/safetensors';
import { packageVersion } from '../version';
import {
  DATASET_JSON,
  DatasetInfo,
  FORMAT,
  IDENTITY_FIELDS,
  FORMAT_VERSION,
  MANIFEST,
  MAX_INPUTS,
  MAX_PARTS,
  MAX_SOURCE_BYTES,
  ManifestEntry,
  STORED_DTYPES,
  StoredDType,
  identityDifferences,
  isOwnTempName,
  isTransientName,
  listParts,
  listShards,
  numericsOf,
  partDirName,
  readDatasetInfo,
  readManifest,
  readShardRecord,
  settingsDigest,
  shardName,
  shardNumber,
  shardMetadata,
} from './format';
import {
  Batches,
  batchSizeOf,
  EncodeUnit,
  ImageFailure,
  ImageJobOptions,
  ImageSettings,
  PreparedImage,
  SaveName,
  defaultImageOutput,
  encodeUnits,
  imageSettings,
  prepareImage,
  workerCount,
  workerSpec,
} from '../api/encode_job';
import { inputFileProblem } from './inputs';
import { LlavaVision } from '../api/llava_vision';
import { modelDigest, planLoad } from '../loading/load_plan';
import { EncoderPool } from '../parallel/pool/worker_pool';

/**
 * Images per shard. 64 keeps a shard of LLaVA-1.5 `merged` tokens (576 × 4096 floats per image) in
 * the size range dataset readers stream well and below the model's own memory while it fills, bounds
 * the ViT-L work a kill loses, and turns LLaVA's 558K pretraining images into thousands of files, not
 * hundreds of thousands. Lower it for big outputs (`hidden_states` of ViT-L: 25 × 577 × 1024 floats per
 * image).
 */
export const DEFAULT_SHARD_SIZE = 64;

/** The first failures of a run kept in its summary: a run over a million missing files must not hold a million messages (the manifest has them all). */
export const FAILURES_KEPT = 1000;
/**
 * Most characters of manifest entries in one shard's __metadata__: a shard that would carry more is
 * split, well inside the 100 MB header the safetensors reader accepts.
 */
const MAX_SHARD_ENTRIES_CHARS = 32 * 1024 * 1024;

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
  /** Failed in this run: the first FAILURES_KEPT of them (all are in the manifest). */
  failures: ImageFailure[];
  /** How many failed in this run. */
  failed: number;
  /** Failed images of this part, earlier runs included. */
  failedTotal: number;
  /** Shards written by this run. */
  shards: number;
}

type ImageResult = { tensors: Record<string, TensorToWrite>; imageSize: [number, number] } | { error: string };

/** What names this writer in lock files (and in the message of a run it refuses). */
const LOCK_PURPOSE = 'an encode into this dataset folder';

/**
 * Checks, without writing anything, that `dir` can hold this dataset (or part): not a file, not a
 * folder of something else, not split into a different number of parts, no links where the writer
 * writes, and no live run writing it. Returns the folder the run writes. `label` names the folder in
 * messages (e.g. `--out-dir`).
 */
export function checkDatasetDir(dir: string, part?: DatasetPart, label = 'dataset folder'): string {
  if (part) checkPart(part);
  let stat: fs.Stats | null = null;
  try {
    stat = fs.statSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOTDIR')
      throw new ConfigError(`${label} ${dir}: a part of its path is a file`);
  }
  if (stat && !stat.isDirectory()) throw new ConfigError(`${label} ${dir} is a file, not a folder`);
  const partDir = part ? path.join(dir, partDirName(part.index, part.count)) : dir;
  if (!stat) return partDir;
  const parts = listParts(dir, 'refuse');
  if (part) {
    if (fs.existsSync(path.join(dir, DATASET_JSON))) {
      throw new ConfigError(
        `${label} ${dir} holds a dataset that is not split into parts; part ${part.index} of ${part.count} would mix with it (use another folder)`,
      );
    }
    const other = parts.find((p) => p.count !== part.count);
    if (other)
      throw new ConfigError(
        `${label} ${dir} is split into ${other.count} parts (${other.name}), this run is part ${part.index} of ${part.count}`,
      );
    const strangers = fs.readdirSync(dir).filter((f) => !parts.some((p) => p.name === f));
    if (strangers.length)
      throw new ConfigError(
        `${label} ${dir} holds other files (${strangers.slice(0, 3).join(', ')}): give a new or empty folder`,
      );
    if (fs.existsSync(partDir)) checkOwnFolder(partDir, label);
  } else {
    if (parts.length)
      throw new ConfigError(
        `${label} ${dir} is split into ${parts[0].count} parts (${parts.map((p) => p.name).join(', ')}): add to one with --part K/${parts[0].count}`,
      );
    checkOwnFolder(dir, label);
  }
  return partDir;
}

/**
 * An existing folder must be empty or hold a dataset (dataset.json): we never write shards among
 * someone's files (our own temp and lock files aside, nothing counts as empty). Its files are its own:
 * a link in the name of one the writer writes is refused, never written through. A live run writing
 * it is refused at once, naming it.
 */
function checkOwnFolder(dir: string, label: string, locked = false): void {
  const held = locked ? null : lockState(dir);
  if (held && !held.stale) throw new FolderLockedError(heldMessage(dir, held, 'this run'));
  const names = fs.readdirSync(dir).filter((f) => !isTransientName(f));
  if (names.length && !names.includes(DATASET_JSON)) {
    throw new ConfigError(
      `${label} ${dir} is not empty and holds no ${DATASET_JSON} (${names.slice(0, 3).join(', ')}${names.length > 3 ? ', ...' : ''}): give a new or empty folder`,
    );
  }
  for (const name of [DATASET_JSON, MANIFEST]) {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(path.join(dir, name));
    } catch {
      continue;
    }
    if (!st.isFile()) {
      throw new ConfigError(
        `${path.join(dir, name)} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a regular file'}: a dataset folder's files are its own, never written through a link (replace it with the file itself)`,
      );
    }
  }
}

function checkPart(part: DatasetPart): void {
  if (!Number.isSafeInteger(part.count) || part.count < 1 || part.count > MAX_PARTS)
    throw new ConfigError(`part count must be an integer 1..${MAX_PARTS}, got ${part.count}`);
  if (!Number.isSafeInteger(part.index) || part.index < 0 || part.index >= part.count) {
    throw new ConfigError(
      `part ${part.index} of ${part.count} is out of range: K must be 0..${part.count - 1} (counted from 0, like SLURM_ARRAY_TASK_ID with --array=0-${part.count - 1} and JOB_COMPLETION_INDEX)`,
    );
  }
}

/**
 * Encodes `inputs` (image paths; their order is the global index) into the dataset folder `dir`,
 * resuming what an earlier run of the same job left. A bad input (missing, a folder, empty,
 * undecodable) is recorded as that image's failure; the others are still written. One run writes a
 * folder at a time (a lock file, io/folder_lock.ts): a second is refused at once, naming the first.
 */
export async function writeEncodedDataset(
  model: LlavaVision,
  inputs: string[],
  dir: string,
  options: DatasetWriteOptions,
): Promise<DatasetWriteSummary> {
  const shardSize = options.shardSize ?? DEFAULT_SHARD_SIZE;
  if (!Number.isSafeInteger(shardSize) || shardSize < 1)
    throw new ConfigError(`shard size must be a positive integer, got ${shardSize}`);
  const dtype = options.dtype ?? 'F32';
  if (!STORED_DTYPES.includes(dtype))
    throw new ConfigError(`dtype must be one of ${STORED_DTYPES.join(', ')}, got ${String(dtype)}`);
  const workers = workerCount(options);
  const batchSize = batchSizeOf(options);
  if (inputs.length === 0) throw new ConfigError('no images to encode');
  if (inputs.length > MAX_INPUTS)
    throw new ConfigError(`${inputs.length} inputs: a dataset holds at most ${MAX_INPUTS}`);
  checkSources(inputs);
  const partDir = checkDatasetDir(dir, options.part);
  const settings = imageSettings(model, options);
  const outputs = options.outputs ?? [defaultImageOutput(model)];
  const jobOptions = {
    outputs,
    batchSize,
    interpolatePosEncoding: options.interpolatePosEncoding,
    mergeType: settings.mergeType,
  };
  encodeUnits(model, [], jobOptions); // checks the outputs against the model before anything is written
  const info = await datasetInfoFor(model, inputs.length, { ...options, outputs, dtype, shardSize });

  makeFolder(partDir);
  const lock = FolderLock.acquire(partDir, LOCK_PURPOSE);
  try {
    return await writeLocked(model, inputs, partDir, info, lock, {
      ...options,
      outputs,
      batchSize,
      workers,
      shardSize,
      dtype,
      settings,
      jobOptions,
    });
  } finally {
    lock.release();
  }
}

/** The part of writeEncodedDataset that runs holding the folder's lock. */
async function writeLocked(
  model: LlavaVision,
  inputs: string[],
  partDir: string,
  info: DatasetInfo,
  lock: FolderLock,
  options: DatasetWriteOptions & {
    outputs: SaveName[];
    batchSize: number;
    workers: number;
    shardSize: number;
    dtype: StoredDType;
    settings: ImageSettings;
    jobOptions: Parameters<typeof encodeUnits>[2];
  },
): Promise<DatasetWriteSummary> {
  const { shardSize, dtype, workers, batchSize, settings, jobOptions } = options;
  const { images, todo, failedBefore, nextShard } = resumeDatasetFolder(partDir, info, inputs, options.part);
  const summary: DatasetWriteSummary = {
    dir: partDir,
    images,
    skipped: images - todo.length,
    encoded: 0,
    failures: [],
    failed: 0,
    failedTotal: failedBefore,
    shards: 0,
  };

  // Results wait here until their shard is complete; shards are written in order. Shard p holds
  // todo[p * shardSize ...], and `remaining[p]` counts its images not done yet (no rescan per image).
  const planCount = Math.ceil(todo.length / shardSize);
  const remaining = new Int32Array(planCount).fill(shardSize);
  if (planCount) remaining[planCount - 1] = todo.length - (planCount - 1) * shardSize;
  const results = new Map<number, ImageResult>();
  let written = 0;
  let shardNumber = nextShard;
  const metadata = shardMetadata(info);
  const resolve = (index: number, result: ImageResult) => {
    const k = positionOf(todo, index);
    results.set(index, result);
    remaining[Math.floor(k / shardSize)]--;
    if ('error' in result) summary.failedTotal++;
    else summary.encoded++;
    options.onProgress?.({
      skipped: summary.skipped,
      done: summary.encoded + summary.failed,
      todo: todo.length,
      failed: summary.failedTotal,
    });
    while (written < planCount && remaining[written] === 0) {
      const indices = todo.slice(written * shardSize, Math.min(todo.length, (written + 1) * shardSize));
      lock.check(); // a run taken over (suspended past the lease) stops here, before writing beside the new holder
      shardNumber = writeShard(partDir, shardNumber, indices, results, inputs, metadata);
      written++;
      summary.shards = shardNumber - nextShard;
    }
  };
  const fail = (failure: ImageFailure) => {
    summary.failed++;
    if (summary.failures.length < FAILURES_KEPT) summary.failures.push(failure);
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

  const prepared = prefetch(todo.length, 2 * workers + 2, (k) =>
    prepareInput(model, inputs[todo[k]], todo[k], settings),
  );
  await encodeStream(
    model,
    prepared,
    { workers: Math.min(workers, Math.max(todo.length, 1)), batchSize, jobOptions },
    deliver,
    fail,
  );
  if (written !== planCount)
    throw new Error(`internal: ${planCount - written} shard(s) of ${partDir} were not written`);
  return summary;
}

/**
 * Every input a path string no longer than a path can be (MAX_SOURCE_BYTES of UTF-8): a longer one is
 * no image, and its manifest entry (source and error message) could outgrow what a shard header holds.
 */
function checkSources(inputs: string[]): void {
  for (let i = 0; i < inputs.length; i++) {
    const s = inputs[i];
    if (typeof s !== 'string') throw new ConfigError(`input ${i} is ${s === null ? 'null' : typeof s}, not a path`);
    if (s.length > MAX_SOURCE_BYTES / 3 && Buffer.byteLength(s) > MAX_SOURCE_BYTES) {
      throw new ConfigError(
        `input ${i} is ${Buffer.byteLength(s)} bytes long, longer than any path (${MAX_SOURCE_BYTES}): ${quote(s, 60)}`,
      );
    }
  }
}

/** Position of `index` in the ascending list `todo` (binary search). */
function positionOf(todo: number[], index: number): number {
  let [lo, hi] = [0, todo.length - 1];
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (todo[mid] === index) return mid;
    if (todo[mid] < index) lo = mid + 1;
    else hi = mid - 1;
  }
  throw new Error(`internal: image ${index} is not planned in this run`);
}

/** Creates the folder (and its parents); a part folder is never a link (checkDatasetDir refused one). */
function makeFolder(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new ConfigError(
      `cannot create the dataset folder ${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
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
    const pool = await EncoderPool.start(
      workers - 1,
      workerSpec(model),
      (u: EncodeUnit) => encodeUnits(model, [u], jobOptions),
      jobOptions,
    );
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
  const batches = new Batches(batchSize);
  const encode = (units: EncodeUnit[]) => onEncoded(encodeUnits(model, units, jobOptions), units);
  for (let p = await next(); p; p = await next()) {
    if ('failure' in p) onFailure(p.failure);
    else batches.add(p.unit).forEach(encode);
  }
  batches.rest().forEach(encode);
}

/** The input checked as a file first (so a folder, a pipe or an empty file is a clear failure, never a hang in the decoder). */
async function prepareInput(
  model: LlavaVision,
  source: string,
  index: number,
  settings: ImageSettings,
): Promise<PreparedImage> {
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

/**
 * Writes the results of `indices` as shard `number` (and its manifest lines), removing them from
 * `results`; returns the next shard number. A shard whose manifest entries would be too big for a
 * safetensors header (very long paths, a huge --shard-size) is split in two, so the writer never
 * makes a shard its reader refuses.
 */
function writeShard(
  dir: string,
  number: number,
  indices: number[],
  results: Map<number, ImageResult>,
  inputs: string[],
  metadata: Record<string, string>,
): number {
  const name = shardName(number);
  const tensors: Record<string, TensorToWrite> = {};
  const entries: ManifestEntry[] = indices.map((index) => {
    const r = results.get(index)!;
    const source = inputs[index];
    if ('error' in r) return { index, source, shard: name, error: r.error };
    const shapes: Record<string, number[]> = {};
    for (const key of Object.keys(r.tensors).sort()) {
      tensors[`images.${index}.${key}`] = r.tensors[key];
      shapes[key] = r.tensors[key].shape;
    }
    return { index, source, shard: name, image_size: r.imageSize, tensors: shapes };
  });
  const entriesJson = JSON.stringify(entries);
  if (entriesJson.length > MAX_SHARD_ENTRIES_CHARS && indices.length > 1) {
    const half = Math.ceil(indices.length / 2);
    return writeShard(
      dir,
      writeShard(dir, number, indices.slice(0, half), results, inputs, metadata),
      indices.slice(half),
      results,
      inputs,
      metadata,
    );
  }
  writeSafetensors(path.join(dir, name), tensors, { ...metadata, entries: entriesJson });
  for (const index of indices) results.delete(index);
  // Only now that the shard is in place: a manifest line never points at a shard that does not exist.
  appendFileDurable(
    path.join(dir, MANIFEST),
    Buffer.from(entries.map((e) => JSON.stringify(e) + '\n').join(''), 'utf8'),
  );
  return number + 1;
}

/**
 * dataset.json for `model` and these options. The model is named by its content (modelDigest of its
 * load plan: configs, tensor headers, sampled weights), so byte-identical copies of a model at other
 * paths make datasets and parts that join; the paths are kept in `made_from`, for people.
 */
export async function datasetInfoFor(
  model: LlavaVision,
  inputCount: number,
  options: DatasetWriteOptions & { outputs?: SaveName[]; dtype?: StoredDType; shardSize?: number },
): Promise<DatasetInfo> {
  const settings = imageSettings(model, options);
  const { visionTower, download, projector, projectorType, selectLayer, selectFeature } = model.loadOptions;
  const plan = await planLoad(model.modelDir, {
    visionTower,
    download,
    projector,
    projectorType,
    selectLayer,
    selectFeature,
  });
  const identity: Pick<DatasetInfo, (typeof IDENTITY_FIELDS)[number]> = {
    format: FORMAT,
    format_version: FORMAT_VERSION,
    producer: `llava-vision-tfjs ${packageVersion()}`,
    model: {
      digest: modelDigest(plan),
      layout: model.checkpointKind,
      projector_type: model.projectorConfig?.type ?? null,
    },
    numerics: numericsOf(model),
    options: {
      save: [...(options.outputs ?? [defaultImageOutput(model)])],
      dtype: options.dtype ?? 'F32',
      aspect: settings.aspect,
      grid_pinpoints: settings.aspect === 'anyres' ? (settings.gridPinpoints ?? null) : null,
      merge: settings.mergeType,
      select_layer: model.settings.selectLayer,
      select_feature: model.settings.selectFeature,
      interpolate_pos_encoding: !!options.interpolatePosEncoding,
      auto_orient: !!options.autoOrient,
    },
    part: options.part ? { index: options.part.index, count: options.part.count } : null,
  };
  return {
    ...identity,
    settings_digest: settingsDigest(identity),
    inputs: { count: inputCount },
    shard_size: options.shardSize ?? DEFAULT_SHARD_SIZE,
    made_from: {
      model_dir: path.resolve(model.modelDir),
      vision_tower: plan.tower.dir !== null && plan.tower.dir !== plan.modelDir ? path.resolve(plan.tower.dir) : null,
      projector: model.loadOptions.projector ? path.resolve(model.loadOptions.projector) : null,
    },
  };
}

/** A new folder gets dataset.json; an existing dataset must have been made the same way (never a mixed dataset). */
function openDatasetFolder(dir: string, info: DatasetInfo): void {
  checkOwnFolder(dir, 'dataset folder', true); // again, now under the lock
  const existing = readDatasetInfo(dir);
  if (existing) {
    const diff = identityDifferences(existing, info, IDENTITY_FIELDS, ['dataset', 'this run'], true).map((d) =>
      d.startsWith('model.digest:')
        ? `model: another model by content (${existing.model.digest.slice(0, 19)}… made from ${existing.made_from.model_dir} (dataset) vs ${info.model.digest.slice(0, 19)}… from ${info.made_from.model_dir} (this run))`
        : d,
    );
    if (diff.length) {
      throw new ConfigError(
        `${dir} holds a dataset made with other settings, and datasets are never mixed: ${diff.join('; ')} (same options to resume it, or another folder)`,
      );
    }
    if (existing.inputs.count === info.inputs.count && existing.shard_size === info.shard_size) return;
  }
  writeFileAtomic(path.join(dir, DATASET_JSON), Buffer.from(JSON.stringify(info, null, 2) + '\n', 'utf8'));
}

/**
 * The model-free part of a resume, in a folder whose lock this run holds: dataset.json made or
 * checked against `info`, then planRun. (The fuzz suite runs it on hostile folders.)
 */
export function resumeDatasetFolder(
  dir: string,
  info: DatasetInfo,
  inputs: string[],
  part?: DatasetPart,
): ReturnType<typeof planRun> {
  openDatasetFolder(dir, info);
  return planRun(dir, inputs, info, part);
}

/**
 * What this run has to do: this part's indices not yet in the folder, after the folder is made
 * consistent. The shards are the truth: every shard's own record is read and checked (made with this
 * dataset's settings, its images this run's inputs at the same indices), the manifest is rebuilt from
 * them when it disagrees (a torn last line, lines a kill cut off, lines of a deleted shard), and temp
 * files of dead writers are removed. An image stored twice (two runs that wrote the folder at once,
 * before the lock) keeps its first copy, by shard order; the other is left unused in its shard. Only
 * a bitmap of the inputs is kept, never the entries: memory stays flat with the dataset's size.
 */
function planRun(
  dir: string,
  inputs: string[],
  info: DatasetInfo,
  part?: DatasetPart,
): { images: number; todo: number[]; failedBefore: number; nextShard: number } {
  removeStaleTemps(dir);
  const shards = listShards(dir);
  const done = new Uint8Array(inputs.length);
  let failedBefore = 0;
  let duplicates = 0;
  const truth = createHash('sha256');
  forEachShardEntry(dir, shards, info, (e) => {
    if (part && e.index % part.count !== part.index) {
      throw new CheckpointError(
        `${path.join(dir, e.shard)} holds image ${e.index}, which is not in part ${part.index} of ${part.count}`,
      );
    }
    const now = inputs[e.index];
    if (now !== e.source) {
      const what = now === undefined ? `and this run has only ${inputs.length} inputs` : `and is ${now} now`;
      throw new ConfigError(
        `${dir}: image ${e.index} was ${e.source} when this dataset was written, ${what}: the inputs changed (same inputs in the same order to resume, or another folder)`,
      );
    }
    if (done[e.index]) {
      duplicates++;
      return;
    }
    done[e.index] = 1;
    if (e.error !== undefined) failedBefore++;
    truth.update(JSON.stringify(e) + '\n');
  });
  // The manifest is rewritten unless it lists exactly the shards' entries, in order.
  const listed = createHash('sha256');
  let bad = false;
  const manifest = readManifest(
    dir,
    (e) => listed.update(JSON.stringify(e) + '\n'),
    () => (bad = true),
  );
  if (bad || manifest.torn || duplicates > 0 || listed.digest('hex') !== truth.digest('hex'))
    rewriteManifest(dir, shards, info);

  const todo: number[] = [];
  let images = 0;
  for (let i = part ? part.index : 0; i < inputs.length; i += part ? part.count : 1) {
    images++;
    if (!done[i]) todo.push(i);
  }
  const nextShard = shards.length ? shardNumber(shards[shards.length - 1])! + 1 : 0;
  return { images, todo, failedBefore, nextShard };
}

/** Each entry of each shard, in order, first copies only once `seen` is given; a shard of other settings is refused. */
function forEachShardEntry(
  dir: string,
  shards: string[],
  info: DatasetInfo,
  onEntry: (e: ManifestEntry) => void,
): void {
  for (const shard of shards) {
    const file = path.join(dir, shard);
    const record = readShardRecord(file, {
      info,
      describe: (mismatch) =>
        `${file} was made with other settings than ${path.join(dir, DATASET_JSON)}: ${mismatch}; a dataset is never mixed (move that shard out of the folder; or, if ${DATASET_JSON} was edited by hand, restore it)`,
    });
    for (const e of record.entries) onEntry(e);
  }
}

/** manifest.jsonl made again from the shards' own entries (first copy of an image only), written atomically shard by shard. */
function rewriteManifest(dir: string, shards: string[], info: DatasetInfo): void {
  const seen = new Set<number>();
  writeFileAtomic(path.join(dir, MANIFEST), (fd) => {
    forEachShardEntry(dir, shards, info, (e) => {
      if (seen.has(e.index)) return;
      seen.add(e.index);
      writeAllSync(fd, Buffer.from(JSON.stringify(e) + '\n', 'utf8'));
    });
  });
}

/**
 * Our temp files whose writer is gone (killed mid-write), by the lock's stale rule (io/lock_file.ts):
 * a writer on this host whose process has ended, or one on another host (or container) whose file
 * has not changed for a lock lease. Only names of our own pattern for our own files
 * (`shard-00003.safetensors.llava-vision-tmp-…`) are ever considered: nothing else is deleted.
 */
function removeStaleTemps(dir: string): void {
  const here = hostTag();
  for (const name of fs.readdirSync(dir)) {
    if (!isOwnTempName(name)) continue;
    const t = parseTempName(name)!;
    const file = path.join(dir, name);
    let ageMs: number;
    try {
      ageMs = Date.now() - fs.lstatSync(file).mtimeMs;
    } catch {
      continue; // gone already
    }
    // The lock's stale rule, with the temp file's mtime for a heartbeat: an in-flight write changes it constantly.
    if (
      t.pid !== process.pid &&
      !staleness({ pid: t.pid, startTime: null, local: t.host === here }, ageMs, LOCK_LEASE_MS).stale
    )
      continue;
    try {
      fs.unlinkSync(file);
    } catch {
      // gone already: harmless
    }
  }
}
