/**
 * The matchers of llava-vision-tfjs/testing under Jest's own expect.extend: each passes exactly at
 * its boundary and fails just past it, with the message checked; .not; every input kind; bad input.
 * (Vitest and the typings: test/testing_frameworks.test.ts.)
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '../src/tf';
import { writeSafetensors } from '../src/io/safetensors';
import { matchers, readReference, toBeAllClose } from '../src/testing';

expect.extend(matchers);

/** The next float64 above x (x > 0). */
function nextUp64(x: number): number {
  const b = new Float64Array([x]);
  new BigInt64Array(b.buffer)[0] += 1n;
  return b[0];
}
/** The next float32 above x (x > 0). */
function nextUp32(x: number): number {
  const b = new Float32Array([x]);
  new Int32Array(b.buffer)[0] += 1;
  return b[0];
}

/** The message of a failed expectation. */
function failure(assertion: () => void): string {
  try {
    assertion();
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('the expectation passed');
}

describe('toBeAllClose (numpy.allclose)', () => {
  // |a − e| ≤ atol + rtol·|e|: with atol 0.25, rtol 0.5 the tolerances are 0.75, 1.25, 2.25, all exact in float64.
  const expected = new Float64Array([1, 2, -4]);
  const options = { atol: 0.25, rtol: 0.5 };

  test('passes exactly at the boundary, element by element', () => {
    expect(new Float64Array([1.75, 0.75, -1.75])).toBeAllClose(expected, options);
    expect(new Float64Array([0.25, 3.25, -6.25])).toBeAllClose(expected, options);
  });

  test('fails one float64 ulp past it, naming the element, both values and the counts', () => {
    const message = failure(() =>
      expect(new Float64Array([1.75, 0.75, -nextUp64(6.25)])).toBeAllClose(expected, options),
    );
    expect(message).toContain('expect(received).toBeAllClose(expected)');
    expect(message).toContain(
      'shape [3]; |received − expected| ≤ atol + rtol·|expected| with atol 0.25, rtol 0.5 (numpy.allclose)',
    );
    expect(message).toContain('out of tolerance: 1 of 3 elements (33.3%)');
    expect(message).toContain(`worst at [2]: received ${-nextUp64(6.25)}, expected -4 (|difference| 2.25e+0)`);
    expect(message).toMatch(/max abs error 2\.25e\+0, max rel error 7\.50e-1, cosine similarity 0\.943535933/);
  });

  test("the default tolerances are numpy's (rtol 1e-5, atol 1e-8)", () => {
    expect([1e5 + 1]).toBeAllClose([1e5]); // 1 ≤ 1e-8 + 1e-5·1e5
    expect(failure(() => expect([1e5 + 1.01]).toBeAllClose([1e5]))).toContain('atol 1e-8, rtol 0.00001');
    expect([1e-8]).toBeAllClose([0]);
    expect(() => expect([nextUp64(1e-8)]).toBeAllClose([0])).toThrow(/out of tolerance: 1 of 1/);
  });

  test('the worst element is the one furthest past its tolerance, as a multi-index', () => {
    const message = failure(() =>
      expect([
        [1, 2, 3],
        [4, 5, 6],
      ]).toBeAllClose(
        [
          [1, 2, 3],
          [4, 5.2, 6.6],
        ],
        { atol: 0.1, rtol: 0 },
      ),
    );
    expect(message).toContain('shape [2, 3]');
    expect(message).toContain('out of tolerance: 2 of 6 elements (33.3%)');
    expect(message).toContain('worst at [1, 2]: received 6, expected 6.6');
  });

  test('the shape is checked first', () => {
    const message = failure(() => expect([[1, 2]]).toBeAllClose([1, 2]));
    expect(message).toBe('expect(received).toBeAllClose(expected)\n\nshape: received [1, 2], expected [2]');
    expect(() => expect(new Float32Array(3)).toBeAllClose([[0, 0]])).toThrow(
      /shape: received 3 values \(flat\), expected \[1, 2\]/,
    );
  });

  test('NaN fails unless equalNaN, ±Inf only equals the same infinity; both are counted in the message', () => {
    const message = failure(() => expect([NaN, 1]).toBeAllClose([NaN, 1]));
    expect(message).toContain('out of tolerance: 1 of 2 elements (50.0%)');
    expect(message).toContain('worst at [0]: received NaN, expected NaN');
    expect(message).toContain('NaN: received 1, expected 1; ±Inf: received 0, expected 0');
    expect([NaN, 1]).toBeAllClose([NaN, 1], { equalNaN: true });
    expect(() => expect([NaN, 1]).toBeAllClose([0, 1], { equalNaN: true })).toThrow(/NaN: received 1, expected 0/);
    expect([Infinity, -Infinity]).toBeAllClose([Infinity, -Infinity]);
    expect(failure(() => expect([Infinity]).toBeAllClose([-Infinity]))).toContain('±Inf: received 1, expected 1');
    expect(() => expect([Infinity]).toBeAllClose([1e308])).toThrow(/worst at \[0\]: received Inf, expected 1e\+308/);
  });

  test('.not passes when something is out of tolerance, and fails saying all are within', () => {
    expect([1, 2]).not.toBeAllClose([1, 2.1]);
    expect([[1, 2]]).not.toBeAllClose([1, 2]); // shapes differ: not close
    const message = failure(() => expect([1, 2]).not.toBeAllClose([1, 2]));
    expect(message).toContain('expect(received).not.toBeAllClose(expected)');
    expect(message).toContain('all 2 elements are within the tolerance, and .not expected some outside it');
  });

  test('takes tf.Tensors, typed arrays, nested arrays, EncodedTensors and numbers', () => {
    const t = tf.tensor2d([
      [1, 2],
      [3, 4],
    ]);
    expect(t).toBeAllClose([
      [1, 2],
      [3, 4],
    ]);
    expect(t).toBeAllClose(new Float32Array([1, 2, 3, 4])); // a bare typed array takes the other side's shape
    expect(t).toBeAllClose({ dtype: 'F32', shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) });
    expect(tf.scalar(3)).toBeAllClose(3);
    expect(new BigInt64Array([3n])).toBeAllClose([3]);
    expect(() => expect(t).toBeAllClose([1, 2, 3, 4])).toThrow(/shape: received \[2, 2\], expected \[4\]/);
    t.dispose();
    expect(() =>
      expect(t).toBeAllClose([
        [1, 2],
        [3, 4],
      ]),
    ).toThrow('toBeAllClose: received is a disposed tf.Tensor');
  });

  test('bad input is one line naming the argument', () => {
    expect(() => expect('x').toBeAllClose([1])).toThrow(
      'toBeAllClose: received must be a tf.Tensor, a typed array, nested arrays of numbers, { shape, data } (an EncodedTensor or a reference entry) or a number; got string',
    );
    expect(() =>
      expect([[1, 2], [3]]).toBeAllClose([
        [1, 2],
        [3, 4],
      ]),
    ).toThrow('toBeAllClose: received[1] is ragged: 1 entries where the first row has 2');
    expect(() => expect([1, '2']).toBeAllClose([1, 2])).toThrow('toBeAllClose: received[1] is string, not a number');
    expect(() => expect({ shape: [2], data: [1] }).toBeAllClose([1, 2])).toThrow(
      'toBeAllClose: received has 1 values but its shape [2] holds 2',
    );
    expect(() => expect([1]).toBeAllClose([1], { rtol: -1 })).toThrow(
      'toBeAllClose: option rtol must be a finite number >= 0, got -1',
    );
  });

  test('works without a test framework (no jest, no vitest at run time)', () => {
    const r = toBeAllClose([1], [1.5], { atol: 0.5, rtol: 0 });
    expect(r.pass).toBe(true);
    expect(toBeAllClose([1], [1.5 + 2 ** -52], { atol: 0.5, rtol: 0 }).pass).toBe(false);
  });
});

describe('toMatchReference (the parity rule)', () => {
  // limit = 4 · 0.25 + 0.125 = 1.125, exact in float32 and float64.
  const truth = {
    name: 'features',
    shape: [2],
    data: new Float32Array([2, -3]),
    meta: { torch_fp32_max_abs_err: 0.25, f32_storage_max_abs_err: 0.125 },
    file: 'ref.safetensors',
  };

  test("passes exactly at bound × PyTorch's error + storage, fails one float32 ulp past it", () => {
    expect(new Float32Array([3.125, -3])).toMatchReference(truth);
    expect(new Float32Array([2, -4.125])).toMatchReference(truth);
    const message = failure(() => expect(new Float32Array([nextUp32(3.125), -3])).toMatchReference(truth));
    expect(message).toBe(
      [
        'expect(received).toMatchReference(reference)',
        '',
        'reference "features" (ref.safetensors), shape [2]',
        "bound 4 × 2.50e-1 (PyTorch fp32's own error) + 1.25e-1 (float32 storage) = 1.13e+0",
        "max abs error / PyTorch fp32's error: 4.50 (bound 4)",
        'out of tolerance: 1 of 2 elements (50.0%)',
        'worst at [0]: received 3.1250002, reference 2 (|difference| 1.13e+0)',
        'max abs error 1.13e+0, max rel error 5.63e-1, cosine similarity 0.976374992',
      ].join('\n'),
    );
  });

  test("the bound option scales PyTorch's error", () => {
    const at8 = new Float32Array([2 + 8 * 0.25 + 0.125, -3]);
    expect(at8).toMatchReference(truth, { bound: 8 });
    expect(() => expect(at8).toMatchReference(truth)).toThrow(
      /max abs error \/ PyTorch fp32's error: 8\.50 \(bound 4\)/,
    );
    expect(() => expect(new Float32Array([nextUp32(4.125), -3])).toMatchReference(truth, { bound: 8 })).toThrow(
      /out of tolerance: 1 of 2/,
    );
  });

  test('an exact entry (pixel values) must be identical', () => {
    const pixels = { name: 'pixel_values', shape: [1, 2], data: new Float32Array([0.5, -1.75]), meta: { exact: true } };
    expect([[0.5, -1.75]]).toMatchReference(pixels);
    const message = failure(() => expect([[0.5, -nextUp32(1.75)]]).toMatchReference(pixels));
    expect(message).toContain('exact: the reference marks it as an input or a bit-exact value (e.g. pixel values)');
    expect(message).toContain('worst at [0, 1]: received -1.7500001, reference -1.75');
  });

  test('NaN or ±Inf never passes, and is counted', () => {
    const message = failure(() => expect(new Float32Array([NaN, -3])).toMatchReference(truth));
    expect(message).toContain('out of tolerance: 1 of 2 elements (50.0%)');
    expect(message).toContain('NaN: received 1, reference 0; ±Inf: received 0, reference 0');
    expect(() => expect([Infinity, -3]).toMatchReference({ ...truth, data: new Float32Array([Infinity, -3]) })).toThrow(
      /±Inf: received 1, reference 1/,
    );
  });

  test('.not, and the shape first', () => {
    expect(new Float32Array([4, -3])).not.toMatchReference(truth);
    expect(failure(() => expect(new Float32Array([2, -3])).not.toMatchReference(truth))).toContain(
      'all 2 elements are within the tolerance',
    );
    expect(failure(() => expect([[2, -3]]).toMatchReference(truth))).toBe(
      'expect(received).toMatchReference(reference)\n\nshape: received [1, 2], reference [2]',
    );
  });

  test('a reference without error metadata: the missing field is named (toBeAllClose still works)', () => {
    const bare = { ...truth, meta: {} };
    expect(() => expect([2, -3]).toMatchReference(bare)).toThrow(
      'toMatchReference: reference "features" (ref.safetensors) has no torch_fp32_max_abs_err in its metadata, so there is no bound to check against (write the reference with python/llava_vision_reference.py, or compare with toBeAllClose)',
    );
    expect(() => expect([2, -3]).not.toMatchReference(bare)).toThrow(/has no torch_fp32_max_abs_err/); // never a silent pass
    expect([2, -3]).toBeAllClose(bare);
    expect(() => expect([2, -3]).toMatchReference({ shape: [2], data: [2, -3] } as never)).toThrow(
      /has no metadata \(meta\)/,
    );
  });
});

describe('toHaveShape', () => {
  test('the exact shape passes, any other fails with both', () => {
    const t = tf.zeros([2, 3]);
    expect(t).toHaveShape([2, 3]);
    expect(failure(() => expect(t).toHaveShape([2, 3, 1]))).toBe(
      'expect(received).toHaveShape(shape)\n\nshape: received [2, 3], expected [2, 3, 1]',
    );
    expect(t).not.toHaveShape([3, 2]);
    expect(failure(() => expect(t).not.toHaveShape([2, 3]))).toBe(
      'expect(received).not.toHaveShape(shape)\n\nshape: received [2, 3], expected not [2, 3]',
    );
    expect([[1], [2]]).toHaveShape([2, 1]);
    expect(new Float32Array(4)).toHaveShape([4]);
    expect(failure(() => expect(new Float32Array(4)).toHaveShape([2, 2]))).toContain(
      'received [4] (a flat typed array)',
    );
    t.dispose();
  });
});

describe('reference files (readReference)', () => {
  let dir: string;
  beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-matchers-'))));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('entries carry their metadata to toMatchReference; a file without it still serves toBeAllClose', () => {
    const file = path.join(dir, 'ref.safetensors');
    const expected = {
      features: { torch_fp32_max_abs_err: 0.25, f32_storage_max_abs_err: 0.125 },
      pixel_values: { exact: true },
    };
    writeSafetensors(
      file,
      {
        features: { dtype: 'F32', shape: [1, 2], data: new Float32Array([2, -3]) },
        pixel_values: { dtype: 'F32', shape: [1, 1], data: new Float32Array([0.5]) },
      },
      { format: 'llava-vision-reference/1', expected: JSON.stringify(expected) },
    );
    const ref = readReference(file);
    expect(Object.keys(ref).sort()).toEqual(['features', 'pixel_values']);
    expect([[3.125, -3]]).toMatchReference(ref.features);
    expect(failure(() => expect([[nextUp32(3.125), -3]]).toMatchReference(ref.features))).toContain(
      `reference "features" (${file}), shape [1, 2]`,
    );
    expect([[0.5]]).toMatchReference(ref.pixel_values);

    const bare = path.join(dir, 'bare.safetensors');
    writeSafetensors(bare, { features: { dtype: 'F32', shape: [2], data: new Float32Array([2, -3]) } });
    const plain = readReference(bare);
    expect([2, -3]).toBeAllClose(plain.features);
    expect(() => expect([2, -3]).toMatchReference(plain.features)).toThrow(
      `reference "features" (${bare}) has no torch_fp32_max_abs_err`,
    );
  });

  test('bad metadata is one line naming the file, tensor and field', () => {
    const file = path.join(dir, 'bad.safetensors');
    const write = (expected: unknown) =>
      writeSafetensors(
        file,
        { features: { dtype: 'F32', shape: [1], data: new Float32Array(1) } },
        { expected: JSON.stringify(expected) },
      );
    write({ features: { torch_fp32_max_abs_err: -1 } });
    expect(() => readReference(file)).toThrow(
      `${file}: __metadata__.expected["features"].torch_fp32_max_abs_err must be a finite number >= 0, got -1`,
    );
    write({ projected: {} });
    expect(() => readReference(file)).toThrow(
      `${file}: __metadata__.expected describes tensor "projected", which the file does not hold`,
    );
    write([1]);
    expect(() => readReference(file)).toThrow(
      `${file}: __metadata__.expected must be a JSON object of tensor name -> fields`,
    );
  });
});
