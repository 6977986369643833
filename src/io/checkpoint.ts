/**
 * A checkpoint = one or more safetensors files seen as a single name -> tensor map:
 * a single file, or a HuggingFace sharded folder (`model.safetensors.index.json` + shards).
 * Shards are opened lazily, on first use of one of their tensors.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CheckpointError } from '../errors';
import { RawTensor, Region, SafetensorsFile, TensorInfo } from './safetensors';
import { ShardedFiles, readIndex } from './shards';

const INDEX_NAME = 'model.safetensors.index.json';
const SINGLE_NAME = 'model.safetensors';

type Layout = { kind: 'single'; file: string } | { kind: 'index'; file: string } | { kind: 'none'; found: string[] };

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
  const found = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.safetensors') && isFile(path.join(dir, f)))
    .sort();
  return found.length === 1 ? { kind: 'single', file: path.join(dir, found[0]) } : { kind: 'none', found };
}

export { readIndex } from './shards';
export type { CheckpointIndex } from './shards';

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
  private constructor(
    readonly source: string,
    private readonly shards: ShardedFiles<SafetensorsFile>,
    private readonly indexMetadata: Record<string, string>,
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
    throw new CheckpointError(
      `${pathOrDir}: no checkpoint found; looked for ${INDEX_NAME}, ${SINGLE_NAME}, ` +
        `or exactly one *.safetensors file (found ${layout.found.length}` +
        `${layout.found.length ? ': ' + layout.found.join(', ') : ''})`,
    );
  }

  /** A single file is opened (and its header validated) right away. */
  private static openSingle(source: string, file: string): Checkpoint {
    const st = SafetensorsFile.open(file);
    const shards = new ShardedFiles(source, new Map(st.keys().map((k) => [k, file])), (f) => SafetensorsFile.open(f));
    shards.adopt(file, st);
    return new Checkpoint(source, shards, {});
  }

  /** Missing shards fail here; a tensor missing from its shard fails when that shard is first opened. */
  private static openIndex(source: string, indexPath: string): Checkpoint {
    const { shards, metadata } = ShardedFiles.fromIndex(source, indexPath, (f) => SafetensorsFile.open(f));
    return new Checkpoint(source, shards, metadata);
  }

  /** Tensor names, sorted. */
  keys(): string[] {
    return this.shards.keys();
  }

  /** The safetensors files holding the tensors (one, or the shards), sorted. */
  files(): string[] {
    return this.shards.paths();
  }

  has(name: string): boolean {
    return this.shards.has(name);
  }

  info(name: string): TensorInfo & { file: string } {
    return { ...this.shards.shardFor(name).info(name), file: this.shards.fileFor(name) };
  }

  readFloat32(name: string): Float32Array {
    return this.shards.shardFor(name).readFloat32(name);
  }

  /** See SafetensorsFile.readBytes. */
  readBytes(name: string, into?: Uint8Array): Uint8Array {
    return this.shards.shardFor(name).readBytes(name, into);
  }

  /** See SafetensorsFile.readRegion. */
  readRegion(name: string, region: Region, into?: Uint8Array): Uint8Array {
    return this.shards.shardFor(name).readRegion(name, region, into);
  }

  read(name: string): RawTensor {
    return this.shards.shardFor(name).read(name);
  }

  /** Shard-level __metadata__ of the first shard, overlaid by the index's "metadata" (it describes the whole set). */
  metadata(): Record<string, string> {
    const first = this.shards.paths()[0];
    return { ...(first ? this.shards.shard(first).metadata : {}), ...this.indexMetadata };
  }

  close(): void {
    this.shards.close();
  }
}
