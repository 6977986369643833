/**
 * GIF decoding identical to Pillow 9.4 (`GifImagePlugin` first frame + `convert('RGB')`, what
 * LLaVA sees). libvips composites the first frame the way a browser shows it, which differs from
 * Pillow wherever the frame has transparent pixels, does not cover the logical screen, uses
 * indices past its palette, or has no palette. Pillow's rules, reproduced here:
 * - the canvas is the logical screen, enlarged to hold the first frame; pixels the frame does not
 *   cover hold the frame's transparency index (else index 0), and transparent pixels keep their
 *   index: both show that palette colour, not black;
 * - the palette is the frame's local one, else the global one; a palette that is the identity
 *   grey ramp is dropped (mode L: the index is the grey level, unless a dropped local palette
 *   leaves a global one to apply); indices past the palette are the grey ramp (i, i, i);
 * - the LZW decoder is a port of Pillow's GifDecode.c; a frame whose data ends (or hits the end
 *   code) before its last pixel is refused (Pillow raises "image file is truncated").
 * Later frames are never read. Sizes are checked against Pillow's decompression-bomb limit before
 * the canvas is allocated.
 */
import { ImageError } from '../errors';
import { maxImagePixels } from './limits';
import type { RgbImage } from './types';

const TABLE = 4096;

interface Frame {
  x0: number;
  y0: number;
  width: number;
  height: number;
  interlace: boolean;
  lzwBits: number;
  dataOffset: number;
}

export function decodeGif(
  file: Uint8Array,
  name: string,
  maxPixels = maxImagePixels(),
): RgbImage & { sourceMode: string } {
  const fail = (why: string) => new ImageError(`cannot decode image ${name}: ${why}`);
  if (file.length < 13) throw fail('GIF file ends inside its header');
  let width = u16(file, 6);
  let height = u16(file, 8);
  let pos = 13;
  let globalPalette: Uint8Array | null = null;
  if (file[10] & 0x80) {
    const stored = file.subarray(pos, Math.min(file.length, pos + (3 << ((file[10] & 7) + 1))));
    pos += stored.length;
    if (paletteNeeded(stored, fail)) globalPalette = stored;
  }

  // The blocks before the first image: only the graphic control extension matters to frame 0.
  let transparency: number | null = null;
  let localPalette: Uint8Array | false | null = null; // false: present but an identity grey ramp
  let frame: Frame | null = null;
  const readByte = (what: string) => {
    if (pos >= file.length) throw fail(`GIF file ends inside ${what}`);
    return file[pos++];
  };
  // Pillow's data(): one sub-block, or null at a terminator; short at the end of the file.
  const subBlock = (): Uint8Array | null => {
    if (pos >= file.length || file[pos] === 0) {
      pos = Math.min(pos + 1, file.length);
      return null;
    }
    const n = file[pos++];
    const block = file.subarray(pos, Math.min(file.length, pos + n));
    pos += block.length;
    return block;
  };
  const skipSubBlocks = () => {
    for (let b = subBlock(); b && b.length > 0; b = subBlock());
  };
  if (pos >= file.length || file[pos] === 0x3b) throw fail('GIF has no image');
  while (pos < file.length && !frame) {
    const tag = file[pos++];
    if (tag === 0x3b) break;
    if (tag === 0x21) {
      const label = readByte('an extension');
      const block = subBlock();
      if (label === 0xf9) {
        if (!block || block.length < 3 || (block[0] & 1 && block.length < 4))
          throw fail('GIF graphic control extension is truncated');
        if (block[0] & 1) transparency = block[3];
      } else if (label === 0xfe) {
        for (let b = block; b && b.length > 0; b = subBlock());
        continue;
      } else if (label === 0xff) {
        if (!block) throw fail('GIF application extension is empty');
        if (String.fromCharCode(...block.subarray(0, 11)) === 'NETSCAPE2.0') subBlock();
      }
      skipSubBlocks();
    } else if (tag === 0x2c) {
      if (pos + 9 > file.length) throw fail('GIF file ends inside an image descriptor');
      const x0 = u16(file, pos);
      const y0 = u16(file, pos + 2);
      const fw = u16(file, pos + 4);
      const fh = u16(file, pos + 6);
      const flags = file[pos + 8];
      pos += 9;
      width = Math.max(width, x0 + fw);
      height = Math.max(height, y0 + fh);
      if (flags & 0x80) {
        const stored = file.subarray(pos, Math.min(file.length, pos + (3 << ((flags & 7) + 1))));
        pos += stored.length;
        localPalette = paletteNeeded(stored, fail) ? stored : false;
      }
      const lzwBits = readByte('an image descriptor');
      frame = { x0, y0, width: fw, height: fh, interlace: (flags & 0x40) !== 0, lzwBits, dataOffset: pos };
    }
    // Any other byte between blocks is skipped, as Pillow does.
  }
  if (!frame) throw fail('GIF has no image');
  if (width <= 0 || height <= 0) throw fail(`GIF image has no pixels (${width}x${height})`);
  if (width * height > maxPixels) {
    throw fail(
      `GIF image is ${width}x${height} = ${width * height} pixels, over the limit of ${maxPixels} (Pillow's decompression-bomb limit; LLAVA_VISION_MAX_IMAGE_PIXELS raises it)`,
    );
  }
  if (frame.x0 === 0 && frame.width === 0) {
    // decoder.setimage reads a box of x0 == x1 == 0 as the whole image: Pillow decodes a 0-wide
    // frame at x 0 as a frame covering the screen (from its own data, so often "truncated").
    frame = { ...frame, y0: 0, width, height };
  }
  if (frame.width <= 0 || frame.height <= 0)
    throw fail('GIF frame has no pixels (Pillow: tile cannot extend outside image)');

  const indices = new Uint8Array(width * height).fill(transparency ?? 0);
  decodeLzw(file, frame, indices, width, fail);

  // Pillow's mode is L when the frame's palette was dropped, but an identity local palette still
  // leaves the global one attached, which convert('RGB') then applies.
  const mode = (localPalette !== null ? localPalette : globalPalette) ? 'P' : 'L';
  const palette = localPalette || globalPalette;
  const rgb = new Uint8Array(width * height * 3);
  if (palette) {
    const lut = new Uint8Array(256 * 3);
    for (let i = 0; i < 256; i++) lut[3 * i] = lut[3 * i + 1] = lut[3 * i + 2] = i;
    lut.set(palette.subarray(0, Math.floor(palette.length / 3) * 3));
    for (let i = 0; i < indices.length; i++) {
      const s = 3 * indices[i];
      rgb[3 * i] = lut[s];
      rgb[3 * i + 1] = lut[s + 1];
      rgb[3 * i + 2] = lut[s + 2];
    }
  } else {
    for (let i = 0; i < indices.length; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = indices[i];
  }
  return { width, height, data: rgb, sourceMode: mode };
}

/** Pillow's _is_palette_needed: false only for the identity grey ramp (i, i, i). */
function paletteNeeded(p: Uint8Array, fail: (why: string) => ImageError): boolean {
  // Python's chained `i // 3 == p[i] == p[i + 1] == p[i + 2]`: an index error on a short palette.
  for (let i = 0; i < p.length; i += 3) {
    if (p[i] !== i / 3) return true;
    if (i + 1 >= p.length) throw fail('GIF palette is truncated');
    if (p[i + 1] !== p[i]) return true;
    if (i + 2 >= p.length) throw fail('GIF palette is truncated');
    if (p[i + 2] !== p[i]) return true;
  }
  return false;
}

/** Pillow's ImagingGifDecode for one frame, writing indices into the canvas. */
function decodeLzw(
  file: Uint8Array,
  frame: Frame,
  canvas: Uint8Array,
  canvasWidth: number,
  fail: (why: string) => ImageError,
): void {
  const bits = frame.lzwBits;
  if (bits > 12) throw fail(`GIF LZW code size ${bits} (Pillow: codec configuration error)`);
  const clear = 1 << bits;
  const end = clear + 1;
  const data = new Uint8Array(TABLE);
  const link = new Uint16Array(TABLE);
  const buffer = new Uint8Array(TABLE);
  let bufferIndex = TABLE;
  let interlace = frame.interlace ? 1 : 0;
  let step = frame.interlace ? 8 : 1;
  let x = 0;
  let y = 0;
  let state = 1;
  let next = 0;
  let codeSize = 0;
  let codeMask = 0;
  let bitBuffer = 0;
  let bitCount = 0;
  let blockSize = 0;
  let lastData = 0;
  let lastCode = 0;
  let p = frame.dataOffset;
  const broken = () => fail('GIF LZW data is corrupt (Pillow: broken data stream)');

  /** Writes one pixel; true when the frame is complete. */
  const put = (v: number): boolean => {
    canvas[(frame.y0 + y) * canvasWidth + frame.x0 + x] = v;
    if (++x < frame.width) return false;
    x = 0;
    y += step;
    while (y >= frame.height) {
      if (interlace === 1) {
        y = 4;
        interlace = 2;
      } else if (interlace === 2) {
        step = 4;
        y = 2;
        interlace = 3;
      } else if (interlace === 3) {
        step = 2;
        y = 1;
        interlace = 0;
      } else {
        return true;
      }
    }
    return false;
  };

  for (;;) {
    if (state === 1) {
      next = clear + 2;
      codeSize = bits + 1;
      codeMask = (1 << codeSize) - 1;
      bufferIndex = TABLE;
      state = 2;
    }
    if (bufferIndex < TABLE) {
      // The rest of the last expanded string.
      const from = bufferIndex;
      bufferIndex = TABLE;
      for (let i = from; i < TABLE; i++) if (put(buffer[i])) return;
      continue;
    }
    while (bitCount < codeSize) {
      if (blockSize > 0) {
        bitBuffer |= file[p++] << bitCount;
        bitCount += 8;
        blockSize--;
      } else {
        if (p >= file.length || file.length - p < file[p] + 1) {
          throw fail('GIF image data is truncated (Pillow: image file is truncated)');
        }
        blockSize = file[p++];
      }
    }
    let c = bitBuffer & codeMask;
    bitBuffer >>>= codeSize;
    bitCount -= codeSize;
    if (c === clear) {
      if (state !== 2) state = 1;
      continue;
    }
    if (c === end) throw fail('GIF frame data ends before its last pixel (Pillow: image file is truncated)');
    if (state === 2) {
      if (c > clear) throw broken();
      lastData = lastCode = c;
      state = 3;
    } else {
      const thisCode = c;
      if (c > next) throw broken();
      if (c === next) {
        if (bufferIndex <= 0) throw broken();
        buffer[--bufferIndex] = lastData;
        c = lastCode;
      }
      while (c >= clear) {
        if (bufferIndex <= 0 || c >= TABLE) throw broken();
        buffer[--bufferIndex] = data[c];
        c = link[c];
      }
      lastData = c;
      if (next < TABLE) {
        data[next] = c;
        link[next] = lastCode;
        if (next === codeMask && codeSize < 12) {
          codeSize++;
          codeMask = (1 << codeSize) - 1;
        }
        next++;
      }
      lastCode = thisCode;
    }
    if (put(lastData)) return;
  }
}

function u16(b: Uint8Array, o: number): number {
  return b[o] | (b[o + 1] << 8);
}
