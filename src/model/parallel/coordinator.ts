/**
 * The coordinating thread (rank 0) of a tensor-parallel tower and projector. Per sub-block of each
 * encoder layer it writes LayerNorm(x) into shared memory, wakes the other threads, computes its own
 * shard's partial product meanwhile, waits for theirs, and folds them into the residual stream:
 * x ← x + (bias + Σ partials), in float64, rounded once. Embeddings, LayerNorms and the residual stream
 * stay on this thread; every thread holds only its own slice of each layer's weights.
 */
import * as tf from '../../tf';
import { wasmHeapView } from '../wasm_heap';
import { CLIPVisionConfig, hiddenStateIndex } from '../../config/clip';
import { ConfigError } from '../../errors';
import { CLIPVisionEmbeddings, checkPixelValues } from '../embeddings';
import { layerNormRows } from '../kernels/layer_norm';
import { CLIPVisionModel, VisionForwardOptions, VisionModelOutput } from '../vision_transformer';
import type { VisionBackbone } from '../backbone';
import { disposeWeights } from '../weights';
import { ProjectorConfig } from '../projector';
import { HostTowerWeights, NormWeights, sumPartials } from './host_weights';
import { RankCompute, StepOp } from './shards';
import { CoordinatorStats, emptyStats } from './stats';

export type { CoordinatorStats };

/** The other threads, as the coordinator drives them (implemented over SharedArrayBuffers and Atomics). */
export interface StepTeam {
  /** Threads computing each step, this one included. */
  readonly ranks: number;
  /** The shared input of the next step, `inputFloats` long; outputs of `outputFloats` are made room for. */
  input(inputFloats: number, outputFloats: number): Float32Array;
  /** Wakes the other threads on a step whose input is written. */
  start(op: StepOp, layer: number, rows: number, cols: number): void;
  /** Waits for the other threads' partial products of the started step (views, valid until the next step). */
  finish(outputFloats: number): Float32Array[];
}

/** Runs one step on every thread and sums the partial products into `out` (see sumPartials). */
function runStep(
  team: StepTeam,
  rank0: RankCompute,
  stats: CoordinatorStats,
  step: { op: StepOp; layer: number; rows: number; cols: number; width: number; input: Float32Array },
  bias: Float32Array | null,
  residual: Float32Array | null,
  out: Float32Array,
): void {
  const { op, layer, rows, cols, width, input } = step;
  team.start(op, layer, rows, cols);
  let t = performance.now();
  const mine = rank0.partial(op, layer, input, rows, cols);
  try {
    stats.computeMs += performance.now() - t;
    t = performance.now();
    const others = team.finish(rows * width);
    stats.waitMs += performance.now() - t;
    t = performance.now();
    // Read in place: no tfjs allocation happens between this view and the sum.
    const own = wasmHeapView(mine) ?? (mine.dataSync() as Float32Array);
    sumPartials([own, ...others], bias, width, residual, out, rows * width);
    stats.reduceMs += performance.now() - t;
    stats.steps++;
  } finally {
    mine.dispose();
  }
}

/** A CLIP vision tower sharded across threads: the same outputs as CLIPVisionModel (within float32 rounding). */
export class ShardedVisionModel implements VisionBackbone {
  stats: CoordinatorStats = emptyStats();

  constructor(
    readonly config: CLIPVisionConfig,
    private readonly embeddings: CLIPVisionEmbeddings,
    private readonly host: HostTowerWeights,
    private readonly rank0: RankCompute,
    private readonly team: StepTeam,
  ) {}

  get threads(): number {
    return this.team.ranks;
  }

  takeStats(): CoordinatorStats {
    const s = this.stats;
    this.stats = emptyStats();
    return s;
  }

  /** HF's forward with `output_hidden_states=True` (see CLIPVisionTransformer.forward). */
  forward(pixels: tf.Tensor4D, options: VisionForwardOptions = {}): VisionModelOutput {
    const layers = this.config.numHiddenLayers;
    const states = this.run(
      pixels,
      layers,
      Array.from({ length: layers + 1 }, (_, k) => k),
      options,
    );
    const hiddenStates = states.tensors;
    const last = states.arrays[layers];
    const [b, t, d] = [pixels.shape[0], states.tokens, this.config.hiddenSize];
    const pooled = new Float32Array(b * d);
    const { gamma, beta } = this.host.postLayernorm;
    for (let i = 0; i < b; i++)
      layerNormRows(
        last.subarray(i * t * d, i * t * d + d),
        gamma,
        beta,
        this.config.layerNormEps,
        d,
        pooled.subarray(i * d, (i + 1) * d),
      );
    return { lastHiddenState: hiddenStates[layers], poolerOutput: tf.tensor2d(pooled, [b, d]), hiddenStates };
  }

  /** `hidden_states[index]` alone; layers after it are not run (see CLIPVisionTransformer.hiddenState). */
  hiddenState(pixels: tf.Tensor4D, index: number, options: VisionForwardOptions = {}): tf.Tensor3D {
    const k = hiddenStateIndex(index, this.config.numHiddenLayers);
    return this.run(pixels, k, [k], options).tensors[0];
  }

  /**
   * Images one at a time through layers 1..`upTo`; the hidden states `keep` asks for come back as
   * [B, T, D] tensors (and their arrays), in `keep`'s order.
   */
  private run(
    pixels: tf.Tensor4D,
    upTo: number,
    keep: number[],
    options: VisionForwardOptions,
  ): { tensors: tf.Tensor3D[]; arrays: Float32Array[]; tokens: number } {
    checkPixelValues(this.config, pixels, options.interpolatePosEncoding ?? false);
    const d = this.config.hiddenSize;
    const b = pixels.shape[0];
    const kept = new Map<number, Float32Array>();
    let tokens = 0;
    for (let i = 0; i < b; i++) {
      const t0 = performance.now();
      let x = new Float32Array(0);
      // Not returned from tidy: tidy walks a returned typed array element by element looking for tensors (slow for ViT-L).
      tf.tidy(() => {
        const image = b === 1 ? pixels : tf.slice(pixels, [i, 0, 0, 0], [1, ...pixels.shape.slice(1)]);
        const embedded = this.embeddings.call(image, {
          interpolatePosEncoding: options.interpolatePosEncoding,
        }) as tf.Tensor3D;
        x = new Float32Array(embedded.size);
        const { gamma, beta } = this.host.preLayrnorm;
        layerNormRows(
          wasmHeapView(embedded) ?? (embedded.dataSync() as Float32Array),
          gamma,
          beta,
          this.config.layerNormEps,
          d,
          x,
        );
      });
      tokens = x.length / d;
      this.stats.embedMs += performance.now() - t0;
      const store = (k: number) => {
        if (!keep.includes(k)) return;
        if (!kept.has(k)) kept.set(k, new Float32Array(b * x.length));
        kept.get(k)!.set(x, i * x.length);
      };
      store(0);
      for (let layer = 0; layer < upTo; layer++) {
        const w = this.host.layers[layer];
        this.subBlock('attention', layer, x, tokens, w.layerNorm1, w.outBias);
        this.subBlock('mlp', layer, x, tokens, w.layerNorm2, w.fc2Bias);
        store(layer + 1);
      }
    }
    const arrays = keep.map((k) => kept.get(k)!);
    return { tensors: arrays.map((a) => tf.tensor3d(a, [b, tokens, d])), arrays, tokens };
  }

  /** x ← x + bias + Σ_ranks sub-block(LayerNorm(x)) for one attention or MLP sub-block. */
  private subBlock(
    op: StepOp,
    layer: number,
    x: Float32Array,
    rows: number,
    norm: NormWeights,
    bias: Float32Array,
  ): void {
    const d = this.config.hiddenSize;
    const input = this.team.input(rows * d, rows * d);
    const t = performance.now();
    layerNormRows(x, norm.gamma, norm.beta, this.config.layerNormEps, d, input);
    this.stats.layerNormMs += performance.now() - t;
    runStep(this.team, this.rank0, this.stats, { op, layer, rows, cols: d, width: d, input }, bias, x, x);
  }

  dispose(): void {
    for (const w of this.embeddings.weights) w.dispose();
    this.rank0.tower?.dispose();
    this.rank0.tower = null;
  }

  layersOnThisThread(tower: string): CLIPVisionModel {
    throw new ConfigError(
      `vision tower ${tower} runs sharded across ${this.threads} threads (the threads option): ` +
        `its layers are not on this thread; load with threads: 1 to use visionModel (forward and forwardFull work either way)`,
    );
  }

  /** This thread's weight tensors (embeddings and its shards). */
  weights(): tf.Tensor[] {
    return [...this.embeddings.weights.map((w) => w.read()), ...this.rank0.weights()];
  }
}

/** An `mlp2x_gelu` projector sharded across the same threads: the hidden width split, the last bias added once. */
export class ShardedProjector {
  stats: CoordinatorStats = emptyStats();

  constructor(
    readonly config: ProjectorConfig,
    /** The last Linear's bias, added once after the shards' products are summed. */
    readonly lastBias: Float32Array | null,
    private readonly rank0: RankCompute,
    private readonly team: StepTeam,
  ) {}

  takeStats(): CoordinatorStats {
    const s = this.stats;
    this.stats = emptyStats();
    return s;
  }

  get inFeatures(): number {
    return this.config.inFeatures;
  }

  get outFeatures(): number {
    return this.config.outFeatures;
  }

  /** [B, N, in] -> [B, N, out], image by image. */
  project(features: tf.Tensor3D): tf.Tensor3D {
    const [b, n, width] = features.shape;
    if (width !== this.inFeatures)
      throw new ConfigError(`projector expects features of width ${this.inFeatures} (mm_hidden_size), got ${width}`);
    const out = new Float32Array(b * n * this.outFeatures);
    for (let i = 0; i < b; i++) {
      const input = this.team.input(n * width, n * this.outFeatures);
      // A view of the features where the backend keeps them (wasm), read before any allocation.
      const all = wasmHeapView(features) ?? (features.dataSync() as Float32Array);
      input.set(all.subarray(i * n * width, (i + 1) * n * width));
      const dest = out.subarray(i * n * this.outFeatures, (i + 1) * n * this.outFeatures);
      runStep(
        this.team,
        this.rank0,
        this.stats,
        { op: 'projector', layer: 0, rows: n, cols: width, width: this.outFeatures, input },
        this.lastBias,
        null,
        dest,
      );
    }
    return tf.tensor3d(out, [b, n, this.outFeatures]);
  }

  dispose(): void {
    if (this.rank0.projector) disposeWeights(this.rank0.projector);
    this.rank0.projector = null;
  }
}
