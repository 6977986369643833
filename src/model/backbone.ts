import * as tf from '../tf';
import type { CLIPVisionConfig } from '../config/clip';
import type { CoordinatorStats } from './parallel/stats';
import { CLIPVisionModel, VisionForwardOptions, VisionModelOutput } from './vision_transformer';

/**
 * A loaded CLIP vision tower as `CLIPVisionTower` runs it: on this thread (`LocalVisionBackbone`) or split
 * across tensor-parallel ranks (`ShardedVisionModel`). The tower holds one and never asks which.
 */
export interface VisionBackbone {
  readonly config: CLIPVisionConfig;
  /** Threads the tower runs on: 1, or its tensor-parallel ranks. */
  readonly threads: number;
  /** HF's forward with `output_hidden_states=True`: every hidden state and the pooled output. */
  forward(pixels: tf.Tensor4D, options?: VisionForwardOptions): VisionModelOutput;
  /** hidden_states[index] alone: layers after it do not run. */
  hiddenState(pixels: tf.Tensor4D, index: number, options?: VisionForwardOptions): tf.Tensor3D;
  /** The HF model's layers on this thread, or a ConfigError saying why they are not (`tower` names it). */
  layersOnThisThread(tower: string): CLIPVisionModel;
  /** This thread's weight tensors. */
  weights(): tf.Tensor[];
  /** @internal The coordinating thread's time in the ranks' steps since the last call; null on this thread only. */
  takeStats(): CoordinatorStats | null;
  dispose(): void;
}

/** The tower as one `CLIPVisionModel` on this thread. */
export class LocalVisionBackbone implements VisionBackbone {
  readonly threads = 1;

  constructor(readonly model: CLIPVisionModel) {}

  get config(): CLIPVisionConfig {
    return this.model.config;
  }

  forward(pixels: tf.Tensor4D, options?: VisionForwardOptions): VisionModelOutput {
    return this.model.forward(pixels, options);
  }

  hiddenState(pixels: tf.Tensor4D, index: number, options?: VisionForwardOptions): tf.Tensor3D {
    return this.model.hiddenState(pixels, index, options);
  }

  layersOnThisThread(): CLIPVisionModel {
    return this.model;
  }

  weights(): tf.Tensor[] {
    return this.model.visionModel.weights.map((w) => w.read());
  }

  takeStats(): null {
    return null;
  }

  dispose(): void {
    for (const w of this.model.visionModel.weights) w.dispose();
  }
}
