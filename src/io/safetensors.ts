/**
 * Strict safetensors reader/writer on Node `fs` (no tfjs).
 *
 * Format: u64 LE header length N, N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets: [begin, end]},
 * "__metadata__"?: {str: str}}, then the data region; offsets are relative to the data region.
 * The reader validates the whole header up front, then reads one tensor at a time at its offset, so
 * loading a model never holds the file and the converted weights in memory together.
 */
import * as fs from 'fs';
import { CheckpointError, quote, shapeText } from '../errors';
import { writeAllSync, writeFileAtomic } from './atomic';
import { parseJsonWithLimits } from './json';
import { DType, DTYPE_SIZE, DTYPES, decodeToFloat32, isDType, isFloatDType, numel, toHalfBits } from './dtype';

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}
export type TypedData =
  Float32Array | Float64Array | Uint16Array | Uint8Array | Int32Array | Int8Array | Int16Array | BigInt64Array;
/** data: little-endian bytes. */
export interface RawTensor {
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

/** A header bigger than this is not a real checkpoint (big models have headers of ~100 KB). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Node caps one read/write call near 2 GB; big tensors are read in pieces of this size. */
const IO_CHUNK = 1 << 30;

const q = (x: unknown): string => quote(x);
/** {name: {shape: [...]}}: a header needs three levels; deeper is not a safetensors header. */
const HEADER_MAX_DEPTH = 3;
const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const isCount = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;

function shapeStr(dtype: DType, shape: number[]): string {
  return `${dtype} ${shapeText(shape)}`;
}

/** Validate a parsed header against the data region size. Throws CheckpointError naming file + tensor. */
function parseHeader(file: string, json: unknown, dataSize: number) {
  if (!isObject(json)) throw new CheckpointError(`${file}: header is not a JSON object`);
  let metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') {
      metadata = checkMetadata(entry, `${file}: __metadata__`);
      continue;
    }
    const bad = (msg: string) => new CheckpointError(`${file}: tensor ${q(name)}: ${msg}`);
    if (!isObject(entry)) throw bad('entry is not an object');
    const extra = Object.keys(entry).filter((k) => k !== 'dtype' && k !== 'shape' && k !== 'data_offsets');
    if (extra.length)
      throw bad(
        `unknown field(s) ${extra.slice(0, 5).map(q).join(', ')}${extra.length > 5 ? ` (${extra.length} in all)` : ''}`,
      );
    const { dtype, shape, data_offsets: offsets } = entry;
    if (!isDType(dtype)) throw bad(`unknown dtype ${q(dtype)} (allowed: ${DTYPES.join(', ')})`);
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw bad(`shape ${q(shape)} must be an array of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      throw bad(`data_offsets ${q(offsets)} must be [begin, end] with non-negative integers`);
    }
    const [begin, end] = offsets;
    if (begin > end) throw bad(`data_offsets [${begin}, ${end}] have begin > end`);
    const need = numel(shape) * DTYPE_SIZE[dtype];
    if (!Number.isSafeInteger(need)) throw bad(`${shapeStr(dtype, shape)} is too large`);
    if (end - begin !== need) {
      throw bad(
        `data_offsets [${begin}, ${end}] give ${end - begin} bytes but ${shapeStr(dtype, shape)} needs ${need}`,
      );
    }
    if (end > dataSize) {
      throw bad(
        `data_offsets [${begin}, ${end}] run past the end of the data region (${dataSize} bytes); ` + 'file truncated?',
      );
    }
    tensors.set(name, { name, dtype, shape: shape.slice(), begin, end });
  }
  checkCoverage(file, [...tensors.values()], dataSize);
  return { metadata, tensors };
}

/**
 * The reference implementation's rule: sorted by offset, the tensors tile the data region exactly,
 * from its first byte to its last, with no hole and no overlap. A header length off by a byte, bytes
 * inserted before the data or appended after it, all break this; without the check such a file loads
 * with every tensor shifted.
 */
function checkCoverage(file: string, tensors: TensorInfo[], dataSize: number): void {
  const sorted = tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let previous: TensorInfo | null = null;
  for (const t of sorted) {
    if (t.begin !== covered) {
      const span = `[${t.begin}, ${t.end}]`;
      throw new CheckpointError(
        t.begin < covered
          ? `${file}: tensors ${q(previous!.name)} [${previous!.begin}, ${previous!.end}] and ${q(t.name)} ${span} overlap`
          : `${file}: tensor ${q(t.name)} ${span} leaves a hole of ${t.begin - covered} bytes ` +
              (previous ? `after tensor ${q(previous.name)}` : 'at the start of the data region') +
              ' (the tensors must cover the data region exactly)',
      );
    }
    covered = t.end;
    previous = t;
  }
  if (covered !== dataSize) {
    throw new CheckpointError(
      `${file}: the tensors cover ${covered} bytes but the data region after the ` +
        `header has ${dataSize} (header length wrong, or bytes inserted or appended: a corrupt file)`,
    );
  }
}

/** __metadata__ (file) must map strings to strings, as the reference implementation requires. */
function checkMetadata(x: unknown, where: string): Record<string, string> {
  if (!isObject(x)) throw new CheckpointError(`${where} must be an object of string -> string`);
  for (const [k, v] of Object.entries(x)) {
    if (typeof v !== 'string') throw new CheckpointError(`${where}: value of ${q(k)} is ${q(v)}, not a string`);
  }
  return { ...(x as Record<string, string>) };
}

/** A block of a tensor seen as a row-major matrix with `cols` columns: rows r0..r0+nr−1, columns c0..c0+nc−1. */
export interface Region {
  cols: number;
  r0: number;
  nr: number;
  c0: number;
  nc: number;
}

export class SafetensorsFile {
  private fd: number | undefined;

  private constructor(
    readonly path: string,
    fd: number,
    readonly metadata: Record<string, string>,
    readonly dataStart: number,
    private readonly tensors: Map<string, TensorInfo>,
  ) {
    this.fd = fd;
  }

  /** Reads and validates the header only; the descriptor stays open for later tensor reads. */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      // Non-blocking: a FIFO in a checkpoint's or dataset's name must not hang the reader (refused below).
      fd = fs.openSync(path, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
    } catch (err) {
      throw new CheckpointError(`${path}: cannot open: ${(err as Error).message}`);
    }
    try {
      const stat = fs.fstatSync(fd);
      if (!stat.isFile())
        throw new CheckpointError(
          `${path}: not a regular file (a ${stat.isDirectory() ? 'folder' : stat.isFIFO() ? 'FIFO' : 'device or special file'})`,
        );
      const size = stat.size;
      if (size < 8) throw new CheckpointError(`${path}: file is ${size} bytes, too short for a safetensors header`);
      const lenBytes = readAt(fd, 0, 8, path);
      const headerLen = Buffer.from(lenBytes.buffer, lenBytes.byteOffset, 8).readBigUInt64LE(0);
      if (headerLen > BigInt(size - 8)) {
        throw new CheckpointError(
          `${path}: header length ${headerLen} is larger than the rest of the file ` +
            `(${size - 8} bytes); not a safetensors file or truncated`,
        );
      }
      if (headerLen > BigInt(MAX_HEADER_BYTES)) {
        throw new CheckpointError(`${path}: header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte cap`);
      }
      const n = Number(headerLen);
      let text: string;
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(readAt(fd, 8, n, path));
      } catch (err) {
        throw new CheckpointError(`${path}: header is not valid UTF-8: ${(err as Error).message}`);
      }
      const json = parseJsonWithLimits(
        text,
        { maxDepth: HEADER_MAX_DEPTH, rejectDuplicateKeys: true },
        (problem) => new CheckpointError(`${path}: header ${problem}`),
      );
      const { metadata, tensors } = parseHeader(path, json, size - 8 - n);
      return new SafetensorsFile(path, fd, metadata, 8 + n, tensors);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  /** Tensor names, sorted. */
  keys(): string[] {
    return [...this.tensors.keys()].sort();
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new CheckpointError(`${this.path}: no tensor ${q(name)} (file has ${this.tensors.size} tensors)`);
    return { ...t, shape: t.shape.slice() };
  }

  /**
   * One tensor's bytes, read at its offset into a fresh buffer (byteOffset 0, so typed views are
   * aligned), or into the first bytes of `into` (returned as a view).
   */
  readBytes(name: string, into?: Uint8Array): Uint8Array {
    const t = this.info(name);
    if (this.fd === undefined) throw new CheckpointError(`${this.path}: file is closed (reading ${q(name)})`);
    const len = t.end - t.begin;
    if (into && into.length < len)
      throw new RangeError(`${this.path}: tensor ${q(name)}: ${len} bytes do not fit a buffer of ${into.length}`);
    return readAt(this.fd, this.dataStart + t.begin, len, `${this.path}: tensor ${q(name)}`, into?.subarray(0, len));
  }

  /**
   * Rows r0 .. r0+nr−1 and columns c0 .. c0+nc−1 of the tensor seen as a row-major matrix with `cols`
   * columns, as the little-endian bytes of an [nr, nc] matrix (into the first bytes of `into` when
   * given): one read when whole rows are asked for, else one per row. A tensor-parallel shard reads
   * only its own slices this way.
   */
  readRegion(name: string, region: Region, into?: Uint8Array): Uint8Array {
    const t = this.info(name);
    if (this.fd === undefined) throw new CheckpointError(`${this.path}: file is closed (reading ${q(name)})`);
    const size = DTYPE_SIZE[t.dtype];
    const { cols, r0, nr, c0, nc } = region;
    const total = (t.end - t.begin) / size;
    if (
      ![cols, r0, nr, c0, nc].every((v) => Number.isInteger(v) && v >= 0) ||
      cols === 0 ||
      total % cols !== 0 ||
      r0 + nr > total / cols ||
      c0 + nc > cols
    ) {
      throw new RangeError(
        `${this.path}: tensor ${q(name)}: region ${nr}x${nc} at (${r0}, ${c0}) is outside its ${total / cols}x${cols} view`,
      );
    }
    const len = nr * nc * size;
    if (into && into.length < len)
      throw new RangeError(`${this.path}: tensor ${q(name)}: ${len} bytes do not fit a buffer of ${into.length}`);
    const out = into ? into.subarray(0, len) : new Uint8Array(len);
    const what = `${this.path}: tensor ${q(name)}`;
    const at = (r: number) => this.dataStart + t.begin + (r * cols + c0) * size;
    if (nc === cols) readAt(this.fd, at(r0), len, what, out);
    else
      for (let r = 0; r < nr; r++)
        readAt(this.fd, at(r0 + r), nc * size, what, out.subarray(r * nc * size, (r + 1) * nc * size));
    return out;
  }

  readFloat32(name: string): Float32Array {
    const t = this.info(name);
    if (!isFloatDType(t.dtype)) {
      throw new CheckpointError(`${this.path}: tensor ${q(name)}: dtype ${t.dtype} cannot be read as float32`);
    }
    const bytes = this.readBytes(name);
    // The buffer is ours and aligned: view F32 in place instead of copying it a second time.
    if (t.dtype === 'F32') return new Float32Array(bytes.buffer, 0, bytes.byteLength / 4);
    return decodeToFloat32(t.dtype, bytes, name);
  }

  read(name: string): RawTensor {
    const t = this.info(name);
    return { dtype: t.dtype, shape: t.shape, data: this.readBytes(name) };
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

/** Read exactly len bytes at position (into `out` when given); readSync may return fewer, so loop, and fail on early EOF. */
function readAt(
  fd: number,
  position: number,
  len: number,
  what: string,
  out: Uint8Array = new Uint8Array(len),
): Uint8Array {
  let done = 0;
  while (done < len) {
    const got = fs.readSync(fd, out, done, Math.min(IO_CHUNK, len - done), position + done);
    if (got === 0) throw new CheckpointError(`${what}: file ended after ${done} of ${len} bytes (changed on disk?)`);
    done += got;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------- writer

export interface TensorToWrite {
  dtype: DType;
  shape: number[];
  data: Float32Array | Uint8Array | Uint16Array | Int32Array | Float64Array | Int8Array | Int16Array | BigInt64Array;
}

/**
 * Typed array accepted per dtype (besides a Uint8Array of raw little-endian bytes, accepted for any dtype).
 * Matched by toStringTag, not instanceof: Buffers and arrays from another realm (jest, workers) fail instanceof.
 */
const ARRAY_KINDS: Record<DType, string[]> = {
  F64: ['Float64Array'],
  F32: ['Float32Array'],
  F16: ['Uint16Array', 'Float32Array'],
  BF16: ['Uint16Array', 'Float32Array'],
  I64: ['BigInt64Array'],
  I32: ['Int32Array'],
  I16: ['Int16Array'],
  I8: ['Int8Array'],
  U8: ['Uint8Array'],
  BOOL: ['Uint8Array'],
};

const kindOf = (x: unknown): string => Object.prototype.toString.call(x).slice(8, -1);

interface Part {
  name: string;
  dtype: DType;
  shape: number[];
  byteLength: number;
  bytes: () => Uint8Array;
}

/** A tensor whose bytes are produced only when the file is written (generated or converted one at a time). */
export interface StreamedTensor {
  name: string;
  dtype: DType;
  shape: number[];
  /** The tensor's little-endian bytes; called once, in name order, while the file is written. */
  bytes: () => Uint8Array;
}

/** Validate everything and lay out the file before any byte is written (so a bad tensor never touches disk). */
function prepare(tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>) {
  const parts: Part[] = [];
  for (const name of Object.keys(tensors).sort()) {
    const { dtype, shape, data } = tensors[name];
    const bad = (msg: string) => new CheckpointError(`writing tensor ${q(name)}: ${msg}`);
    const byteLength = checkTensor(name, dtype, shape);
    const n = numel(shape);
    const kind = kindOf(data);
    let bytes: () => Uint8Array;
    if (kind === 'Uint8Array') {
      if (data.byteLength !== byteLength) {
        throw bad(`${data.byteLength} bytes given but ${shapeStr(dtype, shape)} needs ${byteLength}`);
      }
      if (dtype === 'BOOL' && (data as Uint8Array).some((v) => v > 1)) throw bad('BOOL data must be 0 or 1');
      bytes = () => data as Uint8Array;
    } else if (ARRAY_KINDS[dtype].includes(kind)) {
      if (data.length !== n) throw bad(`${data.length} elements given but ${shapeStr(dtype, shape)} has ${n}`);
      if ((dtype === 'F16' || dtype === 'BF16') && kind === 'Float32Array') {
        // Converted lazily, one tensor at a time, so a big write never holds every half copy at once.
        bytes = () => asBytes(toHalfBits(data as Float32Array, dtype));
      } else {
        bytes = () => asBytes(data);
      }
    } else {
      throw bad(`data is a ${kind}; ${dtype} takes ${ARRAY_KINDS[dtype].join(' or ')} (or raw bytes as Uint8Array)`);
    }
    parts.push({ name, dtype, shape, byteLength, bytes });
  }
  return { header: buildHeader(parts, metadata), parts };
}

/** Name, dtype and shape checks shared by both writers; returns the tensor's byte length. */
function checkTensor(name: string, dtype: DType, shape: number[]): number {
  const bad = (msg: string) => new CheckpointError(`writing tensor ${q(name)}: ${msg}`);
  if (name === '__metadata__') throw bad('"__metadata__" is reserved');
  if (!isDType(dtype)) throw bad(`unknown dtype ${q(dtype)} (allowed: ${DTYPES.join(', ')})`);
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    throw bad(`shape ${q(shape)} must be an array of non-negative integers`);
  }
  return numel(shape) * DTYPE_SIZE[dtype];
}

/** The 8-byte length + JSON header for `parts` in their order, data offsets consecutive. */
function buildHeader(parts: Part[], metadata?: Record<string, string>): Buffer {
  const entries: string[] = [];
  if (metadata !== undefined) entries.push(`"__metadata__":${JSON.stringify(checkMetadata(metadata, 'metadata'))}`);
  let offset = 0;
  for (const p of parts) {
    entries.push(
      `${JSON.stringify(p.name)}:${JSON.stringify({ dtype: p.dtype, shape: p.shape, data_offsets: [offset, offset + p.byteLength] })}`,
    );
    offset += p.byteLength;
  }
  // Built by hand so the header keeps sorted order (JS objects would hoist integer-like names).
  const json = Buffer.from(`{${entries.join(',')}}`, 'utf8');
  // Pad with spaces so the data region starts 8-byte aligned (lets readers map typed arrays in place).
  const padded = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const header = Buffer.alloc(8 + padded.length);
  header.writeBigUInt64LE(BigInt(padded.length), 0);
  padded.copy(header, 8);
  return header;
}

function asBytes(a: TypedData): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** The whole file in memory (for tests or HTTP); writeSafetensors streams instead. */
export function serializeSafetensors(
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Buffer {
  const { header, parts } = prepare(tensors, metadata);
  const out = Buffer.alloc(header.length + parts.reduce((sum, p) => sum + p.byteLength, 0));
  header.copy(out, 0);
  let pos = header.length;
  for (const p of parts) {
    out.set(p.bytes(), pos);
    pos += p.byteLength;
  }
  return out;
}

/** Write atomically (temp file + rename): the target is either the old file or the complete new one. */
export function writeSafetensors(
  path: string,
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): void {
  const { header, parts } = prepare(tensors, metadata);
  writeFileAtomic(path, (fd) => {
    writeAllSync(fd, header);
    for (const p of parts) writeAllSync(fd, p.bytes());
  });
}

/**
 * `writeSafetensors` for tensors produced one at a time while the file is written (sorted by name, as
 * the other writer does), so peak memory is one tensor, not the file. Names, dtypes and shapes are
 * checked before anything is written; a producer returning the wrong byte count aborts the write, and
 * the target keeps its old content.
 */
export function writeSafetensorsStreaming(
  path: string,
  tensors: StreamedTensor[],
  metadata?: Record<string, string>,
): void {
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const parts: Part[] = sorted.map(({ name, dtype, shape, bytes }, i) => {
    if (i > 0 && sorted[i - 1].name === name) throw new CheckpointError(`writing tensor ${q(name)}: duplicate name`);
    return { name, dtype, shape, byteLength: checkTensor(name, dtype, shape), bytes };
  });
  const header = buildHeader(parts, metadata);
  writeFileAtomic(path, (fd) => {
    writeAllSync(fd, header);
    for (const p of parts) {
      const bytes = p.bytes();
      if (bytes.byteLength !== p.byteLength) {
        throw new CheckpointError(
          `writing tensor ${q(p.name)}: ${bytes.byteLength} bytes produced but ${shapeStr(p.dtype, p.shape)} needs ${p.byteLength}`,
        );
      }
      writeAllSync(fd, bytes);
    }
  });
}
