/**
 * Image decoding equivalent to LLaVA's / HF's `PIL.Image.open(f).convert('RGB')` (Pillow 9.4): the
 * same pixels where Pillow decodes a file, an ImageError where Pillow raises. docs/formats.md has
 * the table of cases, with the tests that pin each.
 *
 * Who decodes: PNG, GIF, BMP and uncompressed TIFF are decoded here (png.ts, gif.ts, bmp.ts,
 * tiff.ts), by Pillow's rules; plain 8-bit PNGs go through libvips when png.ts finds its result
 * will be Pillow's. JPEG, WebP and compressed TIFF are decoded by sharp/libvips, after Pillow's own
 * checks (jpeg.ts: its marker parser and libjpeg's reading to EOI; tiff.ts: its tag reading).
 * libvips is asked for the stored samples untouched and the mode conversion is done here, because
 * sharp's defaults differ from Pillow in ways that change pixels:
 * - No colour management (`ignoreIcc`): Pillow never applies embedded ICC profiles, sharp does by
 *   default (a JPEG with a non-sRGB profile then differs in most bytes).
 * - Alpha is DROPPED, not composited: the colour under transparent pixels is kept.
 * - Grey (L) is replicated to 3 channels; palettes are Pillow's (indices past a short palette are
 *   the grey ramp (i, i, i), not black).
 * - Orientation: Pillow's `open` ignores the EXIF Orientation of JPEG, PNG and WebP (`autoOrient:
 *   true` applies it), but TiffImagePlugin applies a TIFF's Orientation tag when it loads, for
 *   every value and compression: so TIFFs come out turned, with or without autoOrient.
 * - 16-bit samples: Pillow 9.4 keeps the high byte (v >> 8) of 16-bit RGB(A) and grey+alpha PNGs
 *   and of 16-bit RGB(A) TIFFs, but opens 16-bit GREY PNGs (with or without tRNS) as mode "I" and
 *   TIFFs as "I;16", whose `convert('RGB')` CLIPS at 255 (v > 255 -> 255: mostly white). We do
 *   the same, since that is what LLaVA sees; `grey16: 'high-byte'` gives v >> 8 instead. A 16-bit
 *   grey+alpha TIFF is refused: Pillow cannot open it.
 * - CMYK (JPEG/TIFF) uses Pillow's naive formula (no ICC): nk = 255 - K,
 *   R = nk - MULDIV255(C, nk), ... . libvips inverts Adobe-inverted CMYK JPEGs on load like Pillow.
 * - CIELab TIFF is converted to sRGB as Pillow's ImageCms/LittleCMS does (lab.ts), not by libvips.
 * JPEG: libvips' libjpeg-turbo-derived decoder (islow IDCT, fancy upsampling) matches Pillow 9.4 /
 * libjpeg-turbo 2.1.5 bit for bit on the fixtures. Multi-frame files (TIFF, WebP, GIF, APNG): first
 * frame, like Pillow. The format is sniffed from the first bytes (format.ts): formats Pillow cannot
 * open are refused although sharp decodes them.
 */
import sharp, { Metadata, OutputInfo } from 'sharp';
import * as os from 'os';
import { ImageError, oneLine } from '../errors';
import { decodeBmp } from './bmp';
import { decodeGif } from './gif';
import { decodePng, pngExif, pngForLibvips } from './png';
import { exifOrientation, orientImage } from './orientation';
import { decodeTiff, fromLibvips, libvipsRefusal } from './tiff';
import { jpegRefusal } from './jpeg';
import { ImageFormat, SNIFF_BYTES, readImageBytes, sniffImageFormat } from './format';
import { DecodedImage } from './types';
import { checkDecodedBytes, checkImagePixels, maxImagePixels } from './limits';

export interface DecodeOptions {
  /**
   * Apply the EXIF Orientation of JPEG, PNG and WebP files (default false, like `Image.open`).
   * TIFFs are turned by their Orientation tag either way, as `Image.open` turns them.
   */
  autoOrient?: boolean;
  /** Name used in error messages when decoding a buffer. */
  name?: string;
  /** Largest width x height decoded (default: Pillow's limit, see limits.ts); null: no limit. */
  maxImagePixels?: number | null;
  /**
   * 16-bit greyscale PNG / TIFF: 'pillow' (default) clips each sample at 255 like Pillow's
   * convert('RGB'), which is what LLaVA sees (mostly white); 'high-byte' keeps v >> 8, the image
   * as a viewer shows it, which LLaVA never sees.
   */
  grey16?: 'pillow' | 'high-byte';
}

export async function decodeImage(input: string | Uint8Array, opts: DecodeOptions = {}): Promise<DecodedImage> {
  const name = typeof input === 'string' ? input : (opts.name ?? '<image buffer>');
  // The whole file at once: every format's checks read it, and one read costs less than several.
  const bytes = typeof input === 'string' ? readImageBytes(input, name) : input;
  if (bytes.length === 0) throw new ImageError(`cannot decode image ${name}: empty file`);
  const sniffed = sniffImageFormat(bytes.subarray(0, SNIFF_BYTES));
  if ('refused' in sniffed) throw new ImageError(`cannot decode image ${name}: ${sniffed.refused}`);
  const limit = maxImagePixels(opts.maxImagePixels);
  const { format } = sniffed;
  // Our own decoders: sharp has no BMP loader, composites GIFs unlike Pillow, and libpng accepts
  // and refuses other PNGs than Pillow (and gives black for indices past PLTE). TIFF: Pillow's own
  // reading of the tags and of uncompressed data; libvips decompresses the rest.
  if (format === 'bmp') return decodeBmp(bytes, name, limit);
  if (format === 'gif') return decodeGif(bytes, name, limit);
  if (format === 'tiff') return decodeTiffFile(bytes, name, limit, opts);
  if (format === 'png') return orientPng(bytes, await decodePngFile(bytes, name, limit, opts), opts);
  if (format === 'jpeg') {
    // libvips decodes; Pillow's own marker rules, and libjpeg's reading to EOI, decide what is refused.
    const refusal = jpegRefusal(bytes);
    if (refusal) throw new ImageError(`cannot decode image ${name}: JPEG ${refusal}`);
  }
  return decodeWithLibvips(
    Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    name,
    format,
    limit,
    opts,
    'error',
  );
}

/**
 * A PNG: plain ones (pngForLibvips) through libvips, which decodes them faster (and then gives
 * Pillow's pixels), unless libpng has a warning; every other one through our own decoder.
 */
async function decodePngFile(
  bytes: Uint8Array,
  name: string,
  limit: number,
  opts: DecodeOptions,
): Promise<DecodedImage> {
  const pngOpts = { maxPixels: limit, grey16: opts.grey16 ?? 'pillow' } as const;
  const mode = pngForLibvips(bytes, name, pngOpts);
  if (mode) {
    try {
      const src = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const img = await decodeWithLibvips(src, name, 'png', limit, { ...opts, autoOrient: false }, 'warning');
      return { ...img, sourceMode: mode };
    } catch {
      // A libpng warning: decodePng gives Pillow's verdict.
    }
  }
  return decodePng(bytes, name, pngOpts);
}

/**
 * A TIFF: uncompressed ones decoded by tiff.ts; compressed ones decompressed by libvips (libtiff),
 * whose samples tiff.ts turns into Pillow's RGB. Pillow already applies the Orientation tag, so
 * autoOrient changes nothing for TIFF.
 */
async function decodeTiffFile(
  bytes: Uint8Array,
  name: string,
  limit: number,
  opts: DecodeOptions,
): Promise<DecodedImage> {
  const grey16 = opts.grey16 ?? 'pillow';
  const planned = decodeTiff(bytes, name, limit, grey16);
  if ('data' in planned) return planned;
  const { plan, input } = planned;
  const refusal = libvipsRefusal(plan);
  if (refusal) throw new ImageError(`cannot decode image ${name}: TIFF ${refusal}`);
  const wide = ['I;16', 'I;16B', 'I', 'F'].includes(plan.mode);
  const sixteen = /;16/.test(plan.rawmode);
  try {
    const src = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    const sharpOpts = { ignoreIcc: true, failOn: 'error' as const, limitInputPixels: false as const };
    const meta = await sharp(src, sharpOpts).metadata();
    if (meta.width !== plan.width || meta.height !== plan.height) {
      // TiffDecode.c: libtiff's size (its first ImageWidth/ImageLength) must be Pillow's.
      throw new ImageError(
        `cannot decode image ${name}: TIFF size ${plan.width}x${plan.height} (Pillow, last tags) differs from libtiff's ${meta.width}x${meta.height}; Pillow 9.4 refuses it too`,
      );
    }
    let pipe = sharp(src, sharpOpts);
    const space = meta.space as string;
    if (space === 'cmyk') pipe = pipe.pipelineColourspace('cmyk').toColourspace('cmyk');
    else if (['srgb', 'rgb', 'b-w', 'rgb16', 'grey16', 'multiband'].includes(space))
      pipe = pipe.toColourspace(space === 'multiband' ? 'b-w' : space);
    else throw new ImageError(`cannot decode image ${name}: TIFF colour space ${space} has no Pillow-exact decoding`);
    const depth = wide ? 'double' : sixteen ? 'ushort' : 'uchar';
    const raw = await pipe.raw({ depth }).toBuffer({ resolveWithObject: true });
    const { channels } = raw.info;
    if (wide) {
      const values = new Float64Array(
        raw.data.buffer.slice(raw.data.byteOffset, raw.data.byteOffset + raw.data.byteLength),
      );
      const grey = new Float64Array(plan.width * plan.height);
      for (let i = 0; i < grey.length; i++) grey[i] = values[i * channels];
      return fromLibvips(plan, name, new Uint8Array(0), 1, grey16, grey);
    }
    const samples = sixteen
      ? highBytes(raw.data)
      : new Uint8Array(raw.data.buffer, raw.data.byteOffset, raw.data.byteLength);
    return fromLibvips(plan, name, samples, channels, grey16);
  } catch (e) {
    if (e instanceof ImageError) throw e;
    throw new ImageError(`cannot decode image ${name}: ${oneLine((e as Error).message)}`);
  }
}

/** autoOrient for PNG: the eXIf chunk's orientation (libvips' rule; Pillow's Image.open ignores it). */
function orientPng(bytes: Uint8Array, img: DecodedImage, opts: DecodeOptions): DecodedImage {
  const exif = opts.autoOrient ? pngExif(bytes) : undefined;
  return exif ? orientImage(img, exifOrientation(exif)) : img;
}

/**
 * sharp/libvips' decoding with the stored samples untouched, and our conversion to RGB (see the top).
 * Exported for tools/bench_decode.ts, which times it against decodeImage (it was the whole path
 * for PNG and JPEG before their Pillow checks); not part of the public API.
 * `failOn` 'error' rejects truncated or corrupt pixel data (Pillow raises on those too) but, unlike
 * sharp's default 'warning', accepts files with harmless warnings that Pillow also accepts.
 */
export async function decodeWithLibvips(
  src: string | Buffer,
  name: string,
  format: ImageFormat,
  limit: number,
  opts: DecodeOptions,
  failOn: 'error' | 'warning',
): Promise<DecodedImage> {
  const sharpOpts = {
    ignoreIcc: true,
    failOn,
    autoOrient: !!opts.autoOrient,
    limitInputPixels: Number.isFinite(limit) ? Math.max(1, Math.floor(limit)) : false,
  };
  let meta: Metadata;
  let raw: { data: Buffer; info: OutputInfo };
  let sixteen = false;
  let clipGrey16 = false;
  try {
    meta = await sharp(src, { ...sharpOpts, limitInputPixels: false }).metadata(); // the header only: our check names the limit
    // Refused from the header, before any pixel is decoded (Pillow's DecompressionBombError).
    checkImagePixels(meta.width ?? 0, meta.height ?? 0, `image ${name}`, limit);
    let pipe = sharp(src, sharpOpts);
    const space = meta.space as string;
    sixteen = space === 'rgb16' || space === 'grey16';
    if (sixteen) checkDecodedBytes(meta.width ?? 0, meta.height ?? 0, meta.channels ?? 4, 2, `image ${name}`, limit);
    clipGrey16 = space === 'grey16' && (opts.grey16 ?? 'pillow') === 'pillow' && pillowClipsGrey16(format, meta, name);
    if (space === 'cmyk') {
      // Keep the C, M, Y, K samples: without a CMYK pipeline sharp would run an ICC transform.
      pipe = pipe.pipelineColourspace('cmyk').toColourspace('cmyk');
    } else if (['srgb', 'rgb', 'b-w', 'rgb16', 'grey16'].includes(space)) {
      pipe = pipe.toColourspace(space); // no conversion: the stored samples as they are
    } else {
      throw new ImageError(`cannot decode image ${name}: colour space ${space} has no Pillow-exact decoding`);
    }
    raw = await pipe.raw({ depth: sixteen ? 'ushort' : 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (e) {
    if (e instanceof ImageError) throw e;
    throw new ImageError(`cannot decode image ${name}: ${oneLine((e as Error).message)}`);
  }
  const { width, height, channels } = raw.info;
  let samples: Uint8Array = raw.data;
  if (sixteen) samples = clipGrey16 ? clippedTo255(raw.data) : highBytes(raw.data);
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
  const mode = clipGrey16 ? 'I;16' : sourceMode(meta);
  return { width, height, data: out, sourceMode: mode };
}

/**
 * Whether Pillow opens this 16-bit grey image as mode I;16 (convert('RGB') clips at 255):
 * single-channel TIFFs. Grey+alpha TIFFs do not open at all.
 */
function pillowClipsGrey16(format: ImageFormat, meta: Metadata, name: string): boolean {
  if (format === 'tiff' && meta.hasAlpha) {
    throw new ImageError(
      `cannot decode image ${name}: 16-bit grey+alpha TIFF, which Pillow 9.4 cannot open (LLaVA cannot read it either)`,
    );
  }
  return true;
}

/** Each native-endian uint16 sample clipped at 255, as Pillow's I;16 -> RGB: a non-zero high byte gives 255. */
function clippedTo255(buf: Uint8Array): Uint8Array {
  const hi = os.endianness() === 'LE' ? 1 : 0;
  const out = new Uint8Array(buf.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = buf[2 * i + hi] ? 255 : buf[2 * i + 1 - hi];
  return out;
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
