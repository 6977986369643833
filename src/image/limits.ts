/**
 * How large an image may be: decoded, or made by preprocessing (a resize target, a pad canvas).
 *
 * Pillow refuses to open an image of more than 2 × `Image.MAX_IMAGE_PIXELS` (89,478,485) pixels with
 * `DecompressionBombError`: a 750 KB PNG can hold 16000 × 16000 pixels (768 MB of RGB). We refuse the
 * same, before decoding (the size is in the file's header). `LLAVA_VISION_MAX_IMAGE_PIXELS` (a number,
 * or `none`) raises or lifts the limit, like setting `Image.MAX_IMAGE_PIXELS`; `decodeImage` and the
 * encode job also take a `maxImagePixels` option.
 *
 * An image preprocessing makes is bounded too, relative to the image it comes from: at most 4 times
 * its pixels (a pad canvas of a 4:1 panorama), or 4096 × 4096 (any config size upscaled from a small
 * image), and never over the decode limit. So a 30000 × 1 image resized to a shortest edge of 336
 * (10,080,000 × 336) or padded to 30000 × 30000 fails as that image's error instead of taking GBs.
 */
import { ImageError } from '../errors';

/** Pillow's `Image.MAX_IMAGE_PIXELS`: above it Pillow warns, above twice it refuses. */
export const PILLOW_MAX_IMAGE_PIXELS = 89_478_485;
export const DEFAULT_MAX_IMAGE_PIXELS = 2 * PILLOW_MAX_IMAGE_PIXELS;

const ENV = 'LLAVA_VISION_MAX_IMAGE_PIXELS';

/** The limit in force: the option when given (null: none), else the environment's, else Pillow's. */
export function maxImagePixels(option?: number | null): number {
  if (option === null) return Infinity;
  if (option !== undefined) {
    if (!(option > 0))
      throw new ImageError(`maxImagePixels must be a positive number or null (no limit), got ${option}`);
    return option;
  }
  const env = process.env[ENV];
  if (env === undefined || env === '') return DEFAULT_MAX_IMAGE_PIXELS;
  if (env === 'none') return Infinity;
  const n = Number(env);
  if (!(n > 0))
    throw new ImageError(
      `${ENV} must be a positive number of pixels or "none", got ${JSON.stringify(env.slice(0, 40))}`,
    );
  return n;
}

/**
 * Decoding keeps the file's samples before converting them to 8-bit RGB: 16-bit RGBA is 8 bytes a
 * pixel, so a 2 MB PNG of 13000 x 13000 (within the pixel limit) would take 2.5 GB. Decoded samples
 * may take at most the bytes of an 8-bit RGB image at the pixel limit (3 per pixel).
 */
export function checkDecodedBytes(
  width: number,
  height: number,
  channels: number,
  bytesPerSample: number,
  what: string,
  limit = maxImagePixels(),
): void {
  const bytes = width * height * channels * bytesPerSample;
  if (bytes > 3 * limit) {
    throw new ImageError(
      `${what} is ${width}x${height} with ${channels} channels of ${8 * bytesPerSample} bits: ${bytes} bytes ` +
        `decoded, over the limit of ${3 * limit} (3 bytes per pixel of the ${limit}-pixel limit; set ${ENV} to raise it)`,
    );
  }
}

/** An image preprocessing makes is never bigger than this, or than PRODUCED_VS_INPUT x its input. */
export const PRODUCED_FLOOR_PIXELS = 4096 * 4096;
export const PRODUCED_VS_INPUT = 4;

/** Checks an image preprocessing is about to make from an input of `inputPixels` (see above). */
export function checkProducedImage(width: number, height: number, inputPixels: number, what: string): void {
  const limit = Math.min(maxImagePixels(), Math.max(PRODUCED_FLOOR_PIXELS, PRODUCED_VS_INPUT * inputPixels));
  checkImagePixels(
    width,
    height,
    what,
    limit,
    `preprocessing makes images of at most max(4096x4096, ${PRODUCED_VS_INPUT} x the input's ${inputPixels} pixels), within the decode limit`,
  );
}

/**
 * Throws an ImageError when a `width` × `height` image is over the limit (or not a valid size).
 * `what` says which image: `image photo.png`, `resize target`, ...; `why` explains the limit.
 */
export function checkImagePixels(
  width: number,
  height: number,
  what: string,
  limit = maxImagePixels(),
  why = `as Pillow's DecompressionBombError: 2 x Image.MAX_IMAGE_PIXELS; set ${ENV} to raise it`,
): void {
  if (!Number.isSafeInteger(width) || !Number.isSafeInteger(height) || width < 0 || height < 0) {
    throw new ImageError(`${what}: invalid size ${width}x${height}`);
  }
  const pixels = width * height;
  if (pixels > limit) {
    throw new ImageError(`${what} is ${width}x${height} = ${pixels} pixels, over the limit of ${limit} (${why})`);
  }
}
