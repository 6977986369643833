import * as fs from 'fs';
import * as path from 'path';
import { ConfigError } from '../errors';
import { Checkpoint } from '../io/checkpoint';
import { TorchBinFile } from '../io/torch_bin';
import { TensorSource } from '../model/weights';

export interface OpenedSource extends TensorSource {
  keys(): string[];
  close(): void;
}

/** A safetensors file/folder (single or sharded) or a torch `.bin` (restricted unpickler), as one interface. */
export function openTensorSource(file: string): OpenedSource {
  if (/\.(bin|pt|pth)$/.test(file)) {
    const bin = TorchBinFile.open(file);
    return {
      source: file,
      keys: () => bin.keys(),
      has: (n) => bin.has(n),
      info: (n) => bin.info(n),
      readFloat32: (n) => bin.readFloat32(n),
      close: () => bin.close(),
    };
  }
  return Checkpoint.open(file);
}

/** config.json of a model folder, parsed, with errors naming the file. */
export function readJsonFile(file: string, what: string): Record<string, any> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new ConfigError(`${file}: ${what} not found`);
  }
  try {
    const json = JSON.parse(text);
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error('not an object');
    return json;
  } catch (e) {
    throw new ConfigError(`${file}: ${what} is not a valid JSON object (${(e as Error).message})`);
  }
}

export function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/**
 * LLaVA's `mm_vision_tower` is a hub id (e.g. openai/clip-vit-large-patch14-336). Resolved here as a
 * local folder: as given (absolute or relative to the working directory), then relative to the LLaVA
 * folder, then in the local HuggingFace hub cache (models--org--name/snapshots/*).
 */
export function resolveVisionTower(name: string, modelDir: string): string {
  const candidates = [name, path.join(modelDir, name)];
  const hfHome = process.env.HF_HUB_CACHE ?? path.join(process.env.HF_HOME ?? path.join(process.env.HOME ?? '', '.cache', 'huggingface'), 'hub');
  const snapshots = path.join(hfHome, `models--${name.replace(/\//g, '--')}`, 'snapshots');
  if (isDir(snapshots)) for (const s of fs.readdirSync(snapshots).sort().reverse()) candidates.push(path.join(snapshots, s));
  const found = candidates.find((c) => isDir(c) && fs.existsSync(path.join(c, 'config.json')));
  if (!found) {
    throw new ConfigError(
      `mm_vision_tower "${name}" is not a local CLIP folder (looked in ${candidates.join(', ')}); ` +
        `download it and pass its folder with --vision-tower DIR (visionTower option)`,
    );
  }
  return found;
}
