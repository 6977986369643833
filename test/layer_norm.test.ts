/**
 * The LayerNorm kernel (src/model/kernels/layer_norm.ts) on wasm and cpu: float64 statistics and one
 * rounding per output, so rows with massive activations (a few channels at hundreds) normalise to
 * within half an ulp; its gradient matches the composed ops'; nothing leaks.
 */
import * as tf from '../src/tf';
import { initBackend } from '../src/backend';
import { LayerNorm, layerNormComposed } from '../src/model/layer_norm';

/** Rows like a trained CLIP's residual stream: N(0,1) plus two outlier channels. */
function massiveRows(rows: number, size: number, seed: number): Float32Array {
  let s = seed;
  const rand = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const x = new Float32Array(rows * size);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < size; c++) {
      const gauss = Math.sqrt(-2 * Math.log(rand() + 1e-12)) * Math.cos(2 * Math.PI * rand());
      x[r * size + c] = gauss + (c === 11 ? 100 + 200 * rand() : c === 40 ? -50 - 150 * rand() : 0);
    }
  }
  return x;
}

function reference(x: Float32Array, gamma: Float32Array, beta: Float32Array, eps: number, size: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / size; r++) {
    const row = Array.from(x.subarray(r * size, (r + 1) * size));
    const mean = row.reduce((a, b) => a + b, 0) / size;
    const variance = row.reduce((a, b) => a + (b - mean) ** 2, 0) / size;
    row.forEach((v, c) => (y[r * size + c] = ((v - mean) / Math.sqrt(variance + eps)) * gamma[c] + beta[c]));
  }
  return y;
}

/** The largest error in units of the float32 spacing at each reference value. */
function maxUlps(ours: ArrayLike<number>, ref: Float64Array): number {
  let worst = 0;
  for (let i = 0; i < ref.length; i++) {
    const f = Math.fround(Math.abs(ref[i]));
    const ulp = Math.max(Math.fround(f * (1 + 2 ** -23)) - f, 2 ** -149);
    worst = Math.max(worst, Math.abs(ours[i] - ref[i]) / ulp);
  }
  return worst;
}

function layerWith(
  size: number,
  eps: number,
  seed: number,
): { ln: LayerNorm; gamma: Float32Array; beta: Float32Array } {
  const ln = new LayerNorm({ size, eps });
  const gamma = Float32Array.from({ length: size }, (_, i) =>
    i === 11 ? 0.03 : i === 40 ? 0.05 : 1 + 0.1 * Math.sin(i + seed),
  );
  const beta = Float32Array.from({ length: size }, (_, i) => 0.02 * Math.cos(3 * i + seed));
  ln.gamma.write(tf.tensor1d(gamma));
  ln.beta.write(tf.tensor1d(beta));
  return { ln, gamma, beta };
}

describe.each(['wasm', 'cpu'] as const)('LayerNorm on %s', (backend) => {
  beforeAll(() => initBackend({ backend, log: null }));

  test.each([48, 1024])('rows with massive activations (size %i): within half an ulp of float64', (size) => {
    const eps = 1e-5;
    const { ln, gamma, beta } = layerWith(size, eps, size);
    const x = massiveRows(17, size, size);
    const ref = reference(x, gamma, beta, eps, size);
    const input = tf.tensor2d(x, [17, size]);
    const ours = ln.call(input);
    expect(maxUlps(ours.dataSync(), ref)).toBeLessThanOrEqual(0.5 + 1e-6);
    // The composed ops (used on other backends) round several times: measurably further off here.
    const composed = layerNormComposed(input, ln.gamma.read(), ln.beta.read(), eps);
    expect(maxUlps(composed.dataSync(), ref)).toBeGreaterThan(1);
    tf.dispose([input, ours, composed]);
  });

  test("any leading shape; gradients equal the composed ops' autodiff", () => {
    const size = 48;
    const { ln } = layerWith(size, 1e-6, 3);
    const x = tf.tensor3d(massiveRows(6, size, 7), [2, 3, size]);
    const dy = tf.tensor3d(
      massiveRows(6, size, 9).map((v) => v / 100),
      [2, 3, size],
    );
    const gammaT = ln.gamma.read();
    const betaT = ln.beta.read();
    const viaKernel = tf.grads((a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
      return tf.mul(
        tf.engine().runKernel<tf.Tensor>('LlavaVisionLayerNorm', { x: a, gamma: g, beta: b }, { epsilon: 1e-6 }),
        dy,
      );
    })([x, gammaT, betaT]);
    const viaOps = tf.grads((a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => tf.mul(layerNormComposed(a, g, b, 1e-6), dy))(
      [x, gammaT, betaT],
    );
    viaKernel.forEach((g, i) => {
      const want = viaOps[i].dataSync();
      const got = g.dataSync();
      const scale = Math.max(...Array.from(want, Math.abs));
      got.forEach((v, j) => expect(Math.abs(v - want[j])).toBeLessThanOrEqual(1e-4 * scale));
    });
    expect(ln.call(x).shape).toEqual([2, 3, size]);
    tf.dispose([x, dy, ...viaKernel, ...viaOps]);
  });

  test('repeated calls do not grow numTensors', () => {
    const { ln } = layerWith(64, 1e-5, 1);
    const x = tf.tensor2d(massiveRows(5, 64, 2), [5, 64]);
    tf.dispose(ln.call(x));
    const before = tf.memory().numTensors;
    for (let i = 0; i < 5; i++) tf.dispose(ln.call(x));
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
  });
});
