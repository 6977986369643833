/**
 * Orientation (TIFF/EXIF tag 0x0112) as Pillow applies it: `Image.transpose` with the method
 * TiffImagePlugin.load_end (and ImageOps.exif_transpose) picks for each value. Values other than
 * 2..8 leave the image as it is.
 */
import type { RgbImage } from './types';

/**
 * The image as Pillow shows a file with this orientation: 2 FLIP_LEFT_RIGHT, 3 ROTATE_180,
 * 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE, 6 ROTATE_270, 7 TRANSVERSE, 8 ROTATE_90 (counter-clockwise).
 */
export function orientImage<T extends RgbImage>(img: T, orientation: number | undefined): T {
  if (orientation === undefined || !Number.isInteger(orientation) || orientation < 2 || orientation > 8) return img;
  const { width: w, height: h, data: src } = img;
  const swap = orientation >= 5;
  const ow = swap ? h : w;
  const oh = swap ? w : h;
  // Output pixel (x, y) comes from source (sx, sy) = (x0 + ax * x + ay * y, y0 + bx * x + by * y).
  const [x0, ax, ay, y0, bx, by] = {
    2: [w - 1, -1, 0, 0, 0, 1],
    3: [w - 1, -1, 0, h - 1, 0, -1],
    4: [0, 1, 0, h - 1, 0, -1],
    5: [0, 0, 1, 0, 1, 0],
    6: [0, 0, 1, h - 1, -1, 0],
    7: [w - 1, 0, -1, h - 1, -1, 0],
    8: [w - 1, 0, -1, 0, 1, 0],
  }[orientation]!;
  const out = new Uint8Array(src.length);
  const stepX = 3 * (ax + bx * w);
  for (let y = 0, o = 0; y < oh; y++) {
    let s = 3 * ((y0 + by * y) * w + x0 + ay * y);
    for (let x = 0; x < ow; x++, o += 3, s += stepX) {
      out[o] = src[s];
      out[o + 1] = src[s + 1];
      out[o + 2] = src[s + 2];
    }
  }
  return { ...img, width: ow, height: oh, data: out };
}

/** The Orientation of an EXIF block (optionally after "Exif\0\0"): IFD0's tag 0x0112, if readable. */
export function exifOrientation(exif: Uint8Array): number | undefined {
  let b = exif;
  if (b.length >= 6 && String.fromCharCode(...b.subarray(0, 6)) === 'Exif\0\0') b = b.subarray(6);
  if (b.length < 8) return undefined;
  const le = b[0] === 0x49 && b[1] === 0x49;
  if (!le && !(b[0] === 0x4d && b[1] === 0x4d)) return undefined;
  const u16 = (o: number) => (le ? b[o] | (b[o + 1] << 8) : (b[o] << 8) | b[o + 1]);
  const u32 = (o: number) =>
    le
      ? (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16)) + b[o + 3] * 2 ** 24
      : b[o] * 2 ** 24 + ((b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]);
  const ifd = u32(4);
  if (ifd + 2 > b.length) return undefined;
  const n = u16(ifd);
  for (let i = 0; i < n; i++) {
    const e = ifd + 2 + 12 * i;
    if (e + 12 > b.length) return undefined;
    if (u16(e) === 0x0112) return u16(e + 2) === 3 ? u16(e + 8) : undefined;
  }
  return undefined;
}
