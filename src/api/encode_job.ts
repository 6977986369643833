import * as tf from '../tf';
import { AspectMode, MergeType, Pinpoints } from '../config/llava';
import { ConfigError, ImageError } from '../errors';
import { TensorToWrite } from '../io/safetensors';
import { RgbImage, decodeImage, getAnyresImageGridShape, processImages } from '../image';
import { imageFailureMessage } from '../image/failure';
import { CLIPImageProcessor } from '../image/processor';
import { mergeImageFeatures } from '../model/merge';
import { throwOnWebGpuError } from '../webgpu';
import { EncodeResult, LlavaVision, OUTPUT_NAMES, OutputName } from './llava_vision';
import type { LoadOptions } from '../loading/load_options';
import { WorkerModelSpec, encodeInWorkers } from '../parallel/pool/worker_pool';

/** Everything the CLI can save per image. */
export type SaveName = OutputName | 'pixel_values' | 'merged';
export const SAVE_NAMES: readonly SaveName[] = ['pixel_values', ...OUTPUT_NAMES, 'merged'];

/** What encode jobs accept as an image: a file path, the file's bytes, or decoded RGB pixels. */
export type ImageInput = string | Uint8Array | RgbImage;

/** One output tensor of an encode job: always float32. */
export interface EncodedTensor extends TensorToWrite {
  dtype: 'F32';
  shape: number[];
  data: Float32Array;
}

export interface EncodeJobOptions {
  /**
   * What to save per image. Default for images: `merged` (what LLaVA inserts into the LLM) when the
   * model has a projector, else `features`; for pixel values: `projected`, else `features`.
   */
  outputs?: SaveName[];
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
  /** Largest image decoded, width x height (default: Pillow's 2 x MAX_IMAGE_PIXELS; null: no limit). */
  maxImagePixels?: number | null;
}

/** One image's pixel values [tiles, 3, H, W] and what the merge needs to know about it. */
export interface EncodeUnit {
  index: number;
  pixels: Float32Array;
  shape: [number, number, number, number];
  imageSize?: [number, number];
  gridShape?: [number, number];
}

/**
 * Units grouped into forwards of at most `batchSize` tiles, in order (a unit with more tiles is a
 * forward of its own): `add` returns the batches a unit closes, `rest` the last one. Streams (the
 * dataset writer) and lists group the same way.
 */
export class Batches {
  private group: EncodeUnit[] = [];
  private tiles = 0;

  constructor(private readonly batchSize: number) {}

  add(unit: EncodeUnit): EncodeUnit[][] {
    const closed = this.group.length && this.tiles + unit.shape[0] > this.batchSize ? [this.take()] : [];
    this.group.push(unit);
    this.tiles += unit.shape[0];
    return this.tiles >= this.batchSize ? [...closed, this.take()] : closed;
  }

  rest(): EncodeUnit[][] {
    return this.group.length ? [this.take()] : [];
  }

  private take(): EncodeUnit[] {
    const group = this.group;
    [this.group, this.tiles] = [[], 0];
    return group;
  }
}

/** The model instances a job asks for (`workers`, default 1): a ConfigError unless a positive integer. */
export function workerCount(options: { workers?: number }): number {
  const workers = options.workers ?? 1;
  if (!Number.isInteger(workers) || workers < 1)
    throw new ConfigError(`workers must be a positive integer, got ${workers}`);
  return workers;
}

/** The tiles per forward a job asks for (`batchSize`, default 1): a ConfigError unless a positive integer. */
export function batchSizeOf(options: { batchSize?: number }): number {
  const batchSize = options.batchSize ?? 1;
  if (!Number.isInteger(batchSize) || batchSize < 1)
    throw new ConfigError(`batch size must be a positive integer, got ${batchSize}`);
  return batchSize;
}

/** An input of a list that could not be encoded (read, decoded or preprocessed). */
export interface ImageFailure {
  /** Its place in the list: it has no `images.<index>.*` tensors. */
  index: number;
  /** The path, or `input <index>` for bytes and decoded images. */
  source: string;
  /** One line naming the source and the cause. */
  message: string;
}

export interface ImageJobResult {
  /** `images.<i>.<output>` for input i, e.g. `images.0.merged`; none for a failed input. */
  tensors: Record<string, EncodedTensor>;
  /** The inputs of a list that failed, in order (a single input given alone throws instead). */
  failures: ImageFailure[];
  /** Each input's (width, height), null for a failed one. */
  sizes: ([number, number] | null)[];
}

/** What `encodeItems` hands over, one at a time: an output on the backend (the receiver reads and disposes it), an array, or progress. */
type EncodedItem = { name: string; tensor: tf.Tensor } | { name: string; array: EncodedTensor } | { unitsDone: number };

/**
 * Runs units through the model in batches, naming outputs `images.<i>.<name>`; results are read with
 * `dataSync`. On the webgpu backend, which can only read asynchronously, use `encodeUnitsAsync`.
 */
export function encodeUnits(
  model: LlavaVision,
  units: EncodeUnit[],
  options: EncodeJobOptions & { mergeType?: MergeType },
): Record<string, EncodedTensor> {
  if (model.backend === 'webgpu')
    throw new ConfigError(
      'the webgpu backend reads results asynchronously: use encodePixelValuesAsync or encodeImages',
    );
  const out: Record<string, EncodedTensor> = {};
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
export async function encodeUnitsAsync(
  model: LlavaVision,
  units: EncodeUnit[],
  options: EncodeJobOptions & { mergeType?: MergeType },
): Promise<Record<string, EncodedTensor>> {
  const out: Record<string, EncodedTensor> = {};
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
function* encodeItems(
  model: LlavaVision,
  units: EncodeUnit[],
  options: EncodeJobOptions & { mergeType?: MergeType },
): Generator<EncodedItem> {
  const wanted = checkJob(model, options, options.mergeType ?? 'flat', pixelDefault(model));
  const modelOutputs = OUTPUT_NAMES.filter((o) => wanted.has(o) || (o === 'projected' && wanted.has('merged')));
  const batches = new Batches(options.batchSize ?? 1);
  for (const group of [...units.flatMap((u) => batches.add(u)), ...batches.rest()]) {
    const tiles = group.reduce((n, u) => n + u.shape[0], 0);
    const [, c, h, w] = group[0].shape;
    if (group.some((u) => u.shape[2] !== h || u.shape[3] !== w))
      throw new ConfigError('images in one batch preprocess to different sizes');
    const data = new Float32Array(tiles * c * h * w);
    group.reduce((off, u) => (data.set(u.pixels, off), off + u.pixels.length), 0);
    const pixels = tf.tensor4d(data, [tiles, c, h, w]);
    let result: EncodeResult = {};
    try {
      if (modelOutputs.length)
        result = model.encode(pixels, {
          outputs: modelOutputs,
          interpolatePosEncoding: options.interpolatePosEncoding,
        });
      let row = 0;
      for (const u of group) {
        const n = u.shape[0];
        const rows = (t: tf.Tensor) =>
          tf.tidy(() => tf.slice(t, [row, ...t.shape.slice(1).map(() => 0)], [n, ...t.shape.slice(1)]));
        const name = (output: string) => `images.${u.index}.${output}`;
        if (wanted.has('pixel_values'))
          yield { name: name('pixel_values'), array: { dtype: 'F32', shape: u.shape, data: u.pixels } };
        if (wanted.has('hidden_states'))
          for (const [k, hs] of result.hiddenStates!.entries())
            yield { name: name(`hidden_states.${k}`), tensor: rows(hs) };
        if (wanted.has('features')) yield { name: name('features'), tensor: rows(result.features!) };
        if (wanted.has('projected') || wanted.has('merged')) {
          const projected = rows(result.projected!) as tf.Tensor3D;
          let handedOver = false;
          try {
            if (wanted.has('merged')) {
              yield {
                name: name('merged'),
                tensor: mergeImageFeatures(projected, {
                  mergeType: options.mergeType ?? 'flat',
                  patchesPerSide: model.tower.numPatchesPerSide,
                  gridShape: u.gridShape,
                  imageSize: u.imageSize,
                  imageNewline: model.imageNewline,
                }),
              };
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
      tf.dispose(
        [pixels, ...(result.hiddenStates ?? []), result.features, result.projected, result.poolerOutput].filter(
          Boolean,
        ),
      );
    }
    yield { unitsDone: group.length };
  }
}

const pixelDefault = (model: LlavaVision): SaveName => (model.projectorConfig ? 'projected' : 'features');
/** What an image job writes when no outputs are asked for: LLaVA's merged tokens, or the tower's features. */
export const defaultImageOutput = (model: LlavaVision): SaveName => (model.projectorConfig ? 'merged' : 'features');

/**
 * Checks a job's options against the model before any work (decoding, forward): returns the outputs
 * to save (`defaultOutput` when none are given).
 */
function checkJob(
  model: LlavaVision,
  options: EncodeJobOptions,
  mergeType: MergeType,
  defaultOutput: SaveName,
): Set<SaveName> {
  model.checkNotDisposed();
  batchSizeOf(options);
  if (options.outputs !== undefined && !Array.isArray(options.outputs))
    throw new ConfigError(`outputs must be an array of output names (choose from ${SAVE_NAMES.join(', ')})`);
  const wanted = new Set(options.outputs ?? [defaultOutput]);
  for (const o of wanted)
    if (!SAVE_NAMES.includes(o)) throw new ConfigError(`unknown output "${o}" (choose from ${SAVE_NAMES.join(', ')})`);
  if (wanted.has('merged') && !model.projectorConfig)
    throw new ConfigError(`output "merged" needs a projector, and ${model.modelDir} has none`);
  if (!MERGE_TYPES.includes(mergeType))
    throw new ConfigError(`unknown merge type "${mergeType}" (choose from ${MERGE_TYPES.join(', ')})`);
  if (wanted.has('merged') && mergeType === 'spatial_unpad') {
    if (!model.imageNewline)
      throw new ConfigError(
        `merge "spatial_unpad" needs model.image_newline, which ${model.modelDir} lacks (use merge "spatial" or "flat")`,
      );
    const width = model.projectedWidth!;
    if (model.imageNewline.shape[0] !== width)
      throw new ConfigError(
        `${model.modelDir}: image_newline has width ${model.imageNewline.shape[0]}, the projector's output has ${width}`,
      );
  }
  return wanted;
}

const MERGE_TYPES: readonly MergeType[] = ['flat', 'spatial', 'spatial_unpad'];

/**
 * Runs N images' precomputed pixel values [N, 3, H, W] (e.g. written by Python) through the model,
 * one image per unit. Output names as for image files, with tiles = 1.
 */
export function encodePixelValues(
  model: LlavaVision,
  pixels: Float32Array,
  shape: [number, number, number, number],
  options: EncodeJobOptions = {},
): Record<string, EncodedTensor> {
  if ((options.workers ?? 1) > 1)
    throw new ConfigError('encodePixelValues runs on this thread only: use encodePixelValuesAsync for workers > 1');
  return encodeUnits(model, pixelUnits(pixels, shape), options);
}

/** `encodePixelValues`, also on `options.workers` model instances (see parallel/pool/worker_pool.ts). */
export async function encodePixelValuesAsync(
  model: LlavaVision,
  pixels: Float32Array,
  shape: [number, number, number, number],
  options: EncodeJobOptions = {},
): Promise<Record<string, EncodedTensor>> {
  return encodeAll(model, pixelUnits(pixels, shape), options);
}

/** One unit per image of a [N, C, H, W] batch (views, no copies). */
function pixelUnits(pixels: Float32Array, [n, c, h, w]: [number, number, number, number]): EncodeUnit[] {
  const per = c * h * w;
  return Array.from({ length: n }, (_, i) => ({
    index: i,
    pixels: pixels.subarray(i * per, (i + 1) * per),
    shape: [1, c, h, w],
  }));
}

/** The load options that rebuild `model` in another thread (vision tower as resolved, same backend). */
export function workerSpec(model: LlavaVision): WorkerModelSpec {
  const { log: _log, download: _download, ...options } = model.loadOptions;
  return {
    modelDir: model.modelDir,
    // The model's own thread count: a tensor-parallel forward's last bits depend on it, and every
    // instance must give the same bits (the CLI's --workers loads the model on one thread).
    options: {
      ...options,
      visionTower: model.checkpointKind === 'llava' ? model.tower.visionTowerName : options.visionTower,
      backend: model.backend as LoadOptions['backend'],
      threads: model.threads,
    },
  };
}

/** Units on this thread, or on `options.workers` model instances. */
async function encodeAll(
  model: LlavaVision,
  units: EncodeUnit[],
  options: EncodeJobOptions & { mergeType?: MergeType },
): Promise<Record<string, EncodedTensor>> {
  const workers = workerCount(options);
  if (workers === 1 || units.length <= 1) return encodeUnitsAsync(model, units, options);
  if (model.backend === 'webgpu')
    throw new ConfigError(`workers ${workers}: the webgpu backend runs one model instance on the GPU (use workers 1)`);
  const { onProgress, workers: _w, ...jobOptions } = options;
  encodeUnits(model, [], jobOptions); // checks the options before any thread starts
  return encodeInWorkers(
    units,
    workers,
    workerSpec(model),
    (u) => encodeUnits(model, [u], jobOptions),
    jobOptions,
    onProgress,
  );
}

/** The effective image settings of a job: the options, else the checkpoint's (checked once, up front). */
export interface ImageSettings {
  aspect: AspectMode;
  gridPinpoints?: Pinpoints;
  mergeType: MergeType;
  autoOrient?: boolean;
  maxImagePixels?: number | null;
  interpolatePosEncoding?: boolean;
  /** Read once here, so a missing preprocessor_config.json is one error, not a failure per image. */
  processor: CLIPImageProcessor;
}

export function imageSettings(
  model: LlavaVision,
  options: Pick<
    ImageJobOptions,
    'aspect' | 'gridPinpoints' | 'mergeType' | 'autoOrient' | 'maxImagePixels' | 'interpolatePosEncoding'
  >,
): ImageSettings {
  const { aspect, gridPinpoints } = aspectSettings(model, options);
  const processor = model.imageProcessor;
  const side = model.tower.config.imageSize;
  const { doCenterCrop, cropSize } = processor.config;
  if (!options.interpolatePosEncoding && doCenterCrop && (cropSize.height !== side || cropSize.width !== side)) {
    // Every image would be cropped to a size the tower refuses: one error now, not N per-image ones after the work.
    throw new ConfigError(
      `${processor.source}: crop_size ${cropSize.height}x${cropSize.width} disagrees with the vision ` +
        `tower's image_size ${side} (${model.tower.configFile}); use interpolate_pos_encoding to run at another size`,
    );
  }
  const { autoOrient, maxImagePixels, interpolatePosEncoding } = options;
  return {
    aspect,
    gridPinpoints,
    mergeType: options.mergeType ?? model.settings.mergeType,
    autoOrient,
    maxImagePixels,
    interpolatePosEncoding,
    processor,
  };
}

/** Aspect mode and grid pinpoints of a job: the options', else the model's. */
function aspectSettings(
  model: LlavaVision,
  options: { aspect?: AspectMode; gridPinpoints?: Pinpoints },
): { aspect: AspectMode; gridPinpoints?: Pinpoints } {
  const aspect = options.aspect ?? model.settings.aspect;
  const gridPinpoints = options.gridPinpoints ?? model.settings.gridPinpoints ?? undefined;
  if (aspect === 'anyres' && !gridPinpoints)
    throw new ConfigError(
      `aspect "anyres" needs grid pinpoints (image_grid_pinpoints in config.json, or --grid-pinpoints)`,
    );
  return { aspect, gridPinpoints };
}

export type PreparedImage =
  { index: number; unit: EncodeUnit; imageSize: [number, number] } | { index: number; failure: ImageFailure };

/**
 * One input decoded and preprocessed (LLaVA's process_images) into the unit the model encodes, or the
 * reason it cannot be: any error of this image's is its failure, never the whole job's.
 */
export async function prepareImage(
  model: LlavaVision,
  input: ImageInput,
  index: number,
  settings: ImageSettings,
): Promise<PreparedImage> {
  const source = typeof input === 'string' ? input : `input ${index}`;
  const side = model.tower.config.imageSize;
  let decoded = false;
  try {
    const img = isRgbImage(input)
      ? input
      : await decodeImage(input, {
          autoOrient: settings.autoOrient,
          name: source,
          maxImagePixels: settings.maxImagePixels,
        });
    decoded = true;
    const [processed] = processImages([img], settings.processor, {
      aspect: settings.aspect,
      gridPinpoints: settings.gridPinpoints,
    });
    const [, , h, w] = processed.shape;
    if (!settings.interpolatePosEncoding && (h !== side || w !== side)) {
      // Caught here, as this image's failure: inside the batch it would stop the whole job.
      throw new ImageError(
        `it preprocesses to ${h}x${w} but the model's image_size is ${side} (see crop_size and ` +
          `do_center_crop in the preprocessor config, or use interpolate_pos_encoding)`,
      );
    }
    const imageSize: [number, number] = [img.width, img.height];
    const gridShape =
      settings.aspect === 'anyres' ? getAnyresImageGridShape(imageSize, settings.gridPinpoints!, side) : undefined;
    return {
      index,
      unit: { index, pixels: processed.pixelValues, shape: processed.shape, imageSize, gridShape },
      imageSize,
    };
  } catch (e) {
    return { index, failure: { index, source, message: imageFailureMessage(e, source, decoded) } };
  }
}

/**
 * Image files (or decoded images) to LLM-ready tokens: decode like Pillow's convert('RGB'), LLaVA's
 * process_images (square / pad / anyres), tower, projector, and the merge LLaVA inserts into the LLM.
 * Of a list, an image that fails to decode or preprocess is reported in `failures` (and has no tensors);
 * the others are still encoded. One image may be given alone (`encodeImages(model, 'photo.jpg')`): its
 * failure is then thrown (an ImageError), since an empty result would only fail later, far from the
 * cause. Results are named `images.<i>.<output>`. Everything is held in memory: for datasets,
 * `writeEncodedDataset` streams into shards instead.
 */
export async function encodeImages(
  model: LlavaVision,
  inputs: ImageInput | ImageInput[],
  options: ImageJobOptions = {},
): Promise<ImageJobResult> {
  const list = imageInputList(inputs);
  const settings = imageSettings(model, options);
  // The options are checked before any image is decoded.
  const outputs = [...checkJob(model, options, settings.mergeType, defaultImageOutput(model))];
  const failures: ImageFailure[] = [];
  const sizes: ([number, number] | null)[] = [];
  const units: EncodeUnit[] = [];
  for (const [index, input] of list.entries()) {
    const prepared = await prepareImage(model, input, index, settings);
    if ('failure' in prepared) {
      if (!Array.isArray(inputs)) throw new ImageError(prepared.failure.message);
      failures.push(prepared.failure);
      sizes.push(null);
    } else {
      units.push(prepared.unit);
      sizes.push(prepared.imageSize);
    }
  }
  const tensors = await encodeAll(model, units, { ...options, outputs, mergeType: settings.mergeType });
  return { tensors, failures, sizes };
}

/** The inputs as a list (one input may be given alone), each checked to be something we can decode. */
function imageInputList(inputs: unknown): ImageInput[] {
  const list: unknown[] = Array.isArray(inputs) ? inputs : [inputs];
  list.forEach((input, i) => {
    if (typeof input === 'string' || input instanceof Uint8Array || isRgbImage(input)) return;
    const what = input === null ? 'null' : Array.isArray(input) ? 'an array' : typeof input;
    throw new ConfigError(
      `images[${i}] is ${what}: expected a file path, the file's bytes (Uint8Array) or an RgbImage { width, height, data }`,
    );
  });
  return list as ImageInput[];
}

/** One image's pixel values as LLaVA's process_images made them (e.g. read from `llava-vision preprocess`'s output). */
export interface PreprocessedImage {
  /** Its place in the job: outputs are named `images.<index>.*`. */
  index: number;
  /** [tiles, 3, H, W]: one tile, or for anyres the whole image then the grid's tiles. */
  pixels: Float32Array;
  shape: [number, number, number, number];
  /** The original image's (width, height): anyres needs it for the grid and `spatial_unpad`. */
  imageSize?: [number, number];
}

export interface PreprocessedJobOptions extends EncodeJobOptions {
  /** The aspect mode the pixels were made with; default the checkpoint's. anyres gives each image its grid. */
  aspect?: AspectMode;
  gridPinpoints?: Pinpoints;
  /** Default: the checkpoint's mm_patch_merge_type. */
  mergeType?: MergeType;
}

/**
 * The second half of `encodeImages`: images already preprocessed (per image, all its tiles) through the
 * tower, projector and merge. Fed the same pixel values, it gives the same tensors as `encodeImages`.
 */
export async function encodePreprocessed(
  model: LlavaVision,
  images: PreprocessedImage[],
  options: PreprocessedJobOptions = {},
): Promise<Record<string, EncodedTensor>> {
  const mergeType = options.mergeType ?? model.settings.mergeType;
  const outputs = [...checkJob(model, options, mergeType, defaultImageOutput(model))];
  const { aspect, gridPinpoints } = aspectSettings(model, options);
  const units: EncodeUnit[] = images.map((img) => {
    if (aspect !== 'anyres') return { ...img };
    if (!img.imageSize)
      throw new ConfigError(`image ${img.index}: anyres needs the original image size (for its tile grid)`);
    return { ...img, gridShape: getAnyresImageGridShape(img.imageSize, gridPinpoints!, model.tower.config.imageSize) };
  });
  return encodeAll(model, units, { ...options, outputs, mergeType });
}

function isRgbImage(x: unknown): x is RgbImage {
  return (
    typeof x === 'object' && x !== null && !(x instanceof Uint8Array) && 'data' in x && 'width' in x && 'height' in x
  );
}
