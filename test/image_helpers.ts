/** Shared helpers for the image tests: fixture paths, a tiny safetensors reader, hashing. */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

export const FIXTURES = path.join(__dirname, 'fixtures');
export const IMAGES = path.join(FIXTURES, 'images');
export const CASES = path.join(FIXTURES, 'cases');

export interface Tensor {
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

/**
 * Minimal read-only safetensors reader (whole file in memory), enough for the expected tensors.
 * TODO: switch to src/io/safetensors.ts once it lands.
 */
export class Expected {
  private readonly buf: Buffer;
  private readonly header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  private readonly base: number;

  constructor(readonly file: string) {
    this.buf = fs.readFileSync(file);
    const n = Number(this.buf.readBigUInt64LE(0));
    this.header = JSON.parse(this.buf.subarray(8, 8 + n).toString('utf8'));
    delete (this.header as Record<string, unknown>).__metadata__;
    this.base = 8 + n;
  }

  names(): string[] {
    return Object.keys(this.header);
  }

  read(name: string): Tensor {
    const h = this.header[name];
    if (!h) throw new Error(`${this.file}: no tensor ${name}`);
    const [a, b] = h.data_offsets;
    return { dtype: h.dtype, shape: h.shape, data: new Uint8Array(this.buf.subarray(this.base + a, this.base + b)) };
  }
}

export function sha256(data: Uint8Array): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

export function readJson<T = any>(file: string): T { // eslint-disable-line @typescript-eslint/no-explicit-any
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

/** Case folders that carry an expected.safetensors. */
export function casesWithExpected(): string[] {
  return fs
    .readdirSync(CASES)
    .filter((c) => fs.existsSync(path.join(CASES, c, 'expected.safetensors')))
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
