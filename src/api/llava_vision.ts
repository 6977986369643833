import * as path from 'path';
import * as tf from '../tf';
import { BackendOptions, initBackend } from '../backend';
import { clipVisionConfigFromJson, visionConfigToJson } from '../config/clip';
import { LlavaVisionSettings, LLAVA_DEFAULTS, SelectFeature, llavaHfSettingsFromJson, llavaSettingsFromJson } from '../config/llava';
import { CheckpointError, ConfigError, quote, shapeText } from '../errors';
import { LAYOUT_KEYS, Layout, PROJECTOR_PREFIXES, findProjectorKeys, inferProjectorType } from '../io/layouts';
import { DownloadOptions } from '../io/hub';
import { buildForLoading } from '../model/module';
import { TowerLayout } from '../model/layout';
import { Projector, ProjectorConfig, projectedWidth } from '../model/projector';
import { ShardedProjector } from '../model/parallel/coordinator';
import { KeyMap } from '../model/weights';
import { ShardedRuntime, effectiveThreads, gatherProjector, loadShardedProjector, loadShardedTower, requestedThreads, shardsProjector } from './sharded/load';
import { CLIPImageProcessor } from '../image/processor';
import { VisionForwardOptions } from '../model/vision_transformer';
import { loadWeights, prefaultWeights } from '../model/weights';
import { checkProjectorAgainstWeights } from '../model/config_checks';
import { OpenedSource, emptySource, findWeights, isDir, openTensorSource, readJsonFile, resolveModelDir, resolveVisionTower } from './sources';
import { CLIPVisionTower } from './vision_tower';

export type OutputName = 'hidden_states' | 'features' | 'projected' | 'pooler_output';
export const OUTPUT_NAMES: readonly OutputName[] = ['hidden_states', 'features', 'projected', 'pooler_output'];

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
   * of the weights; README "Performance"). Default: LLAVA_VISION_THREADS, else the available cores
   * (os.availableParallelism()). 1 runs everything on the calling thread. wasm backend only (others
   * use 1); at most one thread per attention head.
   */
  threads?: number;
}

export interface EncodeOptions extends VisionForwardOptions {
  /** What to compute; default `projected` when a projector exists, else `features`. */
  outputs?: OutputName[];
}

export interface EncodeResult {
  hiddenStates?: tf.Tensor3D[];
  features?: tf.Tensor3D;
  projected?: tf.Tensor3D;
  poolerOutput?: tf.Tensor2D;
}

/** What a model folder is, from its config.json (and, for llava-hf, its key names). */
export function detectLayout(modelDir: string, config: Record<string, any>, keys: () => string[]): Layout {
  if (config.mm_vision_tower !== undefined || config.mm_projector_type !== undefined) return 'llava';
  if (config.model_type === 'clip') return 'clip';
  if (config.model_type === 'clip_vision_model') return 'clip_vision';
  if (config.vision_config !== undefined) {
    const k = keys();
    if (k.some((n) => n.startsWith('model.vision_tower.vision_model.'))) return 'llava_hf_model_prefixed';
    if (k.some((n) => n.startsWith('vision_tower.vision_model.'))) return 'llava_hf';
    throw new CheckpointError(`${modelDir}: llava-hf config but no vision_tower.vision_model.* or model.vision_tower.vision_model.* tensors`);
  }
  throw new ConfigError(`${path.join(modelDir, 'config.json')}: cannot tell the model type (model_type ${quote(config.model_type)}, no mm_vision_tower)`);
}

/** What preprocessing a model asks for, read from its folder without loading any weights. */
export interface ModelPreprocessing {
  /** The model folder (a hub id resolved to its snapshot in the HF cache). */
  modelDir: string;
  layout: Layout;
  settings: LlavaVisionSettings;
  /** The CLIP tower's folder (for an original LLaVA checkpoint, `mm_vision_tower` resolved). */
  towerDir: string;
  /** The preprocessor_config.json that `LlavaVision.imageProcessor` reads. */
  processorFile: string;
}

/**
 * The image processor file, aspect mode and grid pinpoints `LlavaVision.load(model)` and `encodeImages`
 * would use, without loading weights: what `llava-vision preprocess --model` writes with.
 */
export async function readModelPreprocessing(model: string, options: Pick<LoadOptions, 'visionTower' | 'download'> = {}): Promise<ModelPreprocessing> {
  const modelDir = await resolveModelDir(model, { download: options.download });
  const configFile = path.join(modelDir, 'config.json');
  const config = readJsonFile(configFile, 'model config');
  const layout = detectLayout(modelDir, config, () => {
    const ck = openTensorSource(modelDir);
    try {
      return ck.keys();
    } finally {
      ck.close();
    }
  });
  const settings = settingsFor(layout, config, configFile);
  const towerDir = await towerDirFor(layout, settings, modelDir, options);
  return { modelDir, layout, settings, towerDir, processorFile: processorFileFor(layout, modelDir, towerDir) };
}

/** The CLIP folder of a model: for original LLaVA, --vision-tower or `mm_vision_tower` resolved; else the model folder. */
async function towerDirFor(layout: Layout, settings: LlavaVisionSettings, modelDir: string, options: Pick<LoadOptions, 'visionTower' | 'download'>): Promise<string> {
  if (layout !== 'llava') return modelDir;
  if (options.visionTower !== undefined) return resolveModelDir(options.visionTower, { download: options.download });
  return resolveVisionTower(settings.visionTower ?? '', modelDir, { download: options.download });
}

/** `CLIPImageProcessor.from_pretrained(vision_tower)` as LLaVA calls it: the tower folder's (for llava-hf and CLIP, the model folder's). */
function processorFileFor(layout: Layout, modelDir: string, towerDir: string): string {
  return path.join(layout === 'llava' ? towerDir : modelDir, 'preprocessor_config.json');
}

/**
 * LLaVA's vision side from a model folder or HuggingFace repo id: CLIP (full or vision-only), original
 * LLaVA (tower from `mm_vision_tower`, projector and LLaVA-1.6 tower from the checkpoint), or llava-hf.
 */
export class LlavaVision {
  private processor: CLIPImageProcessor | null = null;
  private disposed = false;
  private projectorLayer: Projector | null;
  private shardedProjector: ShardedProjector | null;

  private constructor(
    readonly modelDir: string,
    readonly layout: Layout,
    readonly settings: LlavaVisionSettings,
    readonly tower: CLIPVisionTower,
    projector: Projector | ShardedProjector | null,
    readonly imageNewline: tf.Tensor1D | null,
    readonly backend: string,
    /** The options it was loaded with (worker threads load the same model from them). */
    readonly loadOptions: LoadOptions,
    private readonly runtime: ShardedRuntime | null = null,
  ) {
    this.projectorLayer = projector instanceof Projector ? projector : null;
    this.shardedProjector = projector instanceof ShardedProjector ? projector : null;
  }

  /** Threads the model runs on (see LoadOptions.threads). */
  get threads(): number {
    return this.runtime?.threads ?? 1;
  }

  /** The projector's type and widths (null without a projector), without gathering a sharded projector. */
  get projectorConfig(): ProjectorConfig | null {
    const config = this.projectorLayer?.projectorConfig ?? this.shardedProjector?.config;
    return config ? { ...config } : null;
  }

  /** Width of the projected features (the LLM hidden size; the tower's for `identity`); null without a projector. */
  get projectedWidth(): number | null {
    const config = this.projectorConfig;
    return config ? projectedWidth(config) : null;
  }

  /**
   * The projector as a tfjs layer on this thread (trainable: see `train`). A projector sharded across
   * threads (`threads` > 1) is gathered here on first access (its weights assembled from the threads,
   * which free theirs) and runs on this thread from then on, so training updates are what `encode` uses.
   */
  get projector(): Projector | null {
    if (!this.projectorLayer && this.shardedProjector && !this.disposed) {
      this.projectorLayer = gatherProjector(this.runtime!, this.shardedProjector);
      this.shardedProjector = null;
    }
    return this.projectorLayer;
  }

  static async load(model: string, options: LoadOptions = {}): Promise<LlavaVision> {
    const modelDir = await resolveModelDir(model, { download: options.download });
    const config = readJsonFile(path.join(modelDir, 'config.json'), 'model config');
    const backend = await initBackend(options);
    const requested = requestedThreads(options.threads);
    let checkpoint: OpenedSource | null = null;
    // An original LLaVA folder may hold no weights at all: the pretrain stage releases config.json + mm_projector.bin.
    let weightsOptional = false;
    const openCheckpoint = () => (checkpoint ??= weightsOptional && !findWeights(modelDir) ? emptySource(modelDir) : openTensorSource(modelDir));
    // What is built so far, freed if a later step fails (a failed load leaves no tensors behind).
    let tower: CLIPVisionTower | null = null;
    let projector: Projector | ShardedProjector | null = null;
    let runtime: ShardedRuntime | null = null;
    // The tower on this thread, or sharded across threads (then the threads start first, while this one reads).
    const loadTower = async (t: CLIPVisionTower, weights?: { tensors: OpenedSource; keyFor: KeyMap }) => {
      const threads = effectiveThreads(requested, backend, t.config);
      if (threads === 1) return t.loadModelAsync(weights);
      runtime = ShardedRuntime.start(threads);
      await loadShardedTower(runtime, t, weights);
    };
    try {
      const layout = detectLayout(modelDir, config, () => openCheckpoint().keys());
      weightsOptional = layout === 'llava';
      const settings = settingsFor(layout, config, path.join(modelDir, 'config.json'));
      if (options.selectLayer !== undefined) settings.selectLayer = options.selectLayer;
      if (options.selectFeature !== undefined) settings.selectFeature = options.selectFeature;
      const keys = LAYOUT_KEYS[layout];

      // The tower: its config always comes from the CLIP folder; its weights from the LLaVA-1.6
      // checkpoint when that holds a fine-tuned copy (it overrides the CLIP folder's, as in LLaVA).
      const towerDir = await towerDirFor(layout, settings, modelDir, options);
      const towerOptions = { selectLayer: settings.selectLayer, selectFeature: settings.selectFeature, layout: options.layout };
      if (layout === 'llava') {
        tower = new CLIPVisionTower(towerDir, { ...towerOptions, delayLoad: true });
        const ck = openCheckpoint();
        const overrides = ck.keys().some((k) => k.startsWith(keys.towerPrefix));
        await loadTower(tower, overrides ? { tensors: ck, keyFor: (p) => keys.towerPrefix + p } : undefined);
      } else if (layout === 'clip' || layout === 'clip_vision') {
        tower = new CLIPVisionTower(towerDir, { ...towerOptions, delayLoad: true });
        await loadTower(tower);
      } else {
        tower = new CLIPVisionTowerFromConfig(modelDir, config, towerOptions);
        await loadTower(tower, { tensors: openCheckpoint(), keyFor: (p) => keys.towerPrefix + p });
      }

      projector = await loadProjector(layout, settings, tower, options, openCheckpoint, modelDir, runtime);
      let imageNewline: tf.Tensor1D | null = null;
      if (keys.imageNewline && layout !== 'clip' && layout !== 'clip_vision') {
        const ck = openCheckpoint();
        const width = projector instanceof Projector ? projector.outFeatures : projector ? projectedWidth(projector.config) : tower.featureSize;
        if (ck.has(keys.imageNewline)) imageNewline = readImageNewline(ck, keys.imageNewline, width);
      }
      (runtime as ShardedRuntime | null)?.team.serve();
      return new LlavaVision(modelDir, layout, settings, tower, projector, imageNewline, backend, { ...options }, runtime);
    } catch (e) {
      (tower as CLIPVisionTower | null)?.dispose();
      if (projector instanceof Projector) for (const w of projector.weights) w.dispose();
      else (projector as ShardedProjector | null)?.dispose();
      await (runtime as ShardedRuntime | null)?.abort();
      throw e;
    } finally {
      (checkpoint as OpenedSource | null)?.close();
    }
  }

  /**
   * The image processor LLaVA uses: `CLIPImageProcessor.from_pretrained(vision_tower)`, i.e. the
   * tower folder's preprocessor_config.json (for llava-hf and CLIP, the model folder's).
   */
  get imageProcessor(): CLIPImageProcessor {
    this.processor ??= CLIPImageProcessor.fromFile(processorFileFor(this.layout, this.modelDir, this.tower.visionTowerName));
    return this.processor;
  }

  /**
   * Runs `pixel_values` [N, 3, H, W] through the tower (and projector): all hidden states,
   * LLaVA's selected features, the projected features, the pooled output, as asked.
   */
  encode(pixelValues: tf.Tensor4D, options: EncodeOptions = {}): EncodeResult {
    this.checkNotDisposed();
    const hasProjector = this.projectorConfig !== null;
    const outputs = new Set<OutputName>(options.outputs ?? [hasProjector ? 'projected' : 'features']);
    for (const o of outputs) if (!OUTPUT_NAMES.includes(o)) throw new ConfigError(`unknown output "${o}" (choose from ${OUTPUT_NAMES.join(', ')})`);
    if (outputs.has('projected') && !hasProjector) throw new ConfigError(`output "projected" needs a projector, and ${this.modelDir} has none (pass --projector FILE)`);
    const forward = { interpolatePosEncoding: options.interpolatePosEncoding };
    return tf.tidy(() => {
      const result: EncodeResult = {};
      let features: tf.Tensor3D;
      if (outputs.has('hidden_states') || outputs.has('pooler_output')) {
        const full = this.tower.forwardFull(pixelValues, forward);
        features = this.tower.featureSelect(full.hiddenStates);
        if (outputs.has('hidden_states')) result.hiddenStates = full.hiddenStates;
        if (outputs.has('pooler_output')) result.poolerOutput = full.poolerOutput;
      } else {
        features = this.tower.forward(pixelValues, forward);
      }
      if (outputs.has('features')) result.features = features;
      if (outputs.has('projected')) result.projected = this.project(features);
      return result as Record<string, any>;
    }) as EncodeResult;
  }

  /** The projector on `features` [B, N, D]: on this thread, or sharded across the threads. */
  private project(features: tf.Tensor3D): tf.Tensor3D {
    if (this.projectorLayer) return this.projectorLayer.call(features) as tf.Tensor3D;
    return this.shardedProjector!.project(features);
  }

  /** Frees the weights and ends the model's threads; the model cannot be used afterwards (load it again). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.tower.dispose();
    if (this.projectorLayer) for (const w of this.projectorLayer.weights) w.dispose();
    this.shardedProjector?.dispose();
    this.runtime?.close();
    this.imageNewline?.dispose();
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  /** Throws a ConfigError saying the model was disposed (instead of a tfjs error on a freed weight). */
  checkNotDisposed(): void {
    if (this.disposed) throw new ConfigError(`this LlavaVision (${this.modelDir}) was disposed: LlavaVision.load it again to use it`);
  }
}

/** LLaVA's `image_newline` ([hidden_size], appended after each row of features), its shape checked before it is read. */
function readImageNewline(source: OpenedSource, key: string, width: number): tf.Tensor1D {
  const { shape } = source.info(key);
  if (shape.length !== 1 || shape[0] !== width) {
    throw new CheckpointError(`${source.source}: tensor ${quote(key)} has shape ${shapeText(shape)} but the projected features are ${width} wide`);
  }
  return tf.tensor1d(source.readFloat32(key));
}

/** llava-hf keeps the tower's config inside its own config.json (`vision_config`). */
class CLIPVisionTowerFromConfig extends CLIPVisionTower {
  constructor(modelDir: string, config: Record<string, any>, options: { selectLayer: number | number[]; selectFeature: SelectFeature; layout?: TowerLayout }) {
    const configFile = path.join(modelDir, 'config.json');
    super(modelDir, { ...options, delayLoad: true, visionConfig: clipVisionConfigFromJson(config, configFile), configFile });
  }
}

/** The LLaVA settings of a model folder's config.json for its layout (LLaVA's defaults for plain CLIP). */
export function settingsFor(layout: Layout, config: Record<string, any>, where: string): LlavaVisionSettings {
  if (layout === 'llava') return llavaSettingsFromJson(config, where);
  if (layout === 'llava_hf' || layout === 'llava_hf_model_prefixed') return llavaHfSettingsFromJson(config, where);
  return { ...LLAVA_DEFAULTS };
}

/** Projector weights from --projector, else the model's checkpoint (or its `mm_projector.bin`). */
async function loadProjector(
  layout: Layout,
  settings: LlavaVisionSettings,
  tower: CLIPVisionTower,
  options: LoadOptions,
  openCheckpoint: () => OpenedSource,
  modelDir: string,
  runtime: ShardedRuntime | null = null,
): Promise<Projector | ShardedProjector | null> {
  let source: OpenedSource | null = null;
  let ownSource = false;
  let prefixKey: ((p: string) => string) | undefined = LAYOUT_KEYS[layout].projectorKey;
  let prefix = LAYOUT_KEYS[layout].projectorPrefix;
  try {
    if (options.projector) {
      source = openTensorSource(options.projector);
      ownSource = true;
      const found = findProjectorKeys(source.keys());
      if (!found) throw new CheckpointError(`${options.projector}: no projector tensors (${PROJECTOR_PREFIXES.map((p) => p + '*').join(', ')})`);
      ({ prefix, keyFor: prefixKey } = found);
    } else if (prefixKey && prefix) {
      const ck = openCheckpoint();
      if (ck.keys().some((k) => k.startsWith(prefix!))) source = ck;
      else if (layout === 'llava' && isDir(modelDir)) {
        const bin = path.join(modelDir, 'mm_projector.bin');
        if (require('fs').existsSync(bin)) {
          source = openTensorSource(bin);
          ownSource = true;
        }
      }
    }
    const type = options.projectorType ?? (options.projector ? inferProjectorType(source!.keys(), prefix!) : null) ?? settings.projectorType;
    if (!type) return null;
    if (type !== 'identity' && !source) {
      throw new CheckpointError(`${modelDir}: mm_projector_type "${type}" but no projector tensors (${prefix ?? 'model.mm_projector.'}*) found; pass --projector FILE`);
    }
    const inFeatures = settings.projectorIn ?? tower.featureSize;
    if (inFeatures !== tower.featureSize) {
      throw new ConfigError(`mm_hidden_size ${inFeatures} disagrees with the vision tower's feature width ${tower.featureSize}`);
    }
    let outFeatures = settings.projectorOut;
    const configFile = path.join(modelDir, 'config.json');
    const fromConfig = [
      ...(options.projectorType || options.projector ? [] : [`mm_projector_type ${quote(type)}`]),
      ...(outFeatures === null ? [] : [`${layout === 'llava' ? 'hidden_size' : 'text_config.hidden_size'} ${outFeatures}`]),
    ];
    const origin = [
      ...(options.projectorType ? [`--projector-type ${quote(type)}`] : options.projector ? [`projector type ${quote(type)} (from its tensor names)`] : []),
      ...(fromConfig.length ? [`${fromConfig.join(', ')} in ${configFile}`] : []),
    ].join('; ');
    if (outFeatures === null && source && type !== 'identity') outFeatures = source.info(prefixKey!(type === 'linear' ? 'weight' : '0.weight')).shape[0];
    // Checked before the build: each linear is allocated from these sizes.
    if (source && type !== 'identity') checkProjectorAgainstWeights({ type, inFeatures, outFeatures: outFeatures ?? inFeatures }, source, prefixKey!, origin);
    const projectorConfig: ProjectorConfig = { type, inFeatures, outFeatures: outFeatures ?? inFeatures, hiddenAct: settings.projectorAct, bias: settings.projectorBias };
    if (runtime && source && shardsProjector(projectorConfig, runtime.threads)) return await loadShardedProjector(runtime, projectorConfig, source, prefixKey!);
    const build = () => new Projector(projectorConfig);
    const projector = source ? buildForLoading(build) : build();
    if (source) {
      try {
        await prefaultWeights(projector);
        loadWeights(projector, source, prefixKey);
      } catch (e) {
        for (const w of projector.weights) w.dispose();
        throw e;
      }
    }
    return projector;
  } finally {
    if (ownSource) source?.close();
  }
}

export { visionConfigToJson };
