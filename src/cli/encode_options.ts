/**
 * The options of `encode`, for a file (`--out`, cli/encode.ts) and a dataset folder (`--out-dir`,
 * cli/encode_dataset.ts): parsed and checked in one place, before anything is loaded.
 */
import { BACKEND_CHOICES, BackendChoice } from '../backend';
import { SAVE_NAMES, SaveName } from '../api/encode_job';
import { LoadOptions } from '../api/llava_vision';
import { AspectMode, MergeType, Pinpoints, SelectFeature, projectorDepth } from '../config/llava';
import { OptionValues, UsageError, choiceOption, gridPinpointsOption, intOption, listOption, usageCheck } from './args';
import { downloadProgress } from './download';

/** The options only `--out-dir` takes. */
export const DATASET_SPEC = {
  'out-dir': { type: 'string' },
  inputs: { type: 'string' },
  'shard-size': { type: 'string' },
  dtype: { type: 'string' },
  part: { type: 'string' },
} as const;

export const ENCODE_SPEC = {
  model: { type: 'string' },
  'pixel-values': { type: 'string' },
  out: { type: 'string' },
  'vision-tower': { type: 'string' },
  download: { type: 'boolean' },
  projector: { type: 'string' },
  'projector-type': { type: 'string' },
  'select-layer': { type: 'string' },
  'select-feature': { type: 'string' },
  aspect: { type: 'string' },
  'grid-pinpoints': { type: 'string' },
  merge: { type: 'string' },
  'interpolate-pos-encoding': { type: 'boolean' },
  'auto-orient': { type: 'boolean' },
  save: { type: 'string', multiple: true },
  'batch-size': { type: 'string' },
  workers: { type: 'string' },
  threads: { type: 'string' },
  backend: { type: 'string' },
  force: { type: 'boolean' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  ...DATASET_SPEC,
} as const;

export type EncodeArgs = OptionValues<typeof ENCODE_SPEC>;

/** What both forms of `encode` take, checked. */
export interface EncodeSettings {
  selectLayer?: number;
  selectFeature?: SelectFeature;
  backend?: BackendChoice;
  save?: SaveName[];
  aspect?: AspectMode;
  mergeType?: MergeType;
  gridPinpoints?: Pinpoints;
  batchSize: number;
  workers: number;
  /** --threads; undefined: LLAVA_VISION_THREADS, else the cores (with --workers: 1 per copy). */
  threads?: number;
  /** --projector-type, a type name LLaVA knows (the checkpoint decides whether it fits). */
  projectorType?: string;
}

export function encodeSettings(o: EncodeArgs): EncodeSettings {
  return {
    selectLayer: intOption(o['select-layer'], 'select-layer'),
    selectFeature: choiceOption<SelectFeature>(o['select-feature'], 'select-feature', ['patch', 'cls_patch']),
    backend: choiceOption<BackendChoice>(o.backend, 'backend', BACKEND_CHOICES),
    save: listOption<SaveName>(o.save, 'save', SAVE_NAMES),
    aspect: choiceOption<AspectMode>(o.aspect, 'aspect', ['square', 'pad', 'anyres']),
    mergeType: choiceOption<MergeType>(o.merge, 'merge', ['flat', 'spatial', 'spatial_unpad']),
    gridPinpoints: gridPinpointsOption(o['grid-pinpoints']),
    batchSize: atLeastOne(o['batch-size'], 'batch-size', 1),
    workers: atLeastOne(o.workers, 'workers', 1),
    threads: o.threads === undefined ? undefined : atLeastOne(o.threads, 'threads', 1),
    projectorType:
      o['projector-type'] === undefined
        ? undefined
        : usageCheck(() => (projectorDepth(o['projector-type'], '--projector-type'), o['projector-type'])),
  };
}

/** An integer option that must be at least 1. */
export function atLeastOne(value: string | undefined, name: string, fallback: number): number {
  const n = intOption(value, name) ?? fallback;
  if (n < 1) throw new UsageError(`--${name} must be at least 1, got ${n}`);
  return n;
}

/** `LlavaVision.load`'s options from the command line; log lines and download progress go to `err` unless --quiet. */
export function loadOptions(o: EncodeArgs, settings: EncodeSettings, err: (s: string) => void): LoadOptions {
  return {
    visionTower: o['vision-tower'],
    download: o.download ? { onProgress: o.quiet ? undefined : downloadProgress() } : undefined,
    projector: o.projector,
    projectorType: settings.projectorType,
    selectLayer: settings.selectLayer,
    selectFeature: settings.selectFeature,
    backend: settings.backend,
    // With --workers and no --threads, each copy runs on one thread: the copies use the cores.
    threads: settings.threads ?? (settings.workers > 1 ? 1 : undefined),
    log: o.quiet ? null : (line) => err(line + '\n'),
  };
}
