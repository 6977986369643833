import * as tf from '@tensorflow/tfjs';
import { CLIPVisionConfig } from '../config/clip';
import { Linear } from './linear';
import { CompositeLayer } from './composite';
import { Module } from './module';

/**
 * HF `CLIPAttention` (transformers 4.37.2): q/k/v/out projections with bias, q scaled by
 * head_dim^-0.5 before QKᵀ, softmax, no mask (the vision tower attends to every token).
 *
 * Each (image, head) product is a plain 2-D matMul with a pre-transposed K: tfjs-backend-wasm runs
 * batched or transposed matMuls through a naive loop ~8x slower than its XNNPACK 2-D GEMM.
 */
export class CLIPAttention extends CompositeLayer {
  static readonly className = 'CLIPAttention';
  readonly config: CLIPVisionConfig;
  readonly qProj: Linear;
  readonly kProj: Linear;
  readonly vProj: Linear;
  readonly outProj: Linear;

  constructor(config: CLIPVisionConfig, args: { name?: string; trainable?: boolean } = {}) {
    super({ name: args.name, trainable: args.trainable ?? true });
    this.config = config;
    const d = config.hiddenSize;
    const linear = (name: string) => new Linear({ inFeatures: d, outFeatures: d, name: `${this.name}/${name}`, trainable: this.trainable });
    this.qProj = linear('q_proj');
    this.kProj = linear('k_proj');
    this.vProj = linear('v_proj');
    this.outProj = linear('out_proj');
    this.built = true;
  }

  get headDim(): number {
    return this.config.hiddenSize / this.config.numAttentionHeads;
  }

  /** [B, T, D] -> [B, T, D] */
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = (Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor3D;
    const [b, t, d] = x.shape;
    const heads = this.config.numAttentionHeads;
    const hd = this.headDim;
    return tf.tidy(() => {
      const x2d = x.reshape([b * t, d]);
      const q = tf.mul(this.qProj.call(x2d), hd ** -0.5).reshape([b, t, heads, hd]).transpose([0, 2, 1, 3]);
      const kT = this.kProj.call(x2d).reshape([b, t, heads, hd]).transpose([0, 2, 3, 1]);
      const v = this.vProj.call(x2d).reshape([b, t, heads, hd]).transpose([0, 2, 1, 3]);
      const perImage: tf.Tensor[] = [];
      for (let i = 0; i < b; i++) {
        const perHead: tf.Tensor[] = [];
        for (let h = 0; h < heads; h++) {
          const qh = q.slice([i, h, 0, 0], [1, 1, t, hd]).reshape([t, hd]);
          const kTh = kT.slice([i, h, 0, 0], [1, 1, hd, t]).reshape([hd, t]);
          const vh = v.slice([i, h, 0, 0], [1, 1, t, hd]).reshape([t, hd]);
          perHead.push(tf.matMul(tf.softmax(tf.matMul(qh, kTh)), vh));
        }
        perImage.push(tf.stack(perHead, 1).reshape([t, d])); // [T, H, hd] -> [T, D]
      }
      const context = b === 1 ? perImage[0] : tf.concat(perImage, 0);
      return this.outProj.call(context).reshape([b, t, d]);
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), config: { ...this.config } };
  }

  children(): Record<string, Module> {
    return { q_proj: this.qProj, k_proj: this.kProj, v_proj: this.vProj, out_proj: this.outProj };
  }
}
tf.serialization.registerClass(CLIPAttention);
