import * as tf from '../tf';
import { CLIPVisionConfig } from '../config/clip';
import { TowerLayout, defaultTowerLayout } from './layout';
import { Linear } from './linear';
import { gemm } from './kernels/gemm';
import { CompositeLayer } from './composite';
import { Module, WeightInit } from './module';
import { FeatureRange } from './parallel/partition';
import { singleInput } from './tfjs_layer';

/**
 * HF `CLIPAttention` (transformers 4.37.2): q/k/v/out projections with bias, q scaled by
 * head_dim^-0.5 before QKᵀ, softmax, no mask (the vision tower attends to every token).
 *
 * Layout `wasm`, for tfjs-backend-wasm, whose only fast GEMM is XNNPACK's plain 2-D one (batched or
 * transposed matMuls fall to a much slower naive loop), and whose `slice` copies its whole input first:
 * the q/k/v weights are stored per head (a derived layout: `Linear` split along the outputs, checkpoint
 * keys unchanged), so each head's q, k, v come straight out of a 2-D GEMM, with nothing sliced; one
 * image at a time, each head is QKᵀ → softmax → ·V, the heads are concatenated and projected.
 * Layout `batched` (GPUs): whole q/k/v GEMMs, then all heads' QKᵀ, softmax and ·V as one batched op each.
 *
 * A tensor-parallel shard (`heads`, layout `wasm` only) holds those heads' q/k/v weights and the
 * matching input rows of `out_proj`, without its bias: `forward2d` then gives this shard's partial
 * product, which the coordinator sums over the shards before adding the bias once.
 */
export class CLIPAttention extends CompositeLayer {
  static readonly className = 'CLIPAttention';
  readonly config: CLIPVisionConfig;
  readonly qProj: Linear;
  readonly kProj: Linear;
  readonly vProj: Linear;
  readonly outProj: Linear;
  readonly layout: TowerLayout;
  /** The heads a shard holds (null: all of them). */
  readonly heads: FeatureRange | null;

  constructor(
    config: CLIPVisionConfig,
    args: { name?: string; trainable?: boolean; layout?: TowerLayout; heads?: FeatureRange; init?: WeightInit } = {},
  ) {
    super({ name: args.name, trainable: args.trainable ?? true });
    this.config = config;
    this.layout = args.layout ?? defaultTowerLayout();
    this.heads = args.heads ? { ...args.heads } : null;
    if (this.heads && this.layout !== 'wasm')
      throw new Error(`${this.name}: only the wasm layout can be sharded by heads`);
    const d = config.hiddenSize;
    const dh = d / config.numAttentionHeads;
    const held = this.heads ? { start: this.heads.start * dh, count: this.heads.count * dh } : undefined;
    const perHead =
      this.layout === 'wasm'
        ? { along: 'out' as const, parts: this.heads?.count ?? config.numAttentionHeads }
        : undefined;
    const linear = (name: string, split?: { along: 'out' | 'in'; parts: number }) =>
      new Linear({
        inFeatures: d,
        outFeatures: d,
        split,
        shard: split && held,
        name: `${this.name}/${name}`,
        trainable: this.trainable,
        init: args.init,
      });
    this.qProj = linear('q_proj', perHead);
    this.kProj = linear('k_proj', perHead);
    this.vProj = linear('v_proj', perHead);
    this.outProj = linear('out_proj', held && { along: 'in', parts: 1 });
    this.built = true;
  }

  get headDim(): number {
    return this.config.hiddenSize / this.config.numAttentionHeads;
  }

  /** One image: [T, D] -> [T, D]. */
  forward2d(x: tf.Tensor2D): tf.Tensor2D {
    return this.layout === 'wasm' ? this.attendPerHead(x) : this.attendBatched(x);
  }

  private attendPerHead(x: tf.Tensor2D): tf.Tensor2D {
    const scale = this.headDim ** -0.5;
    return tf.tidy(() => {
      const [qs, ks, vs] = [this.qProj, this.kProj, this.vProj].map((p) => p.forwardParts([x]));
      // Each head in its own scope: its [T, T] scores are freed before the next head's exist. The
      // GEMMs: the project's kernel where it runs, else XNNPACK on kᵀ transposed first (see gemm).
      const heads = qs.map((q, h) =>
        tf.tidy(() => gemm([tf.softmax(gemm([tf.mul(q, scale)], [ks[h]], 'out-in'))], [vs[h]], 'in-out')),
      );
      const context = heads.length === 1 ? heads[0] : tf.concat2d(heads, 1);
      return this.outProj.forwardParts([context])[0];
    });
  }

  private attendBatched(x: tf.Tensor2D): tf.Tensor2D {
    const scale = this.headDim ** -0.5;
    const [t, d] = x.shape;
    const heads = this.config.numAttentionHeads;
    return tf.tidy(() => {
      // [T, D] -> [H, T, head_dim]
      const byHead = (y: tf.Tensor2D) => tf.transpose(tf.reshape<tf.Rank.R3>(y, [t, heads, this.headDim]), [1, 0, 2]);
      const [q, k, v] = [this.qProj, this.kProj, this.vProj].map((p) => p.forwardParts([x])[0]);
      const scores = tf.matMul(byHead(tf.mul(q, scale)), byHead(k), false, true);
      const context = tf.matMul(tf.softmax(scores), byHead(v));
      return this.outProj.forwardParts([tf.reshape<tf.Rank.R2>(tf.transpose(context, [1, 0, 2]), [t, d])])[0];
    });
  }

  /** [B, T, D] -> [B, T, D], image by image. */
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = singleInput<tf.Tensor3D>(inputs);
    return tf.tidy(() => tf.stack(tf.unstack(x).map((img) => this.forward2d(img as tf.Tensor2D))));
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {
      ...super.getConfig(),
      config: { ...this.config },
      layout: this.layout,
      ...(this.heads ? { heads: { ...this.heads } } : {}),
    };
  }

  children(): Record<string, Module> {
    return { q_proj: this.qProj, k_proj: this.kProj, v_proj: this.vProj, out_proj: this.outProj };
  }
}
tf.serialization.registerClass(CLIPAttention);
