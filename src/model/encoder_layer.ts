import * as tf from '../tf';
import { CLIPVisionConfig } from '../config/clip';
import { CLIPAttention } from './attention';
import { CompositeLayer } from './composite';
import { LayerNorm } from './layer_norm';
import { TowerLayout } from './layout';
import { CLIPMLP } from './mlp';
import { Module, WeightInit } from './module';
import { singleInput } from './tfjs_layer';

/** HF `CLIPEncoderLayer`, pre-LN: x + attn(ln1(x)), then x + mlp(ln2(x)). */
export class CLIPEncoderLayer extends CompositeLayer {
  static readonly className = 'CLIPEncoderLayer';
  readonly config: CLIPVisionConfig;
  readonly selfAttn: CLIPAttention;
  readonly layerNorm1: LayerNorm;
  readonly mlp: CLIPMLP;
  readonly layerNorm2: LayerNorm;

  constructor(
    config: CLIPVisionConfig,
    args: { name?: string; trainable?: boolean; layout?: TowerLayout; init?: WeightInit } = {},
  ) {
    super({ name: args.name, trainable: args.trainable ?? true });
    this.config = config;
    const sub = (name: string) => ({ name: `${this.name}/${name}`, trainable: this.trainable, init: args.init });
    const norm = (name: string) => new LayerNorm({ size: config.hiddenSize, eps: config.layerNormEps, ...sub(name) });
    this.selfAttn = new CLIPAttention(config, { ...sub('self_attn'), layout: args.layout });
    this.layerNorm1 = norm('layer_norm1');
    this.mlp = new CLIPMLP(config, { ...sub('mlp'), layout: args.layout });
    this.layerNorm2 = norm('layer_norm2');
    this.built = true;
  }

  /** One image: [T, D] -> [T, D]. */
  forward2d(x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      const afterAttn = tf.add(x, this.selfAttn.forward2d(this.layerNorm1.call(x) as tf.Tensor2D));
      return tf.add(afterAttn, this.mlp.forward2d(this.layerNorm2.call(afterAttn) as tf.Tensor2D));
    });
  }

  /** [B, T, D] -> [B, T, D], image by image (the per-image GEMMs already have T = 577 rows). */
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = singleInput<tf.Tensor3D>(inputs);
    const [b, t, d] = x.shape;
    return tf.tidy(() => {
      if (b === 1) return tf.reshape(this.forward2d(tf.reshape(x, [t, d])), [1, t, d]);
      return tf.stack(tf.unstack(x).map((img) => this.forward2d(img as tf.Tensor2D)));
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), config: { ...this.config } };
  }

  children(): Record<string, Module> {
    return { self_attn: this.selfAttn, layer_norm1: this.layerNorm1, mlp: this.mlp, layer_norm2: this.layerNorm2 };
  }
}
tf.serialization.registerClass(CLIPEncoderLayer);
