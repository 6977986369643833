/**
 * The on-disk format of an encoded dataset folder, shared by its writer and reader.
 *
 *   DIR/dataset.json              what made it: model, options, stored dtype, package version, part
 *   DIR/shard-00000.safetensors   plain safetensors: `images.<global index>.<name>` tensors; __metadata__
 *                                 holds the shard's manifest entries (so a shard describes itself)
 *   DIR/manifest.jsonl            one JSON line per image: index, source, shard, image_size and tensor
 *                                 shapes, or the error of a failed image
 *   DIR/part-K-of-N/...           the same, per part, for a dataset split across machines (--part K/N)
 *
 * The shards are the truth; the manifest is their index, appended after each shard is in place (a
 * torn or missing tail is rebuilt from the shards' own metadata on the next run).
 */
import * as fs from 'fs';
import * as path from 'path';
import { CheckpointError, quote } from '../errors';
import { SafetensorsFile } from '../io/safetensors';
import { isDir } from './sources';

export const DATASET_JSON = 'dataset.json';
export const MANIFEST = 'manifest.jsonl';
export const FORMAT = 'llava-vision-dataset';
export const FORMAT_VERSION = 1;
export const SHARD_FORMAT = 'llava-vision-dataset shard';

export type StoredDType = 'F32' | 'F16' | 'BF16';
export const STORED_DTYPES: readonly StoredDType[] = ['F32', 'F16', 'BF16'];

const SHARD_NAME = /^shard-(\d{5,})\.safetensors$/;
const PART_NAME = /^part-(\d+)-of-(\d+)$/;
/** writeFileAtomic's temp files: `<target>.tmp-<pid>-<random>`. */
export const TEMP_NAME = /\.tmp-(\d+)-[0-9a-f]+$/;

export const shardName = (n: number): string => `shard-${String(n).padStart(5, '0')}.safetensors`;
export const shardNumber = (name: string): number | null => {
  const m = SHARD_NAME.exec(name);
  return m ? Number(m[1]) : null;
};
export const partDirName = (index: number, count: number): string => `part-${index}-of-${count}`;
export const parsePartDirName = (name: string): { index: number; count: number } | null => {
  const m = PART_NAME.exec(name);
  return m ? { index: Number(m[1]), count: Number(m[2]) } : null;
};

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

/** dataset.json. Everything but `inputs` and `shard_size` must match for a run to add to the folder. */
export interface DatasetInfo {
  format: 'llava-vision-dataset';
  format_version: number;
  producer: string;
  model: Record<string, unknown>;
  options: Record<string, unknown> & { save: string[]; dtype: StoredDType };
  part: { index: number; count: number } | null;
  /** Number of inputs of the last run (the global index space), informational. */
  inputs: { count: number };
  shard_size: number;
}

/** The parts of dataset.json that define what the dataset holds. */
export const IDENTITY_FIELDS = ['format', 'format_version', 'producer', 'model', 'options', 'part'] as const;

/** JSON with object keys sorted: equal values give equal strings. */
export function canonicalJson(x: unknown): string {
  if (Array.isArray(x)) return `[${x.map(canonicalJson).join(',')}]`;
  if (x !== null && typeof x === 'object') {
    const obj = x as Record<string, unknown>;
    return `{${Object.keys(obj).sort().filter((k) => obj[k] !== undefined).map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
  }
  return JSON.stringify(x) ?? 'null';
}

/** Identity fields (and their sub-fields) that differ, as `options.dtype: F16 (dataset) vs F32 (this run)`. */
export function identityDifferences(stored: DatasetInfo, current: DatasetInfo, fields: readonly string[] = IDENTITY_FIELDS): string[] {
  const out: string[] = [];
  const walk = (a: unknown, b: unknown, where: string) => {
    if (canonicalJson(a) === canonicalJson(b)) return;
    const objects = a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b);
    if (!objects) {
      out.push(`${where}: ${canonicalJson(a)} (dataset) vs ${canonicalJson(b)} (this run)`);
      return;
    }
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of [...keys].sort()) walk((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${where}.${k}`);
  };
  for (const f of fields) walk((stored as unknown as Record<string, unknown>)[f], (current as unknown as Record<string, unknown>)[f], f);
  return out;
}

export function readDatasetInfo(dir: string): DatasetInfo | null {
  const file = path.join(dir, DATASET_JSON);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  let info: Partial<Record<keyof DatasetInfo, unknown>> | null;
  try {
    info = JSON.parse(text) as typeof info;
  } catch (e) {
    throw new CheckpointError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (info?.format !== FORMAT) throw new CheckpointError(`${file}: not a ${FORMAT} description (format ${JSON.stringify(info?.format)})`);
  if (info.format_version !== FORMAT_VERSION) throw new CheckpointError(`${file}: format_version ${quote(info.format_version)}; this llava-vision-tfjs reads version ${FORMAT_VERSION}`);
  return info as DatasetInfo;
}

/** Checks one parsed manifest line (written by us, but a reader must not trust a hand-edited file). */
export function checkEntry(x: unknown, where: string): ManifestEntry {
  const e = x as ManifestEntry;
  const ok = e !== null && typeof e === 'object' && Number.isSafeInteger(e.index) && e.index >= 0 && typeof e.source === 'string' &&
    typeof e.shard === 'string' && shardNumber(e.shard) !== null &&
    (typeof e.error === 'string' || (e.tensors !== null && typeof e.tensors === 'object'));
  if (!ok) throw new CheckpointError(`${where}: not a manifest entry (index, source, shard, and tensors or error)`);
  return e;
}

/**
 * manifest.jsonl's entries. A last line without its newline is a write cut short by a kill: it is
 * left out and `intact` is false; so is a line that does not parse (the caller rebuilds from shards).
 */
export function readManifest(dir: string): { entries: ManifestEntry[]; intact: boolean } {
  const file = path.join(dir, MANIFEST);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return { entries: [], intact: false };
  }
  const lines = text.split('\n');
  const torn = lines.pop() !== '';
  const entries: ManifestEntry[] = [];
  let intact = !torn;
  lines.forEach((line, i) => {
    try {
      entries.push(checkEntry(JSON.parse(line), `${file} line ${i + 1}`));
    } catch {
      intact = false;
    }
  });
  return { entries, intact };
}

/** The manifest entries a shard carries in its own __metadata__. */
export function shardEntries(file: string): ManifestEntry[] {
  const st = SafetensorsFile.open(file);
  try {
    const { format, entries } = st.metadata;
    if (format !== SHARD_FORMAT || entries === undefined) throw new CheckpointError(`${file}: not a ${SHARD_FORMAT} (no entries in its __metadata__)`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(entries);
    } catch (e) {
      throw new CheckpointError(`${file}: __metadata__.entries is not JSON (${(e as Error).message})`);
    }
    if (!Array.isArray(parsed)) throw new CheckpointError(`${file}: __metadata__.entries is not a list`);
    return parsed.map((x, i) => checkEntry(x, `${file}: entry ${i}`));
  } finally {
    st.close();
  }
}

/** The shard files of a folder, by number. */
export function listShards(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => shardNumber(f) !== null).sort((a, b) => shardNumber(a)! - shardNumber(b)!);
}

/** The part-K-of-N folders of a dataset folder (empty for an unsplit one). */
export function listParts(dir: string): { name: string; index: number; count: number }[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names.flatMap((name) => {
    const p = parsePartDirName(name);
    return p && isDir(path.join(dir, name)) ? [{ name, ...p }] : [];
  }).sort((a, b) => a.index - b.index);
}
