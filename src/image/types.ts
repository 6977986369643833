import { checkImagePixels } from './limits';

/** An 8-bit RGB image: `data` is H x W x 3, row-major (the layout of `numpy.array(pil_image)`). */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** A decoded image and the pixel layout its file stored (the format decoders' result). */
export interface DecodedImage extends RgbImage {
  /** Pillow-style name of the stored pixel layout: RGB, RGBA, L, LA, P, CMYK, RGB;16, I;16, ... */
  sourceMode?: string;
}

/** A zero-filled (black) image, or one filled with `fill` = [r, g, b]; no bigger than the image limit. */
export function newImage(width: number, height: number, fill?: readonly number[]): RgbImage {
  checkImagePixels(width, height, 'a new image (pad canvas or crop)');
  const data = new Uint8Array(width * height * 3);
  if (fill && (fill[0] || fill[1] || fill[2])) {
    for (let i = 0; i < data.length; i += 3) {
      data[i] = fill[0];
      data[i + 1] = fill[1];
      data[i + 2] = fill[2];
    }
  }
  return { width, height, data };
}

/**
 * PIL `dst.paste(src, (x, y))`: copies `src` with its top-left corner at (x, y); parts outside
 * `dst` are clipped (offsets may be negative).
 */
export function pasteImage(dst: RgbImage, src: RgbImage, x: number, y: number): void {
  const x0 = Math.max(0, x);
  const y0 = Math.max(0, y);
  const x1 = Math.min(dst.width, x + src.width);
  const y1 = Math.min(dst.height, y + src.height);
  if (x1 <= x0) return;
  for (let yy = y0; yy < y1; yy++) {
    const s = ((yy - y) * src.width + (x0 - x)) * 3;
    dst.data.set(src.data.subarray(s, s + (x1 - x0) * 3), (yy * dst.width + x0) * 3);
  }
}

/**
 * PIL `im.crop((left, top, right, bottom))`: the region may extend past the image; pixels outside
 * are zero (black), as in Pillow.
 */
export function cropImage(img: RgbImage, left: number, top: number, right: number, bottom: number): RgbImage {
  const out = newImage(right - left, bottom - top);
  pasteImage(out, img, -left, -top);
  return out;
}
