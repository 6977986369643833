/**
 * Pixel values read back from a safetensors file, in either of the two forms the CLI takes:
 *
 * - `pixel_values` [N, 3, H, W]: one tile per image, e.g. written by Python (`processor(images)`).
 * - `images.<i>.pixel_values` [tiles, 3, H, W] per image, as `llava-vision preprocess` (and
 *   `encode --save pixel_values`) writes them, with `__metadata__` holding the aspect mode, grid
 *   pinpoints and image sizes that anyres needs to merge each image's tiles.
 */
import { AspectMode, Pinpoints, parseGridPinpoints } from '../config/llava';
import { ConfigError, quote, shapeText } from '../errors';
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

/** `images.<i>.pixel_values`, any spelling of <i>: only the canonical one is accepted (see `imageIndex`). */
const PER_IMAGE = /^images\.(.*)\.pixel_values$/s;
const ASPECTS: readonly AspectMode[] = ['square', 'pad', 'anyres'];

export function readPixelValuesFile(file: string): PixelValuesFile {
  const st = SafetensorsFile.open(file);
  try {
    const check = (name: string, count: string) => {
      const { shape } = st.info(name);
      if (shape.length !== 4 || shape[1] !== 3)
        throw new ConfigError(`${file}: ${quote(name)} must be [${count}, 3, H, W], got ${shapeText(shape)}`);
      // An empty tensor has nothing to encode: refused here, not by the backend in the middle of a batch.
      if (shape[0] === 0)
        throw new ConfigError(
          `${file}: ${quote(name)} has no ${count === 'tiles' ? 'tiles' : 'images'} (shape ${shapeText(shape)})`,
        );
      if (shape[2] === 0 || shape[3] === 0)
        throw new ConfigError(`${file}: ${quote(name)} has an empty image plane (shape ${shapeText(shape)})`);
      return shape as [number, number, number, number];
    };
    if (st.has('pixel_values'))
      return { kind: 'batch', shape: check('pixel_values', 'N'), data: st.readFloat32('pixel_values') };
    const names = st.keys().filter((k) => PER_IMAGE.test(k));
    if (names.length === 0) {
      const keys = st.keys();
      const shown = keys
        .slice(0, 10)
        .map((k) => k.slice(0, 200))
        .join(', ');
      throw new ConfigError(
        `${file}: no tensor named "pixel_values" nor "images.<i>.pixel_values" (found: ${shown || 'none'}${keys.length > 10 ? `, … ${keys.length} in all` : ''})`,
      );
    }
    const metadata = st.metadata;
    const options = parseJson(metadata.options, file, 'options') as {
      aspect?: unknown;
      grid_pinpoints?: unknown;
    } | null;
    const sizes = parseSizes(parseJson(metadata.image_sizes, file, 'image_sizes'), file);
    // Indices first (and shapes), before any tensor data is read.
    const indexed = names
      .map((name) => ({ name, index: imageIndex(name, file), shape: check(name, 'tiles') }))
      .sort((a, b) => a.index - b.index);
    const aspect = options?.aspect ?? null;
    if (aspect !== null && !ASPECTS.includes(aspect as AspectMode)) {
      throw new ConfigError(
        `${file}: __metadata__.options.aspect ${quote(aspect)} is not one of ${ASPECTS.join(', ')}`,
      );
    }
    const images = indexed.map(({ name, index, shape }) => {
      const imageSize = sizes?.[index] ?? undefined;
      return { index, shape, pixels: st.readFloat32(name), ...(imageSize ? { imageSize } : {}) };
    });
    const pinpoints = options?.grid_pinpoints;
    return {
      kind: 'images',
      images,
      aspect: aspect as AspectMode | null,
      gridPinpoints:
        pinpoints === undefined || pinpoints === null
          ? null
          : parseGridPinpoints(pinpoints, `${file} __metadata__.options.grid_pinpoints`),
      sizes,
      metadata,
    };
  } finally {
    st.close();
  }
}

/**
 * The image index of `images.<i>.pixel_values`: <i> written as JSON writes an integer (no sign, no
 * leading zero, no exponent), so that two tensors can never name one image (`images.1` and `images.01`
 * would, and one of them would be dropped).
 */
function imageIndex(name: string, file: string): number {
  const text = PER_IMAGE.exec(name)![1];
  const index = Number(text);
  if (!/^(0|[1-9]\d*)$/.test(text) || !Number.isSafeInteger(index)) {
    throw new ConfigError(
      `${file}: tensor ${quote(name)}: the image index must be a plain non-negative integer (images.0.pixel_values, images.1.pixel_values, ...)`,
    );
  }
  return index;
}

function parseJson(text: string | undefined, file: string, key: string): unknown {
  if (text === undefined) return null;
  // image_sizes is [[w, h], ...], options one level of objects and arrays: nothing deeper.
  return parseJsonWithLimits(
    text,
    { maxDepth: 4, rejectDuplicateKeys: true },
    (problem) => new ConfigError(`${file}: __metadata__.${key} ${problem}`),
  );
}

function parseSizes(value: unknown, file: string): ([number, number] | null)[] | null {
  if (value === null) return null;
  const isSize = (s: unknown) =>
    s === null || (Array.isArray(s) && s.length === 2 && s.every((n) => Number.isInteger(n) && n > 0));
  if (!Array.isArray(value) || !value.every(isSize))
    throw new ConfigError(`${file}: __metadata__.image_sizes must be a list of [width, height] (or null)`);
  return value as ([number, number] | null)[];
}
