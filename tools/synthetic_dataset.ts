/**
 * Synthetic encoded datasets of any size, without a model: dataset.json, shards of tiny tensors and
 * the manifest, in the exact format `encode --out-dir` writes (so the reader, resume and the fuzz
 * suite can be tried on 600k images in a minute). Each image `i` stores `features` [1, 4] whose
 * values are i, i+1, i+2, i+3 (exact in F32; a reader can check what it got).
 *
 *   npm run build && node dist/tools/synthetic_dataset.js DIR [--images 600000] [--shard-size 64] [--fail-every 0]
 *
 * Files are written without fsync (a generator, not a writer that must survive a kill).
 */
import * as fs from 'fs';
import * as path from 'path';
import {
  DATASET_JSON,
  DatasetInfo,
  FORMAT,
  FORMAT_VERSION,
  IDENTITY_FIELDS,
  MANIFEST,
  ManifestEntry,
  partDirName,
  settingsDigest,
  shardName,
  shardMetadata,
} from '../src/dataset/format';
import { writeAllSync } from '../src/io/atomic';
import { TensorToWrite, serializeSafetensors } from '../src/io/safetensors';
import { packageVersion } from '../src/version';

export interface SyntheticOptions {
  images: number;
  shardSize?: number;
  /** Every k-th image (k > 0) is a recorded failure instead. */
  failEvery?: number;
  /** Writes only the images of this part, into DIR/part-K-of-N (the global index space is still `images`). */
  part?: { index: number; count: number };
  /** Overrides of dataset.json's identity (e.g. a real model's, to resume with it). */
  identity?: Partial<Pick<DatasetInfo, (typeof IDENTITY_FIELDS)[number]>>;
  /** The source path of image i. */
  source?: (i: number) => string;
}

/** dataset.json of a synthetic dataset (features [1, 4], F32 unless overridden). */
export function syntheticInfo(options: SyntheticOptions): DatasetInfo {
  const identity: Pick<DatasetInfo, (typeof IDENTITY_FIELDS)[number]> = {
    format: FORMAT,
    format_version: FORMAT_VERSION,
    producer: `llava-vision-tfjs ${packageVersion()}`,
    model: { digest: `sha256:${'0'.repeat(64)}`, layout: 'clip_vision', projector_type: null },
    numerics: { backend: 'wasm', tower_layout: 'wasm', threads: 1, gemm: 'fma' },
    options: {
      save: ['features'],
      dtype: 'F32',
      aspect: 'square',
      grid_pinpoints: null,
      merge: 'flat',
      select_layer: -2,
      select_feature: 'patch',
      interpolate_pos_encoding: false,
      auto_orient: false,
    },
    part: options.part ?? null,
    ...options.identity,
  };
  return {
    ...identity,
    settings_digest: settingsDigest(identity),
    inputs: { count: options.images },
    shard_size: options.shardSize ?? 64,
    made_from: { model_dir: '/synthetic', vision_tower: null, projector: null },
  };
}

/** Writes the dataset (or part) into `dir`; returns the folder written. */
export function writeSyntheticDataset(dir: string, options: SyntheticOptions): string {
  const info = syntheticInfo(options);
  const out = options.part ? path.join(dir, partDirName(options.part.index, options.part.count)) : dir;
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, DATASET_JSON), JSON.stringify(info, null, 2) + '\n');
  const shardSize = options.shardSize ?? 64;
  const source = options.source ?? ((i: number) => `/data/images/img-${String(i).padStart(7, '0')}.jpg`);
  const metadata = shardMetadata(info);
  const dtype = info.options.dtype ?? 'F32';
  const manifest = fs.openSync(path.join(out, MANIFEST), 'w');
  try {
    const step = options.part ? options.part.count : 1;
    let shard = 0;
    let pending: string[] = [];
    for (let first = options.part ? options.part.index : 0; first < options.images; first += shardSize * step) {
      const name = shardName(shard++);
      const tensors: Record<string, TensorToWrite> = {};
      const entries: ManifestEntry[] = [];
      for (let i = first; i < Math.min(options.images, first + shardSize * step); i += step) {
        if (options.failEvery && i % options.failEvery === options.failEvery - 1) {
          entries.push({ index: i, source: source(i), shard: name, error: `${source(i)}: no such file` });
          continue;
        }
        const values = Float32Array.from([i, i + 1, i + 2, i + 3]);
        tensors[`images.${i}.features`] =
          dtype === 'F32'
            ? { dtype: 'F32', shape: [1, 4], data: values }
            : { dtype, shape: [1, 4], data: new Uint16Array(4) };
        entries.push({
          index: i,
          source: source(i),
          shard: name,
          image_size: [640, 480],
          tensors: { features: [1, 4] },
        });
      }
      fs.writeFileSync(
        path.join(out, name),
        serializeSafetensors(tensors, { ...metadata, entries: JSON.stringify(entries) }),
      );
      for (const e of entries) pending.push(JSON.stringify(e) + '\n');
      if (pending.length >= 8192) {
        writeAllSync(manifest, Buffer.from(pending.join('')));
        pending = [];
      }
    }
    writeAllSync(manifest, Buffer.from(pending.join('')));
  } finally {
    fs.closeSync(manifest);
  }
  return out;
}

function main(argv: string[]): void {
  const dir = argv[0];
  const arg = (name: string, fallback: number) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? Number(argv[i + 1]) : fallback;
  };
  if (!dir || dir.startsWith('--'))
    throw new Error('usage: synthetic_dataset DIR [--images N] [--shard-size N] [--fail-every K]');
  const t0 = performance.now();
  writeSyntheticDataset(dir, {
    images: arg('images', 600_000),
    shardSize: arg('shard-size', 64),
    failEvery: arg('fail-every', 0),
  });
  console.log(`wrote ${dir} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

if (require.main === module) main(process.argv.slice(2));
