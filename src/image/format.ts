/**
 * Which image files we decode: the format told from the file's first bytes (never from its name),
 * and the size limit our own decoders apply.
 *
 * Only formats Pillow 9.4 opens are accepted: sharp/libvips also decodes SVG, HEIF/AVIF and its own
 * .v format, which would give pixels LLaVA (PIL.Image.open) never sees.
 */
import * as fs from 'fs';
import { ImageError } from '../errors';

export type ImageFormat = 'png' | 'jpeg' | 'gif' | 'webp' | 'tiff' | 'bmp';

/** How many leading bytes sniffImageFormat needs. */
export const SNIFF_BYTES = 512;

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** The format of a file starting with `head`, or why it is refused (a phrase for an error message). */
export function sniffImageFormat(head: Uint8Array): { format: ImageFormat } | { refused: string } {
  const ascii = (from: number, to: number) => String.fromCharCode(...head.subarray(from, to));
  if (PNG_MAGIC.every((b, i) => head[i] === b)) return { format: 'png' };
  if (head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return { format: 'jpeg' };
  if (ascii(0, 6) === 'GIF87a' || ascii(0, 6) === 'GIF89a') return { format: 'gif' };
  if (ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP' && ['VP8 ', 'VP8L', 'VP8X'].includes(ascii(12, 16))) {
    return { format: 'webp' };
  }
  // Classic TIFF and BigTIFF, both byte orders, and the two invalid headers Pillow 9.4 also
  // accepts (TiffImagePlugin.PREFIXES).
  if (['II*\0', 'MM\0*', 'II+\0', 'MM\0+', 'MM*\0', 'II\0*'].includes(ascii(0, 4))) return { format: 'tiff' };
  if (ascii(0, 2) === 'BM') return { format: 'bmp' };
  return { refused: refusal(head) };
}

function refusal(head: Uint8Array): string {
  const text = String.fromCharCode(...head.subarray(0, SNIFF_BYTES)).toLowerCase();
  const convert = 'LLaVA (PIL.Image.open) cannot read it either; convert it to PNG or JPEG first';
  if (text.includes('<svg')) return `SVG is a vector format Pillow 9.4 does not open: ${convert}`;
  const ftyp = String.fromCharCode(...head.subarray(4, 12));
  if (ftyp.startsWith('ftyp')) {
    const brand = ftyp.slice(4);
    const kind = brand.startsWith('avi') ? 'AVIF' : 'HEIF/HEIC';
    return `${kind} needs a plugin Pillow 9.4 does not ship: ${convert}`;
  }
  if (head[0] === 0x1f && head[1] === 0x8b)
    return `gzip-compressed data (SVGZ?) is not an image Pillow opens: ${convert}`;
  return 'unsupported image format (llava-vision-tfjs decodes PNG, JPEG, GIF, WebP, TIFF and BMP)';
}

/**
 * The whole file. Read synchronously: the decoders that follow are synchronous too, and for image
 * files one read costs far less than the round trips of fs.promises (open, stat, read, close).
 */
export function readImageBytes(file: string, name: string): Uint8Array {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new ImageError(`cannot decode image ${name}: ${readError(e)}`);
  }
}

function readError(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EISDIR') return 'is a directory';
  return (e as Error).message;
}
