/**
 * Minimal, read-only zip reader for torch.save archives (`mm_projector.bin`, `pytorch_model.bin`).
 *
 * Why our own: we only need "list entries, read one entry into memory", synchronously, with strict
 * validation, and reading just the central directory and the requested entries through a file
 * descriptor (checkpoints can be several GB). Nothing is ever extracted or written to disk; entry
 * names are validated anyway so a hostile archive is rejected early with a clear message.
 */
import * as fs from 'fs';
import * as zlib from 'zlib';
import { CheckpointError, quote } from '../errors';

export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflate (others are rejected when the directory is read). */
  method: 0 | 8;
  compressedSize: number;
  uncompressedSize: number;
  crc32: number;
  localHeaderOffset: number;
}

export interface ZipOptions {
  /** Largest uncompressed entry we will allocate (default 4 GiB: one torch storage of a ViT-L/ViT-G). */
  maxEntryBytes?: number;
  /** Largest central directory we will read (default 64 MiB, ~500k entries). */
  maxDirectoryBytes?: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;
const EOCD_MIN = 22;
const MAX_COMMENT = 0xffff;

export class ZipReader {
  private readonly byName = new Map<string, ZipEntry>();
  private fd: number | null;

  private constructor(
    readonly path: string,
    fd: number,
    readonly fileSize: number,
    private readonly maxEntryBytes: number,
  ) {
    this.fd = fd;
  }

  /** Opens `path` and reads its central directory (not the entries). */
  static open(path: string, options: ZipOptions = {}): ZipReader {
    let fd: number;
    try {
      fd = fs.openSync(path, 'r');
    } catch (e) {
      throw new CheckpointError(`${path}: cannot open (${(e as Error).message})`);
    }
    try {
      const size = fs.fstatSync(fd).size;
      const zip = new ZipReader(path, fd, size, options.maxEntryBytes ?? 4 * 2 ** 30);
      zip.readDirectory(options.maxDirectoryBytes ?? 64 * 2 ** 20);
      return zip;
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  entries(): ZipEntry[] {
    return [...this.byName.values()];
  }

  entry(name: string): ZipEntry | undefined {
    return this.byName.get(name);
  }

  /** Reads, inflates if needed, and CRC-checks one entry into a fresh buffer. */
  read(name: string): Uint8Array {
    const e = this.byName.get(name);
    if (!e) throw new CheckpointError(`${this.path}: zip has no entry ${quote(name)}`);
    const dataStart = this.localDataStart(e);
    if (dataStart + e.compressedSize > this.fileSize) {
      throw this.err(`entry ${quote(name)} data extends past the end of the file`);
    }
    const raw = this.readAt(dataStart, e.compressedSize);
    let out: Uint8Array;
    if (e.method === 0) {
      out = raw;
    } else {
      // maxOutputLength bounds memory even if the declared size lies (zip bomb): zlib stops there.
      try {
        out = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, e.uncompressedSize) });
      } catch (err) {
        const msg = (err as Error).message;
        throw this.err(
          (err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE'
            ? `entry ${quote(name)} inflates past its declared size of ${e.uncompressedSize} bytes`
            : `entry ${quote(name)} has corrupt deflate data (${msg})`,
        );
      }
      if (out.length !== e.uncompressedSize) {
        throw this.err(`entry ${quote(name)} inflates to ${out.length} bytes, declared ${e.uncompressedSize}`);
      }
    }
    const crc = crc32(out);
    if (crc !== e.crc32) {
      throw this.err(
        `entry ${quote(name)} CRC32 mismatch (stored ${hex(e.crc32)}, computed ${hex(crc)}): file is corrupt`,
      );
    }
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength); // plain bytes, not a Buffer
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }

  private err(msg: string): CheckpointError {
    return new CheckpointError(`${this.path}: ${msg}`);
  }

  private readAt(position: number, length: number): Buffer {
    if (this.fd === null) throw this.err('file is closed');
    const buf = Buffer.allocUnsafeSlow(length); // unpooled (offset 0) and fully overwritten below
    let done = 0;
    while (done < length) {
      // Node caps one read call near 2 GB: read big entries in pieces.
      const n = fs.readSync(this.fd, buf, done, Math.min(2 ** 30, length - done), position + done);
      if (n === 0) throw this.err(`unexpected end of file at offset ${position + done}`);
      done += n;
    }
    return buf;
  }

  private readDirectory(maxDirectoryBytes: number): void {
    // End of central directory: last 22 bytes plus an optional comment of up to 64 KiB.
    const tailLen = Math.min(this.fileSize, EOCD_MIN + MAX_COMMENT);
    const tailStart = this.fileSize - tailLen;
    const tail = this.readAt(tailStart, tailLen);
    let eocd = -1;
    for (let i = tailLen - EOCD_MIN; i >= 0; i--) {
      if (tail.readUInt32LE(i) === SIG_EOCD && i + EOCD_MIN + tail.readUInt16LE(i + 20) <= tailLen) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) throw this.err('not a zip archive (no end-of-central-directory record)');
    let count = tail.readUInt16LE(eocd + 10);
    let dirSize = tail.readUInt32LE(eocd + 12);
    let dirOffset = tail.readUInt32LE(eocd + 16);
    if (tail.readUInt16LE(eocd + 4) !== 0 || tail.readUInt16LE(eocd + 6) !== 0) {
      throw this.err('multi-disk zip archives are not supported');
    }

    // Zip64: a locator sits right before the EOCD and points at the zip64 EOCD record.
    const loc = tailStart + eocd - 20;
    if (loc >= 0 && this.readAt(loc, 4).readUInt32LE(0) === SIG_ZIP64_LOCATOR) {
      const z64Offset = this.u64(this.readAt(loc + 8, 8), 0, 'zip64 EOCD offset');
      if (z64Offset + 56 > this.fileSize) throw this.err('zip64 EOCD offset is out of range');
      const z = this.readAt(z64Offset, 56);
      if (z.readUInt32LE(0) !== SIG_ZIP64_EOCD) throw this.err('bad zip64 EOCD signature');
      count = this.u64(z, 32, 'zip64 entry count');
      dirSize = this.u64(z, 40, 'zip64 directory size');
      dirOffset = this.u64(z, 48, 'zip64 directory offset');
    }
    if (dirSize > maxDirectoryBytes) {
      throw this.err(`central directory of ${dirSize} bytes exceeds the ${maxDirectoryBytes}-byte limit`);
    }
    if (dirOffset + dirSize > this.fileSize) throw this.err('central directory extends past the end of the file');
    if (count * 46 > dirSize) throw this.err(`central directory too small for ${count} entries`);

    const dir = this.readAt(dirOffset, dirSize);
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > dir.length || dir.readUInt32LE(p) !== SIG_CENTRAL) {
        throw this.err(`bad central directory record #${i}`);
      }
      const flags = dir.readUInt16LE(p + 8);
      const method = dir.readUInt16LE(p + 10);
      const crc = dir.readUInt32LE(p + 16);
      let csize = dir.readUInt32LE(p + 20);
      let usize = dir.readUInt32LE(p + 24);
      const nameLen = dir.readUInt16LE(p + 28);
      const extraLen = dir.readUInt16LE(p + 30);
      const commentLen = dir.readUInt16LE(p + 32);
      let offset = dir.readUInt32LE(p + 42);
      const end = p + 46 + nameLen + extraLen + commentLen;
      if (end > dir.length) throw this.err(`central directory record #${i} is truncated`);
      const nameBytes = dir.subarray(p + 46, p + 46 + nameLen);
      const name = checkName(this.path, nameBytes);

      // Zip64 extra field (id 1): 8-byte values, present only for fields saturated at 0xFFFFFFFF.
      const extra = dir.subarray(p + 46 + nameLen, p + 46 + nameLen + extraLen);
      if (usize === 0xffffffff || csize === 0xffffffff || offset === 0xffffffff) {
        const z = findExtra(extra, 1);
        if (!z) throw this.err(`entry ${quote(name)} needs a zip64 extra field but has none`);
        let q = 0;
        const next = (what: string): number => {
          if (q + 8 > z.length) throw this.err(`entry ${quote(name)} zip64 extra field is truncated`);
          const v = this.u64(z, q, what);
          q += 8;
          return v;
        };
        if (usize === 0xffffffff) usize = next(`${quote(name)} size`);
        if (csize === 0xffffffff) csize = next(`${quote(name)} compressed size`);
        if (offset === 0xffffffff) offset = next(`${quote(name)} offset`);
      }

      if (flags & 1) throw this.err(`entry ${quote(name)} is encrypted`);
      if (method !== 0 && method !== 8) {
        throw this.err(`entry ${quote(name)} uses compression method ${method} (only stored/deflate are supported)`);
      }
      if (usize > this.maxEntryBytes) {
        throw this.err(`entry ${quote(name)} declares ${usize} bytes, over the ${this.maxEntryBytes}-byte limit`);
      }
      if (method === 0 && csize !== usize) {
        throw this.err(`stored entry ${quote(name)} has compressed size ${csize} != size ${usize}`);
      }
      if (offset + 30 + csize > this.fileSize) {
        throw this.err(`entry ${quote(name)} (${csize} bytes at offset ${offset}) extends past the end of the file`);
      }
      if (this.byName.has(name)) throw this.err(`duplicate entry ${quote(name)}`);
      this.byName.set(name, {
        name,
        method: method,
        compressedSize: csize,
        uncompressedSize: usize,
        crc32: crc,
        localHeaderOffset: offset,
      });
      p = end;
    }
  }

  /** The local header repeats the name and has its own extra field length (torch pads with it). */
  private localDataStart(e: ZipEntry): number {
    const h = this.readAt(e.localHeaderOffset, 30);
    if (h.readUInt32LE(0) !== SIG_LOCAL) throw this.err(`entry ${quote(e.name)} has a bad local header`);
    const nameLen = h.readUInt16LE(26);
    const extraLen = h.readUInt16LE(28);
    const localName = this.readAt(e.localHeaderOffset + 30, nameLen).toString('utf8');
    if (localName !== e.name) {
      throw this.err(`entry ${quote(e.name)} local header names ${quote(localName)} (inconsistent archive)`);
    }
    return e.localHeaderOffset + 30 + nameLen + extraLen;
  }

  private u64(buf: Buffer, at: number, what: string): number {
    const v = buf.readBigUInt64LE(at);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw this.err(`${what} ${v} is absurd`);
    return Number(v);
  }
}

/** Entry names are never used as paths, but a name that could escape a directory marks a hostile file. */
function checkName(path: string, bytes: Uint8Array): string {
  const name = Buffer.from(bytes).toString('utf8');
  const bad =
    name.length === 0
      ? 'is empty'
      : name.includes('\0')
        ? 'contains NUL'
        : name.includes('\\')
          ? 'contains a backslash'
          : name.startsWith('/') || /^[A-Za-z]:/.test(name)
            ? 'is an absolute path'
            : name.split('/').some((s) => s === '..')
              ? 'contains a ".." segment'
              : null;
  if (bad) throw new CheckpointError(`${path}: zip entry name ${quote(name)} ${bad}`);
  return name;
}

function findExtra(extra: Uint8Array, id: number): Buffer | null {
  const b = Buffer.from(extra.buffer, extra.byteOffset, extra.byteLength);
  for (let p = 0; p + 4 <= b.length;) {
    const len = b.readUInt16LE(p + 2);
    if (b.readUInt16LE(p) === id) return b.subarray(p + 4, Math.min(b.length, p + 4 + len));
    p += 4 + len;
  }
  return null;
}

function hex(n: number): string {
  return '0x' + n.toString(16).padStart(8, '0');
}

let crcTable: Uint32Array | null = null;

/** CRC-32 (IEEE). Uses zlib's native one where Node has it (>= 20.15), else a table loop. */
export function crc32(data: Uint8Array): number {
  const native = (zlib as unknown as { crc32?: (d: Uint8Array) => number }).crc32;
  if (native) return native(data) >>> 0;
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
