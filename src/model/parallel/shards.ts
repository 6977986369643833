/**
 * One thread's shard of a tower and projector (parallel/partition.ts says which heads and features),
 * and the computation each thread runs per step: its partial product of one attention or MLP
 * sub-block, or of the projector, from the normalised activations in shared memory.
 */
import * as tf from '../../tf';
import { CLIPVisionConfig } from '../../config/clip';
import { CLIPAttention } from '../attention';
import { CLIPMLP } from '../mlp';
import { Module, ModuleGroup } from '../module';
import { Projector, ProjectorConfig } from '../projector';
import { disposeWeights } from '../weights';
import { FeatureRange, RankPlan } from './partition';

/** What a thread computes per step: one layer's attention or MLP, or the projector. */
export type StepOp = 'attention' | 'mlp' | 'projector';
export const STEP_OPS: readonly StepOp[] = ['attention', 'mlp', 'projector'];

/**
 * The attention heads and MLP features of every encoder layer a rank holds, under the checkpoint's
 * module paths (`vision_model.encoder.layers.<i>.self_attn.q_proj.weight`, ...), so `loadWeights`
 * loads it like the whole tower, reading only its slices. Frozen, layout `wasm`.
 */
export class TowerShard implements Module {
  readonly attention: CLIPAttention[];
  readonly mlp: CLIPMLP[];

  constructor(
    readonly config: CLIPVisionConfig,
    readonly plan: Pick<RankPlan, 'heads' | 'features'>,
  ) {
    // Built to be loaded: the weights' memory is filled by the loader (see WeightInit).
    const layer = (i: number, name: string) => ({
      name: `vision_model/encoder/layers/${i}/${name}`,
      trainable: false,
      layout: 'wasm' as const,
      init: 'uninitialised' as const,
    });
    const layers = Array.from({ length: config.numHiddenLayers }, (_, i) => i);
    this.attention = [];
    this.mlp = [];
    try {
      for (const i of layers) {
        this.attention.push(new CLIPAttention(config, { ...layer(i, 'self_attn'), heads: plan.heads }));
        this.mlp.push(new CLIPMLP(config, { ...layer(i, 'mlp'), features: plan.features }));
      }
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  params() {
    return {};
  }

  children(): Record<string, Module> {
    const layers = Object.fromEntries(
      this.attention.map((a, i) => [String(i), new ModuleGroup({ self_attn: a, mlp: this.mlp[i] })]),
    );
    return { vision_model: new ModuleGroup({ encoder: new ModuleGroup({ layers: new ModuleGroup(layers) }) }) };
  }

  dispose(): void {
    disposeWeights(this);
  }
}

/** A rank's shard of an `mlp2x_gelu` projector: the hidden features `hidden` (see Projector). */
export function projectorShard(config: ProjectorConfig, hidden: FeatureRange): Projector {
  return new Projector(config, { hidden, trainable: false, init: 'uninitialised' });
}

/** The steps one rank runs on its shards. */
export class RankCompute {
  /** Time spent copying inputs into the backend (ms, cumulative). */
  copyInMs = 0;

  constructor(
    public tower: TowerShard | null = null,
    public projector: Projector | null = null,
  ) {}

  /**
   * This rank's partial product of a step, from `input`, a row-major [rows, cols] matrix (e.g. in
   * shared memory; copied into the backend once): [rows, hidden_size] for attention and MLP,
   * [rows, projector width] for the projector. The caller disposes it.
   */
  partial(op: StepOp, layer: number, input: Float32Array, rows: number, cols: number): tf.Tensor2D {
    const tower = this.tower;
    if (op !== 'projector' && !tower) throw new Error(`this thread holds no tower shard (step ${op})`);
    if (op !== 'projector' && (layer < 0 || layer >= tower!.attention.length))
      throw new RangeError(`no encoder layer ${layer}`);
    if (op === 'projector' && !this.projector) throw new Error('this thread holds no projector shard');
    return tf.tidy(() => {
      const t = performance.now();
      const x = tf.tensor2d(input.subarray(0, rows * cols), [rows, cols]);
      this.copyInMs += performance.now() - t;
      if (op === 'attention') return tower!.attention[layer].forward2d(x);
      if (op === 'mlp') return tower!.mlp[layer].forward2d(x);
      return this.projector!.call(x) as tf.Tensor2D;
    });
  }

  /** The weight tensors (e.g. to tell them from activations in a GEMM trace). */
  weights(): tf.Tensor[] {
    const layers = [
      ...(this.tower?.attention ?? []),
      ...(this.tower?.mlp ?? []),
      ...(this.projector ? [this.projector] : []),
    ];
    return layers.flatMap((l) => l.weights.map((w) => w.read()));
  }

  dispose(): void {
    this.tower?.dispose();
    if (this.projector) disposeWeights(this.projector);
    this.tower = null;
    this.projector = null;
  }
}
