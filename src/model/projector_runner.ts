import * as tf from '../tf';
import type { CoordinatorStats } from './parallel/stats';
import { Projector } from './projector';

/**
 * A loaded projector as `LlavaVision` runs it: on this thread (`LocalProjectorRunner`) or, at threads > 1,
 * also split across tensor-parallel ranks (parallel/tensor/projector_runner.ts). Either way `layer` is the
 * whole projector on this thread, the one that trains; the runner decides where `project` runs.
 */
export interface ProjectorRunner {
  /** The trainable projector on this thread (`LlavaVision.projector`). */
  readonly layer: Projector;
  /** features [B, N, D] -> [B, N, out]. */
  project(features: tf.Tensor3D): tf.Tensor3D;
  /** @internal The coordinating thread's time in the ranks' steps since the last call; null on this thread only. */
  takeStats(): CoordinatorStats | null;
  dispose(): void;
}

/** The projector on this thread only. */
export class LocalProjectorRunner implements ProjectorRunner {
  constructor(readonly layer: Projector) {}

  project(features: tf.Tensor3D): tf.Tensor3D {
    return this.layer.call(features) as tf.Tensor3D;
  }

  takeStats(): null {
    return null;
  }

  dispose(): void {
    for (const w of this.layer.weights) w.dispose();
  }
}
