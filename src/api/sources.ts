import * as fs from 'fs';
import * as path from 'path';
import { CheckpointError, ConfigError } from '../errors';
import { Checkpoint, findCheckpointFiles } from '../io/checkpoint';
import { ShardedFiles } from '../io/shards';
import { DType } from '../io/dtype';
import { TorchBinFile } from '../io/torch_bin';
import { TensorSource } from '../model/weights';
import { CONFIG_MAX_DEPTH } from '../config/limits';
import { parseJsonWithLimits } from '../io/json';
import { DownloadOptions, downloadModel, hubCacheDir, isRepoId, repoFolderName } from '../io/hub';

export type SourceFormat = 'safetensors' | 'torch_bin';

/** A checkpoint of any supported format, as one name -> tensor map. */
export interface OpenedSource extends TensorSource {
  readonly format: SourceFormat;
  /** Tensor names, sorted. */
  keys(): string[];
  /** The files holding the tensors (one, or the shards), sorted. */
  files(): string[];
  info(name: string): { shape: number[]; dtype: DType; file: string };
  close(): void;
}

const TORCH_BIN = 'pytorch_model.bin';
const TORCH_BIN_INDEX = 'pytorch_model.bin.index.json';
const isTorchFile = (f: string) => /\.(bin|pt|pth)$/.test(f);
const isFile = (p: string) => fs.existsSync(p) && fs.statSync(p).isFile();

/**
 * The weights of a model folder in HuggingFace's order of preference: safetensors (index, model.safetensors,
 * or exactly one *.safetensors), then `pytorch_model.bin.index.json` (+ shards), then `pytorch_model.bin`.
 * A file is taken as given. Null for a folder with none of these (throws on a malformed index).
 */
export function findWeights(dirOrFile: string): { format: SourceFormat; entry: string } | null {
  if (isFile(dirOrFile)) {
    const torch = isTorchFile(dirOrFile) || dirOrFile.endsWith('.bin.index.json');
    return { format: torch ? 'torch_bin' : 'safetensors', entry: dirOrFile };
  }
  if (!isDir(dirOrFile)) return null;
  if (findCheckpointFiles(dirOrFile)) return { format: 'safetensors', entry: dirOrFile };
  for (const name of [TORCH_BIN_INDEX, TORCH_BIN]) {
    if (isFile(path.join(dirOrFile, name))) return { format: 'torch_bin', entry: path.join(dirOrFile, name) };
  }
  return null;
}

/**
 * Opens the weights of a folder or file — the one place where a path becomes a tensor source:
 * safetensors (single or sharded), a torch `.bin` (restricted unpickler, nothing executed), or sharded
 * `pytorch_model-*.bin` with their index. Folders resolve as in `findWeights`.
 */
export function openTensorSource(dirOrFile: string): OpenedSource {
  if (!fs.existsSync(dirOrFile)) throw new CheckpointError(`${dirOrFile}: no such checkpoint file or folder`);
  const found = findWeights(dirOrFile);
  if (!found) {
    let listing: string[] = [];
    try {
      listing = fs.readdirSync(dirOrFile).filter((f) => f.endsWith('.safetensors')).sort();
    } catch {
      // not a readable folder: the message below says what was looked for
    }
    throw new CheckpointError(`${dirOrFile}: no weights found; looked for model.safetensors.index.json, model.safetensors, ` +
      `exactly one *.safetensors file (found ${listing.length}${listing.length ? ': ' + listing.join(', ') : ''}), ` +
      `${TORCH_BIN_INDEX} and ${TORCH_BIN}`);
  }
  if (found.format === 'safetensors') return fromCheckpoint(Checkpoint.open(found.entry));
  if (found.entry.endsWith('.index.json')) return TorchBinShards.open(found.entry);
  return fromTorchBin(TorchBinFile.open(found.entry));
}

/** A source with no tensors (a model folder that holds none, e.g. LLaVA's pretrain release: config.json + mm_projector.bin). */
export function emptySource(source: string): OpenedSource {
  const none = (name: string): never => {
    throw new CheckpointError(`${source}: no tensor ${JSON.stringify(name)} (the folder holds no weights)`);
  };
  return { format: 'safetensors', source, keys: () => [], files: () => [], has: () => false, info: none, readFloat32: none, close: () => {} };
}

function fromCheckpoint(ck: Checkpoint): OpenedSource {
  return {
    format: 'safetensors',
    source: ck.source,
    keys: () => ck.keys(),
    files: () => ck.files(),
    has: (n) => ck.has(n),
    info: (n) => {
      const { shape, dtype, file } = ck.info(n);
      return { shape, dtype, file };
    },
    readFloat32: (n) => ck.readFloat32(n),
    readBytes: (n, into) => ck.readBytes(n, into),
    close: () => ck.close(),
  };
}

function fromTorchBin(bin: TorchBinFile): OpenedSource {
  return {
    format: 'torch_bin',
    source: bin.path,
    keys: () => bin.keys(),
    files: () => [bin.path],
    has: (n) => bin.has(n),
    info: (n) => {
      const { shape, dtype } = bin.info(n);
      return { shape, dtype, file: bin.path };
    },
    readFloat32: (n) => bin.readFloat32(n),
    close: () => bin.close(),
  };
}

/** `pytorch_model.bin.index.json` + `pytorch_model-0000k-of-0000n.bin`; shards are opened on first use. */
class TorchBinShards implements OpenedSource {
  readonly format = 'torch_bin';

  private constructor(readonly source: string, private readonly shards: ShardedFiles<TorchBinFile>) {}

  static open(indexPath: string): TorchBinShards {
    return new TorchBinShards(indexPath, ShardedFiles.fromIndex(indexPath, indexPath, (f) => TorchBinFile.open(f)).shards);
  }

  keys(): string[] {
    return this.shards.keys();
  }
  files(): string[] {
    return this.shards.paths();
  }
  has(name: string): boolean {
    return this.shards.has(name);
  }
  info(name: string): { shape: number[]; dtype: DType; file: string } {
    const { shape, dtype } = this.shards.shardFor(name).info(name);
    return { shape, dtype, file: this.shards.fileFor(name) };
  }
  readFloat32(name: string): Float32Array {
    return this.shards.shardFor(name).readFloat32(name);
  }
  close(): void {
    this.shards.close();
  }
}

/** config.json of a model folder, parsed, with errors naming the file. */
export function readJsonFile(file: string, what: string): Record<string, any> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new ConfigError(`${file}: ${what} not found`);
  }
  const json = parseJsonWithLimits(text, { maxDepth: CONFIG_MAX_DEPTH }, (problem) => new ConfigError(`${file}: ${what} ${problem}`));
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ConfigError(`${file}: ${what} is not a valid JSON object (it is ${Array.isArray(json) ? 'an array' : typeof json})`);
  }
  return json as Record<string, any>;
}

export function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

export interface ResolveTowerOptions {
  /** When the tower is not found locally: fetch it from the HuggingFace hub (true, or hub options); default: LLAVA_VISION_DOWNLOAD=1. */
  download?: boolean | DownloadOptions;
}

/**
 * LLaVA's `mm_vision_tower` is a hub id (e.g. openai/clip-vit-large-patch14-336). Resolved here as a
 * local folder: as given (absolute or relative to the working directory), then relative to the LLaVA
 * folder, then in the local HuggingFace hub cache (models--org--name/snapshots/*, refs/main's first);
 * else, with `download`, downloaded into that cache.
 */
export async function resolveVisionTower(name: string, modelDir: string, options: ResolveTowerOptions = {}): Promise<string> {
  const download = options.download ?? process.env.LLAVA_VISION_DOWNLOAD === '1';
  const hubOptions = typeof download === 'object' ? download : {};
  const candidates = [name, path.join(modelDir, name)];
  if (isRepoId(name)) {
    const repoDir = path.join(hubOptions.cacheDir ?? hubCacheDir(), repoFolderName(name));
    const snapshots = path.join(repoDir, 'snapshots');
    let ref = '';
    try {
      ref = fs.readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8').trim();
    } catch {
      // no refs/main: any snapshot will do
    }
    const all = isDir(snapshots) ? fs.readdirSync(snapshots).sort().reverse() : [];
    for (const s of ref ? [ref, ...all.filter((x) => x !== ref)] : all) candidates.push(path.join(snapshots, s));
  }
  const found = candidates.find((c) => isDir(c) && fs.existsSync(path.join(c, 'config.json')));
  if (found) return found;
  const looked = `is not a local CLIP folder (looked in ${candidates.join(', ')})`;
  if (!download) {
    throw new ConfigError(`mm_vision_tower "${name}" ${looked}; pass --download (download option, or LLAVA_VISION_DOWNLOAD=1) ` +
      `to fetch it from the HuggingFace hub, or its folder with --vision-tower DIR (visionTower option)`);
  }
  if (!isRepoId(name)) throw new ConfigError(`mm_vision_tower "${name}" ${looked} nor a hub repo id; pass --vision-tower DIR (visionTower option)`);
  try {
    return await downloadModel(name, hubOptions);
  } catch (e) {
    if (e instanceof Error) e.message = `mm_vision_tower "${name}" is not local, and downloading it failed: ${e.message}`;
    throw e;
  }
}
