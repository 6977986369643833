/**
 * PNG (and APNG, first frame) decoding identical to Pillow 9.4: `PngImagePlugin` (chunk rules),
 * `ImageFile.load` with the ZIP decoder (ZipDecode.c), Unpack.c's raw modes, then `convert('RGB')`:
 * what LLaVA's `Image.open(f).convert('RGB')` gives, and the same refusals.
 *
 * libpng (through libvips) differs from Pillow on damaged or unusual files, in both directions:
 * - Pillow never checks the CRC of image data (IDAT) or of chunks after it, and skips unknown
 *   chunks, critical ones included; chunks before the first IDAT must have good CRCs.
 * - A palette image without PLTE has Pillow's default palette, the grey ramp (i, i, i); so do the
 *   indices past a short PLTE (libpng gives black); a PLTE whose length is not a multiple of 3
 *   loses the last partial entry; one of more than 256 entries is refused.
 * - Two IHDR chunks: the second's size and mode win (its "interlaced" only adds to the first's).
 * - Image data that ends (a zlib stream end) exactly after a row, with the stream's end read in
 *   the same piece of input as that row, leaves the other rows zero; any other shortfall is
 *   refused ("image file is truncated"). An error in the zlib stream past the last row is only
 *   seen when it lies in the piece of input that completes that row, as in ZipDecode.c.
 * - Text and ICC chunks are bounded as Pillow bounds them (1 MiB decompressed zTXt/iTXt/iCCP,
 *   64 MiB of text in all); an APNG frame control chunk (fcTL) gives the first frame's place.
 * - Chunks after the image data are still read, and the errors Pillow raises there are raised.
 * The pixels: 16-bit samples keep their high byte (RGB, RGBA, grey+alpha); 16-bit grey is mode I,
 * clipped at 255 by convert('RGB') (or v >> 8 with grey16: 'high-byte'); alpha and tRNS are dropped.
 */
import { ImageError } from '../errors';
import { crc32 } from '../io/zip';
import { SteppedInflate } from './inflate';
import { checkDecodedBytes, checkImagePixels } from './limits';
import type { DecodedImage } from './types';

/** What Pillow raises; the kind decides where it is caught, as in Python. */
class PillowRaise extends Error {
  constructor(
    readonly kind:
      'EOFError' | 'AttributeError' | 'SyntaxError' | 'struct.error' | 'ValueError' | 'OSError' | 'TypeError',
    message: string,
  ) {
    super(message);
  }
}

/** ImageFile.SAFEBLOCK: Pillow's bound on a decompressed text or ICC chunk. */
const MAX_TEXT_CHUNK = 1024 * 1024;
const MAX_TEXT_MEMORY = 64 * MAX_TEXT_CHUNK;
/** ImageFile.MAXBLOCK: how much ImageFile.load reads at a time. */
const READ_BLOCK = 65536;
/** Inflated bytes held at a time (whole rows are unfiltered and unpacked from it). */
const BLOCK_BYTES = 1 << 20;

/** (bit depth, colour type) -> Pillow's mode, raw mode and bits per pixel of the raw mode. */
const MODES: Record<string, [string, string, number]> = {
  '1,0': ['1', '1', 1],
  '2,0': ['L', 'L;2', 2],
  '4,0': ['L', 'L;4', 4],
  '8,0': ['L', 'L', 8],
  '16,0': ['I', 'I;16B', 16],
  '8,2': ['RGB', 'RGB', 24],
  '16,2': ['RGB', 'RGB;16B', 48],
  '1,3': ['P', 'P;1', 1],
  '2,3': ['P', 'P;2', 2],
  '4,3': ['P', 'P;4', 4],
  '8,3': ['P', 'P', 8],
  '8,4': ['LA', 'LA', 16],
  '16,4': ['RGBA', 'LA;16B', 32],
  '8,6': ['RGBA', 'RGBA', 32],
  '16,6': ['RGBA', 'RGBA;16B', 64],
};

export interface PngOptions {
  maxPixels: number;
  /** 16-bit grey (mode I): clip at 255 like convert('RGB') ('pillow'), or keep v >> 8. */
  grey16: 'pillow' | 'high-byte';
}

/** Python's file object over the bytes: reads return what is there, short at the end. */
class PyFile {
  pos = 0;
  constructor(readonly bytes: Uint8Array) {}
  read(n: number): Uint8Array {
    const start = Math.min(this.pos, this.bytes.length);
    const end = Math.min(this.bytes.length, start + Math.max(0, n));
    this.pos = end;
    return this.bytes.subarray(start, end);
  }
  /** ImageFile._safe_read: exactly n bytes or OSError. */
  safeRead(n: number): Uint8Array {
    if (n <= 0) return this.bytes.subarray(this.pos, this.pos);
    const s = this.read(n);
    if (s.length < n) throw new PillowRaise('OSError', 'Truncated File Read');
    return s;
  }
}

interface Chunk {
  cid: string;
  /** Offset of the chunk's data in the file. */
  pos: number;
  length: number;
}

/** PngStream's state: what the chunks before the image data (and after it) set. */
interface PngState {
  size: [number, number];
  mode: string | null;
  rawmode: string | null;
  bits: number;
  interlace: boolean;
  palette: Uint8Array | null;
  transparency: 'int' | 'bytes' | 'tuple' | null;
  bbox: [number, number, number, number] | null;
  tile: { box: [number, number, number, number]; offset: number; rawmode: string; bits: number } | null;
  nFrames: number | null;
  defaultImage: boolean;
  seqNum: number | null;
  textMemory: number;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** ChunkStream.read: the next chunk header (struct.error or SyntaxError on a bad one). */
function readChunkHeader(f: PyFile): Chunk {
  const s = f.read(8);
  if (s.length < 4) throw new PillowRaise('struct.error', 'chunk header cut short');
  const length = u32(s, 0);
  // is_cid: four of [A-Za-z0-9_] (a shorter type never matches).
  if (s.length < 8 || !isWord(s[4]) || !isWord(s[5]) || !isWord(s[6]) || !isWord(s[7])) {
    throw new PillowRaise(
      'SyntaxError',
      `broken PNG file (chunk ${JSON.stringify(String.fromCharCode(...s.subarray(4)))})`,
    );
  }
  return { cid: String.fromCharCode(s[4], s[5], s[6], s[7]), pos: f.pos, length };
}

function isWord(b: number): boolean {
  return (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x5f;
}

/**
 * _safe_zlib_decompress: ValueError if the data inflates past MAX_TEXT_CHUNK; null for zlib errors.
 * The inflated bytes (kept only with `keep`; else just as many zeros).
 */
function textInflate(data: Uint8Array, keep = false): Uint8Array | null {
  // Only the length matters: the output goes through a scratch window, the last call ending exactly
  // at MAX_TEXT_CHUNK as Python's single decompress(s, max_length) would.
  const scratch = (textScratch ??= new Uint8Array(1 << 16));
  const z = SteppedInflate.acquire();
  try {
    let total = 0;
    let consumed = 0;
    const parts: Uint8Array[] = [];
    const result = () => (keep ? concat(parts) : new Uint8Array(total));
    for (;;) {
      const window = Math.min(scratch.length, MAX_TEXT_CHUNK - total);
      const r = z.step(data, consumed, data.length - consumed, scratch, 0, window);
      if (r.error) return null;
      total += r.written;
      consumed += r.consumed;
      if (keep) parts.push(scratch.slice(0, r.written));
      if (r.written < window) return result(); // the stream ended or the input ran out
      if (total === MAX_TEXT_CHUNK) {
        // Python's decompress(s, max_length) keeps input unconsumed (and Pillow raises) only when the
        // output filled up before the stream's end.
        if (consumed < data.length && !streamEnded(z, data, consumed))
          throw new PillowRaise('ValueError', 'Decompressed Data Too Large');
        return result();
      }
    }
  } finally {
    z.release();
  }
}

let textScratch: Uint8Array | undefined;

/**
 * Whether a stream that stopped with its output full, at `consumed` of `data`, is at its end: a
 * finishing call then adds no output and reports no error.
 */
function streamEnded(z: SteppedInflate, data: Uint8Array, consumed: number): boolean {
  const r = z.step(data, consumed, data.length - consumed, new Uint8Array(1), 0, 1, true);
  return !r.error && r.written === 0;
}

function checkTextMemory(st: PngState, chars: number): void {
  st.textMemory += chars;
  if (st.textMemory > MAX_TEXT_MEMORY)
    throw new PillowRaise('ValueError', `Too much memory used in text chunks: ${st.textMemory}>MAX_TEXT_MEMORY`);
}

function splitNul(s: Uint8Array): [Uint8Array, Uint8Array | null] {
  const i = s.indexOf(0);
  return i < 0 ? [s, null] : [s.subarray(0, i), s.subarray(i + 1)];
}

/** PngStream.chunk_<cid>: the chunk's data, or a raise (EOFError ends the header, AttributeError: unknown chunk). */
function callChunk(st: PngState, f: PyFile, c: Chunk): Uint8Array {
  const { cid, pos, length } = c;
  switch (cid) {
    case 'IHDR': {
      const s = f.safeRead(length);
      if (length < 13) throw new PillowRaise('ValueError', 'Truncated IHDR chunk');
      st.size = [u32(s, 0), u32(s, 4)];
      const mode = MODES[`${s[8]},${s[9]}`];
      if (mode) [st.mode, st.rawmode, st.bits] = mode;
      if (s[12]) st.interlace = true;
      if (s[11]) throw new PillowRaise('SyntaxError', 'unknown filter category');
      return s;
    }
    case 'IDAT':
    case 'fdAT': {
      let offset = pos;
      if (cid === 'fdAT') {
        if (length < 4) throw new PillowRaise('ValueError', 'APNG contains truncated fDAT chunk');
        const s = f.safeRead(4);
        const seq = u32(s, 0);
        if (st.seqNum !== seq - 1) throw new PillowRaise('SyntaxError', 'APNG contains frame sequence errors');
        st.seqNum = seq;
        offset += 4;
      }
      let box: [number, number, number, number];
      if (st.bbox) {
        box = st.bbox;
      } else {
        if (st.nFrames !== null) st.defaultImage = true;
        box = [0, 0, st.size[0], st.size[1]];
      }
      if (st.rawmode === null) throw new PillowRaise('AttributeError', 'no IHDR yet');
      st.tile = { box, offset, rawmode: st.rawmode, bits: st.bits };
      throw new PillowRaise('EOFError', cid);
    }
    case 'IEND':
      throw new PillowRaise('EOFError', cid);
    case 'PLTE': {
      const s = f.safeRead(length);
      if (st.mode === 'P') st.palette = s;
      return s;
    }
    case 'tRNS': {
      const s = f.safeRead(length);
      if (st.mode === 'P') {
        // _simple_palette = ^\xff*\x00\xff*$, where $ also matches before a final newline.
        const simple = (b: Uint8Array) =>
          b.every((v) => v === 0 || v === 0xff) && b.indexOf(0) === b.lastIndexOf(0) && b.indexOf(0) >= 0;
        const isSimple = simple(s) || (s.length > 0 && s[s.length - 1] === 0x0a && simple(s.subarray(0, s.length - 1)));
        st.transparency = isSimple ? 'int' : 'bytes';
      } else if (st.mode === '1' || st.mode === 'L' || st.mode === 'I') {
        if (s.length < 2) throw new PillowRaise('struct.error', 'tRNS too short');
        st.transparency = 'int';
      } else if (st.mode === 'RGB') {
        if (s.length < 6) throw new PillowRaise('struct.error', 'tRNS too short');
        st.transparency = 'tuple';
      }
      return s;
    }
    case 'gAMA': {
      const s = f.safeRead(length);
      if (s.length < 4) throw new PillowRaise('struct.error', 'gAMA too short');
      return s;
    }
    case 'cHRM': {
      const s = f.safeRead(length);
      if (s.length % 4) throw new PillowRaise('struct.error', 'cHRM length not a multiple of 4');
      return s;
    }
    case 'sRGB': {
      const s = f.safeRead(length);
      if (length < 1) throw new PillowRaise('ValueError', 'Truncated sRGB chunk');
      return s;
    }
    case 'pHYs': {
      const s = f.safeRead(length);
      if (length < 9) throw new PillowRaise('ValueError', 'Truncated pHYs chunk');
      return s;
    }
    case 'tEXt': {
      const s = f.safeRead(length);
      const [k, v] = splitNul(s);
      if (k.length) checkTextMemory(st, v ? v.length : 0);
      return s;
    }
    case 'zTXt': {
      const s = f.safeRead(length);
      const [k, v] = splitNul(s);
      const method = v && v.length ? v[0] : 0;
      if (method !== 0) throw new PillowRaise('SyntaxError', `Unknown compression method ${method} in zTXt chunk`);
      const text = textInflate(v ? v.subarray(1) : new Uint8Array(0)) ?? new Uint8Array(0);
      if (k.length) checkTextMemory(st, text.length);
      return s;
    }
    case 'iTXt': {
      const s = f.safeRead(length);
      const [, r0] = splitNul(s);
      if (!r0 || r0.length < 2) return s;
      const [cf, cm] = [r0[0], r0[1]];
      const [lang, r1] = splitNul(r0.subarray(2));
      if (!r1) return s;
      const [tk, r2] = splitNul(r1);
      if (!r2) return s;
      let v: Uint8Array = r2;
      if (cf !== 0) {
        if (cm !== 0) return s;
        const text = textInflate(v, true);
        if (!text) return s;
        v = text;
      }
      let value: string;
      try {
        utf8.decode(lang);
        utf8.decode(tk);
        value = utf8.decode(v);
      } catch {
        return s;
      }
      let chars = 0;
      for (const _ of value) chars++;
      checkTextMemory(st, chars);
      return s;
    }
    case 'iCCP': {
      const s = f.safeRead(length);
      // s.find(b"\0") may be -1: Python's s[-1] is then the last byte and s[i + 2:] is s[1:].
      const i = s.indexOf(0);
      if (s.length === 0) throw new PillowRaise('SyntaxError', 'empty iCCP chunk');
      const method = s[i < 0 ? s.length - 1 : i];
      if (method !== 0) throw new PillowRaise('SyntaxError', `Unknown compression method ${method} in iCCP chunk`);
      textInflate(s.subarray(Math.min(i + 2, s.length)));
      return s;
    }
    case 'eXIf':
      return f.safeRead(length);
    case 'acTL': {
      const s = f.safeRead(length);
      if (length < 8) throw new PillowRaise('ValueError', 'APNG contains truncated acTL chunk');
      if (st.nFrames !== null) {
        st.nFrames = null;
        return s;
      }
      const n = u32(s, 0);
      if (n === 0 || n > 0x80000000) return s;
      st.nFrames = n;
      return s;
    }
    case 'fcTL': {
      const s = f.safeRead(length);
      if (length < 26) throw new PillowRaise('ValueError', 'APNG contains truncated fcTL chunk');
      const seq = u32(s, 0);
      if ((st.seqNum === null && seq !== 0) || (st.seqNum !== null && st.seqNum !== seq - 1)) {
        throw new PillowRaise('SyntaxError', 'APNG contains frame sequence errors');
      }
      st.seqNum = seq;
      const [w, h, px, py] = [u32(s, 4), u32(s, 8), u32(s, 12), u32(s, 16)];
      if (px + w > st.size[0] || py + h > st.size[1])
        throw new PillowRaise('SyntaxError', 'APNG contains invalid frames');
      st.bbox = [px, py, px + w, py + h];
      return s;
    }
    default:
      throw new PillowRaise('AttributeError', `unknown chunk ${cid}`);
  }
}

/** ChunkStream.crc: the 4 bytes after the chunk's data must be the CRC of its type and data. */
function checkCrc(f: PyFile, c: Chunk, data: Uint8Array): void {
  const stored = f.read(4);
  if (stored.length < 4) throw new PillowRaise('SyntaxError', `broken PNG file (incomplete checksum in ${c.cid})`);
  // Type and data lie together in the file, except after an fdAT whose sequence number was read.
  const at = data.byteOffset - f.bytes.byteOffset;
  const typeAndData =
    at === c.pos
      ? f.bytes.subarray(c.pos - 4, c.pos + data.length)
      : concat([f.bytes.subarray(c.pos - 4, c.pos), data]);
  if (crc32(typeAndData) !== u32(stored, 0))
    throw new PillowRaise('SyntaxError', `broken PNG file (bad header checksum in ${c.cid})`);
}

/** The pieces of image data PngImageFile.load_read hands the decoder, in order, and how the supply ends. */
class ImageDataReader {
  /** Bytes left in the current IDAT/fdAT chunk. */
  private left: number;
  constructor(
    private readonly f: PyFile,
    private readonly st: PngState,
    firstLength: number,
  ) {
    this.left = firstLength;
  }

  /** The next piece, or null where Pillow's read raises or returns nothing (the image is then truncated). */
  next(): Uint8Array | null {
    try {
      while (this.left === 0) {
        this.f.read(4); // CRC, never checked
        const c = readChunkHeader(this.f);
        if (c.cid !== 'IDAT' && c.cid !== 'DDAT' && c.cid !== 'fdAT') return null;
        if (c.cid === 'fdAT') {
          try {
            callChunk(this.st, this.f, c);
          } catch (e) {
            if (!(e instanceof PillowRaise && e.kind === 'EOFError')) throw e;
          }
          this.left = c.length - 4;
        } else {
          this.left = c.length;
        }
      }
    } catch (e) {
      if (e instanceof PillowRaise) return null;
      throw e;
    }
    const n = Math.min(READ_BLOCK, this.left);
    this.left -= n;
    const piece = this.f.read(n);
    return piece.length ? piece : null;
  }

  /** load_end's first step: skip what is left of the current chunk. */
  skipRest(): void {
    this.f.read(this.left);
    this.left = 0;
  }
}

export function decodePng(file: Uint8Array, name: string, opts: PngOptions): DecodedImage {
  try {
    return decodePillowPng(file, name, opts);
  } catch (e) {
    if (e instanceof PillowRaise)
      throw new ImageError(`cannot decode image ${name}: PNG ${e.message}; Pillow 9.4 refuses it too (${e.kind})`);
    throw e;
  }
}

/** What PngImageFile._open leaves: the chunk stream's state, where the image data starts, the mode. */
interface OpenedPng {
  f: PyFile;
  st: PngState;
  mode: string;
  width: number;
  height: number;
  tile: NonNullable<PngState['tile']>;
  /** Length of the first image data chunk (after an fdAT's sequence number). */
  firstLength: number;
  /** PngImageFile.palette: the PLTE seen by _open (later ones do not count). */
  palette: Uint8Array | null;
  isAnimated: boolean;
}

/** PngImageFile._open and the checks of Image.open and ImageFile.load before any pixel is decoded. */
function openPng(file: Uint8Array, name: string, opts: PngOptions): OpenedPng {
  const f = new PyFile(file);
  f.pos = 8;
  const st: PngState = {
    size: [0, 0],
    mode: null,
    rawmode: null,
    bits: 0,
    interlace: false,
    palette: null,
    transparency: null,
    bbox: null,
    tile: null,
    nFrames: null,
    defaultImage: false,
    seqNum: null,
    textMemory: 0,
  };
  let last: Chunk;
  for (;;) {
    let c: Chunk;
    try {
      c = readChunkHeader(f);
    } catch (e) {
      if (e instanceof PillowRaise) throw new PillowRaise('SyntaxError', `cannot identify image file (${e.message})`);
      throw e;
    }
    last = c;
    let s: Uint8Array;
    try {
      s = callChunk(st, f, c);
    } catch (e) {
      if (!(e instanceof PillowRaise)) throw e;
      if (e.kind === 'EOFError') break;
      if (e.kind !== 'AttributeError') throw e;
      s = f.safeRead(c.length);
    }
    checkCrc(f, c, s);
  }
  const mode = st.mode;
  const [width, height] = st.size;
  if (!mode || width <= 0 || height <= 0)
    throw new PillowRaise('SyntaxError', 'cannot identify image file (no valid IHDR)');
  checkImagePixels(width, height, `image ${name}`, opts.maxPixels);
  // 16-bit samples: the inflated rows are held a block at a time, but bound them as for the other formats.
  if (st.bits > 0 && tileBitsPerSample(st) === 16)
    checkDecodedBytes(width, height, st.bits / 16, 2, `image ${name}`, opts.maxPixels);
  const isAnimated = st.nFrames !== null && st.nFrames + (st.defaultImage ? 1 : 0) > 1;
  const tile = st.tile;
  if (!tile) throw new PillowRaise('OSError', 'cannot load this image (no image data)');
  const palette = st.palette;
  if (mode === 'P') paletteFor(palette); // ValueError for more than 256 entries, as load_prepare raises
  const firstLength = last.cid === 'fdAT' ? last.length - 4 : last.length;
  return { f, st, mode, width, height, tile, firstLength, palette, isAnimated };
}

/** PngImageFile.load_end: the chunks after the image data (no CRC checks; some raise). */
function readChunksAfterImage(f: PyFile, st: PngState, isAnimated: boolean): void {
  for (;;) {
    f.read(4);
    let c: Chunk;
    try {
      c = readChunkHeader(f);
    } catch (e) {
      if (e instanceof PillowRaise) break;
      throw e;
    }
    if (c.cid === 'IEND') break;
    if (c.cid === 'fcTL' && isAnimated) break;
    try {
      callChunk(st, f, c);
    } catch (e) {
      if (!(e instanceof PillowRaise)) throw e;
      if (e.kind === 'EOFError') f.safeRead(c.cid === 'fdAT' ? c.length - 4 : c.length);
      else if (e.kind === 'AttributeError') f.safeRead(c.length);
      else throw e;
    }
  }
}

/** convert('RGB')'s own failure: a palette image with one transparent index but no palette to look it up in. */
function checkConvert(png: OpenedPng): void {
  if (png.mode === 'P' && png.st.transparency === 'int' && !png.palette) {
    throw new PillowRaise(
      'TypeError',
      "cannot convert 'NoneType' object to bytes (palette image with tRNS but no PLTE)",
    );
  }
}

function decodePillowPng(file: Uint8Array, name: string, opts: PngOptions): DecodedImage {
  const png = openPng(file, name, opts);
  const { f, st, mode, width, height, tile } = png;
  f.pos = tile.offset;
  const box = tile.box;
  // decoder.setimage: a box of x0 == x1 == 0 means the whole image.
  const [xoff, yoff, xsize, ysize] =
    box[0] === 0 && box[2] === 0 ? [0, 0, width, height] : [box[0], box[1], box[2] - box[0], box[3] - box[1]];
  if (xsize <= 0 || xsize + xoff > width || ysize <= 0 || ysize + yoff > height)
    throw new PillowRaise('ValueError', 'tile cannot extend outside image');
  if (xsize > Math.floor(0x7fffffff / tile.bits) - 7)
    throw new PillowRaise('OSError', 'row too long for the decoder (MemoryError)');
  const image = new ModeImage(width, height, mode, tile.rawmode, opts.grey16);
  const reader = new ImageDataReader(f, st, png.firstLength);
  new ZipDecoder(image, tile.bits, xoff, yoff, xsize, ysize, st.interlace).run(reader);
  reader.skipRest();
  readChunksAfterImage(f, st, png.isAnimated);
  checkConvert(png);
  return { width, height, data: image.toRgb(mode === 'P' ? paletteFor(png.palette) : null), sourceMode: mode };
}

/**
 * Whether libvips may decode this PNG's pixels, being then exactly Pillow's: Pillow opens and loads
 * it (every chunk rule above passes), it is a plain 8-bit L, LA, RGB or RGBA image or a palette
 * image whose PLTE covers every index of its bit depth, no APNG, and its image data is one run of
 * whole IDAT chunks. libvips is then asked to fail on any warning: a libpng warning (extra or bad
 * data after the last row, a zlib checksum, ...) sends the file to decodePng, whose verdict is exact.
 * Pillow's mode when so, else null.
 */
export function pngForLibvips(file: Uint8Array, name: string, opts: PngOptions): string | null {
  try {
    const png = openPng(file, name, opts);
    const { f, st, mode, tile } = png;
    const bits = tile.bits;
    const plain =
      ['L', 'LA', 'RGB', 'RGBA'].includes(tile.rawmode) ||
      (mode === 'P' && tile.rawmode.startsWith('P') && png.palette !== null && png.palette.length === 3 << bits);
    if (!plain || st.nFrames !== null || st.bbox !== null) return null;
    // The run of IDAT chunks, each whole; no image data chunk after it.
    let pos = tile.offset - 8;
    for (let first = true; ; first = false) {
      f.pos = pos;
      const c = readChunkHeader(f);
      if (c.cid !== 'IDAT') {
        if (first) return null;
        break;
      }
      if (c.pos + c.length + 4 > file.length) return null;
      pos = c.pos + c.length + 4;
    }
    f.pos = pos - 4; // readChunksAfterImage starts at the CRC of the last IDAT
    readChunksAfterImage(f, st, false);
    checkConvert(png);
    for (let at = pos; at + 8 <= file.length;) {
      const cid = String.fromCharCode(...file.subarray(at + 4, at + 8));
      if (cid === 'IEND') break;
      if (cid === 'IDAT' || cid === 'DDAT' || cid === 'fdAT' || cid === 'fcTL' || cid === 'acTL') return null;
      at += 12 + u32(file, at);
    }
    return mode;
  } catch (e) {
    if (e instanceof PillowRaise || e instanceof ImageError) return null;
    throw e;
  }
}

function tileBitsPerSample(st: PngState): number {
  return st.rawmode !== null && st.rawmode.includes(';16') ? 16 : 8;
}

/** Pillow's palette: PLTE's whole entries (at most 256, else ValueError), the grey ramp after them. */
function paletteFor(plte: Uint8Array | null): Uint8Array {
  const pal = new Uint8Array(768);
  for (let i = 0; i < 256; i++) pal[3 * i] = pal[3 * i + 1] = pal[3 * i + 2] = i;
  if (plte) {
    const entries = Math.floor(plte.length / 3);
    if (entries > 256) throw new PillowRaise('ValueError', 'invalid palette size (PLTE of more than 256 entries)');
    pal.set(plte.subarray(0, 3 * entries));
  }
  return pal;
}

/**
 * The image in Pillow's mode, as convert('RGB') will read it: one sample per pixel for 1, L, P,
 * I and LA (grey, index, clipped or high-byte 16-bit grey), three for RGB and RGBA. Zero where no
 * data was decoded, as Image.core.new leaves it.
 */
class ModeImage {
  readonly channels: number;
  readonly data: Uint8Array;
  readonly unpack: (out: Uint8Array, at: number, row: Uint8Array, from: number, pixels: number, step: number) => void;
  constructor(
    readonly width: number,
    readonly height: number,
    readonly mode: string,
    rawmode: string,
    grey16: 'pillow' | 'high-byte',
  ) {
    this.channels = mode === 'RGB' || mode === 'RGBA' ? 3 : 1;
    this.data = new Uint8Array(width * height * this.channels);
    this.unpack = unpacker(rawmode, grey16);
  }

  toRgb(palette: Uint8Array | null): Uint8Array {
    if (this.channels === 3) return this.data;
    const n = this.width * this.height;
    const out = new Uint8Array(n * 3);
    const src = this.data;
    if (palette) {
      for (let i = 0, o = 0; i < n; i++, o += 3) {
        const p = src[i] * 3;
        out[o] = palette[p];
        out[o + 1] = palette[p + 1];
        out[o + 2] = palette[p + 2];
      }
    } else {
      for (let i = 0, o = 0; i < n; i++, o += 3) out[o] = out[o + 1] = out[o + 2] = src[i];
    }
    return out;
  }
}

/**
 * Unpack.c's unpacker for a raw mode, writing `pixels` pixels from `row[from..]` to `out` at
 * sample offset `at`, `step` pixels apart (1, or the Adam7 column step), in the ModeImage layout.
 */
function unpacker(rawmode: string, grey16: 'pillow' | 'high-byte'): ModeImage['unpack'] {
  const packed =
    (bits: number, scale: number) =>
    (out: Uint8Array, at: number, row: Uint8Array, from: number, pixels: number, step: number) => {
      const perByte = 8 / bits;
      const mask = (1 << bits) - 1;
      for (let x = 0; x < pixels; x++) {
        const byte = row[from + Math.floor(x / perByte)];
        const v = (byte >> (8 - bits * (1 + (x % perByte)))) & mask;
        out[at + x * step] = v * scale;
      }
    };
  const strided =
    (bytesPerPixel: number, offsets: number[]) =>
    (out: Uint8Array, at: number, row: Uint8Array, from: number, pixels: number, step: number) => {
      const k = offsets.length;
      if (k === 3 && step === 1 && bytesPerPixel === 3) {
        out.set(row.subarray(from, from + 3 * pixels), at);
        return;
      }
      for (let x = 0, s = from, o = at; x < pixels; x++, s += bytesPerPixel, o += k * step) {
        for (let c = 0; c < k; c++) out[o + c] = row[s + offsets[c]];
      }
    };
  switch (rawmode) {
    case '1':
      return packed(1, 255);
    case 'L;2':
      return packed(2, 0x55);
    case 'L;4':
      return packed(4, 0x11);
    case 'P;1':
      return packed(1, 1);
    case 'P;2':
      return packed(2, 1);
    case 'P;4':
      return packed(4, 1);
    case 'L':
    case 'P':
      return (out, at, row, from, pixels, step) => {
        if (step === 1) out.set(row.subarray(from, from + pixels), at);
        else for (let x = 0; x < pixels; x++) out[at + x * step] = row[from + x];
      };
    case 'I;16B':
      return (out, at, row, from, pixels, step) => {
        for (let x = 0, s = from; x < pixels; x++, s += 2)
          out[at + x * step] = grey16 === 'pillow' ? (row[s] ? 255 : row[s + 1]) : row[s];
      };
    case 'RGB':
      return strided(3, [0, 1, 2]);
    case 'RGB;16B':
      return strided(6, [0, 2, 4]);
    case 'LA':
      return strided(2, [0]);
    case 'LA;16B':
      return strided(4, [0, 0, 0]);
    case 'RGBA':
      return strided(4, [0, 1, 2]);
    case 'RGBA;16B':
      return strided(8, [0, 2, 4]);
    default:
      throw new Error(`no unpacker for PNG raw mode ${rawmode}`);
  }
}

const ADAM7 = {
  offset: [7, 3, 3, 1, 1, 0, 0],
  startCol: [0, 4, 0, 2, 0, 1, 0],
  startRow: [0, 0, 4, 0, 2, 0, 1],
  colStep: [8, 8, 4, 4, 2, 2, 1],
  rowStep: [8, 8, 8, 4, 4, 2, 2],
};

/**
 * ZipDecode.c for PNG: rows of `xsize` pixels (Adam7 passes when interlaced) inflated, unfiltered
 * and unpacked into the image at (xoff, yoff). Throws PillowRaise where ImageFile.load raises.
 */
class ZipDecoder {
  /** Bytes of one full row (state->bytes), without the filter byte. */
  private readonly bytes: number;
  private readonly bpp: number;
  constructor(
    private readonly image: ModeImage,
    private readonly bits: number,
    private readonly xoff: number,
    private readonly yoff: number,
    private readonly xsize: number,
    private readonly ysize: number,
    private readonly interlaced: boolean,
  ) {
    this.bytes = Math.floor((bits * xsize + 7) / 8);
    this.bpp = Math.floor((bits + 7) / 8);
  }

  /** The rows in decoding order: [row length in bytes, pass (-1: not interlaced), y]. */
  private *rows(): Generator<[number, number, number]> {
    if (!this.interlaced) {
      for (let y = 0; y < this.ysize; y++) yield [this.bytes, -1, y];
      return;
    }
    for (let pass = 0; pass < 7; pass++) {
      const len = this.passRowBytes(pass);
      if (len <= 0) continue;
      for (let y = ADAM7.startRow[pass]; y < this.ysize; y += ADAM7.rowStep[pass]) yield [len, pass, y];
    }
  }

  private passRowBytes(pass: number): number {
    const pixels = Math.floor((this.xsize + ADAM7.offset[pass]) / ADAM7.colStep[pass]);
    return Math.floor((pixels * this.bits + 7) / 8);
  }

  /** Total inflated bytes all rows take, filter bytes included. */
  private totalBytes(): number {
    if (!this.interlaced) return this.ysize * (this.bytes + 1);
    let total = 0;
    for (let pass = 0; pass < 7; pass++) {
      const len = this.passRowBytes(pass);
      if (len <= 0 || ADAM7.startRow[pass] >= this.ysize) continue;
      total += Math.ceil((this.ysize - ADAM7.startRow[pass]) / ADAM7.rowStep[pass]) * (len + 1);
    }
    return total;
  }

  /**
   * Inflates the pieces of image data one inflate() call per piece (more when the block buffer
   * fills), unfiltering and unpacking rows as they complete. The output asked of a call never
   * goes past the last row, so the calls stop where Pillow's row-by-row calls stop and see the
   * same input: an error here is an error there. Where the stream ends before the last row,
   * Pillow keeps the rows only if its end was read in the call that completed the last whole row,
   * that is in the same piece as that row's last byte.
   */
  run(reader: ImageDataReader): void {
    const total = this.totalBytes();
    const rowState = {
      rows: this.rows(),
      next: { done: true, value: undefined } as IteratorResult<[number, number, number]>,
      lastPass: -2,
    };
    rowState.next = rowState.rows.next();
    // Rows pass through a block buffer; `previous` holds the row before the block's first one.
    const size = Math.max(this.bytes + 1, Math.min(total, BLOCK_BYTES));
    const buf = new Uint8Array(size);
    const previous = new Uint8Array(this.bytes + 1);
    let prev: Uint8Array = previous;
    let fill = 0;
    let produced = 0;
    const z = SteppedInflate.acquire();
    try {
      for (let piece = reader.next(); piece; piece = reader.next()) {
        let inOff = 0;
        for (;;) {
          const window = Math.min(size - fill, total - produced);
          const r = z.step(piece, inOff, piece.length - inOff, buf, fill, window);
          if (r.error)
            throw new PillowRaise('OSError', `broken data stream when reading image file (zlib: ${r.error})`);
          inOff += r.consumed;
          fill += r.written;
          produced += r.written;
          // Whether this call reached the stream's end: it stopped with room and input left, or an
          // empty finishing call (which may also give output that was pending) says so.
          let ended = r.written < window && inOff < piece.length;
          let pending = false;
          if (!ended) {
            [fill, prev] = this.rowsOf(buf, fill, prev, previous, rowState);
            if (rowState.next.done) return;
            const p = z.step(piece, inOff, 0, buf, fill, 1, true);
            ended = !p.error && p.written === 0;
            pending = p.written > 0;
            fill += p.written;
            produced += p.written;
          }
          [fill, prev] = this.rowsOf(buf, fill, prev, previous, rowState);
          if (rowState.next.done) return;
          if (ended) {
            // Pillow keeps the rows decoded so far only if the end came in the call that completed a row.
            if (r.written > 0 && fill === 0) return;
            throw new PillowRaise('OSError', 'image file is truncated (image data ends inside a row)');
          }
          if (inOff === piece.length && !pending) break;
        }
      }
      throw new PillowRaise('OSError', 'image file is truncated');
    } finally {
      z.release();
    }
  }

  /**
   * Unfilters and unpacks the complete rows at the start of `buf[0, fill)`, moves the rest to the
   * front; returns the new fill and the row the next one is filtered against.
   */
  private rowsOf(
    buf: Uint8Array,
    fill: number,
    prev: Uint8Array,
    previous: Uint8Array,
    st: { rows: Generator<[number, number, number]>; next: IteratorResult<[number, number, number]>; lastPass: number },
  ): [number, Uint8Array] {
    let at = 0;
    while (!st.next.done && fill - at >= st.next.value[0] + 1) {
      const [len, pass, y] = st.next.value;
      if (pass !== st.lastPass) {
        prev = previous.fill(0); // a new pass starts from a zero row
        st.lastPass = pass;
      }
      const row = buf.subarray(at, at + len + 1);
      unfilterRow(row, prev, len, this.bpp);
      this.put(row, len, pass, y);
      prev = row;
      at += len + 1;
      st.next = st.rows.next();
    }
    if (at > 0 && !st.next.done) {
      previous.set(prev);
      prev = previous.subarray(0, prev.length);
      buf.copyWithin(0, at, fill);
      fill -= at;
    }
    return [fill, prev];
  }

  /** Stuffs one unfiltered row (filter byte at 0) into the image. */
  private put(row: Uint8Array, len: number, pass: number, y: number): void {
    const img = this.image;
    const ch = img.channels;
    if (pass < 0) {
      img.unpack(img.data, ((y + this.yoff) * img.width + this.xoff) * ch, row, 1, this.xsize, 1);
      return;
    }
    // Interlaced rows go to (y, col) without the box's offset, as in ZipDecode.c.
    const col = ADAM7.startCol[pass];
    const pixels =
      this.bits >= 8 ? len / this.bpp : Math.floor((this.xsize + ADAM7.offset[pass]) / ADAM7.colStep[pass]);
    img.unpack(img.data, (y * img.width + col) * ch, row, 1, pixels, ADAM7.colStep[pass]);
  }
}

/** PNG filters (ZipDecode.c's predictor) on row[1..len], the filter type in row[0]. */
function unfilterRow(row: Uint8Array, prev: Uint8Array, len: number, bpp: number): void {
  switch (row[0]) {
    case 0:
      return;
    case 1:
      for (let i = bpp + 1; i <= len; i++) row[i] += row[i - bpp];
      return;
    case 2:
      for (let i = 1; i <= len; i++) row[i] += prev[i];
      return;
    case 3: {
      let i = 1;
      for (; i <= bpp && i <= len; i++) row[i] += prev[i] >> 1;
      for (; i <= len; i++) row[i] += (row[i - bpp] + prev[i]) >> 1;
      return;
    }
    case 4: {
      let i = 1;
      for (; i <= bpp && i <= len; i++) row[i] += prev[i];
      for (; i <= len; i++) {
        const a = row[i - bpp];
        const b = prev[i];
        const c = prev[i - bpp];
        // |p - a|, |p - b|, |p - c| for p = a + b - c, and the choice (a if pa <= pb, pc; else b if
        // pb <= pc; else c), without branches: the choice is data-dependent and mispredicted branches
        // made this loop, the decoder's hottest, several times slower.
        let pa = b - c;
        let pb = a - c;
        let pc = pa + pb;
        let sign = pa >> 31;
        pa = (pa ^ sign) - sign;
        sign = pb >> 31;
        pb = (pb ^ sign) - sign;
        sign = pc >> 31;
        pc = (pc ^ sign) - sign;
        const notA = ((pb - pa) | (pc - pa)) >> 31;
        const bOrC = b ^ ((b ^ c) & ((pc - pb) >> 31));
        row[i] += a ^ ((a ^ bOrC) & notA);
      }
      return;
    }
    default:
      throw new PillowRaise(
        'OSError',
        `unrecognized data stream contents when reading image file (PNG filter type ${row[0]})`,
      );
  }
}

/** The first eXIf chunk's data (for autoOrient; Pillow's Image.open ignores it), found leniently. */
export function pngExif(file: Uint8Array): Uint8Array | undefined {
  for (let pos = 8; pos + 12 <= file.length;) {
    const length = u32(file, pos);
    const cid = String.fromCharCode(...file.subarray(pos + 4, pos + 8));
    if (cid === 'eXIf') return file.subarray(pos + 8, Math.min(file.length, pos + 8 + length));
    if (cid === 'IEND') return undefined;
    pos += 12 + length;
  }
  return undefined;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function u32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}
