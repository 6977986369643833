import * as tf from '../tf';
import { CLIPVisionConfig } from '../config/clip';
import { Activation, activationByName } from './activations';
import { CompositeLayer } from './composite';
import { TowerLayout, defaultTowerLayout } from './layout';
import { Linear } from './linear';
import { Module, WeightInit } from './module';
import { FeatureRange } from './parallel/partition';
import { singleInput } from './tfjs_layer';

/**
 * HF `CLIPMLP`: fc1 -> hidden_act -> fc2.
 *
 * Run in blocks of hidden_size intermediate features (ViT-L: 4 blocks of 1024): fc1 is split along its
 * outputs, fc2 along its inputs, and fc2's partial products are summed. Single-threaded XNNPACK
 * streams the whole right-hand operand for every few rows of the left one, so a 4 MB [1024, 1024]
 * block runs faster than the 16 MB [1024, 4096] matrix. fc1 also keeps its weight in the
 * checkpoint layout as the left operand (feature-major: [I, T] = W1 · xᵀ), so the backend packs the
 * small activation per call rather than keeping a packed copy of the large weight (same speed, less
 * memory). That is layout `wasm`; layout `batched` (GPUs) runs fc1 and fc2 whole.
 *
 * A tensor-parallel shard (`features`, layout `wasm` only) holds those intermediate features (fc1's
 * outputs and fc2's inputs, in blocks of at most hidden_size) and no fc2 bias: `forward2d` then gives
 * this shard's partial fc2 product, summed over the shards before the bias is added once.
 */
export class CLIPMLP extends CompositeLayer {
  static readonly className = 'CLIPMLP';
  readonly config: CLIPVisionConfig;
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly layout: TowerLayout;
  private readonly act: Activation;
  /** The intermediate features a shard holds (null: all of them). */
  readonly features: FeatureRange | null;

  constructor(
    config: CLIPVisionConfig,
    args: { name?: string; trainable?: boolean; layout?: TowerLayout; features?: FeatureRange; init?: WeightInit } = {},
  ) {
    super({ name: args.name, trainable: args.trainable ?? true });
    this.config = config;
    this.layout = args.layout ?? defaultTowerLayout();
    this.act = activationByName(config.hiddenAct);
    this.features = args.features ? { ...args.features } : null;
    if (this.features && this.layout !== 'wasm')
      throw new Error(`${this.name}: only the wasm layout can be sharded by features`);
    const { hiddenSize: d, intermediateSize: m } = config;
    const sub = (name: string) => ({ name: `${this.name}/${name}`, trainable: this.trainable, init: args.init });
    if (this.layout === 'wasm') {
      const shard = this.features ?? undefined;
      const blocks = m % d !== 0 ? 1 : shard ? Math.ceil(shard.count / d) : m / d;
      this.fc1 = new Linear({
        inFeatures: d,
        outFeatures: m,
        split: { along: 'out', parts: blocks },
        shard,
        weightLeft: true,
        ...sub('fc1'),
      });
      this.fc2 = new Linear({
        inFeatures: m,
        outFeatures: d,
        split: { along: 'in', parts: blocks },
        shard,
        ...sub('fc2'),
      });
    } else {
      this.fc1 = new Linear({ inFeatures: d, outFeatures: m, ...sub('fc1') });
      this.fc2 = new Linear({ inFeatures: m, outFeatures: d, ...sub('fc2') });
    }
    this.built = true;
  }

  /** One image: [T, D] -> [T, D]. */
  forward2d(x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      const hidden = this.fc1.forwardParts([x]).map((h) => this.act(h) as tf.Tensor2D);
      return this.fc2.forwardParts(hidden)[0];
    });
  }

  /** Any [..., D] -> [..., D]. */
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = singleInput(inputs);
    return tf.tidy(() => tf.reshape(this.forward2d(tf.reshape<tf.Rank.R2>(x, [-1, this.config.hiddenSize])), x.shape));
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {
      ...super.getConfig(),
      config: { ...this.config },
      layout: this.layout,
      ...(this.features ? { features: { ...this.features } } : {}),
    };
  }

  children(): Record<string, Module> {
    return { fc1: this.fc1, fc2: this.fc2 };
  }
}
tf.serialization.registerClass(CLIPMLP);
