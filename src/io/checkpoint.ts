/**
 * A checkpoint = one or more safetensors files seen as a single name -> tensor map:
 * a single file, or a HuggingFace sharded folder (`model.safetensors.index.json` + shards).
 * Shards are opened lazily, on first use of one of their tensors.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CheckpointError } from '../errors';
import { RawTensor, SafetensorsFile, TensorInfo } from './safetensors';

const INDEX_NAME = 'model.safetensors.index.json';
const SINGLE_NAME = 'model.safetensors';
const q = (x: unknown): string => JSON.stringify(x) ?? String(x);
const isObject = (x: unknown): x is Record<string, unknown> =>
  typeof x === 'object' && x !== null && !Array.isArray(x);

type Layout =
  | { kind: 'single'; file: string }
  | { kind: 'index'; file: string }
  | { kind: 'none'; found: string[] };

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** What a folder holds, in priority order: index, model.safetensors, exactly one *.safetensors. */
function detect(dir: string): Layout {
  if (isFile(path.join(dir, INDEX_NAME))) return { kind: 'index', file: path.join(dir, INDEX_NAME) };
  if (isFile(path.join(dir, SINGLE_NAME))) return { kind: 'single', file: path.join(dir, SINGLE_NAME) };
  const found = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors') && isFile(path.join(dir, f))).sort();
  return found.length === 1 ? { kind: 'single', file: path.join(dir, found[0]) } : { kind: 'none', found };
}

export interface CheckpointIndex { metadata: Record<string, string>; weightMap: Map<string, string> }

/**
 * Parse and check an index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`: same format).
 * Shard names must be plain file names in the index's folder: an index is data from the internet, and
 * `../x` or `/etc/passwd` must not make us read files outside the checkpoint.
 */
export function readIndex(indexPath: string): CheckpointIndex {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (err) {
    throw new CheckpointError(`${indexPath}: not a readable JSON file: ${(err as Error).message}`);
  }
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

/**
 * The safetensors files of a checkpoint folder (shards in name order), or null when the folder holds
 * none of the recognised layouts. Throws on a malformed index.
 */
export function findCheckpointFiles(dir: string): string[] | null {
  const layout = detect(dir);
  if (layout.kind === 'none') return null;
  if (layout.kind === 'single') return [layout.file];
  const shards = [...new Set(readIndex(layout.file).weightMap.values())].sort();
  return shards.map((f) => path.join(dir, f));
}

export class Checkpoint {
  private readonly opened = new Map<string, SafetensorsFile>(); // shard path -> opened file

  private constructor(
    readonly source: string,
    private readonly weightMap: Map<string, string>, // tensor name -> shard path
    private readonly indexMetadata: Record<string, string>,
    private readonly indexPath: string | undefined,
  ) {}

  static open(pathOrDir: string): Checkpoint {
    let stat: fs.Stats;
    try {
      stat = fs.statSync(pathOrDir);
    } catch {
      throw new CheckpointError(`${pathOrDir}: no such checkpoint file or folder`);
    }
    if (stat.isFile()) {
      if (pathOrDir.endsWith('.index.json')) return Checkpoint.openIndex(pathOrDir, pathOrDir);
      return Checkpoint.openSingle(pathOrDir, pathOrDir);
    }
    const layout = detect(pathOrDir);
    if (layout.kind === 'index') return Checkpoint.openIndex(pathOrDir, layout.file);
    if (layout.kind === 'single') return Checkpoint.openSingle(pathOrDir, layout.file);
    throw new CheckpointError(`${pathOrDir}: no checkpoint found; looked for ${INDEX_NAME}, ${SINGLE_NAME}, ` +
      `or exactly one *.safetensors file (found ${layout.found.length}` +
      `${layout.found.length ? ': ' + layout.found.join(', ') : ''})`);
  }

  /** A single file is opened (and its header validated) right away. */
  private static openSingle(source: string, file: string): Checkpoint {
    const st = SafetensorsFile.open(file);
    const ck = new Checkpoint(source, new Map(st.keys().map((k) => [k, file])), {}, undefined);
    ck.opened.set(file, st);
    return ck;
  }

  /** Missing shards fail here; a tensor missing from its shard fails when that shard is first opened. */
  private static openIndex(source: string, indexPath: string): Checkpoint {
    const { metadata, weightMap } = readIndex(indexPath);
    const dir = path.dirname(indexPath);
    const byPath = new Map<string, string>();
    const checked = new Set<string>();
    for (const [name, file] of weightMap) {
      const p = path.join(dir, file);
      if (!checked.has(p) && !isFile(p)) {
        throw new CheckpointError(`${indexPath}: shard ${q(file)} (holding ${q(name)}) not found in ${dir}`);
      }
      checked.add(p);
      byPath.set(name, p);
    }
    return new Checkpoint(source, byPath, metadata, indexPath);
  }

  /** Tensor names, sorted. */
  keys(): string[] {
    return [...this.weightMap.keys()].sort();
  }

  /** The safetensors files holding the tensors (one, or the shards), sorted. */
  files(): string[] {
    return [...new Set(this.weightMap.values())].sort();
  }

  has(name: string): boolean {
    return this.weightMap.has(name);
  }

  info(name: string): TensorInfo & { file: string } {
    const file = this.fileFor(name);
    return { ...this.shard(file).info(name), file };
  }

  readFloat32(name: string): Float32Array {
    return this.shard(this.fileFor(name)).readFloat32(name);
  }

  /** See SafetensorsFile.readBytes. */
  readBytes(name: string, into?: Uint8Array): Uint8Array {
    return this.shard(this.fileFor(name)).readBytes(name, into);
  }

  read(name: string): RawTensor {
    return this.shard(this.fileFor(name)).read(name);
  }

  /** Shard-level __metadata__ of the first shard, overlaid by the index's "metadata" (it describes the whole set). */
  metadata(): Record<string, string> {
    const first = [...new Set(this.weightMap.values())].sort()[0];
    return { ...(first ? this.shard(first).metadata : {}), ...this.indexMetadata };
  }

  close(): void {
    for (const f of this.opened.values()) f.close();
    this.opened.clear();
  }

  private fileFor(name: string): string {
    const file = this.weightMap.get(name);
    if (file === undefined) throw new CheckpointError(`${this.source}: no tensor ${q(name)} in this checkpoint`);
    return file;
  }

  private shard(file: string): SafetensorsFile {
    let st = this.opened.get(file);
    if (!st) {
      st = SafetensorsFile.open(file);
      // Check every tensor the index assigns to this shard, so a bad index fails on first touch, whole.
      for (const [name, f] of this.weightMap) {
        if (f === file && !st.has(name)) {
          st.close();
          throw new CheckpointError(`${this.indexPath ?? this.source}: tensor ${q(name)} is listed in the index ` +
            `but missing from shard ${file}`);
        }
      }
      this.opened.set(file, st);
    }
    return st;
  }
}
