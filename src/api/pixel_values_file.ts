/**
 * Pixel values read back from a safetensors file, in either of the two forms the CLI takes:
 *
 * - `pixel_values` [N, 3, H, W]: one tile per image, e.g. written by Python (`processor(images)`).
 * - `images.<i>.pixel_values` [tiles, 3, H, W] per image, as `llava-vision preprocess` (and
 *   `encode --save pixel_values`) writes them, with `__metadata__` holding the aspect mode, grid
 *   pinpoints and image sizes that anyres needs to merge each image's tiles.
 */
import { AspectMode, Pinpoints, aspectModeFromConfig, parseGridPinpoints } from '../config/llava';
import { ConfigError, shapeText } from '../errors';
import { parseJsonWithLimits } from '../io/json';
import { SafetensorsFile } from '../io/safetensors';
import { PreprocessedImage } from './encode_job';

export type PixelValuesFile =
  | { kind: 'batch'; data: Float32Array; shape: [number, number, number, number] }
  | {
      kind: 'images';
      images: PreprocessedImage[];
      /** From `__metadata__.options` when recorded. */
      aspect: AspectMode | null;
      gridPinpoints: Pinpoints | null;
      /** `__metadata__.image_sizes` (null for an image that failed), when recorded. */
      sizes: ([number, number] | null)[] | null;
      metadata: Record<string, string>;
    };

const PER_IMAGE = /^images\.(\d+)\.pixel_values$/;

export function readPixelValuesFile(file: string): PixelValuesFile {
  const st = SafetensorsFile.open(file);
  try {
    const check = (name: string) => {
      const { shape } = st.info(name);
      if (shape.length !== 4 || shape[1] !== 3) throw new ConfigError(`${file}: ${name} must be [N, 3, H, W], got ${shapeText(shape)}`);
      return shape as [number, number, number, number];
    };
    if (st.has('pixel_values')) return { kind: 'batch', shape: check('pixel_values'), data: st.readFloat32('pixel_values') };
    const names = st.keys().filter((k) => PER_IMAGE.test(k));
    if (names.length === 0) {
      const keys = st.keys();
      const shown = keys.slice(0, 10).map((k) => k.slice(0, 200)).join(', ');
      throw new ConfigError(`${file}: no tensor named "pixel_values" nor "images.<i>.pixel_values" (found: ${shown || 'none'}${keys.length > 10 ? `, … ${keys.length} in all` : ''})`);
    }
    const metadata = st.metadata;
    const options = parseJson(metadata.options, file, 'options') as { aspect?: unknown; grid_pinpoints?: unknown } | null;
    const sizes = parseSizes(parseJson(metadata.image_sizes, file, 'image_sizes'), file);
    const images = names
      .map((name) => {
        const index = Number(PER_IMAGE.exec(name)![1]);
        const imageSize = sizes?.[index] ?? undefined;
        return { index, shape: check(name), pixels: st.readFloat32(name), ...(imageSize ? { imageSize } : {}) };
      })
      .sort((a, b) => a.index - b.index);
    const pinpoints = options?.grid_pinpoints;
    return {
      kind: 'images',
      images,
      aspect: typeof options?.aspect === 'string' ? aspectModeFromConfig(options.aspect) : null,
      gridPinpoints: pinpoints === undefined || pinpoints === null ? null : parseGridPinpoints(pinpoints, `${file} __metadata__.options.grid_pinpoints`),
      sizes,
      metadata,
    };
  } finally {
    st.close();
  }
}

function parseJson(text: string | undefined, file: string, key: string): unknown {
  if (text === undefined) return null;
  // image_sizes is [[w, h], ...], options one level of objects and arrays: nothing deeper.
  return parseJsonWithLimits(text, { maxDepth: 4, rejectDuplicateKeys: true }, (problem) => new ConfigError(`${file}: __metadata__.${key} ${problem}`));
}

function parseSizes(value: unknown, file: string): ([number, number] | null)[] | null {
  if (value === null) return null;
  const isSize = (s: unknown) => s === null || (Array.isArray(s) && s.length === 2 && s.every((n) => Number.isInteger(n) && n > 0));
  if (!Array.isArray(value) || !value.every(isSize)) throw new ConfigError(`${file}: __metadata__.image_sizes must be a list of [width, height] (or null)`);
  return value as ([number, number] | null)[];
}
