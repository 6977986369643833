import * as tf from '../tf';
import { initBackend, logOf } from '../backend';
import { LlavaVisionSettings } from '../config/llava';
import { CheckpointError, ConfigError } from '../errors';
import { CheckpointKind } from '../loading/checkpoint_kinds';
import { Module } from '../model/module';
import { ParamSpec, sameParams } from '../model/param_specs';
import { Projector, ProjectorConfig, projectedWidth } from '../model/projector';
import { CoordinatorStats } from '../model/parallel/stats';
import { LocalProjectorRunner, ProjectorRunner } from '../model/projector_runner';
import { GemmName, activeGemm } from '../model/kernels/gemm';
import { ShardedRuntime, loadShardedTower, projectorRunner } from '../parallel/tensor/load';
import { THREADS_ENV_VAR, effectiveThreads, requestedThreads } from '../parallel/thread_count';
import { CLIPImageProcessor } from '../image/processor';
import { VisionForwardOptions } from '../model/vision_transformer';
import { loadWeights, prefaultWeights } from '../model/weights';
import { checkProjectorAgainstWeights } from '../model/config_checks';
import { LoadPlan, ProjectorPlan, imageNewlineProblem, planLoad } from '../loading/load_plan';
import { OpenedSource, openTensorSource, resolveModelDir } from '../loading/sources';
import type { LoadOptions } from '../loading/load_options';
import { CLIPVisionTower } from './vision_tower';

export type { LoadOptions };

export type OutputName = 'hidden_states' | 'features' | 'projected' | 'pooler_output';
export const OUTPUT_NAMES: readonly OutputName[] = ['hidden_states', 'features', 'projected', 'pooler_output'];

export interface EncodeOptions extends VisionForwardOptions {
  /** What to compute; default `projected` when a projector exists, else `features`. */
  outputs?: OutputName[];
}

// A type, not an interface: tf.tidy returns it (a tensor container has an index signature).
export type EncodeResult = {
  hiddenStates?: tf.Tensor3D[];
  features?: tf.Tensor3D;
  projected?: tf.Tensor3D;
  poolerOutput?: tf.Tensor2D;
};

/**
 * LLaVA's vision side from a model folder or HuggingFace repo id: CLIP (full or vision-only), original
 * LLaVA (tower from `mm_vision_tower`, projector and LLaVA-1.6 tower from the checkpoint), or llava-hf.
 */
export class LlavaVision {
  private processor: CLIPImageProcessor | null = null;
  private disposed = false;
  /**
   * The GEMM the wasm backend runs this model's products with (`fma`, `mul-add`, `xnnpack`; null on
   * other backends): its layers were built for it, and each rounds differently.
   */
  readonly gemm: GemmName | null = activeGemm();

  private constructor(
    readonly modelDir: string,
    /** What the model folder is (`clip`, `clip_vision`, `llava`, `llava_hf`, ...: loading/checkpoint_kinds.ts). */
    readonly checkpointKind: CheckpointKind,
    readonly settings: LlavaVisionSettings,
    readonly tower: CLIPVisionTower,
    /** How the projector runs: on this thread, or also across the threads (see `projector`). */
    private readonly projectorRunner: ProjectorRunner | null,
    readonly imageNewline: tf.Tensor1D | null,
    readonly backend: string,
    /** The options it was loaded with (worker threads load the same model from them). */
    readonly loadOptions: LoadOptions,
    private readonly processorFile: string,
    private readonly runtime: ShardedRuntime | null = null,
  ) {}

  /** @deprecated Use `checkpointKind` ("layout" now means only the tower's per-backend layout, `TowerLayout`). */
  get layout(): CheckpointKind {
    return this.checkpointKind;
  }

  /** Threads the model runs on (see LoadOptions.threads). */
  get threads(): number {
    return this.tower.threads;
  }

  /** @internal The shard threads (`threads` > 1), for `npm run bench` and tests; null on one thread. */
  get shardRuntime(): ShardedRuntime | null {
    return this.runtime;
  }

  /**
   * @internal Where the coordinating thread's time went since the last call (tower and projector
   * steps summed, with its copies into tfjs), and resets it; null on one thread.
   */
  takeShardStats(): (CoordinatorStats & { copyInMs: number }) | null {
    const sum = this.tower.takeStats();
    if (!this.runtime || !sum) return null;
    const projector = this.projectorRunner?.takeStats();
    if (projector) for (const k of Object.keys(sum) as (keyof CoordinatorStats)[]) sum[k] += projector[k];
    const copyInMs = this.runtime.rank0.copyInMs;
    this.runtime.rank0.copyInMs = 0;
    return { ...sum, copyInMs };
  }

  /** The projector's type and widths (null without a projector). */
  get projectorConfig(): ProjectorConfig | null {
    const config = this.projector?.projectorConfig;
    return config ? { ...config } : null;
  }

  /** Width of the projected features (the LLM hidden size; the tower's for `identity`); null without a projector. */
  get projectedWidth(): number | null {
    const config = this.projectorConfig;
    return config ? projectedWidth(config) : null;
  }

  /**
   * The projector as a tfjs layer on this thread, trainable (see `train`): its variables are what
   * `optimizer.minimize` and `tf.variableGrads` find, with or without a var list, at every thread count.
   * With `threads` > 1 an `mlp2x_gelu` projector is also sharded across the threads, and the shards
   * project in `encode` as long as these weights are the ones loaded; under a gradient tape (training)
   * `encode` runs this layer instead, and the first change to its weights (an optimizer step, a write)
   * retires the shards: from then on it runs on this thread, so `encode` uses what was trained.
   */
  get projector(): Projector | null {
    return this.projectorRunner?.layer ?? null;
  }

  static async load(model: string, options: LoadOptions = {}): Promise<LlavaVision> {
    const modelDir = await resolveModelDir(model, { download: options.download });
    const plan = await planLoad(modelDir, options);
    const backend = await initBackend(options);
    return LlavaVision.execute(plan, backend, options);
  }

  /** Builds and loads what the plan says, reading each source once; a failure frees what was built. */
  private static async execute(plan: LoadPlan, backend: string, options: LoadOptions): Promise<LlavaVision> {
    const sources = new Map<string, OpenedSource>();
    const open = (from: string) => sources.get(from) ?? sources.set(from, openTensorSource(from)).get(from)!;
    let tower: CLIPVisionTower | null = null;
    let projector: ProjectorRunner | null = null;
    let runtime: ShardedRuntime | null = null;
    try {
      const { settings, tower: t } = plan;
      tower = new CLIPVisionTower(known(t.dir, 'tower folder'), {
        selectLayer: settings.selectLayer,
        selectFeature: settings.selectFeature,
        layout: options.layout,
        delayLoad: true,
        visionConfig: known(t.config, 'tower config'),
        configFile: t.configFile,
      });
      const towerWeights = known(t.weights, 'tower weights');
      const weights = { tensors: open(towerWeights.from), keyFor: towerWeights.keyFor };
      const threads = effectiveThreads(requestedThreads(options.threads), backend, tower.config, options.layout);
      if (threads === 1) {
        await tower.loadModelAsync(weights);
        checkDeclared(tower.visionModel, towerWeights.tensors);
      } else {
        // The threads start their backends while this one reads its own shard.
        runtime = ShardedRuntime.start(threads);
        tower.attachBackbone(
          await loadShardedTower(
            runtime,
            { config: tower.config, configFile: tower.configFile, folder: tower.visionTowerName },
            weights,
          ),
        );
        logOf(options)?.(
          `llava-vision: the model runs on ${threads} threads (tensor parallel; threads option, ${THREADS_ENV_VAR}, default the available cores)`,
        );
      }
      projector = plan.projector && (await loadProjector(plan.projector, open, runtime));
      let imageNewline: tf.Tensor1D | null = null;
      if (plan.imageNewline)
        imageNewline = readImageNewline(
          open(plan.modelDir),
          plan.imageNewline.key,
          known(plan.imageNewline.width, 'image_newline width'),
        );
      runtime?.team.serve();
      return new LlavaVision(
        plan.modelDir,
        plan.kind,
        settings,
        tower,
        projector,
        imageNewline,
        backend,
        { ...options },
        known(plan.processorFile, 'processor file'),
        runtime,
      );
    } catch (e) {
      tower?.dispose();
      projector?.dispose();
      await runtime?.abort();
      throw e;
    } finally {
      for (const source of sources.values()) source.close();
    }
  }

  /**
   * The image processor LLaVA uses: `CLIPImageProcessor.from_pretrained(vision_tower)`, i.e. the
   * tower folder's preprocessor_config.json (for llava-hf and CLIP, the model folder's).
   */
  get imageProcessor(): CLIPImageProcessor {
    this.processor ??= CLIPImageProcessor.fromFile(this.processorFile);
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
    for (const o of outputs)
      if (!OUTPUT_NAMES.includes(o))
        throw new ConfigError(`unknown output "${o}" (choose from ${OUTPUT_NAMES.join(', ')})`);
    if (outputs.has('projected') && !hasProjector)
      throw new ConfigError(
        `output "projected" needs a projector, and ${this.modelDir} has none (pass --projector FILE)`,
      );
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
      if (outputs.has('projected')) result.projected = this.projectorRunner!.project(features);
      return result;
    });
  }

  /** Frees the weights and ends the model's threads; the model cannot be used afterwards (load it again). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.tower.dispose();
    this.projectorRunner?.dispose();
    this.runtime?.close();
    this.imageNewline?.dispose();
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  /** Throws a ConfigError saying the model was disposed (instead of a tfjs error on a freed weight). */
  checkNotDisposed(): void {
    if (this.disposed)
      throw new ConfigError(`this LlavaVision (${this.modelDir}) was disposed: LlavaVision.load it again to use it`);
  }
}

/** LLaVA's `image_newline` ([hidden_size], appended after each row of features), its shape checked before it is read. */
function readImageNewline(source: OpenedSource, key: string, width: number): tf.Tensor1D {
  const problem = imageNewlineProblem(source, key, width);
  if (problem) throw new CheckpointError(problem);
  return tf.tensor1d(source.readFloat32(key));
}

/**
 * The planned projector, its sizes checked against the weights before it is built from them. The layer on
 * this thread is loaded at every thread count: `optimizer.minimize(f)` and `tf.variableGrads(f)` list the
 * trainable variables before `f` runs, so variables made during the first step (a projector gathered from
 * the threads then) would be missed by it.
 */
async function loadProjector(
  plan: ProjectorPlan,
  open: (from: string) => OpenedSource,
  runtime: ShardedRuntime | null,
): Promise<ProjectorRunner> {
  const { type, weights } = plan;
  const inFeatures = known(plan.inFeatures, 'projector input width');
  const outFeatures = plan.outFeatures ?? inFeatures;
  const config: ProjectorConfig = { type, inFeatures, outFeatures, hiddenAct: plan.act, bias: plan.bias };
  if (!weights) return new LocalProjectorRunner(new Projector(config)); // identity
  const source = open(weights.from);
  // Checked before the build: each linear is allocated from these sizes.
  checkProjectorAgainstWeights({ type, inFeatures, outFeatures }, source, weights.keyFor, plan.origin);
  const layer = new Projector(config, { init: 'uninitialised' });
  try {
    checkDeclared(layer, weights.tensors);
    await prefaultWeights(layer);
    loadWeights(layer, source, weights.keyFor);
    return await projectorRunner(layer, runtime, source, weights.keyFor);
  } catch (e) {
    for (const w of layer.weights) w.dispose();
    throw e;
  }
}

/** A plan for a load has no unknowns: they were thrown as problems while planning. */
function known<T>(value: T | null, what: string): T {
  if (value === null) throw new Error(`internal: the load plan has no ${what}`);
  return value;
}

/** The plan's tensors are the module's own declarations (inspect reports them): a drift is a bug, caught here. */
function checkDeclared(module: Module, planned: ParamSpec[] | null): void {
  if (!sameParams(module, known(planned, 'tensor list')))
    throw new Error("internal: the load plan's tensors differ from the parameters the built module declares");
}
