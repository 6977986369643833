/**
 * Pillow's `Image.resize((w, h), resample, reducing_gap=None)` for 8-bit RGB, bit for bit.
 *
 * A re-derivation of Pillow's libImaging/Resample.c (unchanged in the parts used here from
 * Pillow 7 to 11) and, for NEAREST, of the affine "scale" path in Geometry.c:
 * - each axis gets a filter whose support is widened by the downscale factor (antialiasing);
 *   weights are sampled at the source pixel centres, normalised to sum 1, then turned into
 *   22-bit fixed point (PRECISION_BITS = 32 - 8 - 2) by rounding half away from zero;
 * - the horizontal pass runs first, into a uint8 image (rounded: + 2^21, >> 22, clamp), then the
 *   vertical pass; a pass is skipped when that dimension does not change;
 * - a same-size resize is a plain copy.
 */
import { ImageError } from '../errors';
import { RgbImage } from './types';
import { checkProducedImage } from './limits';

/** PIL.Image.Resampling numbers (the `resample` values in preprocessor configs). */
export enum Resample {
  NEAREST = 0,
  LANCZOS = 1,
  BILINEAR = 2,
  BICUBIC = 3,
  BOX = 4,
  HAMMING = 5,
}

export const RESAMPLE_NAMES: Record<number, string> = {
  0: 'NEAREST',
  1: 'LANCZOS',
  2: 'BILINEAR',
  3: 'BICUBIC',
  4: 'BOX',
  5: 'HAMMING',
};

interface Filter {
  fn: (x: number) => number;
  support: number;
}

function sinc(x: number): number {
  if (x === 0) return 1;
  x *= Math.PI;
  return Math.sin(x) / x;
}

// Pillow's hamming window uses float literals (0.54f, 0.46f) promoted to double.
const H054 = Math.fround(0.54);
const H046 = Math.fround(0.46);

const FILTERS: Record<number, Filter> = {
  [Resample.BOX]: { support: 0.5, fn: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  [Resample.BILINEAR]: {
    support: 1,
    fn: (x) => {
      x = Math.abs(x);
      return x < 1 ? 1 - x : 0;
    },
  },
  [Resample.HAMMING]: {
    support: 1,
    fn: (x) => {
      x = Math.abs(x);
      if (x === 0) return 1;
      if (x >= 1) return 0;
      x *= Math.PI;
      return (Math.sin(x) / x) * (H054 + H046 * Math.cos(x));
    },
  },
  [Resample.BICUBIC]: {
    // Keys cubic with a = -0.5 (PyTorch's bicubic uses -0.75: not interchangeable).
    support: 2,
    fn: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
  [Resample.LANCZOS]: { support: 3, fn: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) },
};

const PRECISION_BITS = 22;
const HALF = 1 << (PRECISION_BITS - 1);

/** Taps for one axis: output i reads `count[i]` inputs from `start[i]` with weights kk[i*ksize ..]. */
interface Coeffs {
  ksize: number;
  start: Int32Array;
  count: Int32Array;
  kk: Int32Array;
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for the box [0, inSize). */
function precomputeCoeffs(inSize: number, outSize: number, filter: Filter): Coeffs {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  const ss = 1 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    // C's (int) cast truncates; negatives are clamped to 0 anyway.
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const n = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < n; x++) {
      w[x] = filter.fn((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (let x = 0; x < n; x++) {
      const k = ww !== 0 ? w[x] / ww : w[x];
      // (int)(k * 2^22 +/- 0.5): round half away from zero.
      kk[xx * ksize + x] = Math.trunc(k < 0 ? -0.5 + k * (1 << PRECISION_BITS) : 0.5 + k * (1 << PRECISION_BITS));
    }
    start[xx] = xmin;
    count[xx] = n;
  }
  return { ksize, start, count, kk };
}

/** (acc + 2^21) >> 22, clamped to 0..255 (Pillow's clip8 lookup). `>>` wraps to int32 like C. */
function clip8(acc: number): number {
  const v = (acc + HALF) >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Horizontal pass over rows [y0, y1) of `src` into a (outW x (y1 - y0)) image. */
function resampleHorizontal(src: RgbImage, outW: number, y0: number, y1: number, c: Coeffs): RgbImage {
  const out = new Uint8Array(outW * (y1 - y0) * 3);
  const { ksize, start, count, kk } = c;
  const inRow = src.width * 3;
  const s = src.data;
  let o = 0;
  for (let y = y0; y < y1; y++) {
    const rowBase = y * inRow;
    for (let xx = 0; xx < outW; xx++) {
      let p = rowBase + start[xx] * 3;
      const k0 = xx * ksize;
      const kEnd = k0 + count[xx];
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      for (let k = k0; k < kEnd; k++, p += 3) {
        const w = kk[k];
        s0 += s[p] * w;
        s1 += s[p + 1] * w;
        s2 += s[p + 2] * w;
      }
      out[o++] = clip8(s0);
      out[o++] = clip8(s1);
      out[o++] = clip8(s2);
    }
  }
  return { width: outW, height: y1 - y0, data: out };
}

/** Vertical pass; `rowOffset` = first source row held by `src` (Pillow shifts the bounds). */
function resampleVertical(src: RgbImage, outH: number, rowOffset: number, c: Coeffs): RgbImage {
  const rowLen = src.width * 3;
  const out = new Uint8Array(rowLen * outH);
  // Accumulate whole rows (integer sums are exact in float64, so the order does not matter).
  const acc = new Float64Array(rowLen);
  const { ksize, start, count, kk } = c;
  const s = src.data;
  for (let yy = 0; yy < outH; yy++) {
    acc.fill(0);
    for (let t = 0; t < count[yy]; t++) {
      const w = kk[yy * ksize + t];
      const base = (start[yy] - rowOffset + t) * rowLen;
      for (let i = 0; i < rowLen; i++) acc[i] += s[base + i] * w;
    }
    const o = yy * rowLen;
    for (let i = 0; i < rowLen; i++) out[o + i] = clip8(acc[i]);
  }
  return { width: src.width, height: outH, data: out };
}

/**
 * NEAREST goes through Pillow's affine scale path, not the convolution: source index =
 * int(x0 + (i + 0.5) * in/out) accumulated in float64 step by step, exactly like ImagingScaleAffine
 * (the running sum can differ from the closed form in the last bit, so we add the same way).
 * Out-of-range positions stay 0.
 */
function resizeNearest(img: RgbImage, outW: number, outH: number): RgbImage {
  const out = new Uint8Array(outW * outH * 3);
  const ax = img.width / outW;
  const ay = img.height / outH;
  const xin = new Int32Array(outW).fill(-1);
  let xo = ax * 0.5;
  for (let x = 0; x < outW; x++, xo += ax) {
    const xi = xo < 0 ? -1 : Math.trunc(xo);
    if (xi >= 0 && xi < img.width) xin[x] = xi;
  }
  let yo = ay * 0.5;
  for (let y = 0; y < outH; y++, yo += ay) {
    const yi = yo < 0 ? -1 : Math.trunc(yo);
    if (yi < 0 || yi >= img.height) continue;
    const rowIn = yi * img.width * 3;
    for (let x = 0; x < outW; x++) {
      if (xin[x] < 0) continue;
      const p = rowIn + xin[x] * 3;
      const q = (y * outW + x) * 3;
      out[q] = img.data[p];
      out[q + 1] = img.data[p + 1];
      out[q + 2] = img.data[p + 2];
    }
  }
  return { width: outW, height: outH, data: out };
}

/** PIL `img.resize((width, height), resample)` with reducing_gap=None. Default BICUBIC like Pillow. */
export function resizeImage(
  img: RgbImage,
  width: number,
  height: number,
  resample: number = Resample.BICUBIC,
): RgbImage {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new ImageError(`resize: target size must be positive integers, got ${width}x${height}`);
  }
  // An absurd target (a shortest-edge resize of a 30000x1 image) fails here, before any allocation.
  checkProducedImage(
    width,
    height,
    img.width * img.height,
    `resize of ${img.width}x${img.height} to ${width}x${height}: the result`,
  );
  if (width === img.width && height === img.height) {
    return { width, height, data: img.data.slice() };
  }
  if (resample === Number(Resample.NEAREST)) return resizeNearest(img, width, height);
  const filter = FILTERS[resample];
  if (!filter) throw new ImageError(`resize: unknown resample filter ${resample} (known: 0-5)`);

  const needH = width !== img.width;
  const needV = height !== img.height;
  // Like Pillow: vertical coefficients first, so the horizontal pass only produces the rows the
  // vertical pass will read.
  const vert = precomputeCoeffs(img.height, height, filter);
  let cur = img;
  let rowOffset = 0;
  if (needH) {
    const first = vert.start[0];
    const last = vert.start[height - 1] + vert.count[height - 1];
    const y0 = needV ? first : 0;
    const y1 = needV ? last : img.height;
    // The horizontal pass runs first (as in Pillow): wide target x tall source can exceed both images.
    checkProducedImage(
      width,
      y1 - y0,
      img.width * img.height,
      `resize of ${img.width}x${img.height} to ${width}x${height}: the intermediate image`,
    );
    cur = resampleHorizontal(img, width, y0, y1, precomputeCoeffs(img.width, width, filter));
    rowOffset = y0;
  }
  return needV ? resampleVertical(cur, height, rowOffset, vert) : cur;
}
