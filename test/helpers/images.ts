/** Shared helpers for the image tests: expected tensors (full or trimmed), hashing, PNG headers. Fixture paths live in golden.ts. */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { SafetensorsFile } from '../../src/io/safetensors';
import { crc32 } from '../../src/io/zip';
import { CASES, FIXTURES } from './golden';
import { readJson } from './json';

export { CASES, FIXTURES };
export const IMAGES = path.join(FIXTURES, 'images');

export interface Tensor {
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

/**
 * The expected tensors of a golden case: `expected.safetensors`, or the trimmed
 * `expected.subset.safetensors` + `subset.json` of the large cases, where some tensors (the s336
 * pixel_values) are stored only as the sha256 of their bytes (see tools/copy_fixtures.ts).
 */
export class Expected {
  private readonly hashes: Record<string, { sha256: string; shape: number[] }> = {};
  private readonly stored: Record<string, number[]> = {};

  private constructor(
    readonly file: string,
    subsetJson?: string,
  ) {
    const f = SafetensorsFile.open(file);
    for (const k of f.keys()) this.stored[k] = f.info(k).shape;
    f.close();
    if (subsetJson) {
      for (const [k, r] of Object.entries(
        readJson<{ rules: Record<string, { sha256?: string; shape?: number[] }> }>(subsetJson).rules,
      )) {
        if (r.sha256 && r.shape) this.hashes[k] = { sha256: r.sha256, shape: r.shape };
        // row-subset tensors are not image tensors: leave them out
        else delete this.stored[k];
      }
    }
  }

  /** null when the case has no expected tensors. */
  static forCase(caseDir: string): Expected | null {
    const full = path.join(caseDir, 'expected.safetensors');
    if (fs.existsSync(full)) return new Expected(full);
    const sub = path.join(caseDir, 'expected.subset.safetensors');
    if (fs.existsSync(sub)) return new Expected(sub, path.join(caseDir, 'subset.json'));
    return null;
  }

  names(): string[] {
    return [...Object.keys(this.stored), ...Object.keys(this.hashes)].sort();
  }

  has(name: string): boolean {
    return name in this.stored || name in this.hashes;
  }

  shape(name: string): number[] {
    const s = this.stored[name] ?? this.hashes[name]?.shape;
    if (!s) throw new Error(`${this.file}: no tensor ${name}`);
    return s;
  }

  /** The stored tensor (throws for hash-only tensors). */
  read(name: string): Tensor {
    if (!(name in this.stored)) throw new Error(`${this.file}: tensor ${name} is not stored (hash only?)`);
    const f = SafetensorsFile.open(this.file);
    try {
      return f.read(name);
    } finally {
      f.close();
    }
  }

  /** null if `bytes` equal the expected tensor (or its sha256), else a short description. */
  compare(name: string, bytes: Uint8Array): string | null {
    const h = this.hashes[name];
    if (h) return sha256(bytes) === h.sha256 ? null : `sha256 differs from ${h.sha256}`;
    return firstDiff(bytes, this.read(name).data);
  }
}

export function sha256(data: Uint8Array): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

export { readJson };

/** Case folders that carry expected tensors (full or trimmed). */
export function casesWithExpected(): string[] {
  return fs
    .readdirSync(CASES)
    .filter((c) => Expected.forCase(path.join(CASES, c)) !== null)
    .sort();
}

/** First differing index of two byte arrays and a short description, or null when equal. */
export function firstDiff(a: Uint8Array, b: Uint8Array): string | null {
  if (a.length !== b.length) return `length ${a.length} vs ${b.length}`;
  let count = 0;
  let first = -1;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      if (first < 0) first = i;
      count++;
    }
  }
  return first < 0 ? null : `${count} bytes differ, first at ${first}: ${a[first]} vs ${b[first]}`;
}

/** Float32 view of little-endian bytes (copies to get alignment). */
export function f32(data: Uint8Array): Float32Array {
  return new Float32Array(new Uint8Array(data).buffer);
}

/** A PNG of the given size whose pixel data is a few bytes: enough to be measured, not decoded. */
export function pngHeader(width: number, height: number, bitDepth = 8, colorType = 2): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([bitDepth, colorType, 0, 0, 0], 8); // default 8-bit RGB; colour type 6 = RGBA
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', zlib.deflateSync(Buffer.alloc(16))),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A PNG chunk: length, type, data and CRC. */
export function pngChunk(type: string, body: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([Buffer.from(type, 'latin1'), body])));
  return Buffer.concat([len, Buffer.from(type, 'latin1'), body, crc]);
}
