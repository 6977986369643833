/**
 * Derived weight layouts (per-head / per-block parts, weight-left kernels) and the scratch-buffer load
 * path: whatever the layout, a loaded model exports exactly the checkpoint's tensors, and reading into a
 * reused buffer gives exactly what a fresh read gives.
 */
import * as path from 'path';
import * as tf from '../src/tf';
import { initBackend, prefaultMemory } from '../src/backend';
import { unwrittenHeapView } from '../src/model/wasm_heap';
import { CLIPVisionTower } from '../src/api/vision_tower';
import { readVisionConfig } from '../src/loading/sources';
import { Checkpoint } from '../src/io/checkpoint';
import { SafetensorsFile } from '../src/io/safetensors';
import { Linear } from '../src/model/linear';
import { decodeBlock, transposeRegion, untransposeRegion } from '../src/io/blocks';

import { countVariables, namedParams } from '../src/model/module';
import { CLIPVisionModel } from '../src/model/vision_transformer';
import { disposeWeights, exportWeights, loadWeights, readParam } from '../src/model/weights';
import { CASES, maxAbsDiff } from './helpers/golden';

beforeAll(() => initBackend({ log: null }));

const countParams = (m: CLIPVisionModel, keep: (path: string) => boolean) =>
  [...namedParams(m)]
    .filter(([path]) => keep(path))
    .reduce((n, [, p]) => n + p.checkpointShape.reduce((a, b) => a * b, 1), 0);
const random = (n: number, seed: number) =>
  Float32Array.from({ length: n }, (_, i) => (Math.sin(i * 12.9898 + seed) * 43758.5453) % 1);

test('transposeRegion / untransposeRegion: any block of any matrix, with and without an output array', () => {
  for (const [rows, cols, r0, nr, c0, nc] of [
    [7, 5, 0, 7, 0, 5],
    [70, 130, 3, 61, 7, 101],
    [128, 64, 64, 64, 0, 64],
    [9, 9, 2, 3, 4, 5],
  ]) {
    const data = random(rows * cols, rows);
    const scratch = new Float32Array(nr * nc + 7);
    const expected = new Float32Array(nr * nc);
    const region = new Float32Array(rows * cols);
    for (let r = 0; r < nr; r++) {
      for (let c = 0; c < nc; c++) {
        expected[c * nr + r] = data[(r0 + r) * cols + c0 + c];
        region[(r0 + r) * cols + c0 + c] = data[(r0 + r) * cols + c0 + c];
      }
    }
    for (const t of [
      transposeRegion(data, cols, r0, nr, c0, nc),
      transposeRegion(data, cols, r0, nr, c0, nc, scratch),
    ]) {
      expect(t).toEqual(expected);
      const back = new Float32Array(rows * cols);
      untransposeRegion(t, back, cols, r0, nr, c0, nc);
      expect(back).toEqual(region);
    }
  }
});

test.each([
  ['whole', {}],
  ['split along outputs', { split: { along: 'out' as const, parts: 4 } }],
  ['split along inputs', { split: { along: 'in' as const, parts: 3 } }],
  ['weight left, split along outputs', { split: { along: 'out' as const, parts: 2 }, weightLeft: true }],
  ['weight left, whole', { weightLeft: true }],
])(
  'Linear %s: split/join round-trips the checkpoint tensors and every forward path equals x·Wᵀ + b',
  (_name, layout) => {
    const [inF, outF, rows] = [6, 8, 5];
    const linear = new Linear({ inFeatures: inF, outFeatures: outF, ...layout });
    const w = random(outF * inF, 1);
    const b = random(outF, 2);
    const source = {
      source: 'mem',
      has: () => true,
      info: (n: string) => ({ shape: n === 'weight' ? [outF, inF] : [outF], dtype: 'F32' }),
      readFloat32: (n: string) => (n === 'weight' ? w : b),
    };
    loadWeights(linear, source);
    const params = linear.params();
    expect(readParam(params.weight)).toEqual(w);
    expect(readParam(params.bias)).toEqual(b);
    expect(countVariables(linear)).toBe(linear.weights.length);

    const x = tf.tensor2d(random(rows * inF, 3), [rows, inF]);
    const expected = tf.tidy(() => tf.add(tf.matMul(x, tf.tensor2d(w, [outF, inF]), false, true), tf.tensor1d(b)));
    const close = (t: tf.Tensor) =>
      expect(tf.tidy(() => tf.max(tf.abs(tf.sub(t, expected))).dataSync()[0])).toBeLessThan(1e-6);
    const viaCall = linear.call(x);
    close(viaCall);
    const direct = tf.tidy(() => {
      const inputs = linear.splitAlong === 'in' && linear.parts > 1 ? tf.split<tf.Tensor2D>(x, linear.parts, 1) : [x];
      return tf.concat(linear.forwardParts(inputs), 1);
    });
    close(direct);
    tf.dispose([x, expected, viaCall, direct]);
    disposeWeights(linear);
  },
);

test.each([
  ['tiny_clip_vision_only_f16', 'F16'],
  ['tiny_clip_full_layout_f32', 'F32'],
])('%s: a loaded tower (per-head and per-block parts) exports exactly its checkpoint tensors', (name) => {
  const dir = path.join(CASES, name, 'model');
  const file = Checkpoint.open(dir);
  const model = new CLIPVisionModel(readVisionConfig(dir), { trainable: false });
  try {
    expect(countVariables(model)).toBeGreaterThan([...namedParams(model)].length); // the derived layouts are in use
    loadWeights(model, file);
    for (const [key, t] of Object.entries(exportWeights(model)))
      expect(Buffer.from(t.data.buffer).equals(Buffer.from(file.readFloat32(key).buffer))).toBe(true);
  } finally {
    file.close();
    disposeWeights(model);
  }
});

test.each(['tiny_clip_vision_only_f16', 'tiny_llavahf_model_prefixed_default_bf16', 'tiny_clip_full_layout_f32'])(
  '%s: decodeBlock of every block shape (whole, rows, columns, transposed) equals slicing the decoded tensor',
  (name) => {
    const file = SafetensorsFile.open(path.join(CASES, name, 'model', 'model.safetensors'));
    try {
      // Every distinct 2-D shape once: the blocks below are cut from each.
      const shapes = new Map(
        file
          .keys()
          .filter((k) => ['F32', 'F16', 'BF16'].includes(file.info(k).dtype) && file.info(k).shape.length === 2)
          .map((k) => [file.info(k).shape.join('x'), k]),
      );
      const keys = [...shapes.values()];
      expect(keys.length).toBeGreaterThan(0);
      for (const key of keys) {
        const {
          dtype,
          shape: [rows, cols],
        } = file.info(key);
        const full = file.readFloat32(key);
        // Misaligned bytes too: a tensor's bytes at an odd offset of a larger buffer.
        const raw = file.readBytes(key);
        const shifted = new Uint8Array(raw.length + 2).subarray(2);
        shifted.set(raw);
        for (const bytes of [raw, shifted]) {
          for (const [r0, nr, c0, nc] of [
            [0, rows, 0, cols],
            [1, rows - 2, 0, cols],
            [0, rows, 1, cols - 3],
            [2, rows - 3, 3, cols - 4],
          ]) {
            for (const transposed of [false, true]) {
              const out = new Float32Array(nr * nc + 5).fill(7);
              decodeBlock(dtype, bytes, cols, { r0, nr, c0, nc, transposed }, out, key);
              const expected = new Float32Array(nr * nc);
              for (let r = 0; r < nr; r++)
                for (let c = 0; c < nc; c++)
                  expected[transposed ? c * nr + r : r * nc + c] = full[(r0 + r) * cols + c0 + c];
              expect(out.subarray(0, nr * nc)).toEqual(expected);
              expect([...out.subarray(nr * nc)]).toEqual([7, 7, 7, 7, 7]); // nothing written past the block
            }
          }
        }
        expect(() =>
          decodeBlock(
            dtype,
            raw,
            cols,
            { r0: 0, nr: rows, c0: 0, nc: cols, transposed: true },
            new Float32Array(2),
            key,
          ),
        ).toThrow(RangeError);
        expect(() =>
          decodeBlock(dtype, raw, cols, { r0: 1, nr: rows, c0: 0, nc: cols, transposed: false }, full.slice(), key),
        ).toThrow(/outside/);
      }
    } finally {
      file.close();
    }
  },
);

test('a module built for loading is filled in place on wasm (same data ids); a reload after a forward gives new tensors and new outputs', () => {
  const [inF, outF] = [6, 8];
  const linear = new Linear({
    inFeatures: inF,
    outFeatures: outF,
    split: { along: 'out', parts: 2 },
    init: 'uninitialised',
  });
  const w = random(outF * inF, 4);
  const b = random(outF, 5);
  const source = (weight: Float32Array) => ({
    source: 'mem',
    has: () => true,
    info: (n: string) => ({ shape: n === 'weight' ? [outF, inF] : [outF], dtype: 'F32' }),
    readFloat32: (n: string) => (n === 'weight' ? weight : b),
  });
  const x = tf.tensor2d(random(3 * inF, 6), [3, inF]);
  const expected = (weight: Float32Array) =>
    tf.tidy(() => tf.add(tf.matMul(x, tf.tensor2d(weight, [outF, inF]), false, true), tf.tensor1d(b)).dataSync());
  const ids = linear.weights.map((v) => v.read().dataId);
  const before = tf.memory().numTensors;
  loadWeights(linear, source(w));
  expect(tf.memory().numTensors).toBe(before);
  expect(linear.weights.every((v, i) => v.read().dataId === ids[i])).toBe(tf.getBackend() === 'wasm');
  const y1 = tf.tidy(() => linear.call(x).dataSync());
  expect(maxAbsDiff(y1, expected(w))).toBeLessThan(1e-6);
  // The forward's GEMMs have seen the weights (XNNPACK keeps packed copies by tensor): a reload must
  // make new tensors, or the next forward would still use the old values. A clone keeps the old data.
  const clone = tf.clone(linear.kernels[0].read());
  const held = clone.dataSync().slice();
  const w2 = w.map((v) => v + 1);
  loadWeights(linear, source(w2));
  expect(linear.weights.some((v, i) => v.read().dataId === ids[i])).toBe(false);
  expect(tf.memory().numTensors).toBe(before + 1); // the clone
  expect(clone.dataSync()).toEqual(held);
  expect(readParam(linear.params().weight)).toEqual(w2);
  const y2 = tf.tidy(() => linear.call(x).dataSync());
  expect(maxAbsDiff(y2, expected(w2))).toBeLessThan(1e-6);
  tf.dispose([clone, x]);
  disposeWeights(linear);
});

test('a tower built for loading (memory not zeroed) loads bit-identically to one built with zeros, whatever its memory held; a read failing half-way leaks nothing', () => {
  const dir = path.join(CASES, 'tiny_clip_full_layout_f32', 'model');
  const config = readVisionConfig(dir);
  const file = Checkpoint.open(dir);
  try {
    const zeroed = new CLIPVisionModel(config, { trainable: false });
    loadWeights(zeroed, file);
    const expected = exportWeights(zeroed);
    disposeWeights(zeroed);
    if (tf.getBackend() === 'wasm') {
      // Garbage in every weight's fresh memory first: a loader that left any of it unwritten would export NaNs.
      const model = new CLIPVisionModel(config, { trainable: false, init: 'uninitialised' });
      let filled = 0;
      for (const [, param] of namedParams(model))
        for (const v of param.variables) filled += unwrittenHeapView(v.read())?.fill(NaN).length ?? 0;
      expect(filled).toBe(countParams(model, () => true)); // every weight, the LayerNorms' included
      loadWeights(model, file);
      for (const [key, t] of Object.entries(exportWeights(model)))
        expect(`${key}: ${Buffer.from(t.data.buffer).equals(Buffer.from(expected[key].data.buffer))}`).toBe(
          `${key}: true`,
        );
      disposeWeights(model);
    }
    const tower = new CLIPVisionTower(dir, { delayLoad: true });
    const before = tf.memory().numTensors;
    const failing = {
      source: 'flaky',
      has: (n: string) => file.has(n),
      info: (n: string) => file.info(n),
      readFloat32: (n: string) => file.readFloat32(n),
      readBytes: (n: string, into?: Uint8Array) => {
        if (n.includes('post_layernorm')) throw new Error('disk gone'); // among the last tensors of the walk
        return file.readBytes(n, into);
      },
    };
    expect(() => tower.loadModel({ tensors: failing, keyFor: (p) => p })).toThrow('disk gone');
    expect(tower.isLoaded).toBe(false);
    expect(tf.memory().numTensors).toBe(before);
    tower.loadModel({ tensors: file, keyFor: (p) => p });
    for (const [key, t] of Object.entries(exportWeights(tower.visionModel)))
      expect(Buffer.from(t.data.buffer).equals(Buffer.from(expected[key].data.buffer))).toBe(true);
    disposeWeights(tower.visionModel);
    expect(tf.memory().numTensors).toBe(before);
  } finally {
    file.close();
  }
});

test('prefaultMemory zeroes exactly the given views; loadModelAsync (prefaulted) loads what loadModel loads', async () => {
  const buf = new Uint8Array(3 * (16 << 20) + 100).fill(9); // > one 16 MB chunk, odd tail
  await prefaultMemory([buf.subarray(10, buf.length - 10), buf.subarray(0, 3)]);
  expect([...buf.subarray(0, 3)]).toEqual([0, 0, 0]);
  expect([...buf.subarray(3, 10)]).toEqual([9, 9, 9, 9, 9, 9, 9]);
  expect(buf.subarray(10, buf.length - 10).every((b) => b === 0)).toBe(true);
  expect([...buf.subarray(buf.length - 10)]).toEqual(new Array(10).fill(9));

  const dir = path.join(CASES, 'tiny_clip_vision_only_f16', 'model');
  const warnings: string[] = [];
  const [sync, async] = [
    new CLIPVisionTower(dir, { delayLoad: true }),
    new CLIPVisionTower(dir, { delayLoad: true, warn: (m) => warnings.push(m) }),
  ];
  const before = tf.memory().numTensors;
  sync.loadModel();
  try {
    await async.loadModelAsync();
    await async.loadModelAsync();
    expect(warnings).toEqual([expect.stringMatching(/already loaded, `load_model` called again, skipping/)]);
    const [a, b] = [exportWeights(sync.visionModel), exportWeights(async.visionModel)];
    for (const key of Object.keys(a))
      expect(Buffer.from(b[key].data.buffer).equals(Buffer.from(a[key].data.buffer))).toBe(true);
  } finally {
    sync.dispose();
    async.dispose();
  }
  expect(tf.memory().numTensors).toBe(before);
});
