import * as tf from '../tf';
import { AspectMode, MergeType, Pinpoints } from '../config/llava';
import { ConfigError, LlavaVisionError } from '../errors';
import { TensorToWrite } from '../io/safetensors';
import { RgbImage, decodeImage, getAnyresImageGridShape, processImages } from '../image';
import { mergeImageFeatures } from '../model/merge';
import { throwOnWebGpuError } from '../webgpu';
import { EncodeResult, LlavaVision, OUTPUT_NAMES, OutputName } from './llava_vision';
import { encodeInWorkers, workerSpec } from './worker_pool';

/** Everything the CLI can save per image. */
export type SaveName = OutputName | 'pixel_values' | 'merged';
export const SAVE_NAMES: readonly SaveName[] = ['pixel_values', ...OUTPUT_NAMES, 'merged'];

export interface EncodeJobOptions {
  outputs: SaveName[];
  /** Tiles (images, or anyres tiles) per forward, at least one image; results do not depend on it. */
  batchSize?: number;
  interpolatePosEncoding?: boolean;
  onProgress?: (done: number, total: number) => void;
  /**
   * Model instances encoding in parallel: this thread's plus `workers − 1` worker threads, each with
   * its own backend and copy of the weights (N× the memory). Default 1. Same output whatever the count.
   */
  workers?: number;
}

export interface ImageJobOptions extends EncodeJobOptions {
  /** Default: the checkpoint's image_aspect_ratio, else square (processor only). */
  aspect?: AspectMode;
  gridPinpoints?: Pinpoints;
  /** Default: the checkpoint's mm_patch_merge_type, else flat. */
  mergeType?: MergeType;
  /** Apply EXIF orientation (Pillow's Image.open does not). */
  autoOrient?: boolean;
}

/** One image's pixel values [tiles, 3, H, W] and what the merge needs to know about it. */
export interface EncodeUnit {
  index: number;
  pixels: Float32Array;
  shape: [number, number, number, number];
  imageSize?: [number, number];
  gridShape?: [number, number];
}

export interface ImageFailure {
  index: number;
  source: string;
  message: string;
}

export interface ImageJobResult {
  tensors: Record<string, TensorToWrite>;
  failures: ImageFailure[];
  sizes: ([number, number] | null)[];
}

/** What `encodeItems` hands over, one at a time: an output on the backend (the receiver reads and disposes it), an array, or progress. */
type EncodedItem = { name: string; tensor: tf.Tensor } | { name: string; array: TensorToWrite } | { unitsDone: number };

/**
 * Runs units through the model in batches, naming outputs `images.<i>.<name>`; results are read with
 * `dataSync`. On the webgpu backend, which can only read asynchronously, use `encodeUnitsAsync`.
 */
export function encodeUnits(model: LlavaVision, units: EncodeUnit[], options: EncodeJobOptions & { mergeType?: MergeType }): Record<string, TensorToWrite> {
  if (model.backend === 'webgpu') throw new ConfigError('the webgpu backend reads results asynchronously: use encodePixelValuesAsync or encodeImages');
  const out: Record<string, TensorToWrite> = {};
  let done = 0;
  for (const item of encodeItems(model, units, options)) {
    if ('tensor' in item) {
      try {
        out[item.name] = { dtype: 'F32', shape: item.tensor.shape, data: item.tensor.dataSync() as Float32Array };
      } finally {
        item.tensor.dispose();
      }
    } else if ('array' in item) out[item.name] = item.array;
    else options.onProgress?.((done += item.unitsDone), units.length);
  }
  return out;
}

/** `encodeUnits` reading results asynchronously (any backend; the only way on webgpu). */
export async function encodeUnitsAsync(model: LlavaVision, units: EncodeUnit[], options: EncodeJobOptions & { mergeType?: MergeType }): Promise<Record<string, TensorToWrite>> {
  const out: Record<string, TensorToWrite> = {};
  let done = 0;
  for (const item of encodeItems(model, units, options)) {
    if ('tensor' in item) {
      try {
        const data = (await item.tensor.data()) as Float32Array;
        throwOnWebGpuError();
        out[item.name] = { dtype: 'F32', shape: item.tensor.shape, data };
      } finally {
        item.tensor.dispose();
      }
    } else if ('array' in item) out[item.name] = item.array;
    else options.onProgress?.((done += item.unitsDone), units.length);
  }
  return out;
}

/**
 * The forward of `encodeUnits`, its outputs handed over one at a time, so at most one output beyond
 * the batch's results is alive; the batch's results are freed once its outputs are handed over (or
 * when the receiver stops early).
 */
function* encodeItems(model: LlavaVision, units: EncodeUnit[], options: EncodeJobOptions & { mergeType?: MergeType }): Generator<EncodedItem> {
  const batchSize = options.batchSize ?? 1;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ConfigError(`batch size must be a positive integer, got ${batchSize}`);
  const wanted = new Set(options.outputs);
  for (const o of wanted) if (!SAVE_NAMES.includes(o)) throw new ConfigError(`unknown output "${o}" (choose from ${SAVE_NAMES.join(', ')})`);
  if (wanted.has('merged') && !model.projector) throw new ConfigError(`output "merged" needs a projector, and ${model.modelDir} has none`);
  const modelOutputs = OUTPUT_NAMES.filter((o) => wanted.has(o) || (o === 'projected' && wanted.has('merged')));
  for (let start = 0; start < units.length; ) {
    const group: EncodeUnit[] = [];
    let tiles = 0;
    while (start < units.length && (group.length === 0 || tiles + units[start].shape[0] <= batchSize)) {
      tiles += units[start].shape[0];
      group.push(units[start++]);
    }
    const [, c, h, w] = group[0].shape;
    if (group.some((u) => u.shape[2] !== h || u.shape[3] !== w)) throw new ConfigError('images in one batch preprocess to different sizes');
    const data = new Float32Array(tiles * c * h * w);
    group.reduce((off, u) => (data.set(u.pixels, off), off + u.pixels.length), 0);
    const pixels = tf.tensor4d(data, [tiles, c, h, w]);
    let result: EncodeResult = {};
    try {
      if (modelOutputs.length) result = model.encode(pixels, { outputs: modelOutputs, interpolatePosEncoding: options.interpolatePosEncoding });
      let row = 0;
      for (const u of group) {
        const n = u.shape[0];
        const rows = (t: tf.Tensor) => tf.tidy(() => t.slice([row, ...t.shape.slice(1).map(() => 0)], [n, ...t.shape.slice(1)]));
        const name = (output: string) => `images.${u.index}.${output}`;
        if (wanted.has('pixel_values')) yield { name: name('pixel_values'), array: { dtype: 'F32', shape: u.shape, data: u.pixels } };
        if (wanted.has('hidden_states')) for (const [k, hs] of result.hiddenStates!.entries()) yield { name: name(`hidden_states.${k}`), tensor: rows(hs) };
        if (wanted.has('features')) yield { name: name('features'), tensor: rows(result.features!) };
        if (wanted.has('projected') || wanted.has('merged')) {
          const projected = rows(result.projected!) as tf.Tensor3D;
          let handedOver = false;
          try {
            if (wanted.has('merged')) {
              yield { name: name('merged'), tensor: mergeImageFeatures(projected, {
                mergeType: options.mergeType ?? 'flat',
                patchesPerSide: model.tower.numPatchesPerSide,
                gridShape: u.gridShape,
                imageSize: u.imageSize,
                imageNewline: model.imageNewline,
              }) };
            }
            if (wanted.has('projected')) {
              handedOver = true;
              yield { name: name('projected'), tensor: projected };
            }
          } finally {
            if (!handedOver) projected.dispose();
          }
        }
        if (wanted.has('pooler_output')) yield { name: name('pooler_output'), tensor: rows(result.poolerOutput!) };
        row += n;
      }
    } finally {
      tf.dispose([pixels, ...(result.hiddenStates ?? []), result.features, result.projected, result.poolerOutput].filter(Boolean) as tf.Tensor[]);
    }
    yield { unitsDone: group.length };
  }
}

/**
 * Runs N images' precomputed pixel values [N, 3, H, W] (e.g. written by Python) through the model,
 * one image per unit. Output names as for image files, with tiles = 1.
 */
export function encodePixelValues(model: LlavaVision, pixels: Float32Array, shape: [number, number, number, number], options: EncodeJobOptions): Record<string, TensorToWrite> {
  if ((options.workers ?? 1) > 1) throw new ConfigError('encodePixelValues runs on this thread only: use encodePixelValuesAsync for workers > 1');
  return encodeUnits(model, pixelUnits(pixels, shape), options);
}

/** `encodePixelValues`, also on `options.workers` model instances (see worker_pool.ts). */
export async function encodePixelValuesAsync(model: LlavaVision, pixels: Float32Array, shape: [number, number, number, number], options: EncodeJobOptions): Promise<Record<string, TensorToWrite>> {
  return encodeAll(model, pixelUnits(pixels, shape), options);
}

/** One unit per image of a [N, C, H, W] batch (views, no copies). */
function pixelUnits(pixels: Float32Array, [n, c, h, w]: [number, number, number, number]): EncodeUnit[] {
  const per = c * h * w;
  return Array.from({ length: n }, (_, i) => ({ index: i, pixels: pixels.subarray(i * per, (i + 1) * per), shape: [1, c, h, w] }));
}

/** Units on this thread, or on `options.workers` model instances. */
async function encodeAll(model: LlavaVision, units: EncodeUnit[], options: EncodeJobOptions & { mergeType?: MergeType }): Promise<Record<string, TensorToWrite>> {
  const workers = options.workers ?? 1;
  if (!Number.isInteger(workers) || workers < 1) throw new ConfigError(`workers must be a positive integer, got ${workers}`);
  if (workers === 1 || units.length <= 1) return encodeUnitsAsync(model, units, options);
  if (model.backend === 'webgpu') throw new ConfigError(`workers ${workers}: the webgpu backend runs one model instance on the GPU (use workers 1)`);
  const { onProgress, workers: _w, ...jobOptions } = options;
  encodeUnits(model, [], jobOptions); // checks the options before any thread starts
  // A unit's pixels go to a worker as a copy of just that unit (a subarray would carry its whole buffer).
  const own = units.map((u) => ({ ...u, pixels: u.pixels.slice() }));
  return encodeInWorkers(own, workers, workerSpec(model), (u) => encodeUnits(model, [u], jobOptions), jobOptions, onProgress);
}

/**
 * Image files (or decoded images) to LLM-ready tokens: decode like Pillow's convert('RGB'), LLaVA's
 * process_images (square / pad / anyres), tower, projector, and the merge LLaVA inserts into the LLM.
 * An image that fails to decode is reported in `failures`; the others are still encoded.
 */
export async function encodeImages(model: LlavaVision, inputs: (string | Uint8Array | RgbImage)[], options: ImageJobOptions): Promise<ImageJobResult> {
  const processor = model.imageProcessor;
  const aspect = options.aspect ?? model.settings.aspect;
  const gridPinpoints = options.gridPinpoints ?? model.settings.gridPinpoints ?? undefined;
  if (aspect === 'anyres' && !gridPinpoints) throw new ConfigError(`aspect "anyres" needs grid pinpoints (image_grid_pinpoints in config.json, or --grid-pinpoints)`);
  const failures: ImageFailure[] = [];
  const sizes: ([number, number] | null)[] = [];
  const units: EncodeUnit[] = [];
  for (const [index, input] of inputs.entries()) {
    const source = typeof input === 'string' ? input : `input ${index}`;
    try {
      const img = isRgbImage(input) ? input : await decodeImage(input, { autoOrient: options.autoOrient, name: source });
      const [processed] = processImages([img], processor, { aspect, gridPinpoints });
      const imageSize: [number, number] = [img.width, img.height];
      const gridShape = aspect === 'anyres' ? getAnyresImageGridShape(imageSize, gridPinpoints!, model.tower.config.imageSize) : undefined;
      units.push({ index, pixels: processed.pixelValues, shape: processed.shape, imageSize, gridShape });
      sizes.push(imageSize);
    } catch (e) {
      if (!(e instanceof LlavaVisionError)) throw e;
      failures.push({ index, source, message: e.message });
      sizes.push(null);
    }
  }
  const tensors = await encodeAll(model, units, { ...options, mergeType: options.mergeType ?? model.settings.mergeType });
  return { tensors, failures, sizes };
}

function isRgbImage(x: unknown): x is RgbImage {
  return typeof x === 'object' && x !== null && !(x instanceof Uint8Array) && 'data' in x && 'width' in x && 'height' in x;
}
