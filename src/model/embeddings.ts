import * as tf from '../tf';
import { CLIPVisionConfig, numPatchesPerSide } from '../config/clip';
import { ConfigError } from '../errors';
import { Module, Param, WeightInit, initialWeights, wholeParam } from './module';
import { bicubicResizeMatrix } from './interpolate';
import { applyTrainableFlag, singleInput, singleShape } from './tfjs_layer';
import { gemm } from './kernels/gemm';

/**
 * HF `CLIPVisionEmbeddings`: patch conv (no bias) + class token + position embeddings.
 * The stride-P PxP conv is run as one GEMM on unfolded patches ([tokens, C·P·P] × [C·P·P, D]),
 * the exact same sums as the conv. `position_ids` is a non-persistent buffer in HF: not a weight here.
 */
export class CLIPVisionEmbeddings extends tf.layers.Layer implements Module {
  static readonly className = 'CLIPVisionEmbeddings';
  readonly config: CLIPVisionConfig;
  patchKernel!: tf.LayerVariable; // [C·P·P, D]
  classEmbedding!: tf.LayerVariable; // [D]
  positionEmbedding!: tf.LayerVariable; // [numPositions, D]

  private readonly init: WeightInit;

  constructor(config: CLIPVisionConfig, args: { name?: string; trainable?: boolean; init?: WeightInit } = {}) {
    super({ name: args.name, trainable: args.trainable ?? true });
    this.config = config;
    this.init = args.init ?? 'zeros';
    this.build([null, config.numChannels, config.imageSize, config.imageSize]);
  }

  get numPositions(): number {
    return numPatchesPerSide(this.config) ** 2 + 1;
  }

  override build(_inputShape: tf.Shape | tf.Shape[]): void {
    if (this.built) return;
    const { numChannels: c, patchSize: p, hiddenSize: d } = this.config;
    const zeros = initialWeights(this.init);
    this.patchKernel = this.addWeight('patch_kernel', [c * p * p, d], 'float32', zeros, undefined, true);
    this.classEmbedding = this.addWeight('class_embedding', [d], 'float32', zeros, undefined, true);
    this.positionEmbedding = this.addWeight(
      'position_embedding',
      [this.numPositions, d],
      'float32',
      zeros,
      undefined,
      true,
    );
    applyTrainableFlag(this);
    this.built = true;
  }

  /** pixel values [B, C, H, W] -> embeddings [B, 1 + gh·gw, D]. */
  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: { interpolatePosEncoding?: boolean } = {}): tf.Tensor {
    const pixels = singleInput<tf.Tensor4D>(inputs);
    const { numChannels: c, patchSize: p, hiddenSize: d } = this.config;
    const { gh, gw } = checkPixelValues(this.config, pixels, kwargs.interpolatePosEncoding ?? false);
    const [b, , h, w] = pixels.shape;
    return tf.tidy(() => {
      // A stride-P conv ignores the remainder rows/columns, so crop them away before unfolding.
      const cropped = h === gh * p && w === gw * p ? pixels : tf.slice(pixels, [0, 0, 0, 0], [b, c, gh * p, gw * p]);
      // One GEMM per input channel ([tokens, P·P] × [P·P, D]), their products summed in order: wasm's
      // XNNPACK GEMM accumulates each output sequentially over K without FMA, and K = C·P·P = 588 in
      // one chain is less accurate than three chains of 196 (kernels/gemm.ts sums the same way).
      const perChannel = tf.reshape(tf.transpose(tf.reshape(cropped, [b, c, gh, p, gw, p]), [1, 0, 2, 4, 3, 5]), [
        c,
        b * gh * gw,
        p * p,
      ]);
      const kernel = this.patchKernel.read() as tf.Tensor2D;
      const patches = tf.unstack(perChannel) as tf.Tensor2D[];
      const products = gemm(
        patches,
        patches.map((_, ch) => tf.slice(kernel, [ch * p * p, 0], [p * p, d])),
        'in-out',
      );
      const patchEmbeds = tf.reshape(products, [b, gh * gw, d]);
      const cls = tf.tile(tf.reshape(this.classEmbedding.read(), [1, 1, d]), [b, 1, 1]);
      const tokens = tf.concat([cls, patchEmbeds], 1);
      return tf.add(tokens, tf.expandDims(this.positionsFor(gh, gw, h, w), 0));
    });
  }

  /**
   * Position embeddings for a gh×gw grid. HF's `interpolate_pos_encoding` resizes the trained grid
   * with torch bicubic (A=-0.75, align_corners=False), and skips it only when the patch count
   * matches AND the image is square.
   */
  private positionsFor(gh: number, gw: number, h: number, w: number): tf.Tensor2D {
    const table = this.positionEmbedding.read() as tf.Tensor2D;
    const n = this.numPositions - 1;
    if (gh * gw === n && h === w) return table;
    const side = Math.round(Math.sqrt(n));
    const d = this.config.hiddenSize;
    const resize = bicubicResizeMatrix(side, side, gh, gw);
    const patchPositions = tf.slice(table, [1, 0], [n, d]);
    const resized = tf.matMul(tf.tensor2d(resize, [gh * gw, n]), patchPositions);
    return tf.concat([tf.slice(table, [0, 0], [1, d]), resized], 0) as tf.Tensor2D;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const s = singleShape(inputShape);
    const p = this.config.patchSize;
    const tokens = s[2] != null && s[3] != null ? 1 + Math.floor(s[2] / p) * Math.floor(s[3] / p) : null;
    return [s[0], tokens, this.config.hiddenSize];
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), config: { ...this.config } };
  }

  params(): Record<string, Param> {
    const { numChannels: c, patchSize: p, hiddenSize: d } = this.config;
    return {
      'patch_embedding.weight': wholeParam(this.patchKernel, [d, c, p, p], true), // kept as [C·P·P, D]: the unfolded patches' GEMM
      class_embedding: wholeParam(this.classEmbedding, [d]),
      'position_embedding.weight': wholeParam(this.positionEmbedding, [this.numPositions, d]),
    };
  }

  children(): Record<string, Module> {
    return {};
  }
}
tf.serialization.registerClass(CLIPVisionEmbeddings);

/**
 * Checks pixel values [B, C, H, W] against the config (a ConfigError saying what is wrong, e.g. that
 * they look like NHWC) and gives the patch grid.
 */
export function checkPixelValues(
  config: CLIPVisionConfig,
  pixels: tf.Tensor,
  interpolate: boolean,
): { gh: number; gw: number } {
  const { numChannels: c, patchSize: p, imageSize } = config;
  if (pixels.rank !== 4)
    throw new ConfigError(`pixel_values must be 4-D, NCHW [N, ${c}, H, W]; got shape [${pixels.shape.join(', ')}]`);
  const [, channels, h, w] = pixels.shape;
  if (channels !== c) {
    const nhwc =
      pixels.shape[3] === c
        ? ', which looks like NHWC (channels last): transpose it with tf.transpose(x, [0, 3, 1, 2])'
        : '';
    throw new ConfigError(
      `pixel_values must be NCHW [N, ${c}, H, W] (num_channels ${c}); got [${pixels.shape.join(', ')}]${nhwc}`,
    );
  }
  if (!interpolate && (h !== imageSize || w !== imageSize)) {
    throw new ConfigError(
      `pixel_values are ${h}x${w} but the model's image_size is ${imageSize}; resize them or enable interpolate_pos_encoding`,
    );
  }
  const gh = Math.floor(h / p);
  const gw = Math.floor(w / p);
  if (gh === 0 || gw === 0) throw new ConfigError(`pixel_values ${h}x${w} are smaller than one ${p}x${p} patch`);
  return { gh, gw };
}
