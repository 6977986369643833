import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CheckpointError } from '../src/errors';
import {
  DTYPE_SIZE,
  DType,
  bf16BitsToF32,
  decodeToFloat32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
} from '../src/io/dtype';
import {
  SafetensorsFile,
  TensorToWrite,
  serializeSafetensors,
  writeSafetensors,
  writeSafetensorsStreaming,
} from '../src/io/safetensors';
import { writeFileAtomic } from '../src/io/atomic';
// The raw module object (not an import-star copy), so a spy on it is seen by src/io/safetensors.ts.
import fsRaw = require('fs');
import { readJson } from './helpers/json';

const FIX = path.join(__dirname, 'fixtures');
let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'st-test-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** float32 value with the given bits. */
function f32(bits: number): number {
  return new Float32Array(new Uint32Array([bits]).buffer)[0];
}
function f32Bits(x: number): number {
  return new Uint32Array(new Float32Array([x]).buffer)[0];
}
const hex = (n: number) => '0x' + n.toString(16).padStart(4, '0');

/** A safetensors file from a header (object or raw string) and data bytes; headerLen overrides the u64. */
function rawFile(name: string, header: unknown, data: Uint8Array | number = 0, headerLen?: bigint): string {
  const text = typeof header === 'string' ? Buffer.from(header, 'utf8') : Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLen ?? BigInt(text.length));
  const body = typeof data === 'number' ? Buffer.alloc(data) : Buffer.from(data);
  const p = path.join(tmp, name);
  fs.writeFileSync(p, Buffer.concat([len, text, body]));
  return p;
}

/** Expect SafetensorsFile.open(p) to throw a CheckpointError whose message matches every pattern. */
function expectOpenError(p: string, ...patterns: (string | RegExp)[]): void {
  let err: unknown;
  try {
    SafetensorsFile.open(p).close();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(CheckpointError);
  const msg = (err as Error).message;
  expect(msg).toContain(path.basename(p));
  for (const pat of patterns) {
    if (typeof pat === 'string') expect(msg).toContain(pat);
    else expect(msg).toMatch(pat);
  }
}

describe('float16 / bfloat16 conversions', () => {
  test('f16 decode of special bit patterns', () => {
    expect(Object.is(f16BitsToF32(0x0000), 0)).toBe(true);
    expect(Object.is(f16BitsToF32(0x8000), -0)).toBe(true);
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24); // smallest subnormal
    expect(f16BitsToF32(0x03ff)).toBe(1023 * 2 ** -24); // largest subnormal
    expect(f16BitsToF32(0x0400)).toBe(2 ** -14); // smallest normal
    expect(f16BitsToF32(0x3c00)).toBe(1);
    expect(f16BitsToF32(0xc000)).toBe(-2);
    expect(f16BitsToF32(0x3555)).toBe(0.333251953125);
    expect(f16BitsToF32(0x7bff)).toBe(65504);
    expect(f16BitsToF32(0xfbff)).toBe(-65504);
    expect(f16BitsToF32(0x7c00)).toBe(Infinity);
    expect(f16BitsToF32(0xfc00)).toBe(-Infinity);
    expect(f16BitsToF32(0x7e00)).toBeNaN();
    expect(f16BitsToF32(0x7c01)).toBeNaN();
  });

  test('f16 encode: known values, RNE ties, subnormals, overflow', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [0.1, 0x2e66],
      [65504, 0x7bff],
      [-65504, 0xfbff],
      [1 + 2 ** -11, 0x3c00], // tie between 0x3c00 and 0x3c01 -> even
      [1 + 3 * 2 ** -11, 0x3c02], // tie between 0x3c01 and 0x3c02 -> even
      [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above the tie
      [2049, 0x6800], // 2048 and 2050 representable; tie -> even (2048)
      [65519, 0x7bff],
      [65520, 0x7c00], // 65520 is the tie with the next (inf) step: overflows
      [1e5, 0x7c00],
      [-1e5, 0xfc00],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
      [1e-7, 0x0002],
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000],
      [-(2 ** -25), 0x8000], // tie to 0 (even)
      [f32(f32Bits(2 ** -25) + 1), 0x0001], // just above half the smallest subnormal
      [3 * 2 ** -25, 0x0002], // 1.5 subnormal units -> 2
      [1023 * 2 ** -24, 0x03ff],
      [1023.5 * 2 ** -24, 0x0400], // carry out of the subnormal range
      [2 ** -14, 0x0400],
      [1e-10, 0x0000],
      [f32(1), 0x0000], // f32 subnormal -> 0
    ];
    for (const [x, bits] of cases) expect([x, hex(f32ToF16Bits(x))]).toEqual([x, hex(bits)]);
    const nan = f32ToF16Bits(NaN);
    expect(nan & 0x7c00).toBe(0x7c00);
    expect(nan & 0x03ff).not.toBe(0);
  });

  test('f16: every non-NaN bit pattern round-trips exactly', () => {
    for (let b = 0; b < 65536; b++) {
      const x = f16BitsToF32(b);
      if (Number.isNaN(x)) continue;
      if (f32ToF16Bits(x) !== b) throw new Error(`f16 ${hex(b)} -> ${x} -> ${hex(f32ToF16Bits(x))}`);
      if (Math.fround(x) !== x) throw new Error(`f16 ${hex(b)} is not exactly a float32`);
    }
  });

  test('bf16 decode and encode', () => {
    expect(bf16BitsToF32(0x3f80)).toBe(1);
    expect(bf16BitsToF32(0x3dcd)).toBe(f32(0x3dcd0000));
    expect(Object.is(bf16BitsToF32(0x8000), -0)).toBe(true);
    expect(bf16BitsToF32(0x0001)).toBe(2 ** -133); // subnormal
    expect(bf16BitsToF32(0x7f80)).toBe(Infinity);
    expect(bf16BitsToF32(0xff80)).toBe(-Infinity);
    expect(bf16BitsToF32(0x7fc0)).toBeNaN();
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3f80],
      [0.1, 0x3dcd],
      [-2, 0xc000],
      [f32(0x3f808000), 0x3f80], // tie -> even
      [f32(0x3f818000), 0x3f82], // tie -> even (up)
      [f32(0x3f808001), 0x3f81], // above tie
      [f32(0x7f7f0000), 0x7f7f], // largest bf16
      [f32(0x7f7fffff), 0x7f80], // float32 max rounds up to inf
      [Infinity, 0x7f80],
      [-Infinity, 0xff80],
      [1e-40, 0x0001],
    ];
    for (const [x, bits] of cases) expect([x, hex(f32ToBf16Bits(x))]).toEqual([x, hex(bits)]);
    const nan = f32ToBf16Bits(NaN);
    expect(nan & 0x7f80).toBe(0x7f80);
    expect(nan & 0x007f).not.toBe(0); // not rounded to inf
  });

  test('bf16: every non-NaN bit pattern round-trips exactly', () => {
    for (let b = 0; b < 65536; b++) {
      const x = bf16BitsToF32(b);
      if (Number.isNaN(x)) continue;
      if (f32ToBf16Bits(x) !== b) throw new Error(`bf16 ${hex(b)} -> ${x} -> ${hex(f32ToBf16Bits(x))}`);
    }
  });

  test('matches the PyTorch bit patterns in generator_test_vectors.json', () => {
    const { vectors } = readJson<{
      vectors: {
        first_values: number[];
        first_values_f32_hex: string[];
        first_values_f16_hex: string[];
        first_values_bf16_hex: string[];
      }[];
    }>(path.join(FIX, 'generator_test_vectors.json'));
    expect(vectors.length).toBeGreaterThan(0);
    for (const v of vectors) {
      v.first_values_f32_hex.forEach((h, i) => {
        const x = f32(parseInt(h, 16));
        expect(x).toBe(v.first_values[i]);
        expect(hex(f32ToF16Bits(x))).toBe(v.first_values_f16_hex[i]);
        expect(hex(f32ToBf16Bits(x))).toBe(v.first_values_bf16_hex[i]);
      });
    }
  });

  test('decodeToFloat32: misaligned input, F64 rounding, integer dtypes refused', () => {
    const buf = new Uint8Array(1 + 4);
    new DataView(buf.buffer).setUint16(1, 0x3c00, true);
    new DataView(buf.buffer).setUint16(3, 0xc000, true);
    expect(Array.from(decodeToFloat32('F16', buf.subarray(1), 'x'))).toEqual([1, -2]);
    const f64 = new Float64Array([0.1, 1e300, -1e-50]);
    expect(Array.from(decodeToFloat32('F64', new Uint8Array(f64.buffer), 'x'))).toEqual([
      Math.fround(0.1),
      Infinity,
      -0,
    ]);
    const f32src = new Float32Array([1.5, -3]);
    const out = decodeToFloat32('F32', new Uint8Array(f32src.buffer), 'x');
    f32src[0] = 7; // the result must be a copy
    expect(Array.from(out)).toEqual([1.5, -3]);
    expect(() => decodeToFloat32('I32', new Uint8Array(4), 'ids')).toThrow(/"ids".*I32/);
    expect(() => decodeToFloat32('I64', new Uint8Array(8), 'ids')).toThrow(CheckpointError);
    expect(() => decodeToFloat32('F16', new Uint8Array(3), 'odd')).toThrow(/"odd"/);
  });
});

describe('writer / reader round trip', () => {
  const tensors: Record<string, TensorToWrite> = {
    f64: { dtype: 'F64', shape: [3], data: new Float64Array([0.1, -1e300, 5e-324]) },
    f32: { dtype: 'F32', shape: [2, 2], data: new Float32Array([1, -2.5, 3.25, Math.fround(0.1)]) },
    f16bits: { dtype: 'F16', shape: [3], data: new Uint16Array([0x3c00, 0x0001, 0xfc00]) },
    f16float: { dtype: 'F16', shape: [4], data: new Float32Array([0.1, 65504, 1e-7, -0]) },
    bf16bits: { dtype: 'BF16', shape: [2], data: new Uint16Array([0x3dcd, 0xbf80]) },
    bf16float: { dtype: 'BF16', shape: [2], data: new Float32Array([0.1, f32(0x3f818000)]) },
    i64: { dtype: 'I64', shape: [3], data: new BigInt64Array([1n, -2n, 2n ** 62n]) },
    i32: { dtype: 'I32', shape: [2], data: new Int32Array([-2147483648, 7]) },
    i16: { dtype: 'I16', shape: [2], data: new Int16Array([-32768, 32767]) },
    i8: { dtype: 'I8', shape: [2], data: new Int8Array([-128, 127]) },
    u8: { dtype: 'U8', shape: [1, 3], data: new Uint8Array([0, 128, 255]) },
    bool: { dtype: 'BOOL', shape: [3], data: new Uint8Array([1, 0, 1]) },
    scalar: { dtype: 'F32', shape: [], data: new Float32Array([42]) },
    empty: { dtype: 'F32', shape: [0, 5], data: new Float32Array(0) },
    rawf32: { dtype: 'F32', shape: [1], data: new Uint8Array(new Float32Array([-7.5]).buffer) },
  };
  const bytesOf = (a: ArrayBufferView) => Array.from(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));

  test('every dtype survives write -> read', () => {
    const p = path.join(tmp, 'all.safetensors');
    writeSafetensors(p, tensors, { format: 'pt', note: 'héllo' });
    const f = SafetensorsFile.open(p);
    try {
      expect(f.metadata).toEqual({ format: 'pt', note: 'héllo' });
      expect(f.keys()).toEqual(Object.keys(tensors).sort());
      for (const [name, t] of Object.entries(tensors)) {
        const info = f.info(name);
        expect([name, info.dtype, info.shape]).toEqual([name, t.dtype, t.shape]);
        expect(info.end - info.begin).toBe(t.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[t.dtype]);
        const raw = f.read(name);
        expect(raw.dtype).toBe(t.dtype);
        if (t.data instanceof Float32Array && (t.dtype === 'F16' || t.dtype === 'BF16')) {
          const conv = t.dtype === 'F16' ? f32ToF16Bits : f32ToBf16Bits;
          expect(bytesOf(raw.data)).toEqual(bytesOf(Uint16Array.from(t.data, conv)));
        } else {
          expect(bytesOf(raw.data)).toEqual(bytesOf(t.data));
        }
      }
      expect(Array.from(f.readFloat32('f64'))).toEqual([Math.fround(0.1), -Infinity, 0]);
      expect(Array.from(f.readFloat32('f32'))).toEqual([1, -2.5, 3.25, Math.fround(0.1)]);
      expect(Array.from(f.readFloat32('f16bits'))).toEqual([1, 2 ** -24, -Infinity]);
      expect(Array.from(f.readFloat32('f16float'))).toEqual([f16BitsToF32(0x2e66), 65504, 2 * 2 ** -24, -0]);
      expect(Array.from(f.readFloat32('bf16bits'))).toEqual([f32(0x3dcd0000), -1]);
      expect(Array.from(f.readFloat32('bf16float'))).toEqual([f32(0x3dcd0000), f32(0x3f820000)]);
      expect(Array.from(f.readFloat32('scalar'))).toEqual([42]);
      expect(f.readFloat32('empty').length).toBe(0);
      expect(Array.from(f.readFloat32('rawf32'))).toEqual([-7.5]);
      expect(Array.from(new BigInt64Array(f.readBytes('i64').buffer))).toEqual([1n, -2n, 2n ** 62n]);
      for (const name of ['i64', 'i32', 'i16', 'i8', 'u8', 'bool']) {
        expect(() => f.readFloat32(name)).toThrow(new RegExp(`all\\.safetensors.*"${name}".*float32`));
      }
    } finally {
      f.close();
    }
    expect(fs.readdirSync(tmp).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });

  test('serialize == file bytes; header sorted, space-padded to 8 bytes', () => {
    const t: Record<string, TensorToWrite> = {
      b: { dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) },
      '9': { dtype: 'U8', shape: [1], data: new Uint8Array([9]) },
      '10': { dtype: 'U8', shape: [1], data: new Uint8Array([10]) },
      a: { dtype: 'F16', shape: [1], data: new Uint16Array([0x3c00]) },
    };
    const buf = serializeSafetensors(t, { k: 'v' });
    const p = path.join(tmp, 'sorted.safetensors');
    writeSafetensors(p, t, { k: 'v' });
    expect(Buffer.compare(fs.readFileSync(p), buf)).toBe(0);
    const n = Number(buf.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const text = buf.subarray(8, 8 + n).toString('utf8');
    expect(text).toMatch(/^\{.*\} *$/);
    const order = ['"__metadata__"', '"10"', '"9"', '"a"', '"b"'].map((k) => text.indexOf(k));
    expect(order.every((x) => x >= 0)).toBe(true);
    expect([...order].sort((x, y) => x - y)).toEqual(order);
    // data region in sorted-name order: 10, 9, a (2 bytes), b
    expect(Array.from(buf.subarray(8 + n))).toEqual([10, 9, 0x00, 0x3c, 1, 2, 3]);
    const h = JSON.parse(text) as Record<string, unknown>;
    expect(h.a).toEqual({ dtype: 'F16', shape: [1], data_offsets: [2, 4] });
  });

  test('writer rejects data that disagrees with dtype/shape', () => {
    const bad: [TensorToWrite, RegExp][] = [
      [{ dtype: 'F32', shape: [2, 3], data: new Float32Array(5) }, /"t".*5 elements.*F32 \[2, 3\] has 6/],
      [{ dtype: 'F32', shape: [2], data: new Uint8Array(7) }, /"t".*7 bytes.*needs 8/],
      [{ dtype: 'F64', shape: [2], data: new Float32Array(2) }, /"t".*Float32Array.*F64/],
      [{ dtype: 'I32', shape: [-1], data: new Int32Array(0) }, /"t".*shape/],
      [{ dtype: 'X9' as DType, shape: [1], data: new Uint8Array(1) }, /"t".*unknown dtype "X9"/],
      [{ dtype: 'BOOL', shape: [2], data: new Uint8Array([0, 2]) }, /"t".*BOOL/],
    ];
    for (const [t, re] of bad) {
      expect(() => serializeSafetensors({ t })).toThrow(CheckpointError);
      expect(() => serializeSafetensors({ t })).toThrow(re);
    }
    expect(() => serializeSafetensors({}, { n: 1 as unknown as string })).toThrow(/metadata.*"n"/);
  });

  test('readBytes reads only the tensor, at its offset (fs.readSync)', () => {
    const p = path.join(tmp, 'partial.safetensors');
    writeSafetensors(p, {
      big: { dtype: 'F32', shape: [1000], data: new Float32Array(1000).fill(1) },
      small: { dtype: 'F32', shape: [2], data: new Float32Array([5, 6]) },
    });
    const f = SafetensorsFile.open(p);
    const spy = jest.spyOn(fsRaw, 'readSync');
    try {
      expect(Array.from(f.readFloat32('small'))).toEqual([5, 6]);
      // readSync(fd, buffer, offset, length, position): sum the lengths asked for.
      const calls = spy.mock.calls as unknown as [number, Uint8Array, number, number, number][];
      expect(calls.reduce((s, c) => s + c[3], 0)).toBe(8);
      expect(calls[0][4]).toBe(f.dataStart + f.info('small').begin);
    } finally {
      spy.mockRestore();
      f.close();
    }
    expect(() => f.readBytes('small')).toThrow(/closed/);
  });
});

describe('golden fixtures load', () => {
  const sum = (a: Float32Array) => a.reduce((s, x) => s + x, 0);

  test('F16 vision tower', () => {
    const f = SafetensorsFile.open(path.join(FIX, 'cases/tiny_clip_vision_only_f16/model/model.safetensors'));
    try {
      expect(f.keys().length).toBe(39);
      expect(f.metadata).toEqual({ format: 'pt' });
      expect(f.dataStart % 8).toBe(0);
      const w = f.readFloat32('vision_model.embeddings.patch_embedding.weight');
      expect(f.info('vision_model.embeddings.patch_embedding.weight')).toMatchObject({
        dtype: 'F16',
        shape: [48, 3, 14, 14],
      });
      expect(w.length).toBe(48 * 3 * 14 * 14);
      expect(Array.from(w.subarray(0, 3))).toEqual([0.058929443359375, 0.0287017822265625, -0.0037631988525390625]);
      expect(sum(w)).toBeCloseTo(4.228094518184662, 9);
      const ln = f.readFloat32('vision_model.post_layernorm.weight');
      expect(Array.from(ln.subarray(0, 3))).toEqual([1.0869140625, 0.97900390625, 1.048828125]);
      expect(sum(ln)).toBe(48.52099609375);
    } finally {
      f.close();
    }
  });

  test('BF16 llava-hf checkpoint', () => {
    const f = SafetensorsFile.open(
      path.join(FIX, 'cases/tiny_llavahf_model_prefixed_default_bf16/model/model.safetensors'),
    );
    try {
      expect(f.keys().length).toBe(46);
      const w = f.readFloat32('model.multi_modal_projector.linear_1.weight');
      expect(f.info('model.multi_modal_projector.linear_1.weight')).toMatchObject({ dtype: 'BF16', shape: [48, 32] });
      expect(Array.from(w.subarray(0, 3))).toEqual([-0.07373046875, 0.059814453125, -0.09423828125]);
      expect(sum(w)).toBeCloseTo(3.7316951751708984, 9);
    } finally {
      f.close();
    }
  });

  test('F32 + U8 expected tensors', () => {
    const f = SafetensorsFile.open(path.join(FIX, 'cases/tiny_clip_full_layout_f32/expected.safetensors'));
    try {
      expect(f.keys().length).toBe(28);
      expect(f.metadata).toEqual({ format: 'pt', producer: 'llava-vision reference harness' });
      const u8 = f.read('foo3x5x4indexed.png.resized_u8');
      expect(u8).toMatchObject({ dtype: 'U8', shape: [28, 46, 3] });
      expect(Array.from(u8.data.subarray(0, 3))).toEqual([119, 0, 255]);
      expect(u8.data.reduce((s, x) => s + x, 0)).toBe(466623);
      const pv = f.readFloat32('tiny_gray_19x33.png.pixel_values');
      expect(pv.length).toBe(3 * 28 * 28);
      expect(pv[0]).toBe(Math.fround(-0.2010340541601181));
      expect(sum(pv)).toBeCloseTo(-739.5587156639667, 6);
    } finally {
      f.close();
    }
  });
});

describe('malformed files are rejected with a precise message', () => {
  const good = () =>
    serializeSafetensors({
      'a.weight': { dtype: 'F32', shape: [5, 4], data: new Float32Array(20) },
      'b.bias': { dtype: 'F32', shape: [4], data: new Float32Array(4) },
    });

  test('truncated in the data region', () => {
    const b = good();
    const p = path.join(tmp, 'truncated.safetensors');
    fs.writeFileSync(p, b.subarray(0, b.length - 10));
    expectOpenError(p, '"b.bias"', 'past the end of the data region', 'truncated');
  });

  test('shorter than 8 bytes', () => {
    const p = path.join(tmp, 'tiny.safetensors');
    fs.writeFileSync(p, Buffer.from([1, 2, 3]));
    expectOpenError(p, 'too short');
  });

  test('header length larger than the file (incl. > 2^53)', () => {
    expectOpenError(rawFile('hlen.safetensors', {}, 0, 1000n), 'header length 1000', 'larger than the rest');
    expectOpenError(rawFile('hlen2.safetensors', {}, 0, 2n ** 63n), `header length ${2n ** 63n}`);
  });

  test('header length over the 100 MB cap', () => {
    const p = path.join(tmp, 'huge.safetensors');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(100 * 1024 * 1024 + 1));
    fs.writeFileSync(p, len);
    fs.truncateSync(p, 101 * 1024 * 1024); // sparse: no real disk use
    expectOpenError(p, 'exceeds', 'cap');
  });

  test('header not JSON / not UTF-8 / not an object', () => {
    expectOpenError(rawFile('notjson.safetensors', '{"a": [1, 2'), 'header is not valid JSON');
    const p = path.join(tmp, 'latin1.safetensors');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(4n);
    fs.writeFileSync(p, Buffer.concat([len, Buffer.from([0x22, 0xff, 0x22, 0x20])]));
    expectOpenError(p, 'header is not valid UTF-8');
    expectOpenError(rawFile('array.safetensors', '[1, 2]'), 'not a JSON object');
  });

  test('offsets past the data region', () => {
    expectOpenError(
      rawFile('past.safetensors', { x: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } }, 16),
      '"x"',
      '[8, 24]',
      'past the end of the data region (16 bytes)',
    );
  });

  test('overlapping tensors', () => {
    expectOpenError(
      rawFile(
        'overlap.safetensors',
        {
          x: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
          y: { dtype: 'F32', shape: [2], data_offsets: [12, 20] },
        },
        20,
      ),
      '"x" [0, 16]',
      '"y" [12, 20]',
      'overlap',
    );
  });

  test('byte length != elements x dtype size', () => {
    expectOpenError(
      rawFile('size.safetensors', { 'a.weight': { dtype: 'F16', shape: [5, 4], data_offsets: [0, 80] } }, 80),
      'tensor "a.weight": data_offsets [0, 80] give 80 bytes but F16 [5, 4] needs 40',
    );
    expectOpenError(
      rawFile('scalar.safetensors', { s: { dtype: 'F64', shape: [], data_offsets: [0, 4] } }, 8),
      '"s"',
      'give 4 bytes but F64 [] needs 8',
    );
  });

  test('unknown dtype, bad shape, bad offsets, extra fields, bad metadata', () => {
    const one = (entry: unknown, name: string) => rawFile(name, { t: entry }, 64);
    expectOpenError(
      one({ dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] }, 'dt.safetensors'),
      '"t"',
      'unknown dtype "F8_E4M3"',
    );
    expectOpenError(one({ shape: [1], data_offsets: [0, 1] }, 'nodt.safetensors'), '"t"', 'unknown dtype');
    expectOpenError(
      one({ dtype: 'F32', shape: [-1, 4], data_offsets: [0, 16] }, 'neg.safetensors'),
      '"t"',
      'shape [-1,4]',
      'non-negative integers',
    );
    expectOpenError(
      one({ dtype: 'F32', shape: [2.5], data_offsets: [0, 10] }, 'frac.safetensors'),
      '"t"',
      'shape [2.5]',
    );
    expectOpenError(one({ dtype: 'F32', shape: '4', data_offsets: [0, 16] }, 'str.safetensors'), '"t"', 'shape "4"');
    expectOpenError(one({ dtype: 'F32', shape: [1], data_offsets: [4, 0] }, 'rev.safetensors'), '"t"', 'begin > end');
    expectOpenError(
      one({ dtype: 'F32', shape: [1], data_offsets: [0] }, 'off1.safetensors'),
      '"t"',
      'data_offsets [0]',
    );
    expectOpenError(
      one({ dtype: 'F32', shape: [1], data_offsets: [0, 4], extra: 1 }, 'extra.safetensors'),
      '"t"',
      'unknown field(s) "extra"',
    );
    expectOpenError(one([1], 'arr.safetensors'), '"t"', 'not an object');
    expectOpenError(
      rawFile('meta.safetensors', { __metadata__: { total_size: 5 } }),
      '__metadata__',
      '"total_size"',
      'not a string',
    );
    expectOpenError(rawFile('meta2.safetensors', { __metadata__: 'pt' }), '__metadata__', 'object');
  });

  test('empty header and zero-size tensors are fine', () => {
    const p = rawFile('empty.safetensors', {
      __metadata__: { a: 'b' },
      z: { dtype: 'F32', shape: [0], data_offsets: [0, 0] },
    });
    const f = SafetensorsFile.open(p);
    expect(f.keys()).toEqual(['z']);
    expect(f.readFloat32('z').length).toBe(0);
    f.close();
  });

  test('unknown tensor name', () => {
    const p = path.join(tmp, 'good.safetensors');
    fs.writeFileSync(p, good());
    const f = SafetensorsFile.open(p);
    try {
      expect(f.has('a.weight')).toBe(true);
      expect(f.has('nope')).toBe(false);
      expect(() => f.info('nope')).toThrow(CheckpointError);
      expect(() => f.readFloat32('nope')).toThrow(/good\.safetensors.*no tensor "nope"/);
    } finally {
      f.close();
    }
    expect(() => SafetensorsFile.open(path.join(tmp, 'missing.safetensors'))).toThrow(
      /missing\.safetensors.*cannot open/,
    );
  });
});

describe('atomic writes', () => {
  test('a failing safetensors write leaves the old file intact and no temp file', () => {
    const p = path.join(tmp, 'atomic', 'model.safetensors');
    fs.mkdirSync(path.dirname(p));
    writeSafetensors(p, { x: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) } });
    const before = fs.readFileSync(p);
    expect(() =>
      writeSafetensors(p, {
        a: { dtype: 'F32', shape: [2], data: new Float32Array([3, 4]) },
        x: { dtype: 'F32', shape: [3, 3], data: new Float32Array(4) },
      }),
    ).toThrow(/"x"/);
    expect(Buffer.compare(fs.readFileSync(p), before)).toBe(0);
    expect(fs.readdirSync(path.dirname(p))).toEqual(['model.safetensors']);
  });

  test('writeSafetensorsStreaming: same bytes as writeSafetensors, one producer call per tensor in name order; a wrong byte count or duplicate name keeps the old file', () => {
    const dir = path.join(tmp, 'streaming');
    fs.mkdirSync(dir);
    const [a, b] = [path.join(dir, 'a.safetensors'), path.join(dir, 'b.safetensors')];
    const record: Record<string, TensorToWrite> = {
      'layers.10.w': { dtype: 'F16', shape: [2], data: new Uint16Array([0x3c00, 0xc000]) },
      'layers.9.w': { dtype: 'F32', shape: [1, 2], data: new Float32Array([1.5, -2]) },
      '2': { dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) },
    };
    writeSafetensors(a, record, { note: 'x' });
    const calls: string[] = [];
    const streamed = Object.entries(record).map(([name, t]) => ({
      name,
      dtype: t.dtype,
      shape: t.shape,
      bytes: () => (calls.push(name), new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)),
    }));
    writeSafetensorsStreaming(b, streamed, { note: 'x' });
    expect(Buffer.compare(fs.readFileSync(b), fs.readFileSync(a))).toBe(0);
    expect(calls).toEqual(['2', 'layers.10.w', 'layers.9.w']);
    const before = fs.readFileSync(b);
    const short = streamed.map((t) => (t.name === 'layers.9.w' ? { ...t, bytes: () => new Uint8Array(4) } : t));
    expect(() => writeSafetensorsStreaming(b, short)).toThrow(
      /"layers\.9\.w": 4 bytes produced but F32 \[1, 2\] needs 8/,
    );
    expect(() => writeSafetensorsStreaming(b, [...streamed, streamed[0]])).toThrow(/duplicate name/);
    expect(() => writeSafetensorsStreaming(b, [{ ...streamed[0], dtype: 'F8' as never }])).toThrow(/unknown dtype/);
    expect(Buffer.compare(fs.readFileSync(b), before)).toBe(0);
    expect(fs.readdirSync(dir).sort()).toEqual(['a.safetensors', 'b.safetensors']);
  });

  test('writeFileAtomic: error mid-write removes the temp file; success replaces the target', () => {
    const dir = path.join(tmp, 'atomic2');
    fs.mkdirSync(dir);
    const p = path.join(dir, 'out.bin');
    fs.writeFileSync(p, 'old');
    expect(() =>
      writeFileAtomic(p, (fd) => {
        fs.writeSync(fd, 'partial new content');
        throw new Error('disk on fire');
      }),
    ).toThrow('disk on fire');
    expect(fs.readFileSync(p, 'utf8')).toBe('old');
    expect(fs.readdirSync(dir)).toEqual(['out.bin']);
    writeFileAtomic(p, new Uint8Array([110, 101, 119]));
    expect(fs.readFileSync(p, 'utf8')).toBe('new');
    expect(fs.readdirSync(dir)).toEqual(['out.bin']);
  });
});
