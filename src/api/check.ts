/**
 * `checkAgainstReference(model, file)`: our side against a reference written by
 * python/llava_vision_reference.py from the user's own PyTorch modules. The reference's pixel values
 * go through the model; every hidden state, the pooled output, the features and the projected
 * features are compared with the float64 truth under the project's rule, max|ours − truth| ≤
 * k · torch_fp32_max_abs_err + f32_storage_max_abs_err. Given the image files the reference was made
 * from, our preprocessing must also give its pixel values bit for bit.
 *
 * The reference is read tile by tile and compared as the forward goes, so memory stays at one batch
 * of outputs whatever the number of images.
 */
import * as tf from '../tf';
import { Comparison, ComparisonResult, Tolerance } from '../check/compare';
import { ReferenceFile, ReferenceMeta, ReferenceRun } from '../check/reference';
import { AspectMode, Pinpoints } from '../config/llava';
import { CheckpointError, ConfigError, quote, shapeText } from '../errors';
import { DEFAULT_PARITY_K, parityBound } from '../parity';
import { throwOnWebGpuError } from '../webgpu';
import { ImageInput, imageSettings, prepareImage } from './encode_job';
import { LlavaVision, OutputName } from './llava_vision';

export interface CheckOptions {
  /** k of the bound: max|ours − truth| ≤ k · torch_fp32_max_abs_err + f32_storage_max_abs_err (default 4). */
  bound?: number;
  /**
   * The images the reference's pixel values were made from, in order (paths, bytes or decoded images):
   * preprocessed with the model's processor and aspect mode, they must give those pixel values bit for bit.
   */
  images?: ImageInput[];
  /** How the images are preprocessed: default the model's (image_aspect_ratio, image_grid_pinpoints). */
  aspect?: AspectMode;
  gridPinpoints?: Pinpoints;
  /** Apply the images' EXIF orientation (Pillow's Image.open, and so LLaVA, does not). */
  autoOrient?: boolean;
  /** Tiles per forward (default 1; the results do not depend on it). */
  batchSize?: number;
  /** Default: the reference's `run.interpolate_pos_encoding`. */
  interpolatePosEncoding?: boolean;
  onProgress?: (tilesDone: number, tiles: number) => void;
}

/** One tensor of the reference, checked. */
export interface TensorCheck {
  /** The reference's tensor name; for an image's pixel values `pixel_values[<image>]`. */
  name: string;
  /** The reference's shape. */
  shape: number[];
  ok: boolean;
  /** Why it could not be compared (a shape or a key that does not match, no bound), one line; else null. */
  problem: string | null;
  /** Compared for identity (pixel values) rather than within the bound. */
  exact: boolean;
  torchErr: number | null;
  storageErr: number | null;
  /** k · torchErr + storageErr; 0 for an exact tensor; null without a bound. */
  limit: number | null;
  /** maxAbsErr / torchErr. */
  ratio: number | null;
  comparison: ComparisonResult | null;
}

export interface CheckReport {
  reference: string;
  producer: string | null;
  run: ReferenceRun;
  model: string;
  backend: string;
  bound: number;
  tiles: number;
  ok: boolean;
  /** The first tensor that fails, in the model's order (pixel values, hidden states 0..L, pooled, features, projected). */
  firstFailure: string | null;
  tensors: TensorCheck[];
  /** Reference tensors not checked, settings that differ between the reference and the model. */
  notes: string[];
}

const HIDDEN = /^hidden_states\.(\d+)$/;
/** The model's order, which is also the order in which a wrong weight shows up. */
const ORDER = (name: string): [number, number] => {
  const m = HIDDEN.exec(name);
  if (m) return [1, Number(m[1])];
  return [name.startsWith('pixel_values') ? 0 : name === 'pooler_output' ? 2 : name === 'features' ? 3 : 4, 0];
};

export async function checkAgainstReference(
  model: LlavaVision,
  referenceFile: string,
  options: CheckOptions = {},
): Promise<CheckReport> {
  model.checkNotDisposed();
  const k = options.bound ?? DEFAULT_PARITY_K;
  if (typeof k !== 'number' || !Number.isFinite(k) || k < 0)
    throw new ConfigError(`bound must be a finite number >= 0, got ${quote(k)}`);
  const batchSize = options.batchSize ?? 1;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1)
    throw new ConfigError(`batch size must be a positive integer, got ${quote(batchSize)}`);
  const ref = ReferenceFile.open(referenceFile);
  try {
    const pv = pixelValuesInfo(ref);
    const [tiles, c, h, w] = pv.shape;
    const notes: string[] = [];
    const checks: TensorCheck[] = [];
    // The pixel values are the input: compared only with our preprocessing of the images, when given.
    if (options.images) checks.push(...(await checkPreprocessing(model, ref, pv.name, options)));
    else checks.push({ ...blankCheck(pv.name, pv.shape, true), ok: true });

    // What the reference holds, and what of it the model can give.
    const layers = model.tower.config.numHiddenLayers;
    const compared: { name: string; output: OutputName; index: number; check: TensorCheck; acc: Comparison | null }[] =
      [];
    for (const name of ref.keys()) {
      if (name === pv.name) continue;
      const hidden = HIDDEN.exec(name);
      const output: OutputName | null = hidden
        ? 'hidden_states'
        : name === 'features' || name === 'projected' || name === 'pooler_output'
          ? name
          : null;
      if (!output) {
        notes.push(
          `${name}: not checked (check compares pixel_values, hidden_states.<k>, pooler_output, features, projected)`,
        );
        continue;
      }
      const check = referenceCheck(ref, name, k);
      const index = hidden ? Number(hidden[1]) : 0;
      if (hidden && index > layers)
        check.problem = `the reference has hidden state ${index}, the model ${layers + 1} (0..${layers})`;
      else if (output === 'projected' && !model.projectorConfig)
        check.problem = `the model (${model.modelDir}) has no projector; pass one (--projector) to check it`;
      else if (check.shape[0] !== tiles)
        check.problem = `${shapeText(check.shape)} in the reference holds ${check.shape[0]} tiles, pixel_values ${tiles}`;
      compared.push({ name, output, index, check, acc: null });
    }
    notes.push(...settingNotes(model, ref.run));

    const outputs = [...new Set(compared.filter((x) => !x.check.problem).map((x) => x.output))];
    const interpolatePosEncoding = options.interpolatePosEncoding ?? ref.run.interpolate_pos_encoding ?? false;
    const side = model.tower.config.imageSize;
    if (!interpolatePosEncoding && (h !== side || w !== side)) {
      throw new ConfigError(
        `${ref.path}: pixel_values are ${h}x${w}, the model's image_size is ${side} (${model.modelDir}); a reference of another model, or pass interpolate_pos_encoding (--interpolate-pos-encoding)`,
      );
    }
    for (let start = 0; start < tiles && outputs.length > 0; start += batchSize) {
      const n = Math.min(batchSize, tiles - start);
      const pixels = tf.tensor4d(ref.readRows(pv.name, start, n), [n, c, h, w]);
      let result;
      try {
        result = model.encode(pixels, { outputs, interpolatePosEncoding });
      } finally {
        pixels.dispose();
      }
      try {
        for (const x of compared) {
          if (x.check.problem) continue;
          const ours =
            x.output === 'hidden_states'
              ? result.hiddenStates![x.index]
              : x.output === 'features'
                ? result.features!
                : x.output === 'projected'
                  ? result.projected!
                  : result.poolerOutput!;
          const want = x.check.shape.slice(1);
          const got = ours.shape.slice(1);
          if (want.length !== got.length || want.some((d, i) => d !== got[i])) {
            x.check.problem = `${shapeText(x.check.shape)} in the reference, ${shapeText([tiles, ...got])} from the model`;
            continue;
          }
          x.acc ??= new Comparison(x.check.shape, toleranceOf(x.check));
          const data = (await ours.data()) as Float32Array;
          throwOnWebGpuError();
          x.acc.add(data, ref.readRows(x.name, start, n), (start * data.length) / n);
        }
      } finally {
        const all: (tf.Tensor | undefined)[] = [
          ...(result.hiddenStates ?? []),
          result.features,
          result.projected,
          result.poolerOutput,
        ];
        tf.dispose(all.filter((t): t is tf.Tensor => t !== undefined));
      }
      options.onProgress?.(start + n, tiles);
    }
    for (const x of compared) finish(x.check, x.acc);
    const tensors = [...checks, ...compared.map((x) => x.check)].sort((a, b) => {
      const [ra, ia] = ORDER(a.name);
      const [rb, ib] = ORDER(b.name);
      return ra - rb || ia - ib;
    });
    const failed = tensors.find((t) => !t.ok);
    return {
      reference: referenceFile,
      producer: ref.producer,
      run: ref.run,
      model: model.modelDir,
      backend: model.backend,
      bound: k,
      tiles,
      ok: !failed,
      firstFailure: failed?.name ?? null,
      tensors,
      notes,
    };
  } finally {
    ref.close();
  }
}

function pixelValuesInfo(ref: ReferenceFile): { name: string; shape: [number, number, number, number] } {
  if (!ref.has('pixel_values'))
    throw new CheckpointError(
      `${ref.path}: no tensor "pixel_values" (a reference holds the pixel values the PyTorch modules got)`,
    );
  const { shape } = ref.info('pixel_values');
  if (shape.length !== 4 || shape[1] !== 3 || shape[0] === 0)
    throw new CheckpointError(`${ref.path}: pixel_values must be [N, 3, H, W] with N >= 1, got ${shapeText(shape)}`);
  return { name: 'pixel_values', shape: shape as [number, number, number, number] };
}

function blankCheck(name: string, shape: number[], exact: boolean): TensorCheck {
  return {
    name,
    shape,
    ok: false,
    problem: null,
    exact,
    torchErr: null,
    storageErr: null,
    limit: exact ? 0 : null,
    ratio: null,
    comparison: null,
  };
}

/** A row for a reference tensor, with its bound from the metadata (or the problem that there is none). */
function referenceCheck(ref: ReferenceFile, name: string, k: number): TensorCheck {
  const meta: ReferenceMeta = ref.meta(name);
  const check = blankCheck(name, ref.info(name).shape, meta.exact === true);
  check.torchErr = meta.torch_fp32_max_abs_err ?? null;
  check.storageErr = meta.f32_storage_max_abs_err ?? null;
  if (check.exact) check.limit = 0;
  else if (check.torchErr === null) {
    check.problem = `no __metadata__.expected[${quote(name)}].torch_fp32_max_abs_err in the reference, so no bound (write it with python/llava_vision_reference.py)`;
  } else check.limit = parityBound(meta, k);
  return check;
}

function toleranceOf(check: TensorCheck): Tolerance {
  return check.exact ? { kind: 'exact' } : { kind: 'bound', limit: check.limit! };
}

function finish(check: TensorCheck, acc: Comparison | null): void {
  if (check.problem) return;
  if (!acc) {
    check.problem = 'not computed';
    return;
  }
  const r = acc.result();
  check.comparison = r;
  check.ratio =
    check.torchErr === null
      ? null
      : check.torchErr > 0
        ? r.maxAbsErr / check.torchErr
        : r.maxAbsErr === 0
          ? 0
          : Infinity;
  check.ok = r.pass;
}

/** Our preprocessing of the images against the reference's pixel values, one row per image. */
async function checkPreprocessing(
  model: LlavaVision,
  ref: ReferenceFile,
  pvName: string,
  options: CheckOptions,
): Promise<TensorCheck[]> {
  const images = options.images!;
  const { shape } = ref.info(pvName);
  const names = ref.run.images;
  const settings = imageSettings(model, {
    aspect: options.aspect,
    gridPinpoints: options.gridPinpoints,
    autoOrient: options.autoOrient,
    interpolatePosEncoding: options.interpolatePosEncoding ?? ref.run.interpolate_pos_encoding,
  });
  const tilesPerImage = ref.run.tiles_per_image ?? (images.length === shape[0] ? images.map(() => 1) : null);
  const label = (i: number) =>
    `pixel_values[${names?.[i] ?? (typeof images[i] === 'string' ? images[i].split(/[\\/]/).pop() : `image ${i}`)}]`;
  if (!tilesPerImage) {
    throw new ConfigError(
      `${images.length} image(s) given, and the reference's pixel_values ${shapeText(shape)} hold ${shape[0]} tiles with no tiles_per_image recorded`,
    );
  }
  if (tilesPerImage.length !== images.length)
    throw new ConfigError(`${images.length} image(s) given, the reference was made from ${tilesPerImage.length}`);
  if (tilesPerImage.reduce((a, b) => a + b, 0) !== shape[0]) {
    throw new CheckpointError(
      `${ref.path}: run.tiles_per_image adds up to ${tilesPerImage.reduce((a, b) => a + b, 0)} tiles, pixel_values hold ${shape[0]}`,
    );
  }
  const rows: TensorCheck[] = [];
  let start = 0;
  for (const [i, input] of images.entries()) {
    const tiles = tilesPerImage[i];
    const refShape = [tiles, ...shape.slice(1)];
    const check = blankCheck(label(i), refShape, true);
    const prepared = await prepareImage(model, input, i, settings);
    if ('failure' in prepared) check.problem = prepared.failure.message;
    else if (prepared.unit.shape.some((d, j) => d !== refShape[j])) {
      check.problem = `the model's preprocessing gives ${shapeText(prepared.unit.shape)}, the reference ${shapeText(refShape)} (aspect ${settings.aspect})`;
    } else {
      const acc = new Comparison(refShape, { kind: 'exact' });
      acc.add(prepared.unit.pixels, ref.readRows(pvName, start, tiles), 0);
      finish(check, acc);
    }
    rows.push(check);
    start += tiles;
  }
  return rows;
}

/** Where the reference's recorded settings differ from the model's (its features then differ too). */
function settingNotes(model: LlavaVision, run: ReferenceRun): string[] {
  const notes: string[] = [];
  const layers = model.tower.config.numHiddenLayers;
  const ours = model.tower.selectLayers;
  if (run.select_layer !== undefined) {
    const theirs = run.select_layer < 0 ? run.select_layer + layers + 1 : run.select_layer;
    const mine = ours.map((l) => (l < 0 ? l + layers + 1 : l));
    if (mine.length !== 1 || mine[0] !== theirs)
      notes.push(
        `the reference was written with select_layer ${run.select_layer}, the model uses ${ours.join(', ')}: features and projected compare different layers`,
      );
  }
  if (run.select_feature !== undefined && run.select_feature !== model.tower.selectFeature) {
    notes.push(
      `the reference was written with select_feature ${run.select_feature}, the model uses ${model.tower.selectFeature}`,
    );
  }
  return notes;
}
