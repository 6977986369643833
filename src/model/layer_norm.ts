import * as tf from '../tf';
import { LAYER_NORM_KERNEL, LayerNormAttrs, hasLayerNormKernel, registerLayerNormKernel } from './kernels/layer_norm';
import { Module, Param, WeightInit, initialWeights, wholeParam } from './module';
import { applyTrainableFlag, singleInput, singleShape } from './tfjs_layer';

registerLayerNormKernel();

/**
 * `torch.nn.LayerNorm` over the last axis (biased variance, as torch). On wasm and cpu one float64
 * kernel (kernels/layer_norm.ts: why), elsewhere composed from `moments`/`rsqrt` — both an order of
 * magnitude faster than `tf.layers.layerNormalization` on wasm.
 */
export class LayerNorm extends tf.layers.Layer implements Module {
  static readonly className = 'LlavaVisionLayerNorm';
  readonly size: number;
  readonly eps: number;
  gamma!: tf.LayerVariable;
  beta!: tf.LayerVariable;

  private readonly init: WeightInit;

  constructor(args: { size: number; eps: number; name?: string; trainable?: boolean; init?: WeightInit }) {
    super({ name: args.name, trainable: args.trainable ?? true });
    this.init = args.init ?? 'zeros';
    this.size = args.size;
    this.eps = args.eps;
    this.build([null, this.size]);
  }

  override build(_inputShape: tf.Shape | tf.Shape[]): void {
    if (this.built) return;
    this.gamma = this.addWeight('gamma', [this.size], 'float32', initialWeights(this.init, 1), undefined, true);
    this.beta = this.addWeight('beta', [this.size], 'float32', initialWeights(this.init, 0), undefined, true);
    applyTrainableFlag(this);
    this.built = true;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = singleInput(inputs);
    const gamma = this.gamma.read();
    const beta = this.beta.read();
    if (hasLayerNormKernel()) {
      const attrs: LayerNormAttrs = { epsilon: this.eps };
      return tf
        .engine()
        .runKernel<tf.Tensor>(LAYER_NORM_KERNEL, { x, gamma, beta }, attrs as unknown as tf.NamedAttrMap);
    }
    return layerNormComposed(x, gamma, beta, this.eps);
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    return singleShape(inputShape);
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), size: this.size, eps: this.eps };
  }

  params(): Record<string, Param> {
    return { weight: wholeParam(this.gamma, [this.size]), bias: wholeParam(this.beta, [this.size]) };
  }

  children(): Record<string, Module> {
    return {};
  }
}
tf.serialization.registerClass(LayerNorm);

/**
 * LayerNorm from tfjs ops, for backends without the kernel. torch's affine form x·s + (β − mean·s),
 * s = rstd·γ: one rounding at an outlier's magnitude instead of three for (x − mean)·rstd·γ + β.
 */
export function layerNormComposed(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor {
  return tf.tidy(() => {
    const { mean, variance } = tf.moments(x, -1, true);
    const scale = tf.mul(tf.rsqrt(tf.add(variance, eps)), gamma);
    return tf.add(tf.mul(x, scale), tf.sub(beta, tf.mul(mean, scale)));
  });
}
