import * as tf from '../../tf';
import type { CoordinatorStats, ShardedProjector } from '../../model/parallel/coordinator';
import type { Projector } from '../../model/projector';
import type { ProjectorRunner } from '../../model/projector_runner';
import type { ShardTeam } from './team';

/**
 * The projector at threads > 1 (issue 20's dual state): `layer` is the whole projector on this thread, the
 * one that trains, and `shards` are slices of the same weights on the tensor-parallel ranks. The shards
 * project while the layer's weights are the ones they were cut from and no gradient is being recorded;
 * else the layer runs here, where gradients flow. The first change to the layer's weights (an optimizer
 * step, a write) retires the shards: from then on `project` uses what was trained.
 */
export class TensorParallelProjectorRunner implements ProjectorRunner {
  /** The layer's weights (their tfjs data ids) the shards hold slices of. */
  private readonly cutFrom: readonly object[];

  constructor(
    readonly layer: Projector,
    private shards: ShardedProjector | null,
    private readonly team: ShardTeam,
  ) {
    this.cutFrom = weightIds(layer);
  }

  project(features: tf.Tensor3D): tf.Tensor3D {
    if (this.shards && weightIds(this.layer).some((id, i) => id !== this.cutFrom[i])) this.retireShards();
    if (this.shards && !recordingGradients()) return this.shards.project(features);
    return this.layer.call(features) as tf.Tensor3D;
  }

  takeStats(): CoordinatorStats | null {
    return this.shards?.takeStats() ?? null;
  }

  dispose(): void {
    for (const w of this.layer.weights) w.dispose();
    this.shards?.dispose();
  }

  /** Trained (or written) since the shards were cut: they would project with the old weights. */
  private retireShards(): void {
    this.shards!.dispose();
    this.team.request(() => ({ kind: 'dropProjector' }));
    this.shards = null;
  }
}

/** The tfjs data of each of a layer's weights: a training step or a write replaces it (Variable.assign). */
function weightIds(layer: Projector): object[] {
  return layer.weights.map((w) => w.read().dataId);
}

/**
 * Whether tfjs is recording operations for gradients (inside `tf.variableGrads`, `optimizer.minimize`,
 * `tf.grad`, ...): the projector then runs as the trainable layer on this thread.
 */
function recordingGradients(): boolean {
  return tf.engine().state.gradientDepth > 0;
}
