/**
 * The load plan: everything `LlavaVision.load` decides about a model folder, worked out once from its
 * config files and tensor headers (no tensor data, no tfjs). The kind (a row of checkpoint_kinds.ts), where
 * the tower's config and weights come from and under which keys, the projector's source, key map, type
 * and widths (incl. the `mm_projector.bin` fallback), `image_newline`, and the problems found.
 * `LlavaVision.load` executes a plan; `inspect` renders one: what inspect says is what load does.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { CLIPVisionConfig, clipVisionConfigFromJson, hiddenStateIndex } from '../config/clip';
import { LLAVA_DEFAULTS, LlavaVisionSettings } from '../config/llava';
import { CheckpointError, ConfigError, LlavaVisionError, quote, shapeText } from '../errors';
import { isDType, isFloatDType } from '../io/dtype';
import { hashFileSampled } from '../io/file_digest';
import { canonicalJson } from '../io/json';
import {
  CHECKPOINT_KINDS,
  CheckpointKind,
  CheckpointKindRow,
  PROJECTOR_PREFIXES,
  detectCheckpointKind,
  findProjectorKeys,
  inferProjectorType,
} from './checkpoint_kinds';
import { ParamSpec, projectorSpecs, visionTowerSpecs } from '../model/param_specs';
import type { KeyMap } from '../model/weights';
import type { LoadOptions } from './load_options';
import {
  OpenedSource,
  SourceFormat,
  emptySource,
  findWeights,
  isDir,
  openTensorSource,
  readJsonFile,
  readVisionConfig,
  resolveModelDir,
  resolveVisionTower,
} from './sources';

/** A tensor a load reads: its module path, its checkpoint key and the shape the config gives it. */
export interface PlannedTensor extends ParamSpec {
  key: string;
}

/** Where a module's weights come from. */
export interface PlannedWeights {
  /** The folder or file they are read from (`openTensorSource`); the model folder for its own checkpoint. */
  from: string;
  /** The key prefix of the module's tensors there. */
  prefix: string;
  keyFor: KeyMap;
  /** Every tensor the load reads; null when the config is unknown (inspect of an unresolved tower). */
  tensors: PlannedTensor[] | null;
}

export interface TowerPlan {
  /** The CLIP folder: the model folder, or for original LLaVA `mm_vision_tower` (or `visionTower`) resolved; null when it does not resolve. */
  dir: string | null;
  /** Why `dir` is null (inspect only: a load throws this). */
  unresolved?: string;
  config: CLIPVisionConfig | null;
  configFile: string;
  /** Why `config` is null although `dir` resolved (inspect only). */
  configError?: string;
  weightsFrom: 'checkpoint' | 'vision tower folder' | 'unknown';
  weights: PlannedWeights | null;
  /** hidden_size × the number of selected layers; null while the config is unknown. */
  featureWidth: number | null;
}

export interface ProjectorPlan {
  type: string;
  /** `mm_hidden_size`, else the tower's feature width; null when both are unknown (inspect only). */
  inFeatures: number | null;
  /** The LLM width: from the config, else the first linear's weight; the input width for `identity`. */
  outFeatures: number | null;
  act: string;
  bias: boolean;
  /** Null for `identity` (and, inspect only, when no projector tensors were found). */
  weights: PlannedWeights | null;
  /** Where the type and widths came from, named when the weights disagree with them. */
  origin: string;
}

export interface LoadPlan {
  modelDir: string;
  kind: CheckpointKind;
  configFile: string;
  config: Record<string, unknown>;
  /** The config's LLaVA settings, with the `selectLayer` / `selectFeature` options applied. */
  settings: LlavaVisionSettings;
  /** Where they come from: the config file, or `defaults` (a plain CLIP tower gets LLaVA's defaults). */
  settingsFrom: string;
  /** The model folder's own weights; null when it holds none (an original LLaVA pretrain release). */
  checkpoint: { format: SourceFormat; files: string[] } | null;
  tower: TowerPlan;
  projector: ProjectorPlan | null;
  /** LLaVA's `image_newline`, read when the checkpoint holds it; `width` is the one it must have. */
  imageNewline: { key: string; width: number | null } | null;
  /** The preprocessor_config.json LLaVA uses (the tower folder's); null while that folder is unknown. */
  processorFile: string | null;
  /** What would make the load fail or differ from the model's intent. */
  problems: string[];
  notes: string[];
}

export type PlanOptions = Pick<
  LoadOptions,
  'visionTower' | 'download' | 'projector' | 'projectorType' | 'selectLayer' | 'selectFeature'
> & {
  /**
   * `load` (default): a problem that stops a load is thrown, as `LlavaVision.load` reports it.
   * `inspect`: every problem is recorded in `problems`, nothing is downloaded, and planning goes on.
   */
  mode?: 'load' | 'inspect';
};

/** What a model folder is: its config, kind and LLaVA settings. */
interface Folder {
  modelDir: string;
  configFile: string;
  config: Record<string, unknown>;
  kind: CheckpointKind;
  row: CheckpointKindRow;
  settings: LlavaVisionSettings;
}

/** The folder's kind and settings; `keys` gives its tensor names, for the checkpoint kinds whose config does not settle it. */
function readFolder(modelDir: string, options: PlanOptions, keys: () => string[]): Folder {
  const configFile = path.join(modelDir, 'config.json');
  const config = readJsonFile(configFile, 'model config');
  const kind = detectCheckpointKind(modelDir, config, keys);
  const row = CHECKPOINT_KINDS[kind];
  const settings = row.settings ? row.settings(config, configFile) : { ...LLAVA_DEFAULTS };
  if (options.selectLayer !== undefined) settings.selectLayer = options.selectLayer;
  if (options.selectFeature !== undefined) settings.selectFeature = options.selectFeature;
  return { modelDir, configFile, config, kind, row, settings };
}

/** The tower's CLIP folder: `visionTower`, else `mm_vision_tower` resolved (checkpoint kinds that name one); else the model folder. */
async function towerDir(folder: Folder, options: PlanOptions): Promise<string> {
  if (folder.row.towerConfig !== 'mm_vision_tower') return folder.modelDir;
  const download = options.mode === 'inspect' ? false : options.download;
  if (options.visionTower !== undefined) return resolveModelDir(options.visionTower, { download });
  return resolveVisionTower(folder.settings.visionTower ?? '', folder.modelDir, { download });
}

const processorFile = (dir: string) => path.join(dir, 'preprocessor_config.json');

/** What preprocessing a model asks for, read from its folder without loading any weights. */
export interface ModelPreprocessing {
  /** The model folder (a hub id resolved to its snapshot in the HF cache). */
  modelDir: string;
  kind: CheckpointKind;
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
export async function readModelPreprocessing(
  model: string,
  options: Pick<LoadOptions, 'visionTower' | 'download'> = {},
): Promise<ModelPreprocessing> {
  const modelDir = await resolveModelDir(model, { download: options.download });
  const folder = readFolder(modelDir, {}, () => {
    const ck = openTensorSource(modelDir);
    try {
      return ck.keys();
    } finally {
      ck.close();
    }
  });
  const dir = await towerDir(folder, options);
  return {
    modelDir,
    kind: folder.kind,
    settings: folder.settings,
    towerDir: dir,
    processorFile: processorFile(dir),
  };
}

/** The plan for a model folder (a local folder: resolve hub ids with `resolveModelDir` first). */
export async function planLoad(modelDir: string, options: PlanOptions = {}): Promise<LoadPlan> {
  const planner = new Planner(options);
  try {
    return await planner.plan(modelDir);
  } finally {
    planner.close();
  }
}

class Planner {
  private readonly problems: string[] = [];
  private readonly notes: string[] = [];
  private readonly opened = new Map<string, OpenedSource>();

  constructor(private readonly options: PlanOptions) {}

  /** A problem: thrown when planning a load; for inspect, recorded (in `problems`, or by `note`) and planning goes on. */
  private problem(error: unknown, note: (message: string) => void = (message) => this.problems.push(message)): null {
    if (!(error instanceof LlavaVisionError) || this.options.mode !== 'inspect') throw error;
    note(error.message);
    return null;
  }

  /** `step`'s result, or null once its error is a problem. */
  private attempt<T>(step: () => T, note?: (message: string) => void): T | null {
    try {
      return step();
    } catch (e) {
      return this.problem(e, note);
    }
  }

  private async attemptAsync<T>(step: () => Promise<T>, note?: (message: string) => void): Promise<T | null> {
    try {
      return await step();
    } catch (e) {
      return this.problem(e, note);
    }
  }

  /** Headers only; each source is opened once and closed with the planner. */
  private open(p: string): OpenedSource {
    let source = this.opened.get(p);
    if (!source) this.opened.set(p, (source = openTensorSource(p)));
    return source;
  }

  close(): void {
    for (const s of this.opened.values()) s.close();
  }

  async plan(modelDir: string): Promise<LoadPlan> {
    const folder = readFolder(modelDir, this.options, () => this.open(modelDir).keys());
    const { row, settings } = folder;
    const hasWeights = findWeights(modelDir) !== null;
    // A folder without weights fails here (the error says what was looked for) unless its kind allows it.
    let checkpoint = emptySource(modelDir);
    if (hasWeights || !row.weightsOptional) checkpoint = this.open(modelDir);
    else this.notes.push('no weights files in this folder (a pretrain release: config.json + mm_projector.bin?)');

    const tower = await this.planTower(folder, checkpoint);
    const projector = this.planProjector(folder, checkpoint, tower.featureWidth);

    const newlineKey = row.imageNewline;
    let imageNewline: LoadPlan['imageNewline'] = null;
    if (newlineKey && checkpoint.has(newlineKey)) {
      imageNewline = {
        key: newlineKey,
        width: projector ? (projector.outFeatures ?? projector.inFeatures) : tower.featureWidth,
      };
      const wrong =
        imageNewline.width === null ? null : imageNewlineProblem(checkpoint, newlineKey, imageNewline.width);
      if (wrong) this.problems.push(wrong);
    }
    if (settings.mergeType === 'spatial_unpad' && !imageNewline) {
      this.problems.push(`merge spatial_unpad needs ${newlineKey ?? 'image_newline'}, not in this checkpoint`);
    }
    return {
      modelDir,
      kind: folder.kind,
      configFile: folder.configFile,
      config: folder.config,
      settings,
      settingsFrom: row.settings ? folder.configFile : 'defaults',
      checkpoint: hasWeights ? { format: checkpoint.format, files: checkpoint.files() } : null,
      tower,
      projector,
      imageNewline,
      processorFile: tower.dir === null ? null : processorFile(tower.dir),
      problems: this.problems,
      notes: this.notes,
    };
  }

  private async planTower(folder: Folder, checkpoint: OpenedSource): Promise<TowerPlan> {
    const { row, settings, modelDir } = folder;
    const prefix = `${row.towerPrefix}vision_model.`;
    // A LLaVA-1.6 checkpoint's fine-tuned copy overrides the tower folder's weights, as in LLaVA.
    const inCheckpoint = row.towerConfig === 'config.json' || checkpoint.keys().some((k) => k.startsWith(prefix));
    const plan: TowerPlan = {
      dir: null,
      config: null,
      configFile: folder.configFile,
      weightsFrom: inCheckpoint ? 'checkpoint' : 'unknown',
      weights: null,
      featureWidth: null,
    };
    if (row.towerConfig === 'config.json') {
      plan.dir = modelDir;
      plan.config = clipVisionConfigFromJson(folder.config, folder.configFile);
    } else {
      if (inCheckpoint) {
        this.notes.push(
          `tower weights: this checkpoint's fine-tuned copy (${prefix}*) overrides the vision tower folder's; that folder gives the config and preprocessor only`,
        );
      }
      // A tower that cannot be found (or read) is a problem as well as the summary's: a load fails on it.
      const dir = await this.attemptAsync(
        () => towerDir(folder, this.options),
        (message) => this.problems.push((plan.unresolved = message)),
      );
      if (dir !== null) {
        plan.dir = dir;
        plan.configFile = path.join(dir, 'config.json');
        if (!inCheckpoint) plan.weightsFrom = 'vision tower folder';
        plan.config = this.attempt(
          () => readVisionConfig(dir),
          (message) => this.problems.push((plan.configError = message)),
        );
      }
    }
    if (plan.config) {
      const layers = Array.isArray(settings.selectLayer) ? settings.selectLayer : [settings.selectLayer];
      for (const l of layers) this.attempt(() => hiddenStateIndex(l, plan.config!.numHiddenLayers, 'select layer'));
      plan.featureWidth = plan.config.hiddenSize * layers.length;
    }
    const from = inCheckpoint ? modelDir : plan.dir;
    if (from === null) return plan;
    const keyFor: KeyMap = inCheckpoint ? (p) => row.towerPrefix + p : (p) => p;
    const tensors = plan.config ? visionTowerSpecs(plan.config).map((s) => ({ ...s, key: keyFor(s.name) })) : null;
    plan.weights = { from, prefix: inCheckpoint ? prefix : 'vision_model.', keyFor, tensors };
    if (tensors) this.checkTensors(inCheckpoint ? checkpoint : this.open(from), tensors, 'tower', from);
    return plan;
  }

  /** Projector weights from the `projector` option, else the model's checkpoint, else the kind's projector file beside it. */
  private planProjector(folder: Folder, checkpoint: OpenedSource, featureWidth: number | null): ProjectorPlan | null {
    const { row, settings, modelDir, kind, configFile } = folder;
    const options = this.options;
    let source: OpenedSource | null = null;
    let from = modelDir;
    let prefix = row.projectorPrefix;
    let keyFor = row.projectorKey;
    if (options.projector) {
      from = options.projector;
      const found = findProjectorKeys(this.open(from).keys());
      if (found) {
        source = this.open(from);
        ({ prefix, keyFor } = found);
      } else {
        this.problem(
          new CheckpointError(`${from}: no projector tensors (${PROJECTOR_PREFIXES.map((p) => p + '*').join(', ')})`),
        );
      }
    } else if (prefix && keyFor) {
      const besideIt = row.projectorFile && isDir(modelDir) ? path.join(modelDir, row.projectorFile) : null;
      if (checkpoint.keys().some((k) => k.startsWith(prefix!))) {
        source = checkpoint;
        if (besideIt && fs.existsSync(besideIt))
          this.notes.push(`${row.projectorFile} is not used: the checkpoint holds the projector`);
      } else if (besideIt && fs.existsSync(besideIt)) {
        source = this.open((from = besideIt));
      }
    }
    const inferred = source && prefix ? inferProjectorType(source.keys(), prefix) : null;
    const type = options.projectorType ?? (options.projector ? inferred : null) ?? settings.projectorType;
    if (!type) return null;
    if (type !== 'identity' && !source) {
      this.problem(
        new CheckpointError(
          `${modelDir}: mm_projector_type "${type}" but no projector tensors (${prefix ?? 'model.mm_projector.'}*) found; pass --projector FILE`,
        ),
      );
    }
    const inFeatures = settings.projectorIn ?? featureWidth;
    if (inFeatures !== null && featureWidth !== null && inFeatures !== featureWidth) {
      this.problem(
        new ConfigError(`mm_hidden_size ${inFeatures} disagrees with the vision tower's feature width ${featureWidth}`),
      );
    }
    let outFeatures = type === 'identity' ? inFeatures : settings.projectorOut;
    const first = keyFor?.(type === 'linear' ? 'weight' : '0.weight');
    if (outFeatures === null && source && first && source.has(first)) outFeatures = source.info(first).shape[0];
    const plan: ProjectorPlan = {
      type,
      inFeatures,
      outFeatures,
      act: settings.projectorAct,
      bias: settings.projectorBias,
      weights: null,
      origin: projectorOrigin(type, settings, options, kind, configFile),
    };
    if (type === 'identity' || !source || !prefix || !keyFor) return plan;

    const specs = this.attempt(() =>
      projectorSpecs({
        type,
        inFeatures: inFeatures ?? 0,
        outFeatures: outFeatures ?? inFeatures ?? 0,
        bias: settings.projectorBias,
      }),
    );
    const tensors = specs && specs.map((s) => ({ ...s, key: keyFor(s.name) }));
    if (inferred && inferred !== type) {
      this.problems.push(
        `${type === settings.projectorType ? 'the config says' : 'the projector type is'} ${type} but the projector tensors are ${inferred}-shaped`,
      );
    }
    plan.weights = { from, prefix, keyFor, tensors };
    const where = source === checkpoint && checkpoint.files().length !== 1 ? modelDir : source.files()[0];
    if (tensors) this.checkTensors(source, tensors, 'projector', where);
    return plan;
  }

  /** Each planned tensor against the headers: present, of the planned shape, a float. Problems only: the load's own checks throw. */
  private checkTensors(source: OpenedSource, tensors: PlannedTensor[], role: string, where: string): void {
    const missing: string[] = [];
    for (const t of tensors) {
      if (!source.has(t.key)) {
        missing.push(`${t.key} ${shapeText(t.shape)}`);
        continue;
      }
      const { shape, dtype } = source.info(t.key);
      if (shapeText(shape) !== shapeText(t.shape))
        this.problems.push(
          `${where}: ${t.key} has shape ${shapeText(shape)} but the config expects ${shapeText(t.shape)}`,
        );
      if (!isDType(dtype) || !isFloatDType(dtype))
        this.problems.push(`${where}: ${t.key} has dtype ${dtype}, not a float`);
    }
    if (missing.length) {
      const shown = missing.slice(0, 3).join(', ') + (missing.length > 3 ? `, ... (${missing.length} in all)` : '');
      this.problems.push(`${where}: missing ${role} tensor${missing.length > 1 ? 's' : ''} ${shown}`);
    }
  }
}

/** Where a projector's type and output width came from, for the messages that name them. */
function projectorOrigin(
  type: string,
  settings: LlavaVisionSettings,
  options: PlanOptions,
  kind: CheckpointKind,
  configFile: string,
): string {
  const fromConfig = [
    ...(options.projectorType || options.projector ? [] : [`mm_projector_type ${quote(type)}`]),
    ...(settings.projectorOut === null
      ? []
      : [`${CHECKPOINT_KINDS[kind].llmWidthField ?? 'hidden_size'} ${settings.projectorOut}`]),
  ];
  return [
    ...(options.projectorType
      ? [`--projector-type ${quote(type)}`]
      : options.projector
        ? [`projector type ${quote(type)} (from its tensor names)`]
        : []),
    ...(fromConfig.length ? [`${fromConfig.join(', ')} in ${configFile}`] : []),
  ].join('; ');
}

/** Why LLaVA's `image_newline` cannot be used ([width] expected), or null. */
export function imageNewlineProblem(source: OpenedSource, key: string, width: number): string | null {
  const { shape } = source.info(key);
  if (shape.length === 1 && shape[0] === width) return null;
  return `${source.source}: tensor ${quote(key)} has shape ${shapeText(shape)} but the projected features are ${width} wide`;
}

/**
 * The model's identity by content, not by path: `sha256:` of its configs (parsed, so formatting does
 * not count), the preprocessor config, and every weights file the plan reads from (the model folder's
 * own, a separate tower folder, a projector file), each by name, size, tensor header and sampled data
 * (io/file_digest.ts). Copies and symlinks of a model share it; another model, or a fine-tune of the
 * same architecture, does not. Reads a few MiB per file, never the weights whole.
 */
export function modelDigest(plan: LoadPlan): string {
  const h = createHash('sha256');
  h.update('llava-vision-tfjs model identity 1\n');
  const config = (role: string, file: string | null) => {
    if (file === null) return;
    h.update(`${role} ${path.basename(file)}\n`);
    h.update(fs.existsSync(file) ? canonicalJson(readJsonFile(file, role)) + '\n' : 'absent\n');
  };
  config('config', plan.configFile);
  if (plan.tower.configFile !== plan.configFile) config('tower config', plan.tower.configFile);
  config('preprocessor config', plan.processorFile);
  const hashed = new Set<string>();
  const weights = (role: string, files: string[]) => {
    for (const file of [...files].sort((a, b) =>
      path.basename(a) < path.basename(b) ? -1 : path.basename(a) > path.basename(b) ? 1 : 0,
    )) {
      if (hashed.has(file)) continue;
      hashed.add(file);
      h.update(`${role} ${path.basename(file)}\n`);
      hashFileSampled(h, file);
    }
  };
  weights('checkpoint', plan.checkpoint?.files ?? []);
  for (const [role, w] of [
    ['tower', plan.tower.weights],
    ['projector', plan.projector?.weights],
  ] as const) {
    if (!w || w.from === plan.modelDir) continue;
    const source = openTensorSource(w.from);
    try {
      weights(role, source.files());
    } finally {
      source.close();
    }
  }
  return `sha256:${h.digest('hex')}`;
}
