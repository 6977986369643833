/**
 * LLaVA's image preprocessing (`llava/mm_utils.py` at haotian-liu/LLaVA c121f04): process_images
 * with image_aspect_ratio 'pad' (expand2square) / 'anyres' (best grid resolution, tiles) / anything
 * else (the processor alone). Sizes are (width, height) as in PIL.
 */
import { AspectMode, Pinpoints } from '../config/llava';
import { ConfigError } from '../errors';
import { CLIPImageProcessor } from './processor';
import { Resample, resizeImage } from './resample';
import { RgbImage, cropImage, newImage, pasteImage } from './types';
import { checkProducedImage } from './limits';

export type { AspectMode, Pinpoints } from '../config/llava';
export { aspectModeFromConfig, parseGridPinpoints } from '../config/llava';

/** The processor's image_mean as LLaVA's pad colour: tuple(int(x * 255) for x in mean) (truncation). */
export function meanBackground(mean: readonly number[]): [number, number, number] {
  return [Math.trunc(mean[0] * 255), Math.trunc(mean[1] * 255), Math.trunc(mean[2] * 255)];
}

/** expand2square: pad to a square of the long side with `background`, image at offset (max - min) // 2. */
export function expand2square(img: RgbImage, background: readonly number[]): RgbImage {
  const { width: w, height: h } = img;
  if (w === h) return img;
  const side = Math.max(w, h);
  checkProducedImage(side, side, w * h, `pad of ${w}x${h} to a square: the canvas`);
  const out = newImage(side, side, background);
  pasteImage(out, img, w > h ? 0 : Math.floor((h - w) / 2), w > h ? Math.floor((w - h) / 2) : 0);
  return out;
}

/**
 * select_best_resolution: maximise the effective resolution min(int(w*s) * int(h*s), w*h) with
 * s = min(W/w, H/h); ties go to the least wasted area, then to the first listed.
 */
export function selectBestResolution(size: readonly [number, number], pinpoints: Pinpoints): [number, number] {
  const [ow, oh] = size;
  let best: [number, number] | null = null;
  let maxEffective = 0;
  let minWasted = Infinity;
  for (const [w, h] of pinpoints) {
    const scale = Math.min(w / ow, h / oh);
    const effective = Math.min(Math.trunc(ow * scale) * Math.trunc(oh * scale), ow * oh);
    const wasted = w * h - effective;
    if (effective > maxEffective || (effective === maxEffective && wasted < minWasted)) {
      maxEffective = effective;
      minWasted = wasted;
      best = [w, h];
    }
  }
  if (!best) throw new ConfigError(`no usable image_grid_pinpoints for an image of ${ow}x${oh}`);
  return best;
}

/**
 * resize_and_pad_image: the side with the smaller scale becomes the target exactly, the other
 * min(ceil(side * scale), target); PIL's default resize filter (BICUBIC); pasted centred (floor
 * offsets) on BLACK.
 */
export function resizeAndPadImage(img: RgbImage, target: readonly [number, number]): RgbImage {
  const [tw, th] = target;
  const scaleW = tw / img.width;
  const scaleH = th / img.height;
  let nw: number;
  let nh: number;
  if (scaleW < scaleH) {
    nw = tw;
    nh = Math.min(Math.ceil(img.height * scaleW), th);
  } else {
    nh = th;
    nw = Math.min(Math.ceil(img.width * scaleH), tw);
  }
  const resized = resizeImage(img, nw, nh, Resample.BICUBIC);
  const out = newImage(tw, th);
  pasteImage(out, resized, Math.floor((tw - nw) / 2), Math.floor((th - nh) / 2));
  return out;
}

/** divide_to_patches: size x size crops in row-major order (edge crops zero-padded, as PIL's crop). */
export function divideToPatches(img: RgbImage, size: number): RgbImage[] {
  const patches: RgbImage[] = [];
  for (let y = 0; y < img.height; y += size) {
    for (let x = 0; x < img.width; x += size) patches.push(cropImage(img, x, y, x + size, y + size));
  }
  return patches;
}

/** get_anyres_image_grid_shape: [tiles across, tiles down] for the best resolution. */
export function getAnyresImageGridShape(
  size: readonly [number, number],
  pinpoints: Pinpoints,
  patchSize: number,
): [number, number] {
  const [w, h] = selectBestResolution(size, pinpoints);
  return [Math.floor(w / patchSize), Math.floor(h / patchSize)];
}

/** Tiles of one anyres image (LLaVA-1.6: 4, LLaVA-OneVision: up to 36, each 3 x 336 x 336 floats). */
export const MAX_ANYRES_TILES = 256;

export interface ProcessedImage {
  /** tiles x 3 x H x W, row-major. */
  pixelValues: Float32Array;
  /** [tiles, 3, H, W]; tiles = 1 for 'square' / 'pad', 1 + grid tiles for 'anyres'. */
  shape: [number, number, number, number];
}

export interface ProcessImagesOptions {
  aspect: AspectMode;
  /** Required for 'anyres' (already parsed, see parseGridPinpoints). */
  gridPinpoints?: Pinpoints;
}

/** Intermediate images of process_anyres_image: the padded canvas and the squashed base image. */
export function anyresImages(
  img: RgbImage,
  processor: CLIPImageProcessor,
  pinpoints: Pinpoints,
): {
  padded: RgbImage;
  tiles: RgbImage[];
} {
  const { size, cropSize } = processor.config;
  if (!('shortestEdge' in size)) {
    throw new ConfigError(
      `anyres needs a preprocessor size with shortest_edge (LLaVA reads size['shortest_edge']), got ${JSON.stringify(size)}`,
    );
  }
  const best = selectBestResolution([img.width, img.height], pinpoints);
  const tiles = Math.ceil(best[0] / cropSize.width) * Math.ceil(best[1] / cropSize.height);
  if (tiles > MAX_ANYRES_TILES) {
    throw new ConfigError(
      `anyres: grid pinpoint ${best[0]}x${best[1]} cut into crop_size ${cropSize.height}x${cropSize.width} tiles ` +
        `makes ${tiles} tiles (at most ${MAX_ANYRES_TILES}); check image_grid_pinpoints and crop_size`,
    );
  }
  // Entry 0: the whole image squashed to S x S (aspect NOT kept), PIL's default BICUBIC. Made first:
  // for a degenerate image (1 x 1000000) it is the step that refuses, before the canvas's work is done.
  const base = resizeImage(img, size.shortestEdge, size.shortestEdge, Resample.BICUBIC);
  const padded = resizeAndPadImage(img, best);
  return { padded, tiles: [base, ...divideToPatches(padded, cropSize.height)] };
}

/** LLaVA `process_images`: one entry per image, each run through `processor.preprocess`. */
export function processImages(
  images: RgbImage[],
  processor: CLIPImageProcessor,
  opts: ProcessImagesOptions,
): ProcessedImage[] {
  return images.map((img) => {
    let parts: RgbImage[];
    if (opts.aspect === 'anyres') {
      if (!opts.gridPinpoints) throw new ConfigError(`image_aspect_ratio 'anyres' needs image_grid_pinpoints`);
      parts = anyresImages(img, processor, opts.gridPinpoints).tiles;
    } else if (opts.aspect === 'pad') {
      parts = [expand2square(img, meanBackground(processor.config.imageMean))];
    } else {
      parts = [img];
    }
    const outs = parts.map((p) => processor.preprocess(p));
    const { height, width } = outs[0];
    if (outs.some((o) => o.height !== height || o.width !== width)) {
      throw new ConfigError(
        `anyres tiles preprocess to different sizes; check crop_size vs size in the preprocessor config`,
      );
    }
    const pixelValues = new Float32Array(outs.length * 3 * height * width);
    outs.forEach((o, i) => pixelValues.set(o.pixelValues, i * 3 * height * width));
    return { pixelValues, shape: [outs.length, 3, height, width] };
  });
}
