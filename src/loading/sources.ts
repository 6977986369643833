import * as fs from 'fs';
import * as path from 'path';
import { CheckpointError, ConfigError } from '../errors';
import { Checkpoint, findCheckpointFiles } from '../io/checkpoint';
import { ShardedFiles } from '../io/shards';
import { DType } from '../io/dtype';
import { TorchBinFile } from '../io/torch_bin';
import { TensorSource } from '../model/weights';
import { CLIPVisionConfig, clipVisionConfigFromJson } from '../config/clip';
import { CONFIG_MAX_DEPTH } from '../config/limits';
import { parseJsonWithLimits } from '../io/json';
import {
  DownloadOptions,
  cachedSnapshot,
  downloadModel,
  hubCacheDir,
  hubOffline,
  isRepoId,
  snapshotMissing,
} from '../io/hub';

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
      listing = fs
        .readdirSync(dirOrFile)
        .filter((f) => f.endsWith('.safetensors'))
        .sort();
    } catch {
      // not a readable folder: the message below says what was looked for
    }
    throw new CheckpointError(
      `${dirOrFile}: no weights found; looked for model.safetensors.index.json, model.safetensors, ` +
        `exactly one *.safetensors file (found ${listing.length}${listing.length ? ': ' + listing.join(', ') : ''}), ` +
        `${TORCH_BIN_INDEX} and ${TORCH_BIN}`,
    );
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
  return {
    format: 'safetensors',
    source,
    keys: () => [],
    files: () => [],
    has: () => false,
    info: none,
    readFloat32: none,
    close: () => {},
  };
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
    readRegion: (n, region, into) => ck.readRegion(n, region, into),
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

  private constructor(
    readonly source: string,
    private readonly shards: ShardedFiles<TorchBinFile>,
  ) {}

  static open(indexPath: string): TorchBinShards {
    return new TorchBinShards(
      indexPath,
      ShardedFiles.fromIndex(indexPath, indexPath, (f) => TorchBinFile.open(f)).shards,
    );
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
export function readJsonFile(file: string, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new ConfigError(`${file}: ${what} not found`);
  }
  const json = parseJsonWithLimits(
    text,
    { maxDepth: CONFIG_MAX_DEPTH },
    (problem) => new ConfigError(`${file}: ${what} ${problem}`),
  );
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ConfigError(
      `${file}: ${what} is not a valid JSON object (it is ${Array.isArray(json) ? 'an array' : typeof json})`,
    );
  }
  return json as Record<string, unknown>;
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

/** The download option as given, else LLAVA_VISION_DOWNLOAD=1; false when downloads are off. */
function downloadSetting(download: boolean | DownloadOptions | undefined): false | DownloadOptions {
  const d = download ?? process.env.LLAVA_VISION_DOWNLOAD === '1';
  return d === false ? false : d === true ? {} : d;
}

/** A hub id's snapshot in the local HF cache when it holds a whole model, with what is missing otherwise. */
function lookInCache(
  repoId: string,
  hub: Pick<DownloadOptions, 'cacheDir' | 'revision'>,
): { snapshot: string | null; note: string } {
  const cacheDir = hub.cacheDir ?? hubCacheDir();
  const snapshot = cachedSnapshot(repoId, { revision: hub.revision, cacheDir });
  if (!snapshot) return { snapshot: null, note: `not in the HuggingFace cache (${cacheDir})` };
  const missing = snapshotMissing(snapshot); // a whole model, whatever subset a download option names
  if (missing.length)
    return { snapshot: null, note: `only partly in the HuggingFace cache (${snapshot} lacks ${missing.join(', ')})` };
  return { snapshot, note: '' };
}

/**
 * A model given as a folder or a HuggingFace repo id, as `from_pretrained` and transformers.js resolve
 * it: an existing path is used as it is; a repo id (`org/name`) is looked up in the local HF cache
 * (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub: models--org--name/snapshots/<the
 * commit refs/main names>), and only with `download` (or LLAVA_VISION_DOWNLOAD=1) fetched into it;
 * HF_HUB_OFFLINE=1 forbids that. When nothing is found the error says how to get it.
 */
export async function resolveModelDir(name: string, options: ResolveTowerOptions = {}): Promise<string> {
  if (fs.existsSync(name)) return name;
  if (!isRepoId(name)) throw new ConfigError(`${name}: no such model folder`);
  const download = downloadSetting(options.download);
  const hub = download || {};
  const { snapshot, note } = lookInCache(name, hub);
  if (snapshot) return snapshot;
  const looked = `${name}: no such folder, and ${note}`;
  if (!download) {
    throw new ConfigError(
      `${looked}; get it with "llava-vision download ${name}", or pass --download (download option, or LLAVA_VISION_DOWNLOAD=1)`,
    );
  }
  if (hubOffline())
    throw new ConfigError(
      `${looked}; HF_HUB_OFFLINE=1 forbids downloading it (unset it, or run "llava-vision download ${name}" where the hub is reachable)`,
    );
  try {
    return await downloadModel(name, hub);
  } catch (e) {
    if (e instanceof Error) e.message = `${name} is not local, and downloading it failed: ${e.message}`;
    throw e;
  }
}

/**
 * LLaVA's `mm_vision_tower` is a hub id (e.g. openai/clip-vit-large-patch14-336). Resolved here as a
 * local folder: as given (absolute or relative to the working directory), then relative to the LLaVA
 * folder, then in the local HuggingFace hub cache (models--org--name/snapshots/<refs/main>); else, with
 * `download`, downloaded into that cache (never with HF_HUB_OFFLINE=1).
 */
export async function resolveVisionTower(
  name: string,
  modelDir: string,
  options: ResolveTowerOptions = {},
): Promise<string> {
  const download = downloadSetting(options.download);
  const hub = download || {};
  const candidates = [name, path.join(modelDir, name)];
  const local = candidates.find((c) => isDir(c) && fs.existsSync(path.join(c, 'config.json')));
  if (local) return local;
  const cache = isRepoId(name) ? lookInCache(name, hub) : null;
  if (cache?.snapshot) return cache.snapshot;
  const looked = `is not a local CLIP folder (looked in ${candidates.join(', ')})${cache ? ` and is ${cache.note}` : ''}`;
  if (!download) {
    throw new ConfigError(
      `mm_vision_tower "${name}" ${looked}; pass --download (download option, or LLAVA_VISION_DOWNLOAD=1) ` +
        `to fetch it from the HuggingFace hub, or its folder with --vision-tower DIR (visionTower option)`,
    );
  }
  if (!isRepoId(name))
    throw new ConfigError(
      `mm_vision_tower "${name}" ${looked} nor a hub repo id; pass --vision-tower DIR (visionTower option)`,
    );
  if (hubOffline())
    throw new ConfigError(
      `mm_vision_tower "${name}" ${looked}; HF_HUB_OFFLINE=1 forbids downloading it: pass --vision-tower DIR (visionTower option), or unset it`,
    );
  try {
    return await downloadModel(name, hub);
  } catch (e) {
    if (e instanceof Error)
      e.message = `mm_vision_tower "${name}" is not local, and downloading it failed: ${e.message}`;
    throw e;
  }
}

/** The config.json of a tower folder (or of a weights file's folder). */
export function visionConfigFile(towerPath: string): string {
  const dir = fs.existsSync(towerPath) && fs.statSync(towerPath).isFile() ? path.dirname(towerPath) : towerPath;
  return path.join(dir, 'config.json');
}

/** The vision config from a folder's (or a file's folder's) config.json. */
export function readVisionConfig(towerPath: string): CLIPVisionConfig {
  const file = visionConfigFile(towerPath);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new ConfigError(`${file}: vision tower config not found (is "${towerPath}" a CLIP model folder?)`);
  }
  const json = parseJsonWithLimits(
    text,
    { maxDepth: CONFIG_MAX_DEPTH },
    (problem) => new ConfigError(`${file}: vision tower config ${problem}`),
  );
  return clipVisionConfigFromJson(json, file);
}
