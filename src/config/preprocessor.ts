import { ConfigError, quote } from '../errors';
import { LIMITS, intInRange } from './limits';

/** `size`: resize the short side to `shortestEdge` (aspect kept), or to exactly height x width. */
export type ResizeSpec = { shortestEdge: number } | { height: number; width: number };

/** HF `CLIPImageProcessor` (slow, transformers 4.37.2) settings, camel-cased. */
export interface CLIPImageProcessorConfig {
  doResize: boolean;
  size: ResizeSpec;
  /** PIL resampling number: 0 NEAREST, 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING. */
  resample: number;
  doCenterCrop: boolean;
  cropSize: { height: number; width: number };
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  imageMean: [number, number, number];
  imageStd: [number, number, number];
  doConvertRgb: boolean;
}

export const OPENAI_CLIP_MEAN: readonly number[] = Object.freeze([0.48145466, 0.4578275, 0.40821073]);
export const OPENAI_CLIP_STD: readonly number[] = Object.freeze([0.26862954, 0.26130258, 0.27577711]);

/** transformers 4.37.2 `CLIPImageProcessor.__init__` defaults: a key missing from the JSON takes these. */
export function defaultPreprocessorConfig(): CLIPImageProcessorConfig {
  return {
    doResize: true,
    size: { shortestEdge: 224 },
    resample: 3,
    doCenterCrop: true,
    cropSize: { height: 224, width: 224 },
    doRescale: true,
    rescaleFactor: 1 / 255,
    doNormalize: true,
    imageMean: [OPENAI_CLIP_MEAN[0], OPENAI_CLIP_MEAN[1], OPENAI_CLIP_MEAN[2]],
    imageStd: [OPENAI_CLIP_STD[0], OPENAI_CLIP_STD[1], OPENAI_CLIP_STD[2]],
    doConvertRgb: true,
  };
}

type Json = Record<string, unknown>;

function isObject(x: unknown): x is Json {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** An image side (size, crop_size): 1e308 is an "integer" to JSON, so the range matters as much as the type. */
function positiveInt(v: unknown, source: string, key: string): number {
  return intInRange(v, source, key, 1, LIMITS.imageSide);
}

/**
 * HF `get_size_dict`: an int means shortest_edge for `size` (default_to_square=False) and a square
 * for `crop_size`; a [h, w] list means height/width. CLIP's resize only understands shortest_edge
 * or height+width, so a lone longest_edge is rejected here rather than at the first image.
 */
function parseSize(v: unknown, source: string, key: string, intIsSquare: boolean): ResizeSpec {
  if (typeof v === 'number') {
    const n = positiveInt(v, source, key);
    return intIsSquare ? { height: n, width: n } : { shortestEdge: n };
  }
  if (Array.isArray(v) && v.length === 2) {
    return { height: positiveInt(v[0], source, `${key}[0]`), width: positiveInt(v[1], source, `${key}[1]`) };
  }
  if (isObject(v)) {
    const keys = Object.keys(v).sort().join(',');
    // transformers 4.37.2 CLIP resize looks at shortest_edge first and never at longest_edge.
    if (keys === 'shortest_edge' || keys === 'longest_edge,shortest_edge') {
      return { shortestEdge: positiveInt(v.shortest_edge, source, `${key}.shortest_edge`) };
    }
    if (keys === 'height,width') {
      return {
        height: positiveInt(v.height, source, `${key}.height`),
        width: positiveInt(v.width, source, `${key}.width`),
      };
    }
  }
  throw new ConfigError(
    `${source}: ${key} must be an int, [height, width], {"shortest_edge": n} or {"height": h, "width": w}, got ${quote(v)}`,
  );
}

function bool(v: unknown, source: string, key: string): boolean {
  if (typeof v !== 'boolean') throw new ConfigError(`${source}: ${key} must be true or false, got ${quote(v)}`);
  return v;
}

const isFiniteNumbers = (x: unknown): x is number[] =>
  Array.isArray(x) && x.every((n) => typeof n === 'number' && Number.isFinite(n));

function triple(v: unknown, source: string, key: string, nonZero: boolean): [number, number, number] {
  // HF's normalize broadcasts a single number to every channel.
  const arr: unknown = typeof v === 'number' ? [v, v, v] : v;
  if (!isFiniteNumbers(arr) || arr.length !== 3) {
    throw new ConfigError(`${source}: ${key} must be a number or a list of 3 numbers (RGB), got ${quote(v)}`);
  }
  if (nonZero && arr.some((x) => x === 0))
    throw new ConfigError(`${source}: ${key} must not contain 0, got ${quote(v)}`);
  return [arr[0], arr[1], arr[2]];
}

/**
 * A preprocessor_config.json as transformers 4.37.2 reads it for `CLIPImageProcessor`
 * (also old `CLIPFeatureExtractor` files: `"size": 336`, `"crop_size": 336`, no do_rescale).
 * Missing or null keys take the defaults; unrelated keys are ignored. `source` names the file in errors.
 */
export function parsePreprocessorConfig(json: unknown, source = 'preprocessor_config.json'): CLIPImageProcessorConfig {
  if (!isObject(json)) throw new ConfigError(`${source}: expected a JSON object`);
  const cfg = defaultPreprocessorConfig();
  const has = (k: string) => json[k] !== undefined && json[k] !== null;
  if (has('do_resize')) cfg.doResize = bool(json.do_resize, source, 'do_resize');
  if (has('size')) cfg.size = parseSize(json.size, source, 'size', false);
  if (has('resample')) {
    const r = json.resample;
    if (typeof r !== 'number' || !Number.isInteger(r) || r < 0 || r > 5) {
      throw new ConfigError(
        `${source}: resample ${quote(r)} is not a PIL filter (0 NEAREST, 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING)`,
      );
    }
    cfg.resample = r;
  }
  if (has('do_center_crop')) cfg.doCenterCrop = bool(json.do_center_crop, source, 'do_center_crop');
  if (has('crop_size')) {
    const c = parseSize(json.crop_size, source, 'crop_size', true);
    if (!('height' in c))
      throw new ConfigError(`${source}: crop_size must give height and width, got ${quote(json.crop_size)}`);
    cfg.cropSize = c;
  }
  if (has('do_rescale')) cfg.doRescale = bool(json.do_rescale, source, 'do_rescale');
  if (has('rescale_factor')) {
    const f = json.rescale_factor;
    if (typeof f !== 'number' || !Number.isFinite(f)) {
      throw new ConfigError(`${source}: rescale_factor must be a number, got ${quote(f)}`);
    }
    cfg.rescaleFactor = f;
  }
  if (has('do_normalize')) cfg.doNormalize = bool(json.do_normalize, source, 'do_normalize');
  if (has('image_mean')) cfg.imageMean = triple(json.image_mean, source, 'image_mean', false);
  if (has('image_std')) cfg.imageStd = triple(json.image_std, source, 'image_std', true);
  if (has('do_convert_rgb')) cfg.doConvertRgb = bool(json.do_convert_rgb, source, 'do_convert_rgb');
  return cfg;
}
