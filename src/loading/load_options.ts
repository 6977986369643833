/** How `LlavaVision.load` reads a model: what the load plan, the worker pool and the CLI all take. */
import type { BackendOptions } from '../backend';
import type { SelectFeature } from '../config/llava';
import type { DownloadOptions } from '../io/hub';
import type { TowerLayout } from '../model/layout';

export interface LoadOptions extends BackendOptions {
  /** Folder (or hub id) of the CLIP tower for an original LLaVA checkpoint (default: `mm_vision_tower` resolved locally). */
  visionTower?: string;
  /**
   * Fetch a model given as a hub id (and LLaVA's `mm_vision_tower`) from the HuggingFace hub when the
   * local HF cache does not hold it (true, or hub options); default: LLAVA_VISION_DOWNLOAD=1. Never with HF_HUB_OFFLINE=1.
   */
  download?: boolean | DownloadOptions;
  /** Projector weights (safetensors or `mm_projector.bin`) overriding the model folder's. */
  projector?: string;
  /** Projector type when it can't be read from the config (default: inferred from the weights' keys). */
  projectorType?: string;
  selectLayer?: number | number[];
  selectFeature?: SelectFeature;
  /** How the tower runs (model/layout.ts); default: the one for the backend (`batched` on webgpu, else `wasm`). */
  layout?: TowerLayout;
  /**
   * Threads the tower and an `mlp2x_gelu` projector are sharded across (tensor parallel: attention
   * heads, MLP features and the projector's hidden width split, each thread holding only its slices
   * of the weights; docs/performance.md). Default: LLAVA_VISION_THREADS, else the available cores
   * (os.availableParallelism()). 1 runs everything on the calling thread. wasm backend only (others
   * use 1); at most one thread per attention head.
   */
  threads?: number;
}
