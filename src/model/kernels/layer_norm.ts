import * as tf from '../../tf';

/**
 * LayerNorm over the last axis as one kernel on the wasm and cpu backends, computed in float64 with a
 * single rounding per output: mean and variance are summed in float64 (two passes), then
 * `(x − mean) · rstd · γ + β` is rounded to float32 once.
 *
 * Why not tfjs ops: trained CLIP towers carry "massive activations" (a few residual channels at a
 * few hundred, the rest near 1). A float32 sum over a row then rounds at the outliers' magnitude on
 * every addition — wasm's reductions are sequential, several times PyTorch's LayerNorm error on a ViT-L row —
 * and the composed elementwise ops (subtract, multiply by rstd, by γ, add β) round four more times.
 * PyTorch's kernel sums in vector lanes and fuses the affine part; this kernel stays below its error.
 * Other backends (tfjs-node, webgpu) use the composed ops, whose reductions are tree-shaped.
 */
export const LAYER_NORM_KERNEL = 'LlavaVisionLayerNorm';

export interface LayerNormAttrs {
  epsilon: number;
}

/** Fills `out` with LayerNorm(x) over rows of `size`; float64 arithmetic, one rounding per element. */
export function layerNormRows(
  x: Float32Array,
  gamma: Float32Array,
  beta: Float32Array,
  epsilon: number,
  size: number,
  out: Float32Array,
): void {
  for (let start = 0; start < x.length; start += size) {
    const end = start + size;
    let sum = 0;
    for (let i = start; i < end; i++) sum += x[i];
    const mean = sum / size;
    let squares = 0;
    for (let i = start; i < end; i++) {
      const d = x[i] - mean;
      squares += d * d;
    }
    const rstd = 1 / Math.sqrt(squares / size + epsilon);
    for (let i = start, j = 0; i < end; i++, j++) out[i] = (x[i] - mean) * rstd * gamma[j] + beta[j];
  }
}

/** The members of tfjs-backend-wasm's and tfjs-backend-cpu's backends this kernel uses. */
interface WasmBackend {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
}
interface CpuBackend {
  data: { get(dataId: object): { values: Float32Array } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo;
}

function inputsOf(inputs: tf.NamedTensorInfoMap): [tf.TensorInfo, tf.TensorInfo, tf.TensorInfo] {
  const { x, gamma, beta } = inputs;
  if (!x || !gamma || !beta) throw new Error(`${LAYER_NORM_KERNEL} needs inputs x, gamma and beta`);
  return [x, gamma, beta];
}

let registered = false;

/** Registers the kernel (forward on wasm and cpu, gradient for all) once. */
export function registerLayerNormKernel(): void {
  if (registered) return;
  registered = true;
  tf.registerKernel({
    kernelName: LAYER_NORM_KERNEL,
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const [x, gamma, beta] = inputsOf(inputs);
      const wasm = backend as unknown as WasmBackend;
      const out = wasm.makeOutput(x.shape, 'float32');
      // Views after the allocation: a heap growth would detach earlier ones.
      const view = (t: tf.TensorInfo) => wasm.typedArrayFromHeap(t);
      layerNormRows(
        view(x),
        view(gamma),
        view(beta),
        (attrs as unknown as LayerNormAttrs).epsilon,
        x.shape[x.shape.length - 1],
        view(out),
      );
      return out;
    },
  });
  tf.registerKernel({
    kernelName: LAYER_NORM_KERNEL,
    backendName: 'cpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const [x, gamma, beta] = inputsOf(inputs);
      const cpu = backend as unknown as CpuBackend;
      const values = (t: tf.TensorInfo) => cpu.data.get(t.dataId).values;
      const xs = values(x);
      const out = new Float32Array(xs.length);
      layerNormRows(
        xs,
        values(gamma),
        values(beta),
        (attrs as unknown as LayerNormAttrs).epsilon,
        x.shape[x.shape.length - 1],
        out,
      );
      return cpu.makeTensorInfo(x.shape, 'float32', out);
    },
  });
  tf.registerGradient({
    kernelName: LAYER_NORM_KERNEL,
    inputsToSave: ['x', 'gamma'],
    gradFunc: (dy, saved, attrs) => {
      const [x, gamma] = saved;
      const { dx, dgamma, dbeta } = layerNormGrads(
        dy as tf.Tensor,
        x,
        gamma,
        (attrs as unknown as LayerNormAttrs).epsilon,
      );
      return { x: () => dx, gamma: () => dgamma, beta: () => dbeta };
    },
  });
}

/** Backends with this kernel; elsewhere LayerNorm is composed from tfjs ops. */
export function hasLayerNormKernel(): boolean {
  const name = tf.getBackend();
  return name === 'wasm' || name === 'cpu';
}

/**
 * LayerNorm's gradients (biased variance, as torch): with x̂ = (x − mean)·rstd and g = dy·γ,
 * dx = rstd · (g − mean(g) − x̂ · mean(g · x̂)), dγ = Σ dy · x̂, dβ = Σ dy over every row.
 */
export function layerNormGrads(
  dy: tf.Tensor,
  x: tf.Tensor,
  gamma: tf.Tensor,
  epsilon: number,
): { dx: tf.Tensor; dgamma: tf.Tensor; dbeta: tf.Tensor } {
  return tf.tidy(() => {
    const rowAxes = x.shape.slice(0, -1).map((_, i) => i);
    const { mean, variance } = tf.moments(x, -1, true);
    const rstd = tf.rsqrt(tf.add(variance, epsilon));
    const xhat = tf.mul(tf.sub(x, mean), rstd);
    const g = tf.mul(dy, gamma);
    const dx = tf.mul(rstd, tf.sub(tf.sub(g, tf.mean(g, -1, true)), tf.mul(xhat, tf.mean(tf.mul(g, xhat), -1, true))));
    const dgamma = rowAxes.length ? tf.sum(tf.mul(dy, xhat), rowAxes) : tf.mul(dy, xhat);
    const dbeta = rowAxes.length ? tf.sum(dy, rowAxes) : dy;
    return { dx, dgamma, dbeta };
  });
}
