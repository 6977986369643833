import * as tf from '../tf';
import { ensureBackendSync } from '../backend';
import { CLIPVisionConfig, hiddenStateIndex, validateVisionConfig } from '../config/clip';
import { CompositeLayer } from './composite';
import { CLIPVisionEmbeddings } from './embeddings';
import { CLIPEncoderLayer } from './encoder_layer';
import { LayerNorm } from './layer_norm';
import { TowerLayout, defaultTowerLayout } from './layout';
import { Module, ModuleGroup, WeightInit } from './module';
import { singleInput } from './tfjs_layer';

export interface VisionForwardOptions {
  /** HF `interpolate_pos_encoding`: run at a resolution other than the config's image_size. */
  interpolatePosEncoding?: boolean;
}

export interface VisionModelOutput {
  /** [B, T, D], output of the last encoder layer (no post_layernorm, as in HF). */
  lastHiddenState: tf.Tensor3D;
  /** [B, D], post_layernorm(CLS of lastHiddenState). */
  poolerOutput: tf.Tensor2D;
  /** L+1 tensors [B, T, D]: index 0 = embeddings after pre_layrnorm, index k = output of layer k. */
  hiddenStates: tf.Tensor3D[];
}

/**
 * HF `CLIPVisionTransformer` (checkpoint prefix `vision_model.`): embeddings, `pre_layrnorm` (sic),
 * the encoder layers, and `post_layernorm` on the pooled CLS token only.
 */
export class CLIPVisionTransformer extends CompositeLayer {
  static readonly className = 'CLIPVisionTransformer';
  readonly config: CLIPVisionConfig;
  readonly embeddings: CLIPVisionEmbeddings;
  readonly preLayrnorm: LayerNorm;
  readonly layers: CLIPEncoderLayer[];
  readonly postLayernorm: LayerNorm;
  readonly layout: TowerLayout;

  constructor(
    config: CLIPVisionConfig,
    args: { name?: string; trainable?: boolean; layout?: TowerLayout; init?: WeightInit } = {},
  ) {
    super({ name: args.name ?? 'vision_model', trainable: args.trainable ?? true });
    validateVisionConfig(config, 'vision config'); // before anything is allocated from it
    ensureBackendSync(); // weights are created below, on the backend chosen now
    this.config = config;
    this.layout = args.layout ?? defaultTowerLayout();
    const sub = (name: string) => ({ name: `${this.name}/${name}`, trainable: this.trainable, init: args.init });
    const norm = (name: string) => new LayerNorm({ size: config.hiddenSize, eps: config.layerNormEps, ...sub(name) });
    this.embeddings = new CLIPVisionEmbeddings(config, sub('embeddings'));
    this.preLayrnorm = norm('pre_layrnorm');
    this.layers = Array.from(
      { length: config.numHiddenLayers },
      (_, i) => new CLIPEncoderLayer(config, { ...sub(`encoder/layers/${i}`), layout: this.layout }),
    );
    this.postLayernorm = norm('post_layernorm');
    this.built = true;
  }

  /** tfjs Layer entry point: pixel values [B, C, H, W] -> [lastHiddenState, poolerOutput]. */
  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: VisionForwardOptions = {}): tf.Tensor[] {
    const pixels = singleInput<tf.Tensor4D>(inputs);
    return tf.tidy(() => {
      const out = this.forward(pixels, kwargs);
      return [out.lastHiddenState, out.poolerOutput];
    });
  }

  /** The full forward with every hidden state, like HF with `output_hidden_states=True`. */
  forward(pixels: tf.Tensor4D, options: VisionForwardOptions = {}): VisionModelOutput {
    return tf.tidy(() => {
      const hiddenStates: tf.Tensor3D[] = [this.embed(pixels, options)];
      for (const layer of this.layers)
        hiddenStates.push(layer.call(hiddenStates[hiddenStates.length - 1]) as tf.Tensor3D);
      const lastHiddenState = hiddenStates[hiddenStates.length - 1];
      const [b, , d] = lastHiddenState.shape;
      const pooled = tf.reshape(tf.slice(lastHiddenState, [0, 0, 0], [b, 1, d]), [b, d]);
      const poolerOutput = this.postLayernorm.call(pooled) as tf.Tensor2D;
      return { lastHiddenState, poolerOutput, hiddenStates };
    });
  }

  /**
   * `hidden_states[index]` alone (index in 0..L, negative counts from the end as in Python).
   * Layers after it are not run, and earlier activations are freed as the forward proceeds.
   */
  hiddenState(pixels: tf.Tensor4D, index: number, options: VisionForwardOptions = {}): tf.Tensor3D {
    const k = this.resolveHiddenStateIndex(index);
    let x = this.embed(pixels, options);
    for (let i = 0; i < k; i++) {
      const next = this.layers[i].call(x) as tf.Tensor3D;
      x.dispose();
      x = next;
    }
    return x;
  }

  /** Python-style index into the L+1 hidden states. */
  resolveHiddenStateIndex(index: number): number {
    return hiddenStateIndex(index, this.layers.length);
  }

  private embed(pixels: tf.Tensor4D, options: VisionForwardOptions): tf.Tensor3D {
    return tf.tidy(() => {
      const embedded = this.embeddings.call(pixels, { interpolatePosEncoding: options.interpolatePosEncoding });
      return this.preLayrnorm.call(embedded) as tf.Tensor3D;
    });
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape[] {
    const tokens = this.embeddings.computeOutputShape(inputShape);
    return [tokens, [tokens[0], this.config.hiddenSize]];
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), config: { ...this.config }, layout: this.layout };
  }

  children(): Record<string, Module> {
    const layers = new ModuleGroup(Object.fromEntries(this.layers.map((l, i) => [String(i), l])));
    return {
      embeddings: this.embeddings,
      pre_layrnorm: this.preLayrnorm,
      encoder: new ModuleGroup({ layers }),
      post_layernorm: this.postLayernorm,
    };
  }
}
tf.serialization.registerClass(CLIPVisionTransformer);

/** HF `CLIPVisionModel`: the root whose only child is `vision_model`, so parameter paths equal HF keys. */
export class CLIPVisionModel implements Module {
  readonly visionModel: CLIPVisionTransformer;

  /** `layout`: default, the one for the active backend (see layout.ts); `init`: see WeightInit. */
  constructor(
    readonly config: CLIPVisionConfig,
    options: { trainable?: boolean; layout?: TowerLayout; init?: WeightInit } = {},
  ) {
    this.visionModel = new CLIPVisionTransformer(config, {
      trainable: options.trainable ?? true,
      layout: options.layout,
      init: options.init,
    });
  }

  params() {
    return {};
  }

  children(): Record<string, Module> {
    return { vision_model: this.visionModel };
  }

  forward(pixels: tf.Tensor4D, options: VisionForwardOptions = {}): VisionModelOutput {
    return this.visionModel.forward(pixels, options);
  }

  hiddenState(pixels: tf.Tensor4D, index: number, options: VisionForwardOptions = {}): tf.Tensor3D {
    return this.visionModel.hiddenState(pixels, index, options);
  }

  dispose(): void {
    this.visionModel.dispose();
  }
}
