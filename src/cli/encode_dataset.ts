/**
 * `encode --out-dir DIR`: a dataset-scale encode into a folder of shards (dataset/writer.ts).
 * Everything that can be checked without the model is checked first — options, --inputs, the folder,
 * --part — so a mistake costs no model load; bad images are then per-image failures, not errors.
 */
import * as path from 'path';
import {
  DEFAULT_SHARD_SIZE,
  DatasetPart,
  MAX_PARTS,
  STORED_DTYPES,
  StoredDType,
  checkDatasetDir,
  expandInputs,
  readInputList,
  writeEncodedDataset,
} from '../dataset';
import { LlavaVision } from '../api/llava_vision';
import { ConfigError, quote } from '../errors';
import { UsageError, choiceOption } from './args';
import { DATASET_SPEC, EncodeArgs, atLeastOne, encodeSettings, loadOptions } from './encode_options';
import { jobProgress } from './progress';

export const DATASET_HELP = `  --out-dir DIR                instead of --out: a dataset folder, streamed and resumable (docs/datasets.md):
                               DIR/shard-00000.safetensors, ..., DIR/manifest.jsonl, DIR/dataset.json; an IMAGE
                               argument may be a folder (walked recursively, sorted); bad images are recorded failures
  --inputs FILE                (--out-dir) image paths, one per line, after the IMAGE arguments; "-" reads stdin
  --shard-size N               (--out-dir) images per shard (default ${DEFAULT_SHARD_SIZE})
  --dtype D                    (--out-dir) stored outputs: ${STORED_DTYPES.join(' | ')} (default F32; rounded to nearest even)
  --part K/N                   (--out-dir) only the inputs whose index is K mod N, into DIR/part-K-of-N/ (K from 0)`;

export interface DatasetCliIo {
  out: (s: string) => void;
  err: (s: string) => void;
  demoModel: string;
  stdin?: NodeJS.ReadableStream;
  /** Whether progress goes to a terminal (a bar) or a log (a line every few seconds); default: stderr's. */
  isTTY?: boolean;
}

/** The dataset options mean nothing with --out FILE: an error rather than silently ignored. */
export function rejectDatasetOptions(o: Record<string, unknown>): void {
  const given = Object.keys(DATASET_SPEC).filter((k) => o[k] !== undefined);
  if (given.length)
    throw new ConfigError(`--${given[0]} works with --out-dir DIR (a dataset folder), not with --out FILE`);
}

/**
 * `--part K/N`, e.g. `--part $SLURM_ARRAY_TASK_ID/16`: whole decimal numbers only (`1e21`, `0x10`,
 * `2.0` are refused, not read as some other number), N at most MAX_PARTS.
 */
export function parsePart(value: string): DatasetPart {
  const m = /^(\d{1,7})\/(\d{1,7})$/.exec(value.trim());
  if (!m)
    throw new UsageError(
      `--part must be K/N, two whole numbers with K from 0 (e.g. 0/4; N at most ${MAX_PARTS}), got ${quote(value, 40)}`,
    );
  const [index, count] = [Number(m[1]), Number(m[2])];
  if (count < 1) throw new UsageError(`--part ${value}: N must be at least 1`);
  if (count > MAX_PARTS) throw new UsageError(`--part ${value}: N must be at most ${MAX_PARTS}`);
  if (index >= count)
    throw new UsageError(
      `--part ${value}: K must be 0..${count - 1} (counted from 0, like SLURM_ARRAY_TASK_ID with --array=0-${count - 1} and JOB_COMPLETION_INDEX)`,
    );
  return { index, count };
}

/** Failures named one by one on stderr; after these, only counted (all are in the manifest). */
export const FAILURES_SHOWN = 20;

export async function runEncodeDataset(
  outDir: string,
  o: EncodeArgs,
  images: string[],
  io: DatasetCliIo,
): Promise<number> {
  if (o.out !== undefined) throw new ConfigError('give either --out FILE or --out-dir DIR, not both');
  if (o['pixel-values'] !== undefined)
    throw new ConfigError('--out-dir encodes images; --pixel-values works with --out FILE');
  if (o.force)
    throw new ConfigError('--force has no use with --out-dir: a dataset folder is added to, never overwritten');
  if (images.length === 0 && o.inputs === undefined)
    throw new ConfigError('encode --out-dir needs images: files, folders, or --inputs FILE');
  const settings = encodeSettings(o);
  const { save, aspect, mergeType, gridPinpoints, batchSize, workers } = settings;
  const shardSize = atLeastOne(o['shard-size'], 'shard-size', DEFAULT_SHARD_SIZE);
  const dtype = choiceOption<StoredDType>(o.dtype, 'dtype', STORED_DTYPES) ?? 'F32';
  const part = o.part === undefined ? undefined : parsePart(o.part);
  checkDatasetDir(outDir, part, '--out-dir');
  const listed = o.inputs === undefined ? [] : await readInputList(o.inputs, io.stdin);
  const inputs = expandInputs(images, listed);
  if (inputs.length === 0) throw new ConfigError(`--inputs ${o.inputs} lists no images`);
  const modelDir = o.model ?? io.demoModel;
  if (!o.model && !o.quiet)
    io.err(
      `llava-vision: no --model given: using the bundled demo checkpoint ${modelDir} (generated weights, not a trained model)\n`,
    );

  const model = await LlavaVision.load(modelDir, loadOptions(o, settings, io.err));
  try {
    const progress = jobProgress({ label: 'encoding', write: io.err, isTTY: io.isTTY ?? !!process.stderr.isTTY });
    const outputs = save ?? [model.projectorConfig ? 'merged' : 'features'];
    const start = performance.now();
    let failedNow = 0;
    const summary = await writeEncodedDataset(model, inputs, outDir, {
      outputs,
      aspect,
      gridPinpoints,
      mergeType,
      autoOrient: o['auto-orient'],
      interpolatePosEncoding: o['interpolate-pos-encoding'],
      batchSize,
      workers,
      shardSize,
      dtype,
      part,
      onProgress: o.quiet
        ? undefined
        : (p) =>
            progress.update({
              done: p.skipped + p.done,
              total: p.skipped + p.todo,
              failed: p.failed,
              skipped: p.skipped,
            }),
      onFailure: (f) => {
        if (++failedNow <= FAILURES_SHOWN) io.err(`llava-vision: image ${f.index}: ${f.message}\n`);
      },
    });
    progress.end();
    const manifest = path.join(summary.dir, 'manifest.jsonl');
    if (!o.quiet) {
      const already = summary.skipped ? `; ${summary.skipped} were already there` : '';
      const seconds = (performance.now() - start) / 1000;
      const rate = summary.encoded
        ? ` in ${seconds.toFixed(1)} s (${((60 * summary.encoded) / seconds).toFixed(1)} images/min)`
        : '';
      io.err(
        `llava-vision: ${summary.dir}: encoded ${summary.encoded} image(s) into ${summary.shards} new shard(s) (${dtype})${rate}${already}; ${summary.images} image(s) in all\n`,
      );
    }
    if (summary.failedTotal) {
      const earlier = summary.failedTotal - summary.failed;
      const unnamed = failedNow > FAILURES_SHOWN ? `; the first ${FAILURES_SHOWN} of this run are named above` : '';
      io.err(
        `llava-vision: ${summary.failedTotal} of ${summary.images} image(s) failed${earlier ? ` (${earlier} in earlier runs)` : ''}, recorded in ${manifest}${unnamed}; the others were written\n`,
      );
      return 1;
    }
    return 0;
  } finally {
    model.dispose();
  }
}
