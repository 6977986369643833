/**
 * The wasm decoding kernel (src/model/kernels/decode.wat) against the JS path (io/blocks.ts decodeBlock):
 * every block shape, every F16 and BF16 bit pattern, bit-identical output (NaNs stay NaNs; the kernel
 * keeps their payloads, JS canonicalises them). And the embedded module is exactly the assembled .wat.
 */
import * as fs from 'fs';
import * as tf from '../src/tf';
import { initBackend } from '../src/backend';
import { allocateUninitialized, unwrittenHeapView } from '../src/model/wasm_heap';
import { Block, decodeBlock } from '../src/io/blocks';
import { DType } from '../src/io/dtype';
import { WasmBlockDecoder } from '../src/model/kernels/wasm_decoder';
import { assemble, kernelFiles, moduleSource } from '../tools/build_kernels';

beforeAll(() => initBackend({ backend: 'wasm', log: null }));

test('the embedded kernel module is the assembled .wat (run `npm run build:kernels` after editing it)', async () => {
  const files = kernelFiles();
  expect(files.length).toBeGreaterThan(0);
  for (const { wat, ts, variant } of files)
    expect(fs.readFileSync(ts, 'utf8')).toBe(moduleSource(wat, await assemble(wat, variant), variant));
});

/** A [rows, cols] matrix of `dtype` whose elements cycle through every 16-bit pattern (or random float32 bits). */
function matrixBytes(dtype: DType, rows: number, cols: number, seed: number): Uint8Array {
  const n = rows * cols;
  if (dtype === 'F32') {
    const f = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 1e3);
    return new Uint8Array(f.buffer);
  }
  const h = Uint16Array.from({ length: n }, (_, i) => (i * 40503 + seed) & 0xffff);
  return new Uint8Array(h.buffer);
}

const sameBits = (a: Float32Array, b: Float32Array) => {
  const [ua, ub] = [
    new Uint32Array(a.buffer, a.byteOffset, a.length),
    new Uint32Array(b.buffer, b.byteOffset, b.length),
  ];
  for (let i = 0; i < a.length; i++)
    if (ua[i] !== ub[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return `element ${i}: ${a[i]} vs ${b[i]}`;
  return 'same';
};

test.each(['F32', 'F16', 'BF16'] as DType[])(
  '%s: every block (whole, transposed, partial, odd sizes) decodes bit-identically to the JS path',
  (dtype) => {
    const shapes: [number, number][] = [
      [256, 256],
      [67, 130],
      [5, 3],
      [1, 9],
    ]; // 256x256 halves hold all 65536 patterns
    for (const [rows, cols] of shapes) {
      const bytes = matrixBytes(dtype, rows, cols, rows);
      const blocks: Block[] = [];
      for (const transposed of [false, true]) {
        blocks.push({ r0: 0, nr: rows, c0: 0, nc: cols, transposed });
        if (rows > 2 && cols > 3)
          blocks.push(
            { r0: 1, nr: rows - 2, c0: 3, nc: cols - 3, transposed },
            { r0: rows - 1, nr: 1, c0: 0, nc: cols, transposed },
          );
      }
      const decoder = WasmBlockDecoder.create(bytes.byteLength)!;
      expect(decoder).not.toBeNull();
      const outs = blocks.map((b) => allocateUninitialized([b.nr * b.nc], 'float32')!);
      try {
        // Views only after the last allocation: a heap growth detaches earlier ones.
        const input = decoder.input(bytes.byteLength);
        input.set(bytes);
        const views = outs.map((t) => unwrittenHeapView(t)!);
        decoder.decode(dtype, input, cols, blocks, views, 'm');
        blocks.forEach((b, j) => {
          const expected = new Float32Array(b.nr * b.nc);
          decodeBlock(dtype, bytes, cols, b, expected, 'm');
          expect(
            `${rows}x${cols} ${JSON.stringify(b)}: ${sameBits(outs[j].dataSync() as Float32Array, expected)}`,
          ).toBe(`${rows}x${cols} ${JSON.stringify(b)}: same`);
        });
      } finally {
        tf.dispose(outs);
        decoder.dispose();
      }
    }
  },
);

test('a block outside the tensor or larger than its output is refused before the kernel runs', () => {
  const decoder = WasmBlockDecoder.create(64)!;
  const out = allocateUninitialized([16], 'float32')!;
  try {
    const input = decoder.input(64);
    const view = unwrittenHeapView(out)!;
    expect(() =>
      decoder.decode('F16', input, 8, [{ r0: 1, nr: 4, c0: 0, nc: 8, transposed: true }], [view], 'w'),
    ).toThrow(/outside the tensor/);
    expect(() =>
      decoder.decode('F32', input, 4, [{ r0: 0, nr: 4, c0: 0, nc: 4, transposed: true }], [view.subarray(0, 8)], 'w'),
    ).toThrow(/does not fit/);
    expect(() => decoder.input(65)).toThrow(RangeError);
  } finally {
    out.dispose();
    decoder.dispose();
  }
});
