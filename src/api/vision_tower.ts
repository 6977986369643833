import * as tf from '../tf';
import { CLIPVisionConfig, hiddenStateIndex, numPatchesPerSide } from '../config/clip';
import { SelectFeature, parseSelectFeature } from '../config/llava';
import { BackendOptions, ensureBackend, ensureBackendSync } from '../backend';
import { ConfigError } from '../errors';
import { CLIPVisionModel, VisionForwardOptions, VisionModelOutput } from '../model/vision_transformer';
import { LocalVisionBackbone, VisionBackbone } from '../model/backbone';
import type { CoordinatorStats } from '../model/parallel/stats';
import { KeyMap, TensorSource, disposeWeights, loadWeights, prefaultWeights } from '../model/weights';
import { checkVisionConfigAgainstWeights } from '../model/config_checks';
import { TowerLayout } from '../model/layout';
import { openTensorSource, readVisionConfig, visionConfigFile } from '../loading/sources';

export interface VisionTowerOptions {
  /** `mm_vision_select_layer`: index into the L+1 hidden states, negative from the end. Default -2. */
  selectLayer?: number | number[];
  /** `mm_vision_select_feature`. Default `patch` (drops CLS). */
  selectFeature?: SelectFeature;
  /** Read only the config now; call `loadModel()` later (LLaVA's `delay_load`). */
  delayLoad?: boolean;
  /** The tower config when it doesn't live in the tower folder's config.json (llava-hf). */
  visionConfig?: CLIPVisionConfig;
  /** The file `visionConfig` was read from, named in errors (default: the tower folder's config.json). */
  configFile?: string;
  /** Warnings (e.g. loading twice); default stderr. */
  warn?: (message: string) => void;
  /** How the tower runs (see model/layout.ts); default: the one for the backend active when it is built. */
  layout?: TowerLayout;
}

/**
 * LLaVA's `CLIPVisionTower` (llava/model/multimodal_encoder/clip_encoder.py): a frozen HF
 * `CLIPVisionModel` whose `hidden_states[select_layer]` are the image features.
 */
export class CLIPVisionTower {
  readonly visionTowerName: string;
  readonly selectLayers: number[];
  readonly selectFeature: SelectFeature;
  readonly config: CLIPVisionConfig;
  /** The config.json the tower's config came from (named when it disagrees with the weights). */
  readonly configFile: string;
  /** The loaded tower: on this thread, or sharded across threads (LlavaVision's `threads` > 1). */
  private loaded: VisionBackbone | null = null;
  private disposed = false;
  private readonly warn: (message: string) => void;
  private readonly layout: TowerLayout | undefined;

  /**
   * `new CLIPVisionTower(path, { ...options, delayLoad: true })` then `await loadModelAsync()`: the
   * tower on the backend `LlavaVision.load` would choose (wasm by default; the constructor's
   * synchronous load cannot start wasm and runs on tfjs-node or the slow cpu backend).
   */
  static async load(
    visionTowerPath: string,
    options: Omit<VisionTowerOptions, 'delayLoad'> & BackendOptions = {},
  ): Promise<CLIPVisionTower> {
    const tower = new CLIPVisionTower(visionTowerPath, { ...options, delayLoad: true });
    await tower.loadModelAsync(undefined, options);
    return tower;
  }

  constructor(visionTowerPath: string, options: VisionTowerOptions = {}) {
    this.visionTowerName = visionTowerPath;
    const layer = options.selectLayer ?? -2;
    this.selectLayers = Array.isArray(layer) ? [...layer] : [layer];
    this.selectFeature = parseSelectFeature(options.selectFeature ?? 'patch', 'select feature');
    this.warn = options.warn ?? ((m) => process.stderr.write(`llava-vision: ${m}\n`));
    this.configFile =
      options.configFile ?? (options.visionConfig ? 'vision config' : visionConfigFile(visionTowerPath));
    this.layout = options.layout;
    this.config = options.visionConfig ?? readVisionConfig(visionTowerPath);
    this.selectedStates(); // checks the select layers against the tower's depth
    if (!options.delayLoad) this.loadModel();
  }

  get isLoaded(): boolean {
    return this.loaded !== null;
  }

  /** Threads the tower runs on: 1, or the threads it is sharded across (LlavaVision's `threads`). */
  get threads(): number {
    return this.loaded?.threads ?? 1;
  }

  /** @internal LlavaVision.load with threads > 1: the tower runs sharded across threads (see parallel/tensor/). */
  attachBackbone(backbone: VisionBackbone): void {
    this.loaded = backbone;
    this.disposed = false;
  }

  /** @internal The coordinating thread's time in the ranks' steps since the last call; null on this thread or unloaded. */
  takeStats(): CoordinatorStats | null {
    return this.loaded?.takeStats() ?? null;
  }

  /** @internal The tower sharded across threads, null on this thread (bench and tests read its weights and statistics). */
  get shardedModel(): VisionBackbone | null {
    return this.threads > 1 ? this.loaded : null;
  }

  /**
   * Builds the tower and loads its weights, from the tower folder by default, or from another
   * source (a LLaVA-1.6 checkpoint's fine-tuned `model.vision_tower.vision_tower.*`).
   */
  loadModel(source?: { tensors: TensorSource; keyFor: KeyMap }): void {
    if (this.skipReload()) return;
    ensureBackendSync();
    const own = source ? null : openTensorSource(this.visionTowerName);
    try {
      const tensors = this.checkedWeights(source?.tensors ?? own!, source?.keyFor);
      this.install(this.build(), tensors, source?.keyFor);
    } finally {
      own?.close();
    }
  }

  /**
   * `loadModel`, on the backend `LlavaVision.load` would choose (unless the app chose one), with the
   * weights' memory faulted in on several threads first (`prefaultWeights`): faster on wasm.
   */
  async loadModelAsync(
    source?: { tensors: TensorSource; keyFor: KeyMap },
    backend: BackendOptions = {},
  ): Promise<void> {
    if (this.skipReload()) return;
    await ensureBackend(backend);
    const own = source ? null : openTensorSource(this.visionTowerName);
    try {
      const tensors = this.checkedWeights(source?.tensors ?? own!, source?.keyFor);
      const model = this.build();
      await prefaultWeights(model);
      this.install(model, tensors, source?.keyFor);
    } finally {
      own?.close();
    }
  }

  /** The weights, once the config's sizes agree with their shapes: nothing is allocated from a config the checkpoint contradicts. */
  private checkedWeights(tensors: TensorSource, keyFor: KeyMap = (p) => p): TensorSource {
    checkVisionConfigAgainstWeights(this.config, tensors, keyFor, this.configFile);
    return tensors;
  }

  /** Loads a tower built for loading; a failure disposes it (its memory was never initialised). */
  private install(model: CLIPVisionModel, tensors: TensorSource, keyFor?: KeyMap): void {
    try {
      loadWeights(model, tensors, keyFor);
      this.loaded = new LocalVisionBackbone(model);
      this.disposed = false;
    } catch (e) {
      disposeWeights(model);
      throw e;
    }
  }

  private skipReload(): boolean {
    if (this.isLoaded) this.warn(`${this.visionTowerName} is already loaded, \`load_model\` called again, skipping.`);
    return this.isLoaded;
  }

  private build(): CLIPVisionModel {
    return new CLIPVisionModel(this.config, { trainable: false, layout: this.layout, init: 'uninitialised' });
  }

  /** The underlying HF model (throws if `delayLoad` and not loaded yet, or disposed). */
  get visionModel(): CLIPVisionModel {
    return this.backbone().layersOnThisThread(this.visionTowerName);
  }

  /** True after `dispose()` (until loaded again). */
  get isDisposed(): boolean {
    return this.disposed;
  }

  get hiddenSize(): number {
    return this.config.hiddenSize;
  }
  get numPatchesPerSide(): number {
    return numPatchesPerSide(this.config);
  }
  get numPatches(): number {
    return this.numPatchesPerSide ** 2;
  }
  /** Feature width after concatenating the selected layers. */
  get featureSize(): number {
    return this.config.hiddenSize * this.selectLayers.length;
  }
  /** LLaVA's `dummy_feature`: zeros [1, hidden_size]. */
  get dummyFeature(): tf.Tensor2D {
    return tf.zeros([1, this.hiddenSize]);
  }

  /** `feature_select`: hidden_states[select_layer], CLS dropped for `patch`. */
  featureSelect(hiddenStates: tf.Tensor3D[]): tf.Tensor3D {
    return tf.tidy(() => {
      const picked = this.selectedStates().map((k) => hiddenStates[k]);
      const features = picked.length === 1 ? picked[0] : tf.concat(picked, -1);
      return this.selectFeature === 'cls_patch' ? tf.clone(features) : dropCls(features);
    });
  }

  /**
   * HF's `CLIPVisionModel` forward with `output_hidden_states=True` (every hidden state, the pooled
   * output), on this thread or sharded across threads.
   */
  forwardFull(pixels: tf.Tensor4D, options: VisionForwardOptions = {}): VisionModelOutput {
    return this.backbone().forward(pixels, options);
  }

  /**
   * LLaVA's forward: a batch [B, C, H, W] gives [B, N, D]; a list of [C, H, W] images runs each
   * as a batch of one and gives a list of [1, N, D]. Only the layers up to the deepest selected one run.
   */
  forward(images: tf.Tensor4D, options?: VisionForwardOptions): tf.Tensor3D;
  forward(images: tf.Tensor3D[], options?: VisionForwardOptions): tf.Tensor3D[];
  forward(images: tf.Tensor4D | tf.Tensor3D[], options: VisionForwardOptions = {}): tf.Tensor3D | tf.Tensor3D[] {
    if (Array.isArray(images))
      return images.map((img) =>
        this.forwardBatch(
          tf.tidy(() => tf.expandDims<tf.Tensor4D>(img, 0)),
          options,
          true,
        ),
      );
    return this.forwardBatch(images, options, false);
  }

  private forwardBatch(pixels: tf.Tensor4D, options: VisionForwardOptions, disposeInput: boolean): tf.Tensor3D {
    const model = this.backbone();
    const layers = this.selectedStates();
    let features: tf.Tensor3D;
    if (layers.length === 1) {
      const hidden = model.hiddenState(pixels, layers[0], options);
      features = this.selectFeature === 'patch' ? tf.tidy(() => dropCls(hidden)) : hidden;
      if (features !== hidden) hidden.dispose();
    } else {
      features = tf.tidy(() => this.featureSelect(model.forward(pixels, options).hiddenStates));
    }
    if (disposeInput) pixels.dispose();
    return features;
  }

  /** The indices of the selected hidden states (a ConfigError for one past the tower's depth). */
  private selectedStates(): number[] {
    return this.selectLayers.map((l) => hiddenStateIndex(l, this.config.numHiddenLayers, 'select layer'));
  }

  dispose(): void {
    this.loaded?.dispose();
    this.loaded = null;
    this.disposed = true;
  }

  /** The loaded tower (a ConfigError if `delayLoad` and not loaded yet, or disposed). */
  private backbone(): VisionBackbone {
    if (this.loaded) return this.loaded;
    if (this.disposed)
      throw new ConfigError(`vision tower ${this.visionTowerName} was disposed: load it again (loadModel()) to use it`);
    throw new ConfigError(`vision tower ${this.visionTowerName} is not loaded yet (delayLoad): call loadModel() first`);
  }
}

/** `patch` features: the CLS token (position 0) dropped. */
function dropCls(x: tf.Tensor3D): tf.Tensor3D {
  const [b, t, d] = x.shape;
  return tf.slice(x, [0, 1, 0], [b, t - 1, d]);
}
