/**
 * Image decoding equivalent to LLaVA's / HF's `PIL.Image.open(f).convert('RGB')` (Pillow 9.4).
 *
 * sharp/libvips decodes; we ask it for the stored samples untouched and do the mode conversion
 * ourselves, because sharp's defaults differ from Pillow in ways that change pixels:
 * - No colour management (`ignoreIcc`): Pillow never applies embedded ICC profiles, sharp does by
 *   default (a JPEG with a non-sRGB profile then differs in most bytes).
 * - Alpha is DROPPED, not composited: the colour under transparent pixels is kept.
 * - Grey (L) is replicated to 3 channels; palette images are expanded by libvips (palette
 *   transparency becomes an alpha band, which is dropped like above).
 * - No EXIF rotation unless `autoOrient: true` (Pillow's `open` ignores the Orientation tag).
 * - 16-bit samples keep their high byte (v >> 8). Pillow 9.4 does exactly this for 16-bit RGB(A)
 *   and LA PNGs; 16-bit GREY PNGs open as mode "I" there and `convert('RGB')` CLAMPS (v > 255 ->
 *   255, i.e. almost white), which no model expects, so we deliberately use v >> 8 for them too.
 * - CMYK (JPEG/TIFF) uses Pillow's naive formula (no ICC): nk = 255 - K,
 *   R = nk - MULDIV255(C, nk), ... . libvips inverts Adobe-inverted CMYK JPEGs on load like Pillow.
 * - Other colourspaces (Lab TIFF, ...) are converted to sRGB by libvips: not Pillow-exact.
 * JPEG: libvips' libjpeg-turbo-derived decoder (islow IDCT, fancy upsampling) matches Pillow 9.4 /
 * libjpeg-turbo 2.1.5 bit for bit on the fixtures. Multi-frame files: first frame, like Pillow.
 */
import sharp, { Metadata, OutputInfo } from 'sharp';
import * as os from 'os';
import { ImageError, oneLine } from '../errors';
import { RgbImage } from './types';
import { checkDecodedBytes, checkImagePixels, maxImagePixels } from './limits';

export interface DecodeOptions {
  /** Apply the EXIF Orientation tag (default false, like `Image.open`). */
  autoOrient?: boolean;
  /** Name used in error messages when decoding a buffer. */
  name?: string;
  /** Largest width x height decoded (default: Pillow's limit, see limits.ts); null: no limit. */
  maxImagePixels?: number | null;
}

export interface DecodedImage extends RgbImage {
  /** Pillow-style name of the stored pixel layout: RGB, RGBA, L, LA, P, CMYK, RGB;16, I;16, ... */
  sourceMode?: string;
}

export async function decodeImage(input: string | Uint8Array, opts: DecodeOptions = {}): Promise<DecodedImage> {
  const name = typeof input === 'string' ? input : (opts.name ?? '<image buffer>');
  const src = typeof input === 'string' ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  // 'error' rejects truncated or corrupt pixel data (Pillow raises on those too) but, unlike
  // sharp's default 'warning', accepts files with harmless warnings that Pillow also accepts.
  const limit = maxImagePixels(opts.maxImagePixels);
  const sharpOpts = { ignoreIcc: true, failOn: 'error' as const, autoOrient: !!opts.autoOrient, limitInputPixels: Number.isFinite(limit) ? Math.max(1, Math.floor(limit)) : false };
  let meta: Metadata;
  let raw: { data: Buffer; info: OutputInfo };
  let sixteen = false;
  try {
    meta = await sharp(src, { ...sharpOpts, limitInputPixels: false }).metadata(); // the header only: our check names the limit
    // Refused from the header, before any pixel is decoded (Pillow's DecompressionBombError).
    checkImagePixels(meta.width ?? 0, meta.height ?? 0, `image ${name}`, limit);
    let pipe = sharp(src, sharpOpts);
    const space = meta.space as string;
    sixteen = space === 'rgb16' || space === 'grey16';
    if (sixteen) checkDecodedBytes(meta.width ?? 0, meta.height ?? 0, meta.channels ?? 4, 2, `image ${name}`, limit);
    if (space === 'cmyk') {
      // Keep the C, M, Y, K samples: without a CMYK pipeline sharp would run an ICC transform.
      pipe = pipe.pipelineColourspace('cmyk').toColourspace('cmyk');
    } else if (['srgb', 'rgb', 'b-w', 'rgb16', 'grey16'].includes(space)) {
      pipe = pipe.toColourspace(space); // no conversion: the stored samples as they are
    } else {
      pipe = pipe.toColourspace('srgb');
    }
    raw = await pipe.raw({ depth: sixteen ? 'ushort' : 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (e) {
    if (e instanceof ImageError) throw e;
    throw new ImageError(`cannot decode image ${name}: ${oneLine((e as Error).message)}`);
  }
  const { width, height, channels } = raw.info;
  let samples: Uint8Array = raw.data;
  if (sixteen) samples = highBytes(raw.data);
  const out = new Uint8Array(width * height * 3);
  const n = width * height;
  if (meta.space === 'cmyk') {
    if (channels < 4) throw new ImageError(`cannot decode image ${name}: CMYK image with ${channels} channels`);
    for (let i = 0, s = 0; i < n; i++, s += channels) {
      const nk = 255 - samples[s + 3];
      for (let c = 0; c < 3; c++) out[i * 3 + c] = clip8(nk - mulDiv255(samples[s + c], nk));
    }
  } else if (channels <= 2) {
    for (let i = 0, s = 0; i < n; i++, s += channels) out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = samples[s];
  } else if (channels === 3) {
    out.set(samples.subarray(0, n * 3));
  } else {
    for (let i = 0, s = 0; i < n; i++, s += channels) {
      out[i * 3] = samples[s];
      out[i * 3 + 1] = samples[s + 1];
      out[i * 3 + 2] = samples[s + 2];
    }
  }
  return { width, height, data: out, sourceMode: sourceMode(meta) };
}

/** High byte of each native-endian uint16 sample. */
function highBytes(buf: Uint8Array): Uint8Array {
  const hi = os.endianness() === 'LE' ? 1 : 0;
  const out = new Uint8Array(buf.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = buf[2 * i + hi];
  return out;
}

/** Pillow's MULDIV255: round(a * b / 255) in integer arithmetic. */
function mulDiv255(a: number, b: number): number {
  const t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

function clip8(v: number): number {
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

function sourceMode(meta: Metadata): string {
  const alpha = meta.hasAlpha ? 'A' : '';
  switch (meta.space as string) {
    case 'cmyk':
      return 'CMYK';
    case 'b-w':
      return meta.isPalette ? 'P' : meta.bitsPerSample === 1 && !alpha ? '1' : 'L' + alpha;
    case 'grey16':
      return alpha ? 'LA;16' : 'I;16';
    case 'rgb16':
      return `RGB${alpha};16`;
    case 'srgb':
    case 'rgb':
      return meta.isPalette ? 'P' : 'RGB' + alpha;
    default:
      return String(meta.space);
  }
}
