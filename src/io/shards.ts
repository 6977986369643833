/**
 * Tensors spread over several files by an index (`model.safetensors.index.json`,
 * `pytorch_model.bin.index.json`: the same format), whatever the file format: shards are opened on
 * first use, and a tensor the index puts in a shard that lacks it fails when that shard is opened.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CheckpointError, quote as q } from '../errors';
import { parseJsonWithLimits } from './json';

/** {"metadata": {...}, "weight_map": {name: file}} needs two levels; a little room for writers' extra metadata. */
export const INDEX_MAX_DEPTH = 8;
const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

export interface CheckpointIndex {
  metadata: Record<string, string>;
  /** tensor name -> shard file name (plain, in the index's folder) */
  weightMap: Map<string, string>;
}

/**
 * Parse and check an index. Shard names must be plain file names in the index's folder: an index is
 * data from the internet, and `../x` or `/etc/passwd` must not make us read files outside the checkpoint.
 */
export function readIndex(indexPath: string): CheckpointIndex {
  let text: string;
  try {
    text = fs.readFileSync(indexPath, 'utf8');
  } catch (err) {
    throw new CheckpointError(`${indexPath}: cannot read the index: ${(err as Error).message}`);
  }
  // A tensor listed twice would silently go to the last shard named: refused like a corrupt file.
  const json = parseJsonWithLimits(
    text,
    { maxDepth: INDEX_MAX_DEPTH, rejectDuplicateKeys: true },
    (problem) => new CheckpointError(`${indexPath}: index ${problem}`),
  );
  if (!isObject(json) || !isObject(json.weight_map)) {
    throw new CheckpointError(`${indexPath}: expected a JSON object with a "weight_map" object`);
  }
  const weightMap = new Map<string, string>();
  for (const [name, file] of Object.entries(json.weight_map)) {
    const bad = (why: string) => new CheckpointError(`${indexPath}: weight_map entry ${q(name)}: ${why}`);
    if (typeof file !== 'string') throw bad(`shard ${q(file)} is not a string`);
    if (file === '' || file === '.' || file === '..' || /[/\\\0]/.test(file) || path.isAbsolute(file)) {
      throw bad(`shard ${q(file)} must be a plain file name in the index's folder`);
    }
    weightMap.set(name, file);
  }
  // HF writes e.g. {"total_size": 123}; keep it, as strings, to match the __metadata__ type.
  const metadata: Record<string, string> = {};
  if (json.metadata !== undefined) {
    if (!isObject(json.metadata)) throw new CheckpointError(`${indexPath}: "metadata" is not an object`);
    for (const [k, v] of Object.entries(json.metadata)) metadata[k] = typeof v === 'string' ? v : JSON.stringify(v);
  }
  return { metadata, weightMap };
}

/** What a shard reader must offer: which tensors it holds, and closing. */
export interface ShardFile {
  has(name: string): boolean;
  close(): void;
}

/** A name -> file map over shard files of one format, opened lazily with `open`. */
export class ShardedFiles<F extends ShardFile> {
  private readonly opened = new Map<string, F>(); // file path -> opened shard

  /**
   * @param source names the checkpoint in errors
   * @param files tensor name -> shard path
   * @param indexPath the index the map came from (named when a shard lacks a tensor), if any
   */
  constructor(
    readonly source: string,
    private readonly files: Map<string, string>,
    private readonly open: (file: string) => F,
    private readonly indexPath?: string,
  ) {}

  /** The shards an index names, each checked to exist (a missing shard fails here, naming a tensor it holds). */
  static fromIndex<F extends ShardFile>(
    source: string,
    indexPath: string,
    open: (file: string) => F,
  ): { shards: ShardedFiles<F>; metadata: Record<string, string> } {
    const { metadata, weightMap } = readIndex(indexPath);
    const dir = path.dirname(indexPath);
    const byPath = new Map<string, string>();
    const checked = new Set<string>();
    for (const [name, file] of weightMap) {
      const p = path.join(dir, file);
      if (!checked.has(p) && !isFile(p))
        throw new CheckpointError(`${indexPath}: shard ${q(file)} (holding ${q(name)}) not found in ${dir}`);
      checked.add(p);
      byPath.set(name, p);
    }
    return { shards: new ShardedFiles(source, byPath, open, indexPath), metadata };
  }

  /** Tensor names, sorted. */
  keys(): string[] {
    return [...this.files.keys()].sort();
  }

  /** The shard files, sorted. */
  paths(): string[] {
    return [...new Set(this.files.values())].sort();
  }

  has(name: string): boolean {
    return this.files.has(name);
  }

  fileFor(name: string): string {
    const file = this.files.get(name);
    if (file === undefined) throw new CheckpointError(`${this.source}: no tensor ${q(name)} in this checkpoint`);
    return file;
  }

  /** The opened shard holding `name`. */
  shardFor(name: string): F {
    return this.shard(this.fileFor(name));
  }

  /** An opened shard by path. Every tensor the index assigns to it is checked on first opening, so a bad index fails whole. */
  shard(file: string): F {
    let shard = this.opened.get(file);
    if (!shard) {
      shard = this.open(file);
      for (const [name, f] of this.files) {
        if (f === file && !shard.has(name)) {
          shard.close();
          throw new CheckpointError(
            `${this.indexPath ?? this.source}: tensor ${q(name)} is listed in the index but missing from shard ${file}`,
          );
        }
      }
      this.opened.set(file, shard);
    }
    return shard;
  }

  /** Registers an already opened shard (a single file opened eagerly to validate its header). */
  adopt(file: string, shard: F): void {
    this.opened.set(file, shard);
  }

  close(): void {
    for (const f of this.opened.values()) f.close();
    this.opened.clear();
  }
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}
