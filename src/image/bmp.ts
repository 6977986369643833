/**
 * BMP decoding identical to Pillow 9.4's `BmpImagePlugin` followed by `convert('RGB')` (what
 * LLaVA sees); sharp/libvips has no BMP loader. Pillow's quirks are reproduced on purpose:
 * - the palette is read right after the header, whatever bfOffBits says; bfOffBits pointing at
 *   the palette start is taken to mean "pixels after 4 x colours bytes"; bfOffBits 0 means
 *   "pixels right after the palette";
 * - a palette whose entries are all grey (i, i, i), or black/white for 2 colours, is dropped and
 *   the image read as L / 1 (for the 8-bit-per-pixel 2-colour case: as 1 bit per pixel);
 *   indices past the palette are the grey ramp (i, i, i);
 * - 32-bit BI_RGB ignores the 4th byte; BI_BITFIELDS accepts only Pillow's fixed mask layouts;
 *   alpha (BGRA, ABGR, RGBA masks) is dropped, not composited;
 * - RLE follows Pillow 9.4's Python decoder byte for byte: a delta escape consumes 4 bytes and
 *   uses the last 2; an RLE4 absolute run of n pixels yields 2 * floor(n / 2); runs past the row
 *   end are clipped, absolute runs are not; a stream that ends before the image is full is an
 *   error ("not enough image data").
 * Whatever Pillow refuses is refused (ImageError naming the file). Sizes are checked against the
 * file length and Pillow's decompression-bomb limit before any pixel buffer is allocated.
 */
import { ImageError } from '../errors';
import { maxImagePixels } from './limits';
import type { RgbImage } from './types';

const HEADER_SIZES = [12, 40, 64, 108, 124];
const BI_RGB = 0;
const BI_RLE8 = 1;
const BI_RLE4 = 2;
const BI_BITFIELDS = 3;

type RawMode =
  'P;1' | 'P;4' | 'P' | '1' | 'L' | 'BGR;15' | 'BGR;16' | 'BGR' | 'BGRX' | 'XBGR' | 'ABGR' | 'BGRA' | 'RGBA';

/** Bits per pixel of each raw mode (Pillow's unpackers). */
const RAW_BITS: Record<RawMode, number> = {
  'P;1': 1,
  '1': 1,
  'P;4': 4,
  P: 8,
  L: 8,
  'BGR;15': 16,
  'BGR;16': 16,
  BGR: 24,
  BGRX: 32,
  XBGR: 32,
  ABGR: 32,
  BGRA: 32,
  RGBA: 32,
};

/** Byte offsets of R, G, B inside a 32-bit pixel. */
const RGB32_OFFSETS: Partial<Record<RawMode, [number, number, number]>> = {
  BGRX: [2, 1, 0],
  BGRA: [2, 1, 0],
  XBGR: [3, 2, 1],
  ABGR: [3, 2, 1],
  RGBA: [0, 1, 2],
};

const BIT_MODES: Record<number, [string, RawMode]> = {
  1: ['P', 'P;1'],
  4: ['P', 'P;4'],
  8: ['P', 'P'],
  16: ['RGB', 'BGR;15'],
  24: ['RGB', 'BGR'],
  32: ['RGB', 'BGRX'],
};

/** Pillow's BI_BITFIELDS table: "bits:r,g,b[,a]" masks -> raw mode. */
const MASK_MODES: Record<string, RawMode> = {
  '32:ff0000,ff00,ff,0': 'BGRX',
  '32:ff000000,ff0000,ff00,0': 'XBGR',
  '32:ff000000,ff0000,ff00,ff': 'ABGR',
  '32:ff,ff00,ff0000,ff000000': 'RGBA',
  '32:ff0000,ff00,ff,ff000000': 'BGRA',
  '32:0,0,0,0': 'BGRA',
  '24:ff0000,ff00,ff': 'BGR',
  '16:f800,7e0,1f': 'BGR;16',
  '16:7c00,3e0,1f': 'BGR;15',
};

interface BmpLayout {
  width: number;
  height: number;
  topDown: boolean;
  compression: number;
  /** Pillow's image mode: P, L, 1, RGB or RGBA. */
  mode: string;
  rawMode: RawMode;
  /** Bits per pixel as stored (the row stride follows this, not the raw mode). */
  bits: number;
  /** 256 RGB entries (the grey ramp past the file's palette), for mode P. */
  palette?: Uint8Array;
  pixelOffset: number;
}

export function isBmp(head: Uint8Array): boolean {
  return head.length >= 2 && head[0] === 0x42 && head[1] === 0x4d; // "BM"
}

export function decodeBmp(
  file: Uint8Array,
  name: string,
  maxPixels = maxImagePixels(),
): RgbImage & { sourceMode: string } {
  const fail = (why: string) => new ImageError(`cannot decode image ${name}: ${why}`);
  const bmp = readLayout(file, fail, maxPixels);
  const rle = bmp.compression === BI_RLE8 || bmp.compression === BI_RLE4;
  const data = rle ? decodeRle(file, bmp, fail) : decodeRaw(file, bmp, fail);
  return { width: bmp.width, height: bmp.height, data, sourceMode: bmp.mode };
}

function readLayout(file: Uint8Array, fail: (why: string) => ImageError, maxPixels: number): BmpLayout {
  if (file.length < 18) throw fail('BMP file ends inside its header');
  let offset = u32(file, 10);
  const headerSize = u32(file, 14);
  if (!HEADER_SIZES.includes(headerSize)) {
    throw fail(`unsupported BMP header size ${headerSize} (Pillow reads 12, 40, 64, 108 and 124)`);
  }
  if (file.length < 14 + headerSize) throw fail('BMP file ends inside its header');
  let pos = 14 + headerSize;
  let width: number;
  let height: number;
  let bits: number;
  let compression = BI_RGB;
  let colors = 0;
  let topDown = false;
  let paletteEntry = 4;
  let masks: number[] = [];
  if (headerSize === 12) {
    // OS/2 v1: 16-bit sizes, 3-byte palette entries.
    width = u16(file, 18);
    height = u16(file, 20);
    bits = u16(file, 24);
    paletteEntry = 3;
  } else {
    // Pillow decides "top-down" from the height's top byte alone.
    topDown = file[25] === 0xff;
    width = u32(file, 18);
    height = topDown ? 2 ** 32 - u32(file, 22) : u32(file, 22);
    bits = u16(file, 28);
    compression = u32(file, 30);
    colors = u32(file, 46);
    if (compression === BI_BITFIELDS) {
      if (headerSize >= 56) {
        masks = [u32(file, 54), u32(file, 58), u32(file, 62), u32(file, 66)];
      } else {
        // A 40-byte header keeps the three masks right after it (no alpha mask).
        if (file.length < pos + 12) throw fail('BMP file ends inside its bit masks');
        masks = [u32(file, pos), u32(file, pos + 4), u32(file, pos + 8), 0];
        pos += 12;
      }
    }
  }
  if (!(bits in BIT_MODES)) throw fail(`unsupported BMP bit depth ${bits} (Pillow reads 1, 4, 8, 16, 24 and 32)`);
  if (colors === 0) colors = 2 ** bits;
  if (offset === 14 + headerSize && bits <= 8) offset += 4 * colors;
  let [mode, rawMode] = BIT_MODES[bits];

  if (compression === BI_BITFIELDS) {
    const key = `${bits}:${masks
      .slice(0, bits === 32 ? 4 : 3)
      .map((m) => m.toString(16))
      .join(',')}`;
    const fromMasks = bits === 32 || bits === 24 || bits === 16 ? MASK_MODES[key] : undefined;
    if (!fromMasks) {
      throw fail(
        `unsupported BMP bit field layout (${bits}-bit, masks ${masks.map((m) => '0x' + m.toString(16)).join(' ')}; Pillow refuses it too)`,
      );
    }
    rawMode = fromMasks;
    if (rawMode.includes('A')) mode = 'RGBA';
  } else if (compression !== BI_RGB && compression !== BI_RLE8 && compression !== BI_RLE4) {
    throw fail(`unsupported BMP compression ${compression} (Pillow reads none, RLE8, RLE4 and bit fields)`);
  }

  let palette: Uint8Array | undefined;
  if (mode === 'P') {
    if (!(colors > 0 && colors <= 65536)) throw fail(`unsupported BMP palette size ${colors}`);
    const stored = file.subarray(pos, Math.min(file.length, pos + paletteEntry * colors));
    pos += stored.length;
    if (isGreyPalette(stored, colors, paletteEntry)) {
      mode = colors === 2 ? '1' : 'L';
      rawMode = mode as RawMode;
    } else {
      const entries = Math.floor(stored.length / paletteEntry);
      if (entries > 256) throw fail(`BMP palette has ${entries} colours (Pillow: invalid palette size)`);
      palette = greyRamp();
      for (let i = 0; i < entries; i++) {
        const s = i * paletteEntry;
        palette[i * 3] = stored[s + 2];
        palette[i * 3 + 1] = stored[s + 1];
        palette[i * 3 + 2] = stored[s];
      }
    }
  }

  if (width <= 0 || height <= 0) throw fail(`BMP image has no pixels (${width}x${height})`);
  if (width * height > maxPixels) {
    throw fail(
      `BMP image is ${width}x${height} = ${width * height} pixels, over the limit of ${maxPixels} (Pillow's decompression-bomb limit; LLAVA_VISION_MAX_IMAGE_PIXELS raises it)`,
    );
  }
  return { width, height, topDown, compression, mode, rawMode, bits, palette, pixelOffset: offset || pos };
}

/** Pillow's test: entries (i, i, i) for i < colours, or exactly black then white for 2 colours. */
function isGreyPalette(stored: Uint8Array, colors: number, entry: number): boolean {
  for (let i = 0; i < colors; i++) {
    const v = colors === 2 ? i * 255 : i & 255;
    const s = i * entry;
    if (s + 3 > stored.length || stored[s] !== v || stored[s + 1] !== v || stored[s + 2] !== v) return false;
  }
  return true;
}

/** Pillow fills palette entries the file does not define with the grey ramp. */
function greyRamp(): Uint8Array {
  const p = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) p[i * 3] = p[i * 3 + 1] = p[i * 3 + 2] = i;
  return p;
}

function decodeRaw(file: Uint8Array, bmp: BmpLayout, fail: (why: string) => ImageError): Uint8Array {
  const { width, height, rawMode } = bmp;
  // The file's rows follow the stored bit depth; Pillow's unpacker reads rowBytes of each.
  const stride = Math.floor((width * bmp.bits + 31) / 32) * 4;
  const rowBytes = Math.ceil((width * RAW_BITS[rawMode]) / 8);
  if (stride < rowBytes) {
    // Pillow reads this as L from a file path (overlapping rows) and fails from a buffer.
    throw fail(
      `BMP palette makes Pillow read ${RAW_BITS[rawMode]} bits per pixel from a ${bmp.bits}-bit image (it cannot decode it consistently)`,
    );
  }
  // Pillow needs every row but not the last row's padding.
  if (bmp.pixelOffset + (height - 1) * stride + rowBytes > file.length) {
    throw fail('BMP pixel data is truncated');
  }
  const rgb = new Uint8Array(width * height * 3);
  const pal = bmp.palette;
  for (let r = 0; r < height; r++) {
    const src = bmp.pixelOffset + r * stride;
    let o = (bmp.topDown ? r : height - 1 - r) * width * 3;
    switch (rawMode) {
      case 'P;1':
      case 'P;4':
      case 'P':
        for (let x = 0; x < width; x++, o += 3) {
          const i = 3 * index(file, src, x, rawMode);
          rgb[o] = pal![i];
          rgb[o + 1] = pal![i + 1];
          rgb[o + 2] = pal![i + 2];
        }
        break;
      case '1':
      case 'L':
        for (let x = 0; x < width; x++, o += 3) {
          const v = rawMode === 'L' ? file[src + x] : ((file[src + (x >> 3)] >> (7 - (x & 7))) & 1) * 255;
          rgb[o] = rgb[o + 1] = rgb[o + 2] = v;
        }
        break;
      case 'BGR;15':
      case 'BGR;16': {
        const greenBits = rawMode === 'BGR;16' ? 6 : 5;
        const gMax = (1 << greenBits) - 1;
        for (let x = 0; x < width; x++, o += 3) {
          const v = file[src + 2 * x] | (file[src + 2 * x + 1] << 8);
          rgb[o] = Math.floor((((v >> (5 + greenBits)) & 31) * 255) / 31);
          rgb[o + 1] = Math.floor((((v >> 5) & gMax) * 255) / gMax);
          rgb[o + 2] = Math.floor(((v & 31) * 255) / 31);
        }
        break;
      }
      case 'BGR':
        for (let x = 0; x < width; x++, o += 3) {
          rgb[o] = file[src + 3 * x + 2];
          rgb[o + 1] = file[src + 3 * x + 1];
          rgb[o + 2] = file[src + 3 * x];
        }
        break;
      default: {
        const [ro, go, bo] = RGB32_OFFSETS[rawMode]!;
        for (let x = 0; x < width; x++, o += 3) {
          rgb[o] = file[src + 4 * x + ro];
          rgb[o + 1] = file[src + 4 * x + go];
          rgb[o + 2] = file[src + 4 * x + bo];
        }
      }
    }
  }
  return rgb;
}

/** Palette index of pixel x in a row starting at byte `src` (most significant bits first). */
function index(file: Uint8Array, src: number, x: number, rawMode: RawMode): number {
  if (rawMode === 'P') return file[src + x];
  if (rawMode === 'P;4') return (file[src + (x >> 1)] >> (x & 1 ? 0 : 4)) & 15;
  return (file[src + (x >> 3)] >> (7 - (x & 7))) & 1;
}

function decodeRle(file: Uint8Array, bmp: BmpLayout, fail: (why: string) => ImageError): Uint8Array {
  const { width, height } = bmp;
  const rle4 = bmp.compression === BI_RLE4;
  // Pillow hands the indices to a "P" (or "L") raw decoder: other image modes fail there.
  if (bmp.mode !== 'P' && bmp.mode !== 'L') {
    throw fail(
      `BMP RLE${rle4 ? 4 : 8} data in a ${bmp.mode === '1' ? '2-colour black/white' : `${bmp.bits}-bit`} image (Pillow: unknown raw mode)`,
    );
  }
  // A dry run first: a stream that cannot fill the image is refused before its index buffer exists.
  if (runRle(file, bmp.pixelOffset, width, width * height, rle4, null, fail) < width * height) {
    throw fail(`BMP RLE${rle4 ? 4 : 8} data ends before the image is complete (Pillow: not enough image data)`);
  }
  const indices = new Uint8Array(width * height);
  runRle(file, bmp.pixelOffset, width, width * height, rle4, indices, fail);
  const rgb = new Uint8Array(width * height * 3);
  const pal = bmp.palette;
  for (let r = 0; r < height; r++) {
    let o = (bmp.topDown ? r : height - 1 - r) * width * 3;
    for (let x = 0, s = r * width; x < width; x++, s++, o += 3) {
      const v = indices[s];
      if (pal) {
        rgb[o] = pal[3 * v];
        rgb[o + 1] = pal[3 * v + 1];
        rgb[o + 2] = pal[3 * v + 2];
      } else {
        rgb[o] = rgb[o + 1] = rgb[o + 2] = v;
      }
    }
  }
  return rgb;
}

/**
 * Pillow 9.4's BmpRleDecoder.decode, step for step. Writes the first `total` indices into `out`
 * (when given) and returns how many the stream produced.
 */
function runRle(
  file: Uint8Array,
  start: number,
  width: number,
  total: number,
  rle4: boolean,
  out: Uint8Array | null,
  fail: (why: string) => ImageError,
): number {
  let n = 0;
  let x = 0;
  let p = start;
  const put = (v: number, count: number) => {
    if (out && n < total) out.fill(v, n, Math.min(total, n + count));
    n += count;
  };
  while (n < total) {
    if (p + 2 > file.length) break;
    const count = file[p];
    const byte = file[p + 1];
    p += 2;
    if (count) {
      // Encoded run, clipped at the row end (x may already be past it).
      const num = x + count > width ? Math.max(0, width - x) : count;
      if (rle4 && byte >> 4 !== (byte & 15)) {
        for (let i = 0; i < num; i++) put(i % 2 === 0 ? byte >> 4 : byte & 15, 1);
      } else {
        put(rle4 ? byte & 15 : byte, num);
      }
      x += num;
    } else if (byte === 0) {
      put(0, (width - (n % width)) % width); // end of line: zero fill to the row end
      x = 0;
    } else if (byte === 1) {
      break; // end of bitmap
    } else if (byte === 2) {
      // Delta: Pillow 9.4 reads two bytes, drops them, and takes (right, up) from the next two.
      if (p + 2 > file.length) break;
      p += 2;
      if (p + 2 > file.length) throw fail('BMP RLE delta escape is truncated');
      put(0, file[p] + file[p + 1] * width);
      p += 2;
      x = n % width;
    } else {
      // Absolute run; RLE4 reads floor(byte / 2) bytes of two pixels each.
      const want = rle4 ? byte >> 1 : byte;
      const got = Math.min(want, Math.max(0, file.length - p));
      for (let i = 0; i < got; i++) {
        const v = file[p + i];
        if (rle4) {
          put(v >> 4, 1);
          put(v & 15, 1);
        } else {
          put(v, 1);
        }
      }
      p += got;
      if (got < want) break;
      x += byte;
      if (p % 2 !== 0) p += 1; // word alignment, by file position as in Pillow
    }
  }
  return n;
}

function u16(b: Uint8Array, o: number): number {
  return b[o] | (b[o + 1] << 8);
}

function u32(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16)) + b[o + 3] * 2 ** 24;
}
