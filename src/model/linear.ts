import * as tf from '../tf';
import { Block } from '../io/blocks';
import { Module, Param, WeightInit, blocksParam, initialWeights } from './module';
import { FeatureRange, splitRange } from './parallel/partition';
import { gemm, usesOwnGemm } from './kernels/gemm';
import { applyTrainableFlag, singleInput, singleShape } from './tfjs_layer';

export interface LinearArgs {
  inFeatures: number;
  outFeatures: number;
  bias?: boolean;
  name?: string;
  trainable?: boolean;
  /**
   * Derived layout: the weight stored as `parts` equal slices along its output features (one GEMM per
   * slice, e.g. one per attention head) or its input features (partial products summed). Default: whole.
   */
  split?: { along: 'out' | 'in'; parts: number };
  /**
   * Keep the weight in the checkpoint's [out, in] layout and run it as the LEFT operand on
   * feature-major activations (W · xᵀ inside `forwardParts`). The wasm
   * backend's XNNPACK keeps a packed copy of every right-hand operand it has seen, so a weight on
   * the left costs no second copy; the activation is packed per call instead.
   */
  weightLeft?: boolean;
  /**
   * A tensor-parallel shard (parallel/partition.ts): only features `start .. start + count − 1` of the
   * split dimension (`split.along`) are held, as `split.parts` blocks of near-equal size;
   * `inFeatures`/`outFeatures` stay the checkpoint tensor's. A shard along the inputs holds no bias:
   * `forwardParts` gives this shard's partial product, and whoever sums the shards' products adds the
   * bias once. The 2-D hot paths only (`call` needs the whole weight).
   */
  shard?: FeatureRange;
  /** How the weights start out (default zeros; `uninitialised` when a load fills them next). */
  init?: WeightInit;
}

/**
 * `torch.nn.Linear`. By default the kernel is stored as [in, out] (the checkpoint's weight transposed
 * once at load time): tfjs-backend-wasm only takes its XNNPACK fast path for non-transposed 2-D
 * operands, and a trainable layer keeps that layout whatever the backend. A frozen layer run by the
 * project's own GEMM (kernels/gemm.ts: on wasm, where the engine has wasm SIMD) is stored in the
 * checkpoint's [out, in] layout, which that GEMM reads in place with no packed copy. Both decided
 * when the layer is built. `call` works on any [..., in] input; the `forward*` methods are the 2-D
 * hot paths that keep a split weight's parts apart.
 */
export class Linear extends tf.layers.Layer implements Module {
  static readonly className = 'LlavaVisionLinear';
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly useBias: boolean;
  readonly splitAlong: 'out' | 'in';
  readonly parts: number;
  readonly weightLeft: boolean;
  /** Run by the project's GEMM (kernels/gemm.ts) where the backend has it; decided at build time. */
  readonly ownGemm: boolean;
  /** Every kernel stored in the checkpoint's [out, in] layout (weightLeft, or a frozen layer on our GEMM). */
  readonly outIn: boolean;
  readonly shard: FeatureRange | null;
  private readonly init: WeightInit;
  kernels: tf.LayerVariable[] = [];
  biases: tf.LayerVariable[] = [];

  constructor(args: LinearArgs) {
    super({ name: args.name, trainable: args.trainable ?? true });
    this.inFeatures = args.inFeatures;
    this.outFeatures = args.outFeatures;
    this.useBias = args.bias ?? true;
    this.splitAlong = args.split?.along ?? 'out';
    this.parts = args.split?.parts ?? 1;
    this.weightLeft = args.weightLeft ?? false;
    this.ownGemm = usesOwnGemm();
    this.outIn = this.weightLeft || (this.ownGemm && !this.trainable);
    this.init = args.init ?? 'zeros';
    this.shard = args.shard ? { ...args.shard } : null;
    const size = this.splitAlong === 'out' ? this.outFeatures : this.inFeatures;
    if (this.shard) {
      const { start, count } = this.shard;
      if (
        !Number.isInteger(start) ||
        !Number.isInteger(count) ||
        start < 0 ||
        start + count > size ||
        !Number.isInteger(this.parts) ||
        this.parts < 1 ||
        count < this.parts
      ) {
        throw new Error(
          `${this.name}: cannot hold ${this.splitAlong}put features ${start}..${start + count - 1} of ${size} in ${this.parts} parts`,
        );
      }
    } else if (!Number.isInteger(this.parts) || this.parts < 1 || size % this.parts !== 0) {
      throw new Error(
        `${this.name}: cannot split ${size} ${this.splitAlong}put features into ${this.parts} equal parts`,
      );
    }
    if (this.weightLeft && !this.ownGemm && this.splitAlong === 'in' && this.parts > 1)
      throw new Error(`${this.name}: weightLeft supports splits along the outputs only`);
    this.build([null, this.inFeatures]);
  }

  /** The kernel of an unsplit Linear ([in, out], or [out, in]: see `outIn`). */
  get kernel(): tf.LayerVariable {
    if (this.kernels.length !== 1)
      throw new Error(`${this.name}: the kernel is stored in ${this.kernels.length} parts`);
    return this.kernels[0];
  }

  /** The bias of an unsplit Linear (null without bias). */
  get bias(): tf.LayerVariable | null {
    if (this.biases.length > 1) throw new Error(`${this.name}: the bias is stored in ${this.biases.length} parts`);
    return this.biases[0] ?? null;
  }

  override build(_inputShape: tf.Shape | tf.Shape[]): void {
    if (this.built) return;
    const zeros = initialWeights(this.init);
    const suffix = (j: number) => (this.parts === 1 ? '' : `.part${j}`); // not _j: tfjs's own de-duplication suffix
    this.kernels = this.weightBlocks().map((b, j) =>
      this.addWeight(
        `kernel${suffix(j)}`,
        b.transposed ? [b.nc, b.nr] : [b.nr, b.nc],
        'float32',
        zeros,
        undefined,
        true,
      ),
    );
    const biasSizes = this.biasRanges().map((r) => r.count);
    this.biases = biasSizes.map((size, j) =>
      this.addWeight(
        `bias${biasSizes.length === 1 ? '' : `.part${j}`}`,
        this.weightLeft && !this.ownGemm ? [size, 1] : [size],
        'float32',
        zeros,
        undefined,
        true,
      ),
    );
    applyTrainableFlag(this);
    this.built = true;
  }

  /**
   * Part j of the weight as a block of the checkpoint's [out, in] matrix: as is for an `outIn`
   * kernel (rows of [out, in]), else transposed ([in, out] for the non-transposed GEMM).
   */
  private weightBlocks(): Block[] {
    const { inFeatures: i, outFeatures: o } = this;
    const transposed = !this.outIn;
    return this.partRanges().map(({ start, count }) =>
      this.splitAlong === 'out'
        ? { r0: start, nr: count, c0: 0, nc: i, transposed }
        : { r0: 0, nr: o, c0: start, nc: count, transposed },
    );
  }

  /** The features of the split dimension each part holds (equal parts of the whole, or of the shard). */
  private partRanges(): FeatureRange[] {
    const held = this.shard ?? { start: 0, count: this.splitAlong === 'out' ? this.outFeatures : this.inFeatures };
    return splitRange(held.count, this.parts).map((r) => ({ start: held.start + r.start, count: r.count }));
  }

  /** The output features each bias variable holds: one per part along the outputs, else the whole (none for a shard along the inputs). */
  private biasRanges(): FeatureRange[] {
    if (!this.useBias) return [];
    if (this.splitAlong === 'out') return this.partRanges();
    return this.shard ? [] : [{ start: 0, count: this.outFeatures }];
  }

  /** Input width of `call`: the checkpoint's, or a shard's features when it is split along its inputs. */
  get heldIn(): number {
    return this.shard && this.splitAlong === 'in' ? this.shard.count : this.inFeatures;
  }

  /** Output width of `call`: the checkpoint's, or a shard's features when it is split along its outputs. */
  get heldOut(): number {
    return this.shard && this.splitAlong === 'out' ? this.shard.count : this.outFeatures;
  }

  /**
   * The 2-D hot path, token-major whatever the layout: `xs` are the input parts ([rows, in_j] each when
   * split along the inputs, else one [rows, in]); returns the output parts ([rows, out_j] each when
   * split along the outputs, else one [rows, out]). Input parts' products are summed, the bias added
   * once. A shard's result is its partial product (no bias when it is split along the inputs).
   */
  forwardParts(xs: tf.Tensor2D[]): tf.Tensor2D[] {
    return tf.tidy(() => {
      const bias = (j: number) => this.biases[j]?.read();
      if (this.ownGemm) {
        // Input parts' products are summed inside one GEMM (in order of the parts); the bias is added
        // once, after the whole sum (see below).
        // The input is packed once and reused by every part (and by the next Linear on the same input).
        const layout = this.outIn ? 'out-in' : 'in-out';
        const withBias = (y: tf.Tensor2D, b: tf.Tensor | undefined) => (b ? tf.add(y, b) : y);
        const run = (x: tf.Tensor2D[], k: tf.LayerVariable[]) =>
          gemm(
            x,
            k.map((v) => v.read() as tf.Tensor2D),
            layout,
            { pack: 'x' },
          );
        if (this.splitAlong === 'out') return this.kernels.map((k, j) => withBias(run([xs[0]], [k]), bias(j)));
        return [withBias(run(xs, this.kernels), bias(0))];
      }
      if (this.weightLeft) {
        // W [out_j, in] · xᵀ: the weight is the left operand (see LinearArgs.weightLeft), the result transposed back.
        const xT = tf.transpose(xs[0]);
        return this.kernels.map((k, j) => {
          const yT = tf.matMul(k.read(), xT);
          const b = bias(j);
          return tf.transpose(b ? tf.add(yT, b) : yT);
        });
      }
      if (this.splitAlong === 'out') {
        return this.kernels.map((k, j) => tf.fused.matMul({ a: xs[0], b: k.read(), bias: bias(j) }));
      }
      // The bias once, after the parts' products are summed, never fused into a GEMM here: XNNPACK
      // (wasm) starts its accumulators from the bias, so every product of that part would be added at
      // the bias's magnitude. fc2's biases build the "massive activations" of trained CLIP towers (a
      // few channels at hundreds); accumulating there cost a multiple of PyTorch's error, whose GEMM sums the
      // products first and then adds them to the bias.
      const terms: tf.Tensor2D[] = this.kernels.map((k, j) => tf.matMul(xs[j], k.read() as tf.Tensor2D));
      const sum = terms.length === 1 ? terms[0] : tf.addN(terms);
      const b = bias(0);
      return [b ? tf.add(sum, b) : sum];
    }) as tf.Tensor2D[];
  }

  /** Any [..., heldIn] -> [..., heldOut] (a whole Linear: [..., in] -> [..., out]). */
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = singleInput(inputs);
    return tf.tidy(() => {
      const lead = x.shape.slice(0, -1);
      const x2d = tf.reshape<tf.Rank.R2>(x, [-1, this.heldIn]);
      const parts =
        this.splitAlong === 'in' && this.kernels.length > 1
          ? tf.split<tf.Tensor2D>(
              x2d,
              this.partRanges().map((r) => r.count),
              1,
            )
          : [x2d];
      const outs = this.forwardParts(parts);
      const y = outs.length === 1 ? outs[0] : tf.concat(outs, 1);
      return lead.length === 1 ? y : tf.reshape(y, [...lead, this.heldOut]);
    });
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const s = singleShape(inputShape);
    return [...s.slice(0, -1), this.heldOut];
  }

  override getConfig(): tf.serialization.ConfigDict {
    const config: tf.serialization.ConfigDict = {
      ...super.getConfig(),
      inFeatures: this.inFeatures,
      outFeatures: this.outFeatures,
      bias: this.useBias,
    };
    if (this.parts > 1) config.split = { along: this.splitAlong, parts: this.parts };
    if (this.weightLeft) config.weightLeft = true;
    if (this.shard) config.shard = { ...this.shard };
    return config;
  }

  params(): Record<string, Param> {
    const [inF, outF] = [this.inFeatures, this.outFeatures];
    const p: Record<string, Param> = { weight: blocksParam(this.kernels, [outF, inF], inF, this.weightBlocks()) };
    const biasBlocks = this.biasRanges().map(({ start, count }) => ({
      r0: 0,
      nr: 1,
      c0: start,
      nc: count,
      transposed: false,
    }));
    if (biasBlocks.length) p.bias = blocksParam(this.biases, [outF], outF, biasBlocks);
    return p;
  }

  children(): Record<string, Module> {
    return {};
  }
}
tf.serialization.registerClass(Linear);
