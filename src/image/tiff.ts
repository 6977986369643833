/**
 * TIFF as Pillow 9.4 reads it (`TiffImagePlugin`, first page), so that `convert('RGB')` gives
 * LLaVA's pixels:
 * - The first IFD is read as ImageFileDirectory_v2 reads it: a tag given twice takes its LAST
 *   value (libtiff, and so libvips, keeps the first); entries of unknown types are skipped; an
 *   entry whose data lies past the end of the file ends the directory there.
 * - The mode comes from Pillow's OPEN_INFO table (byte order, photometric, sample format, fill
 *   order, bits per sample, extra samples): anything else is refused, as Pillow refuses it.
 * - Uncompressed files are decoded here as ImageFile.load and the raw decoder do it: strips or
 *   tiles read from their offsets for as many rows as the tile needs (StripByteCounts is not
 *   used), Unpack.c's raw modes. Compressed files go to libtiff in Pillow; here libvips (libtiff
 *   too) decodes them, with the checks TiffDecode.c makes, and the samples are converted to RGB
 *   by Pillow's raw mode.
 * - The Orientation tag is applied after decoding (TiffImageFile.load_end), for every value 2..8,
 *   every compression: Image.open of a TIFF gives the image the right way up, unlike PNG/JPEG/WebP.
 * - CIELab (8-bit) is converted to RGB by LittleCMS as Pillow does (lab.ts).
 */
import { ImageError } from '../errors';
import { checkImagePixels } from './limits';
import { labToRgb } from './lab';
import { orientImage } from './orientation';
import type { DecodedImage } from './types';

/** What Pillow raises (a refusal), with why. */
class TiffRefusal extends Error {}

const refuse = (why: string): never => {
  throw new TiffRefusal(why);
};

/** A Python value of a decoded tag: int / float (number, `int` telling which), tuple, bytes or str. */
type PyValue = PyNum | PyValue[] | { bytes: Uint8Array } | { str: string };
interface PyNum {
  num: number;
  int: boolean;
}

const isNum = (v: PyValue | undefined): v is PyNum => v !== undefined && !Array.isArray(v) && 'num' in v;

interface IfdEntry {
  tag: number;
  type: number;
  count: number;
  data: Uint8Array;
}

/** ImageFileDirectory_v2 after load(): the tags (last entry wins), and every entry in file order. */
interface Ifd {
  le: boolean;
  bigtiff: boolean;
  offset: number;
  tags: Map<number, IfdEntry>;
  entries: IfdEntry[];
  next: number;
}

/** _load_dispatch: bytes per value of the types Pillow reads (others are skipped). */
const TYPE_SIZES: Record<number, number> = {
  1: 1,
  2: 1,
  3: 2,
  4: 4,
  5: 8,
  6: 1,
  7: 1,
  8: 2,
  9: 4,
  10: 8,
  11: 4,
  12: 8,
  13: 4,
  16: 8,
};

/** TiffTags.lookup(tag).length of the tags used here: 1 = one value; others are tuples. */
const ONE_VALUE = new Set([
  256, 257, 259, 262, 266, 274, 277, 278, 284, 317, 322, 323, 34665, 34853, 40965, 282, 283, 296,
]);
const KNOWN_TUPLE = new Set([258, 273, 279, 320, 324, 325, 338, 339, 530, 532]);

class Reader {
  constructor(
    readonly b: Uint8Array,
    readonly le: boolean,
  ) {}
  u16(o: number): number {
    return this.le ? this.b[o] | (this.b[o + 1] << 8) : (this.b[o] << 8) | this.b[o + 1];
  }
  u32(o: number): number {
    const b = this.b;
    return this.le
      ? (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16)) + b[o + 3] * 2 ** 24
      : b[o] * 2 ** 24 + ((b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]);
  }
  u64(o: number): number {
    const [lo, hi] = this.le ? [this.u32(o), this.u32(o + 4)] : [this.u32(o + 4), this.u32(o)];
    return hi * 2 ** 32 + lo;
  }
}

/** The header: byte order, BigTIFF (Pillow: the third byte is 43, so a big-endian BigTIFF is not one), first IFD. */
function readHeader(file: Uint8Array): { le: boolean; bigtiff: boolean; first: number } {
  const head = String.fromCharCode(...file.subarray(0, 4));
  if (!['MM\0*', 'II*\0', 'MM*\0', 'II\0*', 'MM\0+', 'II+\0'].includes(head)) refuse('not a TIFF file');
  const le = head.startsWith('II');
  const bigtiff = file[2] === 43;
  if (file.length < (bigtiff ? 16 : 8)) refuse('TIFF header cut short');
  const r = new Reader(file, le);
  return { le, bigtiff, first: bigtiff ? r.u64(8) : r.u32(4) };
}

/** ImageFileDirectory_v2.load at `offset` (an OSError while reading ends it, keeping what was read). */
function loadIfd(file: Uint8Array, offset: number, le: boolean, bigtiff: boolean, previousNext: number): Ifd {
  const r = new Reader(file, le);
  const ifd: Ifd = { le, bigtiff, offset, tags: new Map(), entries: [], next: previousNext };
  const entrySize = bigtiff ? 20 : 12;
  const inline = bigtiff ? 8 : 4;
  let pos = offset;
  const have = (n: number) => pos + n <= file.length;
  if (!have(bigtiff ? 8 : 2)) return ifd;
  const count = bigtiff ? r.u64(pos) : r.u16(pos);
  pos += bigtiff ? 8 : 2;
  for (let i = 0; i < count; i++) {
    if (!have(entrySize)) return ifd;
    const tag = r.u16(pos);
    const type = r.u16(pos + 2);
    const n = bigtiff ? r.u64(pos + 4) : r.u32(pos + 4);
    const field = pos + (bigtiff ? 12 : 8);
    pos += entrySize;
    const unit = TYPE_SIZES[type];
    if (unit === undefined) continue;
    const size = n * unit;
    let data: Uint8Array;
    if (size > inline) {
      const at = bigtiff ? r.u64(field) : r.u32(field);
      if (at + size > file.length) return ifd; // _safe_read: OSError, the directory ends here
      data = file.subarray(at, at + size);
    } else {
      data = file.subarray(field, field + size);
    }
    if (size === 0) continue;
    const entry = { tag, type, count: n, data };
    ifd.entries.push(entry);
    ifd.tags.set(tag, entry);
  }
  if (!have(inline)) return ifd;
  ifd.next = bigtiff ? r.u64(pos) : r.u32(pos);
  return ifd;
}

/** The tag's value as Pillow's tag_v2[tag] gives it (undefined: absent). */
function tagValue(ifd: Ifd, tag: number): PyValue | undefined {
  const e = ifd.tags.get(tag);
  if (!e) return undefined;
  return shape(tag, e.type, decodeValues(e, ifd.le));
}

function decodeValues(e: IfdEntry, le: boolean): PyValue[] | { bytes: Uint8Array } | { str: string } {
  const d = e.data;
  if (e.type === 1 || e.type === 7) return { bytes: d };
  if (e.type === 2) {
    const s = d[d.length - 1] === 0 ? d.subarray(0, d.length - 1) : d;
    return { str: String.fromCharCode(...s) };
  }
  const view = new DataView(d.buffer, d.byteOffset, d.byteLength);
  const n = Math.floor(d.length / TYPE_SIZES[e.type]);
  const out: PyValue[] = [];
  for (let i = 0; i < n; i++) {
    switch (e.type) {
      case 3:
        out.push({ num: view.getUint16(2 * i, le), int: true });
        break;
      case 8:
        out.push({ num: view.getInt16(2 * i, le), int: true });
        break;
      case 4:
      case 13:
        out.push({ num: view.getUint32(4 * i, le), int: true });
        break;
      case 9:
        out.push({ num: view.getInt32(4 * i, le), int: true });
        break;
      case 6:
        out.push({ num: view.getInt8(i), int: true });
        break;
      case 16:
        out.push({ num: Number(view.getBigUint64(8 * i, le)), int: true });
        break;
      case 11:
        out.push({ num: view.getFloat32(4 * i, le), int: false });
        break;
      case 12:
        out.push({ num: view.getFloat64(8 * i, le), int: false });
        break;
      default: {
        // RATIONAL / SRATIONAL: IFDRational, a Fraction (nan for a zero denominator).
        const num = e.type === 5 ? view.getUint32(8 * i, le) : view.getInt32(8 * i, le);
        const den = e.type === 5 ? view.getUint32(8 * i + 4, le) : view.getInt32(8 * i + 4, le);
        out.push({ num: den === 0 ? NaN : num / den, int: false });
      }
    }
  }
  return out;
}

/** ImageFileDirectory_v2._setitem: one value for single-value tags (the first, if there are more), else a tuple. */
function shape(tag: number, type: number, v: PyValue[] | { bytes: Uint8Array } | { str: string }): PyValue {
  if (!Array.isArray(v)) {
    // bytes / str are one value: kept as is for single-value tags and BYTE, else a 1-tuple.
    return ONE_VALUE.has(tag) || type === 1 || !KNOWN_TUPLE.has(tag) ? v : [v];
  }
  if (ONE_VALUE.has(tag)) return v[0];
  if (!KNOWN_TUPLE.has(tag) && v.length === 1) return v[0];
  return v;
}

/** Python's int(x) of a tag value. */
function pyInt(v: PyValue | undefined, what: string): number {
  if (isNum(v)) {
    if (!Number.isFinite(v.num)) refuse(`${what} is not a number`);
    return Math.trunc(v.num);
  }
  if (v && !Array.isArray(v) && ('str' in v || 'bytes' in v)) {
    const s = 'str' in v ? v.str : String.fromCharCode(...v.bytes);
    if (/^\s*[+-]?\d+\s*$/.test(s)) return parseInt(s, 10);
  }
  return refuse(`${what} is not an integer`);
}

/** A tuple of numbers (bytes iterate as ints in Python), or null for other values. */
function numbers(v: PyValue | undefined): { values: number[]; ints: boolean; bytes: boolean } | null {
  if (v === undefined) return null;
  if (Array.isArray(v)) {
    if (!v.every(isNum)) return null;
    return { values: v.map((x) => x.num), ints: v.every((x) => x.int), bytes: false };
  }
  if ('bytes' in v) return { values: [...v.bytes], ints: true, bytes: true };
  return null;
}

const COMPRESSION: Record<number, string> = {
  1: 'raw',
  2: 'tiff_ccitt',
  3: 'group3',
  4: 'group4',
  5: 'tiff_lzw',
  6: 'tiff_jpeg',
  7: 'jpeg',
  8: 'tiff_adobe_deflate',
  32771: 'tiff_raw_16',
  32773: 'packbits',
  32809: 'tiff_thunderscan',
  32946: 'tiff_deflate',
  34676: 'tiff_sgilog',
  34677: 'tiff_sgilog24',
  34925: 'lzma',
  50000: 'zstd',
  50001: 'webp',
};

/**
 * OPEN_INFO: "photometric sampleformat fillorder bps extrasamples" -> [mode, rawmode], for both
 * byte orders unless the key starts with II/MM.
 */
const OPEN_INFO: Array<[string, string, string]> = [];
function info(key: string, mode: string, rawmode: string, orders = ['II', 'MM']): void {
  for (const o of orders) OPEN_INFO.push([`${o} ${key}`, mode, rawmode]);
}
info('0 1 1 1 -', '1', '1;I');
info('0 1 2 1 -', '1', '1;IR');
info('1 1 1 1 -', '1', '1');
info('1 1 2 1 -', '1', '1;R');
info('0 1 1 2 -', 'L', 'L;2I');
info('0 1 2 2 -', 'L', 'L;2IR');
info('1 1 1 2 -', 'L', 'L;2');
info('1 1 2 2 -', 'L', 'L;2R');
info('0 1 1 4 -', 'L', 'L;4I');
info('0 1 2 4 -', 'L', 'L;4IR');
info('1 1 1 4 -', 'L', 'L;4');
info('1 1 2 4 -', 'L', 'L;4R');
info('0 1 1 8 -', 'L', 'L;I');
info('0 1 2 8 -', 'L', 'L;IR');
info('1 1 1 8 -', 'L', 'L');
info('1 1 2 8 -', 'L', 'L;R');
info('1 1 1 12 -', 'I;16', 'I;12', ['II']);
info('0 1 1 16 -', 'I;16', 'I;16', ['II']);
info('1 1 1 16 -', 'I;16', 'I;16', ['II']);
info('1 1 1 16 -', 'I;16B', 'I;16B', ['MM']);
info('1 1 2 16 -', 'I;16', 'I;16R', ['II']);
info('1 2 1 16 -', 'I', 'I;16S', ['II']);
info('1 2 1 16 -', 'I', 'I;16BS', ['MM']);
info('0 3 1 32 -', 'F', 'F;32F', ['II']);
info('0 3 1 32 -', 'F', 'F;32BF', ['MM']);
info('1 1 1 32 -', 'I', 'I;32N', ['II']);
info('1 2 1 32 -', 'I', 'I;32S', ['II']);
info('1 2 1 32 -', 'I', 'I;32BS', ['MM']);
info('1 3 1 32 -', 'F', 'F;32F', ['II']);
info('1 3 1 32 -', 'F', 'F;32BF', ['MM']);
info('1 1 1 8,8 2', 'LA', 'LA');
info('2 1 1 8,8,8 -', 'RGB', 'RGB');
info('2 1 2 8,8,8 -', 'RGB', 'RGB;R');
info('2 1 1 8,8,8,8 -', 'RGBA', 'RGBA');
info('2 1 1 8,8,8,8 0', 'RGBX', 'RGBX');
info('2 1 1 8,8,8,8,8 0,0', 'RGBX', 'RGBXX');
info('2 1 1 8,8,8,8,8,8 0,0,0', 'RGBX', 'RGBXXX');
info('2 1 1 8,8,8,8 1', 'RGBA', 'RGBa');
info('2 1 1 8,8,8,8,8 1,0', 'RGBA', 'RGBaX');
info('2 1 1 8,8,8,8,8,8 1,0,0', 'RGBA', 'RGBaXX');
info('2 1 1 8,8,8,8 2', 'RGBA', 'RGBA');
info('2 1 1 8,8,8,8,8 2,0', 'RGBA', 'RGBAX');
info('2 1 1 8,8,8,8,8,8 2,0,0', 'RGBA', 'RGBAXX');
info('2 1 1 8,8,8,8 999', 'RGBA', 'RGBA');
info('2 1 1 16,16,16 -', 'RGB', 'RGB;16L', ['II']);
info('2 1 1 16,16,16 -', 'RGB', 'RGB;16B', ['MM']);
info('2 1 1 16,16,16,16 -', 'RGBA', 'RGBA;16L', ['II']);
info('2 1 1 16,16,16,16 -', 'RGBA', 'RGBA;16B', ['MM']);
info('2 1 1 16,16,16,16 0', 'RGBX', 'RGBX;16L', ['II']);
info('2 1 1 16,16,16,16 0', 'RGBX', 'RGBX;16B', ['MM']);
info('2 1 1 16,16,16,16 1', 'RGBA', 'RGBa;16L', ['II']);
info('2 1 1 16,16,16,16 1', 'RGBA', 'RGBa;16B', ['MM']);
info('2 1 1 16,16,16,16 2', 'RGBA', 'RGBA;16L', ['II']);
info('2 1 1 16,16,16,16 2', 'RGBA', 'RGBA;16B', ['MM']);
info('3 1 1 1 -', 'P', 'P;1');
info('3 1 2 1 -', 'P', 'P;1R');
info('3 1 1 2 -', 'P', 'P;2');
info('3 1 2 2 -', 'P', 'P;2R');
info('3 1 1 4 -', 'P', 'P;4');
info('3 1 2 4 -', 'P', 'P;4R');
info('3 1 1 8 -', 'P', 'P');
info('3 1 1 8,8 2', 'PA', 'PA');
info('3 1 2 8 -', 'P', 'P;R');
info('5 1 1 8,8,8,8 -', 'CMYK', 'CMYK');
info('5 1 1 8,8,8,8,8 0', 'CMYK', 'CMYKX');
info('5 1 1 8,8,8,8,8,8 0,0', 'CMYK', 'CMYKXX');
info('5 1 1 16,16,16,16 -', 'CMYK', 'CMYK;16L', ['II']);
info('6 1 1 8,8,8 -', 'RGB', 'RGBX');
info('8 1 1 8,8,8 -', 'LAB', 'LAB');
const OPEN_INFO_MAP = new Map(OPEN_INFO.map(([k, m, r]) => [k, [m, r] as const]));
const MAX_SAMPLES_PER_PIXEL = 6;

/** A tile of ImageFile.load: the box it fills, where its data starts, its raw mode and row stride (0: the box's width). */
interface RawTile {
  box: [PyNum, PyNum, PyNum, PyNum];
  offset: PyValue;
  rawmode: string;
  stride: number;
}

export interface TiffPlan {
  mode: string;
  rawmode: string;
  width: number;
  height: number;
  compression: string;
  planar: number;
  photometric: number;
  orientation: PyValue | undefined;
  /** RGB palette of a P/PA image (768 bytes, the grey ramp past the colour map). */
  palette: Uint8Array | null;
  tiles: RawTile[];
  /** Whether TiffImageFile.is_animated (another IFD follows). */
  animated: boolean;
  ifd: Ifd;
  /** Tags libtiff reads as it keeps the first of a repeated tag, where that differs from Pillow's last. */
  conflicts: number[];
}

/** TiffImageFile._open and _setup for the first page; refused (TiffRefusal) where Pillow raises. */
function planTiff(file: Uint8Array): TiffPlan {
  const { le, bigtiff, first } = readHeader(file);
  if (!first) refuse('no image in the TIFF file (first IFD offset 0)');
  const ifd = loadIfd(file, first, le, bigtiff, first);
  const next = ifd.next === first ? 0 : ifd.next;
  const get = (tag: number) => tagValue(ifd, tag);
  if (ifd.tags.has(0xbc01)) refuse('Windows Media Photo files not yet supported');
  const compValue = get(259) ?? { num: 1, int: true };
  const compression = isNum(compValue) && Number.isInteger(compValue.num) ? COMPRESSION[compValue.num] : undefined;
  if (!compression) refuse(`unknown TIFF compression ${describe(compValue)}`);
  const planarValue = get(284) ?? { num: 1, int: true };
  const planar = isNum(planarValue) ? planarValue.num : NaN;
  let photoValue = get(262) ?? { num: 0, int: true };
  if (compression === 'tiff_jpeg') photoValue = { num: 6, int: true };
  const photo = isNum(photoValue) ? photoValue.num : NaN;
  const fillValue = get(266) ?? { num: 1, int: true };
  const width = pyInt(get(256), 'ImageWidth');
  const height = pyInt(get(257), 'ImageLength');

  let sampleFormat = numbers(get(339) ?? [{ num: 1, int: true }]);
  if (sampleFormat && sampleFormat.values.length > 1 && sampleFormat.values.every((v) => v === 1))
    sampleFormat = { values: [1], ints: true, bytes: false };
  let bps = numbers(get(258) ?? [{ num: 1, int: true }]);
  const extraValue = get(338);
  const extra = extraValue === undefined ? { values: [] as number[], ints: true, bytes: false } : numbers(extraValue);
  if (!extra) refuse('ExtraSamples is not a tuple of numbers');
  let bpsCount = [2, 6, 8].includes(photo) ? 3 : photo === 5 ? 4 : 1;
  bpsCount += extra!.values.length;
  const sppValue = get(277) ?? { num: compression === 'tiff_jpeg' && (photo === 2 || photo === 6) ? 3 : 1, int: true };
  if (!isNum(sppValue)) refuse('SamplesPerPixel is not a number');
  const spp = (sppValue as PyNum).num;
  if (spp > MAX_SAMPLES_PER_PIXEL) refuse('Invalid value for samples per pixel');
  if (!bps) refuse('BitsPerSample is not a tuple of numbers');
  if (spp < bps!.values.length) bps = { ...bps!, values: bps!.values.slice(0, Math.max(0, Math.ceil(spp))) };
  else if (spp > bps!.values.length && bps!.values.length === 1)
    bps = { ...bps!, values: Array(Math.max(0, Math.ceil(spp))).fill(bps!.values[0]) as number[] };
  if (bps!.values.length !== spp) refuse('unknown data organization');

  const keyOf = (fill: number) => {
    if (!isNum(photoValue) || !sampleFormat || sampleFormat.bytes || bps!.bytes || extra!.bytes || !isNum(fillValue))
      return '';
    const ex = extra!.values.length ? extra!.values.join(',') : '-';
    return `${le ? 'II' : 'MM'} ${photo} ${sampleFormat.values.join(',')} ${fill} ${bps!.values.join(',')} ${ex}`;
  };
  const fill = isNum(fillValue) ? fillValue.num : NaN;
  let found = OPEN_INFO_MAP.get(keyOf(fill));
  if (!found)
    refuse(
      `unknown pixel mode (photometric ${describe(photoValue)}, bits ${describe(get(258))}, samples ${spp}, extra ${describe(extraValue)}, sample format ${describe(get(339))})`,
    );
  let [mode, rawmode] = found!;

  const tiles: RawTile[] = [];
  const useLibtiff = compression !== 'raw';
  if (useLibtiff) {
    if (fill === 2) {
      found = OPEN_INFO_MAP.get(keyOf(1));
      if (!found) refuse('unknown pixel mode');
      [mode, rawmode] = found!;
    }
    if (rawmode === 'I;16') rawmode = 'I;16N';
    rawmode = rawmode.replace(';16B', ';16N').replace(';16L', ';16N');
    if (photo === 6 && compression === 'jpeg' && planar === 1) rawmode = 'RGB';
  } else if (ifd.tags.has(273) || ifd.tags.has(324)) {
    const strips = ifd.tags.has(273);
    const offsets = get(strips ? 273 : 324);
    const num = (v: PyValue | undefined, what: string): PyNum => (isNum(v) ? v : refuse(`${what} is not a number`));
    const w = strips ? { num: width, int: true } : num(get(322), 'TileWidth');
    const h = strips
      ? get(278) === undefined
        ? { num: height, int: true }
        : num(get(278), 'RowsPerStrip')
      : num(get(323), 'TileLength');
    const list: PyValue[] = Array.isArray(offsets)
      ? offsets
      : offsets && 'bytes' in offsets
        ? [...offsets.bytes].map((n) => ({ num: n, int: true }))
        : [offsets!];
    const bitsSum = bps!.values.reduce((a, b) => a + b, 0);
    let x: PyNum = { num: 0, int: true };
    let y: PyNum = { num: 0, int: true };
    let layer = 0;
    const add = (a: PyNum, b: PyNum): PyNum => ({ num: a.num + b.num, int: a.int && b.int });
    const min = (a: PyNum, b: PyNum): PyNum => (b.num < a.num ? b : a);
    for (const offset of list) {
      let stride = x.num + w.num > width ? (w.num * bitsSum) / 8 : 0;
      let tileRawmode = rawmode;
      if (planar === 2) {
        if (layer >= rawmode.length) refuse('too many planes for the raw mode (IndexError)');
        tileRawmode = rawmode[layer];
        stride /= bpsCount;
      }
      tiles.push({
        box: [x, y, min(add(x, w), { num: width, int: true }), min(add(y, h), { num: height, int: true })],
        offset,
        rawmode: tileRawmode,
        stride: Math.trunc(stride),
      });
      x = add(x, w);
      if (x.num >= width) {
        x = { num: 0, int: true };
        y = add(y, h);
        if (y.num >= height) {
          x = { num: 0, int: true };
          y = { num: 0, int: true };
          layer++;
        }
      }
    }
  } else {
    refuse('unknown data organization (no StripOffsets or TileOffsets)');
  }

  let palette: Uint8Array | null = null;
  if (mode === 'P' || mode === 'PA') {
    const map = numbers(get(320));
    if (!map) refuse('palette image without a ColorMap');
    if (!map!.ints) refuse('ColorMap values are not integers');
    palette = new Uint8Array(768);
    for (let i = 0; i < 256; i++) palette[3 * i] = palette[3 * i + 1] = palette[3 * i + 2] = i;
    const n = Math.floor(map!.values.length / 3);
    if (n > 256) refuse('invalid palette size (ColorMap of more than 256 entries)');
    // ImagePalette.raw('RGB;L', ...): all reds, then greens, then blues; each value >> 8.
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < 3; c++) palette[3 * i + c] = Math.floor(map!.values[i + c * n] / 256) & 255;
    }
  }
  if (width <= 0 || height <= 0) refuse(`invalid size ${width}x${height}`);
  return {
    mode,
    rawmode,
    width,
    height,
    compression: compression!,
    planar,
    photometric: photo,
    orientation: get(274),
    palette,
    tiles,
    animated: next !== 0,
    ifd,
    conflicts: libtiffConflicts(ifd, photo),
  };
}

/**
 * Tags given twice with different values where Pillow's mode (from the last) and libtiff's
 * decoding (from the first) would mix: the sample layout. (The size is checked against libtiff's
 * as TiffDecode.c does; a ColorMap or FillOrder given twice is no mix: Pillow applies its own
 * palette to libtiff's indices, and libtiff undoes the fill order itself. Compression and planar
 * configuration only decide YCbCr's path.)
 */
function libtiffConflicts(ifd: Ifd, photometric: number): number[] {
  const firstOf = new Map<number, IfdEntry>();
  for (const e of ifd.entries) if (!firstOf.has(e.tag)) firstOf.set(e.tag, e);
  const out: number[] = [];
  for (const tag of [258, 262, 277, 338, 339, ...(photometric === 6 ? [259, 284] : [])]) {
    const a = firstOf.get(tag);
    const b = ifd.tags.get(tag);
    if (!a || !b || (a.type === b.type && a.count === b.count && equalBytes(a.data, b.data))) continue;
    // Photometric is only a mix where YCbCr is involved: libvips is given Pillow's (libvipsInput).
    if (
      tag === 262 &&
      !(a.type === 3 && a.count === 1 && new DataView(a.data.buffer, a.data.byteOffset).getUint16(0, ifd.le) === 6) &&
      photometric !== 6
    )
      continue;
    out.push(tag);
  }
  return out;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function describe(v: PyValue | undefined): string {
  if (v === undefined) return 'none';
  if (isNum(v)) return String(v.num);
  if (Array.isArray(v)) return `(${v.map(describe).join(', ')})`;
  return 'bytes' in v ? `bytes[${v.bytes.length}]` : JSON.stringify(v.str.slice(0, 20));
}

/**
 * The image in Pillow's mode: samples per pixel as Pillow stores them (4 bytes for RGB, RGBA,
 * RGBX, CMYK, LAB; 1 for 1, L, P; L/P and A for LA/PA; numbers for I;16, I and F).
 */
class ModeImage {
  readonly bytes: Uint8Array | null;
  readonly numbers: Float64Array | null;
  readonly stride: number;
  constructor(
    readonly mode: string,
    readonly width: number,
    readonly height: number,
  ) {
    if (mode === 'I;16' || mode === 'I;16B' || mode === 'I' || mode === 'F') {
      this.numbers = new Float64Array(width * height);
      this.bytes = null;
      this.stride = 1;
    } else {
      this.stride = mode === '1' || mode === 'L' || mode === 'P' ? 1 : mode === 'LA' || mode === 'PA' ? 2 : 4;
      this.bytes = new Uint8Array(width * height * this.stride);
      this.numbers = null;
    }
  }
}

/** Unpack.c's unpackers for TIFF raw modes: `pixels` pixels from src[at..] into image row y from column x. */
type Unpacker = (img: ModeImage, y: number, x: number, src: Uint8Array, at: number, pixels: number) => void;

const BITFLIP = new Uint8Array(256).map((_, i) => {
  let r = 0;
  for (let b = 0; b < 8; b++) if (i & (1 << b)) r |= 1 << (7 - b);
  return r;
});

/** Bits per pixel of each raw mode's unpacker (ImagingFindUnpacker's bits), and the unpacker. */
function findUnpacker(mode: string, rawmode: string): { bits: number; unpack: Unpacker } | null {
  const packed = (bits: number, reverse: boolean, map: (v: number) => number): { bits: number; unpack: Unpacker } => ({
    bits,
    unpack: (img, y, x, src, at, pixels) => {
      const out = img.bytes!;
      const per = 8 / bits;
      const mask = (1 << bits) - 1;
      let o = (y * img.width + x) * img.stride;
      for (let i = 0; i < pixels; i++, o += img.stride) {
        let byte = src[at + Math.floor(i / per)];
        if (reverse) byte = BITFLIP[byte];
        out[o] = map((byte >> (8 - bits * (1 + (i % per)))) & mask);
      }
    },
  });
  /** Bytes copied per pixel: out band k from in byte offs[k] (-1: 255), with an optional byte transform. */
  const bands = (
    bitsPerPixel: number,
    offs: number[],
    map?: (v: number, k: number) => number,
  ): { bits: number; unpack: Unpacker } => ({
    bits: bitsPerPixel,
    unpack: (img, y, x, src, at, pixels) => {
      const out = img.bytes!;
      const inStep = bitsPerPixel / 8;
      const s = img.stride;
      for (let i = 0, o = (y * img.width + x) * s, p = at; i < pixels; i++, o += s, p += inStep) {
        for (let k = 0; k < offs.length; k++) {
          if (offs[k] < 0) continue;
          const v = src[p + offs[k]];
          out[o + k] = map ? map(v, k) : v;
        }
      }
    },
  });
  const oneBand = (band: number, inBytes: number, pick: number): { bits: number; unpack: Unpacker } => ({
    bits: 8 * inBytes,
    unpack: (img, y, x, src, at, pixels) => {
      const out = img.bytes!;
      for (
        let i = 0, o = (y * img.width + x) * img.stride + band, p = at + pick;
        i < pixels;
        i++, o += img.stride, p += inBytes
      )
        out[o] = src[p];
    },
  });
  const numeric = (bits: number, read: (v: DataView, o: number) => number): { bits: number; unpack: Unpacker } => ({
    bits,
    unpack: (img, y, x, src, at, pixels) => {
      const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
      const out = img.numbers!;
      const step = bits / 8;
      for (let i = 0, o = y * img.width + x; i < pixels; i++, o++) out[o] = read(view, at + i * step);
    },
  });
  const premultiplied = (bitsPerPixel: number, c: number[], a: number): { bits: number; unpack: Unpacker } => ({
    bits: bitsPerPixel,
    unpack: (img, y, x, src, at, pixels) => {
      const out = img.bytes!;
      const step = bitsPerPixel / 8;
      for (let i = 0, o = (y * img.width + x) * 4, p = at; i < pixels; i++, o += 4, p += step) {
        const alpha = src[p + a];
        for (let k = 0; k < 3; k++) {
          const v = src[p + c[k]];
          out[o + k] = alpha === 0 ? 0 : alpha === 255 ? v : Math.min(255, Math.floor((v * 255) / alpha));
        }
        out[o + 3] = alpha;
      }
    },
  });
  const key = `${mode} ${rawmode}`;
  switch (key) {
    case '1 1':
      return packed(1, false, (v) => (v ? 255 : 0));
    case '1 1;I':
      return packed(1, false, (v) => (v ? 0 : 255));
    case '1 1;R':
      return packed(1, true, (v) => (v ? 255 : 0));
    case '1 1;IR':
      return packed(1, true, (v) => (v ? 0 : 255));
    case 'L L;2':
      return packed(2, false, (v) => v * 0x55);
    case 'L L;2I':
      return packed(2, false, (v) => 255 - v * 0x55);
    case 'L L;2R':
      return packed(2, true, (v) => v * 0x55);
    case 'L L;2IR':
      return packed(2, true, (v) => 255 - v * 0x55);
    case 'L L;4':
      return packed(4, false, (v) => v * 0x11);
    case 'L L;4I':
      return packed(4, false, (v) => 255 - v * 0x11);
    case 'L L;4R':
      return packed(4, true, (v) => v * 0x11);
    case 'L L;4IR':
      return packed(4, true, (v) => 255 - v * 0x11);
    case 'L L':
    case 'P P':
      return bands(8, [0]);
    case 'L L;I':
      return bands(8, [0], (v) => 255 - v);
    case 'L L;R':
    case 'P P;R':
      return bands(8, [0], (v) => BITFLIP[v]);
    case 'P P;1':
      return packed(1, false, (v) => v);
    case 'P P;1R':
      return packed(1, true, (v) => v);
    case 'P P;2':
      return packed(2, false, (v) => v);
    case 'P P;2R':
      return packed(2, true, (v) => v);
    case 'P P;4':
      return packed(4, false, (v) => v);
    case 'P P;4R':
      return packed(4, true, (v) => v);
    case 'LA LA':
    case 'PA PA':
      return bands(16, [0, -1], undefined);
    case 'RGB RGB':
      return bands(24, [0, 1, 2]);
    case 'RGB RGB;R':
      return bands(24, [0, 1, 2], (v) => BITFLIP[v]);
    case 'RGB RGBX':
    case 'RGBA RGBA':
    case 'RGBX RGBX':
    case 'CMYK CMYK':
      return bands(32, [0, 1, 2, 3]);
    case 'RGBX RGBXX':
    case 'RGBA RGBAX':
    case 'CMYK CMYKX':
      return bands(40, [0, 1, 2, 3]);
    case 'RGBX RGBXXX':
    case 'RGBA RGBAXX':
    case 'CMYK CMYKXX':
      return bands(48, [0, 1, 2, 3]);
    case 'RGBA RGBa':
      return premultiplied(32, [0, 1, 2], 3);
    case 'RGBA RGBaX':
      return premultiplied(40, [0, 1, 2], 3);
    case 'RGBA RGBaXX':
      return premultiplied(48, [0, 1, 2], 3);
    case 'RGBA RGBa;16L':
      return premultiplied(64, [1, 3, 5], 7);
    case 'RGBA RGBa;16B':
      return premultiplied(64, [0, 2, 4], 6);
    case 'RGB RGB;16L':
      return bands(48, [1, 3, 5]);
    case 'RGB RGB;16B':
      return bands(48, [0, 2, 4]);
    case 'RGBA RGBA;16L':
    case 'RGBX RGBX;16L':
    case 'CMYK CMYK;16L':
      return bands(64, [1, 3, 5, 7]);
    case 'RGBA RGBA;16B':
    case 'RGBX RGBX;16B':
    case 'CMYK CMYK;16B':
      return bands(64, [0, 2, 4, 6]);
    case 'LAB LAB':
      return bands(24, [0, 1, 2], (v, k) => (k ? v ^ 128 : v));
    case 'I;16 I;16':
      return numeric(16, (v, o) => v.getUint16(o, true));
    case 'I;16B I;16B':
      return numeric(16, (v, o) => v.getUint16(o, false));
    case 'I;16 I;16R':
      return numeric(16, (v, o) => BITFLIP[v.getUint8(o)] | (BITFLIP[v.getUint8(o + 1)] << 8));
    case 'I;16 I;12':
      return { bits: 12, unpack: unpackI12 };
    case 'I I;16S':
      return numeric(16, (v, o) => v.getInt16(o, true));
    case 'I I;16BS':
      return numeric(16, (v, o) => v.getInt16(o, false));
    case 'I I;32N':
      return numeric(32, (v, o) => v.getUint32(o, true) | 0);
    case 'I I;32S':
      return numeric(32, (v, o) => v.getInt32(o, true));
    case 'I I;32BS':
      return numeric(32, (v, o) => v.getInt32(o, false));
    case 'F F;32F':
      return numeric(32, (v, o) => v.getFloat32(o, true));
    case 'F F;32BF':
      return numeric(32, (v, o) => v.getFloat32(o, false));
    default:
      break;
  }
  // Planes (planar configuration 2) take one letter of the raw mode: Unpack.c has these.
  const letters: Record<string, string> = {
    RGB: 'RGB',
    RGBA: 'RGBA',
    RGBX: 'RGBX',
    CMYK: 'CMYK',
    LAB: 'LAB',
    YCbCr: '',
  };
  if (rawmode.length === 1) {
    if (mode === rawmode && (mode === 'L' || mode === 'P')) return bands(8, [0]);
    if (mode === '1' && rawmode === '1') return packed(1, false, (v) => (v ? 255 : 0));
    if (mode === 'I' && rawmode === 'I') return numeric(32, (v, o) => v.getInt32(o, true));
    if (mode === 'F' && rawmode === 'F') return numeric(32, (v, o) => v.getFloat32(o, true));
    const band = (letters[mode] ?? '').indexOf(rawmode);
    if (band >= 0) return oneBand(band, 1, 0);
  }
  return null;
}

/** unpackI12_I16: 12-bit samples, two per three bytes, most significant bits first. */
function unpackI12(img: ModeImage, y: number, x: number, src: Uint8Array, at: number, pixels: number): void {
  const out = img.numbers!;
  let o = y * img.width + x;
  let p = at;
  let i = 0;
  for (; i < pixels - 1; i += 2, p += 3) {
    out[o++] = (src[p] << 4) | (src[p + 1] >> 4);
    out[o++] = ((src[p + 1] & 0x0f) << 8) | src[p + 2];
  }
  if (i === pixels - 1) out[o] = (src[p] << 4) | (src[p + 1] >> 4);
}

/** ImageFile.load with the raw decoder (RawDecode.c) over the tiles of an uncompressed TIFF. */
function decodeRaw(plan: TiffPlan, file: Uint8Array): ModeImage {
  const { mode, width, height } = plan;
  const img = new ModeImage(mode, width, height);
  // self.tile.sort(key=offset), then of consecutive tiles with the same (decoder, box, args) the last.
  const sorted = plan.tiles
    .map((t, i) => ({ t, i }))
    .sort((a, b) => {
      const oa = isNum(a.t.offset) ? a.t.offset.num : 0;
      const ob = isNum(b.t.offset) ? b.t.offset.num : 0;
      return oa - ob || a.i - b.i;
    })
    .map((x) => x.t);
  const sameTile = (a: RawTile, b: RawTile) =>
    a.rawmode === b.rawmode && a.stride === b.stride && a.box.every((v, k) => v.num === b.box[k].num);
  const tiles = sorted.filter((t, k) => k === sorted.length - 1 || !sameTile(t, sorted[k + 1]));
  if (
    tiles.length === 1 &&
    tiles[0].rawmode === mode &&
    ['L', 'P', 'RGBX', 'RGBA', 'CMYK', 'I;16', 'I;16L', 'I;16B'].includes(mode)
  ) {
    // Image.open(path) memory-maps such a file and reads every row from the offset at the image's
    // own stride, which a buffer decodes differently: no answer is Pillow's answer.
    const t = tiles[0];
    const full = t.box[0].num === 0 && t.box[1].num === 0 && t.box[2].num === width && t.box[3].num === height;
    if (!full)
      refuse(
        'a single strip shorter than the image: Pillow reads it differently from a path (memory-mapped) and from a buffer',
      );
  }
  let lastError = 0;
  for (const t of tiles) {
    if (!isNum(t.offset) || !t.offset.int) refuse('strip or tile offset is not an integer');
    const offset = (t.offset as PyNum).num;
    if (offset < 0) refuse('negative strip offset');
    const found = findUnpacker(mode, t.rawmode);
    if (!found) refuse(`unknown raw mode ${t.rawmode} for mode ${mode}`);
    const { bits, unpack } = found!;
    const [x0, y0, x1, y1] = t.box;
    if (!t.box.every((v) => v.int)) refuse('strip or tile size is not an integer');
    const xsize = x1.num - x0.num;
    const ysize = y1.num - y0.num;
    if (xsize <= 0 || x1.num > width || ysize <= 0 || y1.num > height || x0.num < 0 || y0.num < 0)
      refuse('tile cannot extend outside image');
    const rowBytes = Math.floor((xsize * bits + 7) / 8);
    const skip = t.stride ? t.stride - rowBytes : 0;
    if (skip < 0) {
      lastError = -8; // IMAGING_CODEC_CONFIG: only the last tile's error is raised
      continue;
    }
    lastError = 0;
    // Rows are read one after another from the offset, past the strip's byte count if need be.
    let p = offset;
    for (let y = 0; y < ysize; y++) {
      if (p + rowBytes > file.length) refuse('image file is truncated');
      unpack(img, y0.num + y, x0.num, file, p, xsize);
      p += rowBytes + (y < ysize - 1 ? skip : 0);
    }
  }
  if (lastError) refuse(`decoder error ${lastError} when reading image file`);
  return img;
}

/** convert('RGB') of an image in Pillow's mode. */
function toRgb(img: ModeImage, palette: Uint8Array | null, grey16: 'pillow' | 'high-byte'): Uint8Array {
  const n = img.width * img.height;
  const out = new Uint8Array(n * 3);
  const b = img.bytes;
  const clip = (v: number) => (v <= 0 ? 0 : v >= 255 ? 255 : Math.trunc(v) || 0);
  switch (img.mode) {
    case '1':
    case 'L':
      for (let i = 0; i < n; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = b![i];
      break;
    case 'LA':
      for (let i = 0; i < n; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = b![2 * i];
      break;
    case 'P':
    case 'PA': {
      const s = img.stride;
      for (let i = 0; i < n; i++) {
        const p = 3 * b![s * i];
        out[3 * i] = palette![p];
        out[3 * i + 1] = palette![p + 1];
        out[3 * i + 2] = palette![p + 2];
      }
      break;
    }
    case 'RGB':
    case 'RGBA':
    case 'RGBX':
      for (let i = 0; i < n; i++) {
        out[3 * i] = b![4 * i];
        out[3 * i + 1] = b![4 * i + 1];
        out[3 * i + 2] = b![4 * i + 2];
      }
      break;
    case 'CMYK':
      for (let i = 0; i < n; i++) cmykPixel(b!, 4 * i, out, 3 * i);
      break;
    case 'LAB':
      return labToRgb(b!, n);
    default: {
      // I;16 (clipped at 255, or v >> 8 with grey16: 'high-byte'), I (clipped), F (truncated, clipped).
      const v = img.numbers!;
      const high = grey16 === 'high-byte' && img.mode.startsWith('I;16');
      for (let i = 0; i < n; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = high ? v[i] >> 8 : clip(v[i]);
    }
  }
  return out;
}

/** Convert.c's cmyk2rgb (no ICC): nk = 255 - K; R = nk - round(C * nk / 255), ... */
export function cmykPixel(src: Uint8Array, s: number, out: Uint8Array, o: number): void {
  const nk = 255 - src[s + 3];
  for (let c = 0; c < 3; c++) {
    const t = src[s + c] * nk + 128;
    out[o + c] = nk - (((t >> 8) + t) >> 8);
  }
}

/** How libvips gets the samples of a compressed TIFF, and what is done with them. */
export interface LibvipsTiff {
  plan: TiffPlan;
  /** The file for libvips: the first IFD only (no next IFD), Orientation 1 (applied here), Lab as RGB. */
  input: Uint8Array;
}

/**
 * A TIFF as Pillow decodes it: RGB, or, for a compressed one, what libvips must decode (the
 * samples are then converted by fromLibvips). Refused with an ImageError where Pillow raises.
 */
export function decodeTiff(
  file: Uint8Array,
  name: string,
  maxPixels: number,
  grey16: 'pillow' | 'high-byte',
): DecodedImage | LibvipsTiff {
  let plan: TiffPlan;
  try {
    plan = planTiff(file);
    checkImagePixels(plan.width, plan.height, `image ${name}`, maxPixels);
    checkExif(plan, file);
    if (plan.compression !== 'raw') return { plan, input: libvipsInput(plan, file) };
    const img = decodeRaw(plan, file);
    const data = toRgb(img, plan.palette, grey16);
    return orientImage(
      { width: plan.width, height: plan.height, data, sourceMode: plan.mode },
      orientationOf(plan.orientation),
    );
  } catch (e) {
    if (e instanceof TiffRefusal)
      throw new ImageError(`cannot decode image ${name}: TIFF ${e.message}; Pillow 9.4 refuses it too`);
    throw e;
  }
}

/** TiffImageFile.load_end's method for the Orientation value (a number 2..8, as a dict key). */
function orientationOf(v: PyValue | undefined): number | undefined {
  return isNum(v) && Number.isInteger(v.num) ? v.num : undefined;
}

/**
 * load_end of a single-page TIFF also reads its EXIF sub-directories: a negative or huge offset,
 * or an InteroperabilityIFD outside an Exif IFD that holds it, raises there.
 */
function checkExif(plan: TiffPlan, file: Uint8Array): void {
  if (plan.animated) return;
  const { ifd } = plan;
  const exifValue = tagValue(ifd, 34665);
  for (const tag of [34665, 34853]) {
    const v = tagValue(ifd, tag);
    if (isNum(v) && v.int && (v.num < 0 || v.num >= 2 ** 63)) refuse(`EXIF directory offset ${v.num} cannot be read`);
  }
  if (ifd.tags.has(40965)) {
    // get_ifd(Interop) reads it from the Exif IFD, which must exist and hold the tag.
    if (!isNum(exifValue) || !exifValue.int) refuse('InteroperabilityIFD without an Exif IFD');
    const sub = loadIfd(file, (exifValue as PyNum).num, ifd.le, ifd.bigtiff, 0);
    if (!sub.tags.has(40965)) refuse('InteroperabilityIFD not in the Exif IFD');
  }
}

/** The first entry of a tag in the directory (libtiff ignores the repeats), as Pillow decodes values. */
function firstValue(ifd: Ifd, tag: number): PyValue | undefined {
  const e = ifd.entries.find((x) => x.tag === tag);
  return e ? shape(tag, e.type, decodeValues(e, ifd.le)) : undefined;
}

/**
 * The file libvips reads: the original bytes and, after them, a new first directory holding the
 * first entry of each tag of the original one (what libtiff reads), with Orientation 1 (applied
 * here, by Pillow's rule), no next directory, and the Photometric that makes libtiff return the
 * samples Pillow unpacks: Pillow's own (libtiff's decompression does not depend on it, except for
 * YCbCr), MinIsBlack for palette images (the indices, not libvips' palette expansion), RGB for Lab
 * (the stored values, not libvips' conversion); a single-sample image as contiguous.
 */
function libvipsInput(plan: TiffPlan, file: Uint8Array): Uint8Array {
  const { ifd } = plan;
  const head = String.fromCharCode(...file.subarray(0, 4));
  if (!['MM\0*', 'II*\0', 'II+\0'].includes(head))
    refuse(`compressed, with a header libtiff does not open (${JSON.stringify(head)})`);
  const r = new Reader(file, ifd.le);
  const size = ifd.bigtiff ? 20 : 12;
  const count = ifd.bigtiff ? r.u64(ifd.offset) : r.u16(ifd.offset);
  const start = ifd.offset + (ifd.bigtiff ? 8 : 2);
  const fields = new Map<number, Uint8Array>();
  for (let i = 0; i < count; i++) {
    const e = start + i * size;
    if (e + size > file.length) break;
    const tag = r.u16(e);
    if (!fields.has(tag)) fields.set(tag, file.slice(e, e + size));
  }
  const short = (tag: number, v: number) => {
    const f = new Uint8Array(size);
    const view = new DataView(f.buffer);
    view.setUint16(0, tag, ifd.le);
    view.setUint16(2, 3, ifd.le);
    if (ifd.bigtiff) view.setBigUint64(4, 1n, ifd.le);
    else view.setUint32(4, 1, ifd.le);
    view.setUint16(ifd.bigtiff ? 12 : 8, v, ifd.le);
    return f;
  };
  if (fields.has(274)) fields.set(274, short(274, 1));
  const photometric = plan.mode === 'LAB' ? 2 : plan.mode === 'P' || plan.mode === 'PA' ? 1 : plan.photometric;
  if (photometric !== 6 && Number.isInteger(photometric) && photometric >= 0 && photometric < 65536)
    fields.set(262, short(262, photometric));
  // One sample in planes is one plane (libvips reads such 1-bit files as black); other values stay, errors included.
  const spp = firstValue(ifd, 277);
  const planar = firstValue(ifd, 284);
  if (
    (!isNum(spp) || spp.num <= 1) &&
    isNum(planar) &&
    planar.num === 2 &&
    ifd.entries.find((e) => e.tag === 284)?.count === 1
  )
    fields.set(284, short(284, 1));
  // Associated alpha as unassociated: libvips would undo the premultiplication its own way; Pillow's
  // integer rule is applied here (fromLibvips).
  const extra = ifd.entries.find((e) => e.tag === 338);
  const extraValues = extra && extra.type === 3 ? numbers(firstValue(ifd, 338)) : null;
  const blobs: Array<{ tag: number; bytes: Uint8Array }> = [];
  if (extraValues && extraValues.values[0] === 1) {
    const bytes = new Uint8Array(2 * extraValues.values.length);
    extraValues.values.forEach((v, i) => new DataView(bytes.buffer).setUint16(2 * i, i === 0 ? 2 : v, ifd.le));
    fields.set(338, short(338, 2));
    blobs.push({ tag: 338, bytes });
  }
  const tags = [...fields.keys()].sort((x, y) => x - y);
  const at = file.length + (file.length % 2);
  const ifdBytes = (ifd.bigtiff ? 8 : 2) + tags.length * size + (ifd.bigtiff ? 8 : 4);
  const out = new Uint8Array(at + ifdBytes + blobs.reduce((n, b) => n + b.bytes.length, 0));
  out.set(file);
  const view = new DataView(out.buffer);
  if (ifd.bigtiff) view.setBigUint64(at, BigInt(tags.length), ifd.le);
  else view.setUint16(at, tags.length, ifd.le);
  tags.forEach((tag, i) => out.set(fields.get(tag)!, at + (ifd.bigtiff ? 8 : 2) + i * size));
  // Values too long to sit in their entry go after the directory.
  let blobAt = at + ifdBytes;
  for (const { tag, bytes } of blobs) {
    const entry = at + (ifd.bigtiff ? 8 : 2) + tags.indexOf(tag) * size;
    const n = bytes.length / 2;
    if (ifd.bigtiff) view.setBigUint64(entry + 4, BigInt(n), ifd.le);
    else view.setUint32(entry + 4, n, ifd.le);
    const inline = ifd.bigtiff ? 8 : 4;
    if (bytes.length <= inline) {
      out.fill(0, entry + (ifd.bigtiff ? 12 : 8), entry + size);
      out.set(bytes, entry + (ifd.bigtiff ? 12 : 8));
    } else {
      out.set(bytes, blobAt);
      if (ifd.bigtiff) view.setBigUint64(entry + 12, BigInt(blobAt), ifd.le);
      else view.setUint32(entry + 8, blobAt, ifd.le);
      blobAt += bytes.length;
    }
  }
  if (ifd.bigtiff) view.setBigUint64(8, BigInt(at), ifd.le);
  else view.setUint32(4, at, ifd.le);
  return out;
}

/**
 * Pillow's RGB from libvips' decoding of a compressed TIFF: `samples` (8-bit, `channels` per pixel;
 * 16-bit grey as numbers in `wide`), converted by Pillow's mode, then oriented by Pillow's rule.
 */
export function fromLibvips(
  plan: TiffPlan,
  name: string,
  samples: Uint8Array,
  channels: number,
  grey16: 'pillow' | 'high-byte',
  wide?: Float64Array,
): DecodedImage {
  const { mode, width, height } = plan;
  const n = width * height;
  const img = new ModeImage(mode, width, height);
  if (img.numbers) {
    if (!wide) throw new ImageError(`cannot decode image ${name}: TIFF mode ${mode} gave no wide samples`);
    img.numbers.set(wide.subarray(0, n));
  } else {
    const b = img.bytes!;
    const s = img.stride;
    // Palette images come as grey (Photometric patched): libvips scales 1/2/4-bit values to 0..255.
    const bits = plan.mode === 'P' || plan.mode === 'PA' ? Number(plan.rawmode.match(/^P;?(\d)/)?.[1] ?? 8) : 8;
    const scale = bits < 8 ? 255 / ((1 << bits) - 1) : 1;
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < s; k++) b[i * s + k] = k < channels ? samples[i * channels + k] : 0;
      if (mode === 'LA' || mode === 'PA') b[i * s + 1] = channels > 1 ? samples[i * channels + channels - 1] : 0;
      if (scale !== 1) b[i * s] = Math.round(b[i * s] / scale);
      // The LAB raw mode flips the sign bit of a and b (stored signed); planes are copied as they are.
      if (mode === 'LAB' && plan.planar !== 2) {
        b[i * s + 1] ^= 128;
        b[i * s + 2] ^= 128;
      }
    }
    if (plan.rawmode.startsWith('RGBa')) unpremultiply(b, n);
  }
  const data = toRgb(img, plan.palette, grey16);
  return orientImage({ width, height, data, sourceMode: mode }, orientationOf(plan.orientation));
}

/** unpackRGBa: premultiplied alpha undone, v * 255 / a in integers, clipped. */
function unpremultiply(b: Uint8Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const a = b[4 * i + 3];
    for (let k = 0; k < 3; k++) {
      const v = b[4 * i + k];
      b[4 * i + k] = a === 0 ? 0 : a === 255 ? v : Math.min(255, Math.floor((v * 255) / a));
    }
  }
}

/** Whether libvips' decoding of this compressed TIFF can stand for libtiff's in Pillow. */
export function libvipsRefusal(plan: TiffPlan): string | null {
  const comp = firstValue(plan.ifd, 259);
  const planar = firstValue(plan.ifd, 284);
  const jpegContig = isNum(comp) && comp.num === 7 && (!isNum(planar) || planar.num === 1);
  if (plan.photometric === 6 && !jpegContig) {
    return "YCbCr compressed other than as contiguous JPEG: Pillow converts it with libtiff's TIFFRGBAImage (and its orientation flips), which libvips does not reproduce";
  }
  if (plan.conflicts.length) {
    return `tags ${plan.conflicts.join(', ')} are given twice with different values: Pillow takes the last for its mode and libtiff the first to decode, a mix not reproduced here`;
  }
  return null;
}
