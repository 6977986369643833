/**
 * The on-disk format of an encoded dataset folder, shared by its writer and reader.
 *
 *   DIR/dataset.json              what made it: model (by content digest), options, stored dtype, the
 *                                 numerics (backend, threads, ...), package version, part, and
 *                                 settings_digest (a digest of all of these)
 *   DIR/shard-00000.safetensors   plain safetensors: `images.<global index>.<name>` tensors; __metadata__
 *                                 holds the shard's manifest entries and the settings_digest it was made
 *                                 with (so a shard describes itself, and one from another dataset is found)
 *   DIR/manifest.jsonl            one JSON line per image: index, source, shard, image_size and tensor
 *                                 shapes, or the error of a failed image
 *   DIR/part-K-of-N/...           the same, per part, for a dataset split across machines (--part K/N)
 *   DIR/.llava-vision-lock-<g>    while a run writes the folder (io/folder_lock.ts)
 *
 * The shards are the truth; the manifest is their index, appended after each shard is in place (a
 * torn or missing tail is rebuilt from the shards' own metadata on the next run).
 *
 * Every file here may have been edited or replaced by hand: everything is read with type checks, size
 * caps and without blocking on a FIFO (io/safe_read.ts).
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { CheckpointError, oneLine, quote } from '../errors';
import { parseTempName } from '../io/atomic';
import { isLockName } from '../io/folder_lock';
import { canonicalJson, parseJsonWithLimits } from '../io/json';
import { forEachLine, openRegularFile, readRegularFile } from '../io/safe_read';
import { SafetensorsFile } from '../io/safetensors';
import { GEMM_ENV_VAR, GEMM_NAMES } from '../model/kernels/gemm';
import { TOWER_LAYOUTS, layoutForBackend } from '../model/layout';
import { SAVE_NAMES } from '../api/encode_job';
import type { LlavaVision } from '../api/llava_vision';

export const DATASET_JSON = 'dataset.json';
export const MANIFEST = 'manifest.jsonl';
export const FORMAT = 'llava-vision-dataset';
/**
 * 2: the model is identified by content (model.digest) and every shard records settings_digest.
 * 3: `numerics` (backend, tower layout, threads) is part of the identity.
 */
export const FORMAT_VERSION = 3;
export const SHARD_FORMAT = 'llava-vision-dataset shard';

export type StoredDType = 'F32' | 'F16' | 'BF16';
export const STORED_DTYPES: readonly StoredDType[] = ['F32', 'F16', 'BF16'];

/** Most parts a dataset can be split into. */
export const MAX_PARTS = 1_000_000;
/** Global indices are stored as 32-bit integers. */
export const MAX_INPUTS = 2 ** 31 - 1;
/** Longest input path, in UTF-8 bytes (Linux's PATH_MAX): a longer line of a list is not a path. */
export const MAX_SOURCE_BYTES = 4096;
/** Longest manifest line read (a real one is a few hundred bytes, at most ~10 KB with the longest paths). */
export const MAX_MANIFEST_LINE = 256 * 1024;
const MAX_DATASET_JSON_BYTES = 1024 * 1024;
const MAX_ERROR_CHARS = 64 * 1024;
const MAX_IMAGE_SIDE = 1_000_000;
const MAX_TENSORS_PER_IMAGE = 4096;
const TENSOR_NAME = /^[A-Za-z][A-Za-z0-9_.]{0,99}$/;

const SHARD_NAME = /^shard-(\d{5,9})\.safetensors$/;
const PART_NAME = /^part-(0|[1-9]\d{0,6})-of-([1-9]\d{0,6})$/;

export const shardName = (n: number): string => `shard-${String(n).padStart(5, '0')}.safetensors`;
export const shardNumber = (name: string): number | null => {
  const m = SHARD_NAME.exec(name);
  return m ? Number(m[1]) : null;
};
export const partDirName = (index: number, count: number): string => `part-${index}-of-${count}`;
export const parsePartDirName = (name: string): { index: number; count: number } | null => {
  const m = PART_NAME.exec(name);
  if (!m) return null;
  const [index, count] = [Number(m[1]), Number(m[2])];
  return index < count && count <= MAX_PARTS ? { index, count } : null;
};

/** A file the writer makes in a dataset folder (its temp files are named after these; a lock file is made from one too). */
const isDatasetFile = (name: string) =>
  name === DATASET_JSON || name === MANIFEST || shardNumber(name) !== null || isLockName(name);
/** One of our temp files of a dataset file (`shard-00003.safetensors.llava-vision-tmp-…`). Nothing else is ever deleted. */
export function isOwnTempName(name: string): boolean {
  const t = parseTempName(name);
  return t !== null && isDatasetFile(t.target);
}
/** Files of a folder that are ours while no dataset.json is there yet: a run that just started, or was killed early. */
export const isTransientName = (name: string): boolean => isOwnTempName(name) || isLockName(name);

/** One line of manifest.jsonl. An image has image_size and tensors; a failed one has error instead. */
export interface ManifestEntry {
  index: number;
  source: string;
  /** The shard file (in the same folder) whose run recorded this image; for a failure it holds no tensors. */
  shard: string;
  image_size?: [number, number];
  /** Tensor name within the image (`merged`, `hidden_states.3`, ...) -> shape. */
  tensors?: Record<string, number[]>;
  error?: string;
}

/** What identifies the model: its content, not where it lies (see modelDigest in load_plan.ts). */
export interface DatasetModel {
  /** `sha256:<hex>` of its configs, tensor headers and sampled weight bytes. */
  digest: string;
  layout: string;
  projector_type: string | null;
}

/**
 * How the forward ran, where it changes the stored bits: float32 sums in another order round
 * differently, so an image encoded on 1 thread and on 2 differs in its last bits, and a dataset of
 * both is no single run's output. Resumes and parts must match every field exactly. A new setting
 * that changes the bits is a field here and its row in NUMERICS, nothing else.
 */
export interface DatasetNumerics {
  backend: string;
  /** model/layout.ts: how the tower groups its GEMMs. */
  tower_layout: string;
  /** Tensor-parallel threads (LlavaVision.threads): which partial sums are added in which order. */
  threads: number;
  /** The wasm backend's GEMM (LlavaVision.gemm; `none` on other backends): FMA rounds once per multiply-add. */
  gemm: string;
}

type Model = Pick<LlavaVision, 'backend' | 'threads' | 'loadOptions' | 'gemm'>;
/** How a setting is read from the model, checked in dataset.json, and matched by a run (in messages). */
interface NumericsRow<T> {
  of: (model: Model) => T;
  valid: (value: unknown) => boolean;
  match: (value: T) => string;
}

export const NUMERICS: { readonly [K in keyof DatasetNumerics]: NumericsRow<DatasetNumerics[K]> } = {
  backend: {
    of: (m) => m.backend,
    valid: (v) => typeof v === 'string' && /^[a-z][a-z0-9_-]{0,31}$/.test(v),
    match: (v) => `--backend ${v} (backend: '${v}')`,
  },
  tower_layout: {
    of: (m) => m.loadOptions.layout ?? layoutForBackend(m.backend),
    valid: (v) => (TOWER_LAYOUTS as readonly unknown[]).includes(v),
    match: (v) => `layout: '${v}'`,
  },
  threads: {
    of: (m) => m.threads,
    valid: (v) => Number.isSafeInteger(v) && (v as number) >= 1 && (v as number) <= 4096,
    match: (v) => `--threads ${v} (threads: ${v})`,
  },
  gemm: {
    of: (m) => m.gemm ?? 'none',
    valid: (v) => (['none', ...GEMM_NAMES] as unknown[]).includes(v),
    match: (v) => (v === 'none' ? `a backend other than wasm` : `${GEMM_ENV_VAR}=${v}`),
  },
};

/** The numerics `model` runs with. */
export function numericsOf(model: Model): DatasetNumerics {
  return Object.fromEntries(
    Object.entries(NUMERICS).map(([k, row]) => [k, row.of(model)]),
  ) as unknown as DatasetNumerics;
}

/** dataset.json. Everything but `inputs`, `shard_size` and `made_from` must match for a run to add to the folder. */
export interface DatasetInfo {
  format: 'llava-vision-dataset';
  format_version: number;
  producer: string;
  model: DatasetModel;
  /** What changes the stored bits besides model and options (NUMERICS). */
  numerics: DatasetNumerics;
  options: Record<string, unknown> & { save: string[]; dtype: StoredDType };
  part: { index: number; count: number } | null;
  /** sha256 of the identity fields below; every shard records the one it was made with. */
  settings_digest: string;
  /** Number of inputs of the last run (the global index space), informational. */
  inputs: { count: number };
  shard_size: number;
  /** Where the model was loaded from, for people (identity is model.digest). */
  made_from: { model_dir: string; vision_tower: string | null; projector: string | null };
}

/** The parts of dataset.json that define what the dataset holds. */
export const IDENTITY_FIELDS = [
  'format',
  'format_version',
  'producer',
  'model',
  'numerics',
  'options',
  'part',
] as const;

export { canonicalJson };

/** The identity fields of `info`, as one object. */
export function identityOf(
  info: Pick<DatasetInfo, (typeof IDENTITY_FIELDS)[number]>,
): Pick<DatasetInfo, (typeof IDENTITY_FIELDS)[number]> {
  return Object.fromEntries(IDENTITY_FIELDS.map((f) => [f, info[f]])) as Pick<
    DatasetInfo,
    (typeof IDENTITY_FIELDS)[number]
  >;
}

/** `sha256:<hex>` of the identity fields (canonical JSON). */
export function settingsDigest(info: Pick<DatasetInfo, (typeof IDENTITY_FIELDS)[number]>): string {
  return `sha256:${createHash('sha256')
    .update(canonicalJson(identityOf(info)))
    .digest('hex')}`;
}

/** The `__metadata__` every shard of a dataset carries (its manifest lines are added per shard as `entries`). */
export function shardMetadata(
  info: Pick<DatasetInfo, 'producer' | 'settings_digest' | (typeof IDENTITY_FIELDS)[number]>,
): Record<string, string> {
  return {
    format: SHARD_FORMAT,
    format_version: String(FORMAT_VERSION),
    producer: info.producer,
    settings_digest: info.settings_digest,
    settings: canonicalJson(identityOf(info)),
  };
}

/** A value in a message: canonical JSON (one line), cut at 200 characters. */
function shown(v: unknown): string {
  const s = canonicalJson(v);
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}

/**
 * Identity fields (and their sub-fields) that differ, as `options.dtype: F16 (dataset) vs F32 (this run)`.
 * With `hints`, a numerics field says how a run matches the first side: `… — run with --threads 2 to match`.
 */
export function identityDifferences(
  stored: unknown,
  current: unknown,
  fields: readonly string[] = IDENTITY_FIELDS,
  names: [string, string] = ['dataset', 'this run'],
  hints = false,
): string[] {
  const out: string[] = [];
  const walk = (a: unknown, b: unknown, where: string) => {
    if (canonicalJson(a) === canonicalJson(b)) return;
    const objects = a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b);
    if (!objects) {
      const setting = where.startsWith('numerics.')
        ? (NUMERICS as Record<string, NumericsRow<unknown>>)[where.slice('numerics.'.length)]
        : undefined;
      const hint = hints && setting?.valid(a) ? ` — run with ${setting.match(a)} to match` : '';
      out.push(`${where}: ${shown(a)} (${names[0]}) vs ${shown(b)} (${names[1]})${hint}`);
      return;
    }
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of [...keys].sort())
      walk((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${where}.${k}`);
  };
  for (const f of fields)
    walk((stored as Record<string, unknown> | null)?.[f], (current as Record<string, unknown> | null)?.[f], f);
  // A hand-made file can differ everywhere: the message names the first few.
  return out.length > 6 ? [...out.slice(0, 6), `… (${out.length - 6} more)`] : out;
}

const isObject = (x: unknown): x is Record<string, unknown> => x !== null && typeof x === 'object' && !Array.isArray(x);
const isCount = (x: unknown, max: number): x is number =>
  Number.isSafeInteger(x) && (x as number) >= 0 && (x as number) <= max;
const isStringOrNull = (x: unknown) => x === null || typeof x === 'string';

/** dataset.json, checked field by field (a hand-edited one is refused, never half-trusted). Null when there is none. */
export function readDatasetInfo(dir: string): DatasetInfo | null {
  const file = path.join(dir, DATASET_JSON);
  const bytes = readRegularFile(file, 'dataset description', MAX_DATASET_JSON_BYTES);
  if (bytes === null) return null;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new CheckpointError(`${file}: not UTF-8 text`);
  }
  const info = parseJsonWithLimits(
    text,
    { maxDepth: 8, rejectDuplicateKeys: true },
    (problem) => new CheckpointError(`${file}: ${problem}`),
  );
  if (!isObject(info) || info.format !== FORMAT)
    throw new CheckpointError(
      `${file}: not a ${FORMAT} description (format ${quote(isObject(info) ? info.format : info)})`,
    );
  if (info.format_version !== FORMAT_VERSION)
    throw new CheckpointError(
      `${file}: format_version ${quote(info.format_version)}; this llava-vision-tfjs reads version ${FORMAT_VERSION} (encode it again into a new folder)`,
    );
  const bad = (field: string, want: string) =>
    new CheckpointError(`${file}: ${field} is ${quote(fieldAt(info, field), 80)}, not ${want}`);
  const model = info.model;
  if (!isObject(model)) throw bad('model', 'an object');
  if (typeof model.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(model.digest))
    throw bad('model.digest', 'a sha256 digest');
  if (typeof model.layout !== 'string' || !isStringOrNull(model.projector_type))
    throw bad('model', 'a model description (layout, projector_type)');
  const numerics = info.numerics;
  if (!isObject(numerics)) throw bad('numerics', 'an object');
  for (const [field, row] of Object.entries(NUMERICS))
    if (!row.valid(numerics[field])) throw bad(`numerics.${field}`, `a ${field} setting`);
  const options = info.options;
  if (!isObject(options)) throw bad('options', 'an object');
  if (
    !Array.isArray(options.save) ||
    options.save.length === 0 ||
    !options.save.every((s) => (SAVE_NAMES as readonly unknown[]).includes(s))
  )
    throw bad('options.save', `a list of ${SAVE_NAMES.join(', ')}`);
  if (!(STORED_DTYPES as readonly unknown[]).includes(options.dtype))
    throw bad('options.dtype', STORED_DTYPES.join(' | '));
  const part = info.part;
  if (
    part !== null &&
    !(
      isObject(part) &&
      isCount(part.count, MAX_PARTS) &&
      part.count >= 1 &&
      isCount(part.index, MAX_PARTS) &&
      part.index < part.count
    )
  ) {
    throw bad('part', 'null or {index, count} with 0 <= index < count');
  }
  if (!isObject(info.inputs) || !isCount(info.inputs.count, MAX_INPUTS))
    throw bad('inputs.count', `a count of inputs (0..${MAX_INPUTS})`);
  if (!isCount(info.shard_size, MAX_INPUTS) || info.shard_size < 1) throw bad('shard_size', 'a positive integer');
  if (typeof info.producer !== 'string') throw bad('producer', 'a string');
  const madeFrom = info.made_from;
  if (
    !isObject(madeFrom) ||
    typeof madeFrom.model_dir !== 'string' ||
    !isStringOrNull(madeFrom.vision_tower) ||
    !isStringOrNull(madeFrom.projector)
  )
    throw bad('made_from', "the model's paths");
  const checked = info as unknown as DatasetInfo;
  if (checked.settings_digest !== settingsDigest(checked)) {
    throw new CheckpointError(
      `${file}: its settings do not match its settings_digest: the file was edited by hand (a dataset's settings cannot change; restore the file, or encode into a new folder)`,
    );
  }
  return checked;
}

function fieldAt(x: Record<string, unknown>, dotted: string): unknown {
  let v: unknown = x;
  for (const k of dotted.split('.')) v = isObject(v) ? v[k] : undefined;
  return v;
}

/** A manifest entry checked field by field (types, ranges, sizes); a clean copy, without unknown fields. */
export function checkEntry(x: unknown, where: string | (() => string)): ManifestEntry {
  const fail = (why: string) =>
    new CheckpointError(`${typeof where === 'string' ? where : where()}: not a manifest entry (${why})`);
  if (!isObject(x)) throw fail('not an object');
  const { index, source, shard, error, image_size: size, tensors } = x;
  if (!isCount(index, MAX_INPUTS - 1))
    throw fail(`index ${quote(index, 40)} is not an image index 0..${MAX_INPUTS - 1}`);
  if (typeof source !== 'string' || source.length > 4 * MAX_SOURCE_BYTES) throw fail('source is not a path');
  if (typeof shard !== 'string' || shardNumber(shard) === null)
    throw fail(`shard ${quote(shard, 60)} is not a shard file name`);
  if (error !== undefined) {
    if (typeof error !== 'string' || error.length > MAX_ERROR_CHARS) throw fail('error is not a message');
    if (tensors !== undefined || size !== undefined) throw fail('a failed image with tensors');
    return { index, source, shard, error };
  }
  if (!Array.isArray(size) || size.length !== 2 || !size.every((s) => isCount(s, MAX_IMAGE_SIDE) && s > 0))
    throw fail(`image_size ${quote(size, 40)} is not [width, height]`);
  if (!isObject(tensors)) throw fail('neither tensors nor error');
  const names = Object.keys(tensors);
  if (names.length === 0 || names.length > MAX_TENSORS_PER_IMAGE) throw fail(`${names.length} tensors`);
  const shapes: Record<string, number[]> = {};
  for (const name of names) {
    const shape = tensors[name];
    if (!TENSOR_NAME.test(name)) throw fail(`tensor name ${quote(name, 60)}`);
    if (!Array.isArray(shape) || shape.length > 8 || !shape.every((d) => isCount(d, MAX_INPUTS)))
      throw fail(`shape of ${name} is not a list of sizes`);
    shapes[name] = shape;
  }
  return { index, source, shard, image_size: [size[0] as number, size[1] as number], tensors: shapes };
}

/**
 * Streams manifest.jsonl: `onEntry` for each checked line, in order. A last line without its newline
 * is a write cut short by a kill: it is left out and `torn` is true. A line that is not an entry is a
 * CheckpointError naming it (or, with `onBadLine`, handed there). `exists` is false without a manifest.
 */
export function readManifest(
  dir: string,
  onEntry: (entry: ManifestEntry, line: number) => void,
  onBadLine?: (error: CheckpointError, line: number) => void,
): { exists: boolean; torn: boolean; lines: number } {
  const file = path.join(dir, MANIFEST);
  const opened = openRegularFile(file, 'manifest');
  if (!opened) return { exists: false, torn: false, lines: 0 };
  let lines = 0;
  try {
    const tail = forEachLine(opened.fd, MAX_MANIFEST_LINE, (text, n) => {
      lines = n;
      const where = () => `${file} line ${n}`;
      let entry: ManifestEntry;
      try {
        if (text === null)
          throw new CheckpointError(`${where()}: longer than ${MAX_MANIFEST_LINE} bytes, not a manifest entry`);
        // JSON.parse alone (no depth scan): a line is at most MAX_MANIFEST_LINE bytes, V8's parser is not
        // recursive, and checkEntry takes only flat, typed fields from what it gives.
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch (e) {
          throw new CheckpointError(`${where()}: not valid JSON (${oneLine((e as Error).message, 200)})`);
        }
        entry = checkEntry(parsed, where);
      } catch (e) {
        if (!(e instanceof CheckpointError) || !onBadLine) throw e;
        onBadLine(e, n);
        return;
      }
      onEntry(entry, n);
    });
    return { exists: true, torn: tail !== '', lines };
  } finally {
    fs.closeSync(opened.fd);
  }
}

/** What a shard says about itself: its manifest entries and the settings it was made with. */
export interface ShardRecord {
  entries: ManifestEntry[];
  settingsDigest: string;
  /** Canonical JSON of the identity fields it was made with (to name what differs). */
  settings: string;
}

/**
 * A shard's own record, checked: made with `belongsTo`'s settings when given (else a CheckpointError
 * from its `describe`), its entries name it, and each stored image's tensors are in it with
 * the shapes its entry gives (a shard is self-consistent, or refused).
 */
export function readShardRecord(
  file: string,
  belongsTo?: { info: DatasetInfo; describe: (mismatch: string) => string },
): ShardRecord {
  const st = SafetensorsFile.open(file);
  try {
    const { format, entries, settings_digest: digest, settings } = st.metadata;
    if (format !== SHARD_FORMAT || entries === undefined)
      throw new CheckpointError(`${file}: not a ${SHARD_FORMAT} (no entries in its __metadata__)`);
    if (digest === undefined || settings === undefined)
      throw new CheckpointError(
        `${file}: its __metadata__ records no settings_digest (made by another version, or not by llava-vision-tfjs)`,
      );
    // Settings first: a shard of another dataset is named as such, whatever else is wrong with it here.
    const mismatch = belongsTo && shardMismatch({ settingsDigest: digest, settings }, belongsTo.info);
    if (mismatch) throw new CheckpointError(belongsTo.describe(mismatch));
    const parsed = parseJsonWithLimits(
      entries,
      { maxDepth: 5, rejectDuplicateKeys: true },
      (problem) => new CheckpointError(`${file}: __metadata__.entries ${problem}`),
    );
    if (!Array.isArray(parsed)) throw new CheckpointError(`${file}: __metadata__.entries is not a list`);
    const name = path.basename(file);
    const checked: ManifestEntry[] = [];
    for (let i = 0; i < parsed.length; i++) {
      const e = checkEntry(parsed[i], `${file}: entry ${i}`);
      if (e.shard !== name)
        throw new CheckpointError(`${file}: entry ${i} names ${quote(e.shard)}, not this file (a renamed shard?)`);
      for (const [tensor, shape] of Object.entries(e.tensors ?? {})) {
        const key = `images.${e.index}.${tensor}`;
        if (!st.has(key) || canonicalJson(st.info(key).shape) !== canonicalJson(shape))
          throw new CheckpointError(`${file}: entry ${i} lists ${key} ${quote(shape)}, which the shard does not hold`);
      }
      checked.push(e);
    }
    return { entries: checked, settingsDigest: digest, settings };
  } finally {
    st.close();
  }
}

/** Why a shard made with `record`'s settings does not belong to the dataset `info` describes, or null. */
export function shardMismatch(
  record: Pick<ShardRecord, 'settingsDigest' | 'settings'>,
  info: DatasetInfo,
): string | null {
  if (record.settingsDigest === info.settings_digest) return null;
  let theirs: unknown = null;
  try {
    theirs = parseJsonWithLimits(record.settings, { maxDepth: 8 }, (problem) => new CheckpointError(problem));
  } catch {
    // named by the digest alone below
  }
  const diff = identityDifferences(theirs, identityOf(info), IDENTITY_FIELDS, ['shard', DATASET_JSON]);
  return diff.length
    ? diff.join('; ')
    : `settings_digest ${quote(record.settingsDigest, 80)} (shard) vs ${info.settings_digest} (${DATASET_JSON})`;
}

/** The shard files of a folder, by number. A shard name that is not a regular file (a link, a folder) is refused. */
export function listShards(dir: string): string[] {
  const out: string[] = [];
  for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
    if (shardNumber(d.name) === null) continue;
    if (!d.isFile())
      throw new CheckpointError(
        `${path.join(dir, d.name)} is ${d.isSymbolicLink() ? 'a symbolic link' : 'not a regular file'}: a dataset folder's shards must be its own files`,
      );
    out.push(d.name);
  }
  return out.sort((a, b) => shardNumber(a)! - shardNumber(b)!);
}

/**
 * The part-K-of-N folders of a dataset folder (empty for an unsplit one). A part that is a symbolic
 * link is read through (parts gathered from several disks) but never written: `links: 'refuse'`.
 */
export function listParts(
  dir: string,
  links: 'follow' | 'refuse' = 'follow',
): { name: string; index: number; count: number }[] {
  let names: fs.Dirent[];
  try {
    names = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return names
    .flatMap((d) => {
      const p = parsePartDirName(d.name);
      if (!p) return [];
      const full = path.join(dir, d.name);
      if (d.isSymbolicLink()) {
        if (links === 'refuse')
          throw new CheckpointError(
            `${full} is a symbolic link: a part is written in its own folder, never where a link points (replace the link with the folder)`,
          );
        try {
          if (!fs.statSync(full).isDirectory()) return [];
        } catch {
          return [];
        }
      } else if (!d.isDirectory()) {
        return [];
      }
      return [{ name: d.name, ...p }];
    })
    .sort((a, b) => a.index - b.index);
}
