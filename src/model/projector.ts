import * as tf from '../tf';
import { ensureBackendSync } from '../backend';
import { projectorDepth } from '../config/llava';
import { LIMITS, intInRange } from '../config/limits';
import { ConfigError } from '../errors';
import { Activation, activationByName } from './activations';
import { CompositeLayer } from './composite';
import { Linear } from './linear';
import { Module, Param, WeightInit } from './module';
import { FeatureRange } from './parallel/partition';
import { singleInput, singleShape } from './tfjs_layer';

export { PROJECTOR_TYPES, projectorDepth } from '../config/llava';

export interface ProjectorConfig {
  /** LLaVA `mm_projector_type`: `linear`, `mlp{N}x_gelu`, `identity`. */
  type: string;
  /** `mm_hidden_size`: the vision feature width. */
  inFeatures: number;
  /** `hidden_size` of the LLM. */
  outFeatures: number;
  /** Activation between the MLP's linears (LLaVA: `nn.GELU()` = erf; llava-hf: `projector_hidden_act`). */
  hiddenAct?: string;
  /** llava-hf `multimodal_projector_bias` (LLaVA always has biases). */
  bias?: boolean;
}

/** A projector's output width: the LLM hidden size, or the input width for `identity`. */
export function projectedWidth(config: ProjectorConfig): number {
  return projectorDepth(config.type) === 0 ? config.inFeatures : config.outFeatures;
}

/**
 * LLaVA's `build_vision_projector`. `linear` is a bare nn.Linear (keys `weight`, `bias`);
 * `mlp{N}x_gelu` is nn.Sequential(Linear, GELU, Linear, ...), so the linears sit at indices
 * 0, 2, 4, ... of the checkpoint keys; `identity` has no weights.
 */
export class Projector extends CompositeLayer {
  static readonly className = 'LlavaProjector';
  readonly projectorConfig: ProjectorConfig;
  readonly linears: Linear[];
  private readonly act: Activation;
  /** The hidden features a tensor-parallel shard holds (null: all of them); see `call`. */
  readonly hidden: FeatureRange | null;

  /**
   * `hidden` (mlp2x_gelu only) builds a tensor-parallel shard: the first Linear's outputs and the last
   * Linear's inputs in that range, without the last bias; `call` then gives this shard's partial
   * product, summed over the shards before the bias is added once.
   */
  constructor(
    config: ProjectorConfig,
    args: { name?: string; trainable?: boolean; hidden?: FeatureRange; init?: WeightInit } = {},
  ) {
    super({ name: args.name ?? 'mm_projector', trainable: args.trainable ?? true });
    ensureBackendSync(); // weights are created below, on the backend chosen now
    this.projectorConfig = { ...config };
    const depth = projectorDepth(config.type);
    // Widths are checked before any linear is allocated from them.
    intInRange(config.inFeatures, 'projector', 'inFeatures (mm_hidden_size)', 1, LIMITS.llmHiddenSize);
    if (depth > 0) intInRange(config.outFeatures, 'projector', 'outFeatures (hidden_size)', 1, LIMITS.llmHiddenSize);
    this.act = activationByName(config.hiddenAct ?? 'gelu', 'projector activation');
    // mlp2x_gelu (LLaVA-1.5/1.6) runs in blocks like CLIP's MLP: the first Linear split along its
    // outputs, the second along its inputs, one GEMM per block and the products summed. wasm's GEMM
    // accumulates each output in one chain over K without FMA; K = 4096 in four chains of 1024 is
    // closer to PyTorch, and each block's packed weight stays cache-sized.
    const { inFeatures: d, outFeatures: h } = config;
    this.hidden = args.hidden ? { ...args.hidden } : null;
    if (this.hidden && depth !== 2) throw new ConfigError(`projector ${config.type}: only mlp2x_gelu can be sharded`);
    const shard = this.hidden ?? undefined;
    const blocks = depth !== 2 || h % d !== 0 ? 1 : shard ? Math.ceil(shard.count / d) : h / d;
    this.linears = Array.from(
      { length: depth },
      (_, i) =>
        new Linear({
          inFeatures: i === 0 ? d : h,
          outFeatures: h,
          bias: config.bias ?? true,
          split: blocks > 1 || shard ? { along: i === 0 ? 'out' : 'in', parts: blocks } : undefined,
          shard,
          name: `${this.name}/${2 * i}`,
          trainable: this.trainable,
          init: args.init,
        }),
    );
    this.built = true;
  }

  get type(): string {
    return this.projectorConfig.type;
  }

  /** Output width: the LLM hidden size, or the input width for `identity`. */
  get outFeatures(): number {
    return projectedWidth(this.projectorConfig);
  }

  /** [..., inFeatures] -> [..., outFeatures] */
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = singleInput(inputs);
    const width = x.shape[x.shape.length - 1];
    if (width !== this.projectorConfig.inFeatures) {
      throw new ConfigError(
        `projector expects features of width ${this.projectorConfig.inFeatures} (mm_hidden_size), got ${width}`,
      );
    }
    if (this.linears.length === 0) return tf.clone(x);
    return tf.tidy(() => {
      const [first, last] = this.linears;
      if (this.linears.length === 2 && (first.parts > 1 || this.hidden)) {
        const x2d = tf.reshape<tf.Rank.R2>(x, [-1, this.projectorConfig.inFeatures]);
        const hidden = first.forwardParts([x2d]).map((part) => this.act(part) as tf.Tensor2D);
        return tf.reshape(last.forwardParts(hidden)[0], [...x.shape.slice(0, -1), this.outFeatures]);
      }
      let h = first.call(x);
      for (const linear of this.linears.slice(1)) h = linear.call(this.act(h));
      return h;
    });
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const s = singleShape(inputShape);
    return [...s.slice(0, -1), this.outFeatures];
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {
      ...super.getConfig(),
      projector: { ...this.projectorConfig },
      ...(this.hidden ? { hidden: { ...this.hidden } } : {}),
    };
  }

  /** A bare `linear` projector's tensors are `weight`/`bias` at the projector's own level. */
  override params(): Record<string, Param> {
    return this.type === 'linear' ? this.linears[0].params() : {};
  }

  protected override sublayers(): tf.layers.Layer[] {
    return this.linears;
  }

  children(): Record<string, Module> {
    if (this.type === 'linear') return {};
    return Object.fromEntries(this.linears.map((l, i) => [String(2 * i), l]));
  }
}
tf.serialization.registerClass(Projector);
