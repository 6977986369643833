/**
 * What a checkpoint folder or weights file is, without loading it: the detected checkpoint kind, the vision
 * and LLaVA settings the loader would use, every tensor (name, dtype, shape, bytes) and whether
 * `LlavaVision.load` would read it (tower, projector, image_newline) or leave it on disk (ignored).
 * Reads config files and tensor headers only; no tensor data, no tfjs backend, no download.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CLIPVisionConfig, numPatchesPerSide } from '../config/clip';
import { AspectMode, MergeType, Pinpoints, SelectFeature } from '../config/llava';
import { CheckpointError } from '../errors';
import { DTYPE_SIZE, DType, numel } from '../io/dtype';
import {
  CHECKPOINT_KINDS,
  CheckpointKind,
  PROJECTOR_PREFIXES,
  TOWER_PREFIXES,
  findProjectorKeys,
  inferProjectorType,
} from './checkpoint_kinds';
import { cachedSnapshot, hubCacheDir, isRepoId } from '../io/hub';
import { LoadPlan, PlannedWeights, ProjectorPlan, planLoad } from './load_plan';
import { ThreadsSummary, threadsSummary } from '../parallel/thread_count';
import { GemmName, describeGemm, plannedGemm } from '../model/kernels/gemm';
import type { ProjectorConfig } from '../model/projector';
import { OpenedSource, SourceFormat, isDir, openTensorSource } from './sources';

/** The declarations inspect checks a checkpoint against (also what tools/make_checkpoint writes). */
export { projectorSpecs, visionTowerSpecs } from '../model/param_specs';

export type InspectKind = CheckpointKind | 'safetensors file' | 'torch .bin';
/** @deprecated Use `InspectKind`. */
export type InspectLayout = InspectKind;
export type TensorRole = 'tower' | 'projector' | 'image_newline' | 'ignored';

export interface InspectedTensor {
  name: string;
  dtype: DType;
  shape: number[];
  bytes: number;
  /** The file holding it (absolute). */
  file: string;
  role: TensorRole;
  /** Why an ignored tensor is ignored (`language model`, `CLIP text model`, ...). */
  reason?: string;
}

export interface RoleTotals {
  count: number;
  bytes: number;
  /** Tensor count per dtype. */
  dtypes: Record<string, number>;
}

export interface VisionSummary {
  /** The config.json it was read from. */
  source: string;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  imageSize: number;
  patchSize: number;
  numPatches: number;
  hiddenAct: string;
  layerNormEps: number;
}

export interface LlavaSummary {
  /** `config.json` for LLaVA / llava-hf; `defaults` for a plain CLIP folder (what LlavaVision uses then). */
  source: string;
  selectLayer: number | number[];
  selectFeature: SelectFeature;
  projector: {
    type: string | null;
    inFeatures: number | null;
    outFeatures: number | null;
    act: string;
    bias: boolean;
    weightsFrom: string[];
  };
  aspect: AspectMode;
  /** LLaVA (width, height) pairs. */
  gridPinpoints: Pinpoints | null;
  mergeType: MergeType;
  unfreezeVisionTower: boolean;
}

export interface VisionTowerSummary {
  /** `mm_vision_tower` as written in the config. */
  name: string | null;
  /** The local CLIP folder it resolves to, or null. */
  resolved: string | null;
  /** Why it does not resolve (not an error for inspect). */
  unresolved?: string;
  /** Where the tower weights come from. */
  weightsFrom: 'checkpoint' | 'vision tower folder' | 'unknown';
  /** The vision tower folder's tensors, when its weights are the ones loaded. */
  folderTensors?: RoleTotals & { files: string[]; format: SourceFormat };
}

export interface InspectReport {
  path: string;
  /** The checkpoint kind, or what a single weights file is (the JSON field keeps the name `layout`). */
  layout: InspectKind;
  /** Format of the checkpoint's weights; null for a folder that holds none. */
  format: SourceFormat | null;
  /** Weight files read from (absolute), incl. a LLaVA folder's mm_projector.bin when the projector comes from it. */
  files: { file: string; bytes: number; format: SourceFormat }[];
  config: { file: string; modelType: string | null } | null;
  vision: VisionSummary | null;
  /** Why `vision` is null. */
  visionNote?: string;
  llava: LlavaSummary | null;
  /** A single file's projector, as its tensor names and shapes tell (`--projector FILE`). */
  fileProjector?: {
    prefix: string;
    type: string | null;
    inFeatures: number | null;
    outFeatures: number | null;
    bias: boolean;
  };
  visionTower?: VisionTowerSummary;
  tensors: InspectedTensor[];
  totals: Record<TensorRole, RoleTotals> & { all: RoleTotals; ignoredBy: Record<string, RoleTotals> };
  /** How `LlavaVision.load` would shard the model across threads (LoadOptions.threads; wasm backend). */
  threads?: ThreadsSummary;
  /** The GEMM the wasm backend would run (kernels/gemm.ts): its name, and whether LLAVA_VISION_GEMM forces it. */
  gemm: { name: GemmName; description: string; forced: boolean };
  /** Things that would make `LlavaVision.load` fail or surprise (missing keys, shape mismatches, ...). */
  problems: string[];
  notes: string[];
}

export interface InspectOptions {
  /** The CLIP folder of an original LLaVA checkpoint (default: `mm_vision_tower`, resolved locally). */
  visionTower?: string;
}

const LLM = /^(model\.layers\.|model\.embed_tokens\.|model\.norm\.|lm_head\.|language_model\.|model\.language_model\.)/;
const CLIP_TEXT = /^(text_model\.|text_projection\.|visual_projection\.|logit_scale$)/;
const IMAGE_NEWLINE_KEYS = new Set(Object.values(CHECKPOINT_KINDS).flatMap((r) => r.imageNewline ?? []));

/** Natural order: `layers.2` before `layers.10`. */
export function naturalCompare(a: string, b: string): number {
  const pa = a.split(/(\d+)/);
  const pb = b.split(/(\d+)/);
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    if (pa[i] === pb[i]) continue;
    if (i % 2 === 1) return Number(pa[i]) - Number(pb[i]) || pa[i].length - pb[i].length;
    return pa[i] < pb[i] ? -1 : 1;
  }
  return pa.length - pb.length;
}

function listTensors(src: OpenedSource): InspectedTensor[] {
  return src.keys().map((name) => {
    const { dtype, shape, file } = src.info(name);
    return { name, dtype, shape, bytes: numel(shape) * DTYPE_SIZE[dtype], file, role: 'ignored' };
  });
}

function fileSizes(files: string[]): InspectReport['files'] {
  return files.map((file) => ({
    file,
    bytes: fs.statSync(file).size,
    format: /\.(bin|pt|pth)$/.test(file) ? 'torch_bin' : 'safetensors',
  }));
}

function totals(tensors: InspectedTensor[]): RoleTotals {
  const t: RoleTotals = { count: 0, bytes: 0, dtypes: {} };
  for (const x of tensors) {
    t.count++;
    t.bytes += x.bytes;
    t.dtypes[x.dtype] = (t.dtypes[x.dtype] ?? 0) + 1;
  }
  return t;
}

function visionSummary(cfg: CLIPVisionConfig, source: string): VisionSummary {
  return {
    source,
    hiddenSize: cfg.hiddenSize,
    intermediateSize: cfg.intermediateSize,
    numHiddenLayers: cfg.numHiddenLayers,
    numAttentionHeads: cfg.numAttentionHeads,
    imageSize: cfg.imageSize,
    patchSize: cfg.patchSize,
    numPatches: numPatchesPerSide(cfg) ** 2,
    hiddenAct: cfg.hiddenAct,
    layerNormEps: cfg.layerNormEps,
  };
}

function ignoreReason(name: string): string {
  if (LLM.test(name)) return 'language model';
  if (CLIP_TEXT.test(name)) return 'CLIP text model';
  if (/(^|\.)position_ids$/.test(name)) return 'buffer (position_ids)';
  if (PROJECTOR_PREFIXES.some((p) => name.startsWith(p))) return 'projector tensor the config does not use';
  if (TOWER_PREFIXES.some((p) => name.startsWith(p + 'vision_model.'))) return 'vision tensor the config does not use';
  return 'not part of the vision side';
}

/** Inspects a model folder (any checkpoint kind `LlavaVision.load` accepts; a hub id the HF cache holds) or a single weights file. */
export async function inspectCheckpoint(target: string, options: InspectOptions = {}): Promise<InspectReport> {
  // Only headers are read, so any cached snapshot will do; inspect never downloads.
  const cached = fs.existsSync(target) ? null : cachedSnapshot(target);
  if (!fs.existsSync(target) && !cached) {
    throw new CheckpointError(
      `${target}: no such file or folder${isRepoId(target) ? `, nor in the HuggingFace cache (${hubCacheDir()}); get it with "llava-vision download ${target}"` : ''}`,
    );
  }
  const abs = path.resolve(cached ?? target);
  return isDir(abs) ? inspectFolder(abs, options) : inspectFile(abs);
}

/** A model folder: its load plan, rendered with every tensor of the files the plan reads from. */
async function inspectFolder(dir: string, options: InspectOptions): Promise<InspectReport> {
  const plan = await planLoad(dir, { visionTower: options.visionTower, mode: 'inspect' });
  const { settings, tower } = plan;
  const opened: OpenedSource[] = [];
  const open = (p: string) => {
    const source = openTensorSource(p);
    opened.push(source);
    return source;
  };
  try {
    const tensors = plan.checkpoint ? listTensors(open(dir)) : [];
    const byName = (list: InspectedTensor[]) => new Map(list.map((t) => [t.name, t]));
    const inCheckpoint = byName(tensors);
    let folderTensors: VisionTowerSummary['folderTensors'];
    if (tower.weights?.from === dir) {
      markRole(inCheckpoint, tower.weights, 'tower');
    } else if (tower.weights?.tensors) {
      const folder = open(tower.weights.from);
      const used = markRole(byName(listTensors(folder)), tower.weights, 'tower');
      folderTensors = { ...totals(used), files: folder.files(), format: folder.format };
    }
    // A projector outside the checkpoint (mm_projector.bin) is listed with it.
    const projectorWeights = plan.projector?.weights;
    if (projectorWeights?.from === dir) {
      markRole(inCheckpoint, projectorWeights, 'projector');
    } else if (projectorWeights) {
      const own = listTensors(open(projectorWeights.from));
      for (const t of own) tensors.push(t);
      markRole(byName(own), projectorWeights, 'projector');
    }
    if (plan.imageNewline) inCheckpoint.get(plan.imageNewline.key)!.role = 'image_newline';
    for (const t of tensors) if (t.role === 'ignored') t.reason = ignoreReason(t.name);

    const p = plan.projector;
    const llava: LlavaSummary = {
      source: plan.settingsFrom,
      selectLayer: settings.selectLayer,
      selectFeature: settings.selectFeature,
      projector: {
        type: p?.type ?? null,
        inFeatures: p?.inFeatures ?? null,
        outFeatures: p?.outFeatures ?? null,
        act: settings.projectorAct,
        bias: settings.projectorBias,
        weightsFrom: [...new Set(tensors.filter((t) => t.role === 'projector').map((t) => t.file))].sort(),
      },
      aspect: settings.aspect,
      gridPinpoints: settings.gridPinpoints,
      mergeType: settings.mergeType,
      unfreezeVisionTower: settings.unfreezeVisionTower,
    };
    const projectorFile = projectorWeights && projectorWeights.from !== dir ? [projectorWeights.from] : [];
    return finish({
      path: dir,
      layout: plan.kind,
      format: plan.checkpoint?.format ?? null,
      files: fileSizes([...(plan.checkpoint?.files ?? []), ...projectorFile]),
      config: {
        file: plan.configFile,
        modelType: typeof plan.config.model_type === 'string' ? plan.config.model_type : null,
      },
      vision: tower.config ? visionSummary(tower.config, tower.configFile) : null,
      ...(tower.config
        ? {}
        : { visionNote: tower.configError ?? 'the vision tower folder is not resolved, so its config is unknown' }),
      llava,
      ...(tower.config ? { threads: threadsSummary(tower.config, projectorConfigOf(p)) } : {}),
      ...(CHECKPOINT_KINDS[plan.kind].towerConfig === 'mm_vision_tower'
        ? { visionTower: visionTowerSummary(plan, folderTensors) }
        : {}),
      tensors,
      problems: plan.problems,
      notes: plan.notes,
    });
  } finally {
    for (const s of opened) s.close();
  }
}

/** The planned projector's config, when its widths are known. */
function projectorConfigOf(p: ProjectorPlan | null): ProjectorConfig | null {
  if (!p || p.inFeatures === null) return null;
  return {
    type: p.type,
    inFeatures: p.inFeatures,
    outFeatures: p.outFeatures ?? p.inFeatures,
    hiddenAct: p.act,
    bias: p.bias,
  };
}

/** Marks the planned tensors found (every one under the prefix while the config is unknown); returns them. */
function markRole(byName: Map<string, InspectedTensor>, weights: PlannedWeights, role: TensorRole): InspectedTensor[] {
  const found = weights.tensors
    ? weights.tensors.flatMap((t) => byName.get(t.key) ?? [])
    : [...byName.values()].filter((t) => t.name.startsWith(weights.prefix));
  for (const t of found) t.role = role;
  return found;
}

/** Where an original LLaVA checkpoint's tower comes from; inspect never downloads, so the hint is --vision-tower. */
function visionTowerSummary(plan: LoadPlan, folderTensors: VisionTowerSummary['folderTensors']): VisionTowerSummary {
  const { tower } = plan;
  const summary: VisionTowerSummary = {
    name: plan.settings.visionTower,
    resolved: tower.dir,
    weightsFrom: tower.weightsFrom,
  };
  if (tower.unresolved)
    summary.unresolved = `${tower.unresolved.replace(/;\s*pass --download[\s\S]*$/, '')}; pass --vision-tower DIR`;
  else if (tower.configError) summary.unresolved = tower.configError;
  if (folderTensors) summary.folderTensors = folderTensors;
  return summary;
}

/** A single weights file: what its keys look like (tower, projector, newline), as `--projector FILE` or a tower would read it. */
function inspectFile(file: string): InspectReport {
  const src = openTensorSource(file);
  try {
    const tensors = listTensors(src);
    const notes: string[] = [];
    const problems: string[] = [];
    const names = tensors.map((t) => t.name);
    const projector = findProjectorKeys(names);
    const towerPrefix = TOWER_PREFIXES.find((p) => names.some((n) => n.startsWith(p + 'vision_model.')));
    for (const t of tensors) {
      if (projector && t.name.startsWith(projector.prefix)) t.role = 'projector';
      else if (
        towerPrefix !== undefined &&
        t.name.startsWith(towerPrefix + 'vision_model.') &&
        !/position_ids$/.test(t.name)
      )
        t.role = 'tower';
      else if (IMAGE_NEWLINE_KEYS.has(t.name)) t.role = 'image_newline';
      else t.reason = ignoreReason(t.name);
    }
    let fileProjector: InspectReport['fileProjector'];
    if (projector) {
      const { prefix, keyFor } = projector;
      const type = inferProjectorType(names, prefix);
      const first = tensors.find((t) => t.name === keyFor(type === 'linear' ? 'weight' : '0.weight'));
      const bias = names.some((n) => n.startsWith(prefix) && /(^|\.)bias$/.test(n.slice(prefix.length)));
      fileProjector = { prefix, type, inFeatures: first?.shape[1] ?? null, outFeatures: first?.shape[0] ?? null, bias };
      notes.push(`as --projector ${path.basename(file)}: only the ${prefix}* tensors are read`);
    }
    if (towerPrefix !== undefined)
      notes.push(
        `vision tower tensors under "${towerPrefix}vision_model."; their config comes from the folder's config.json`,
      );
    return finish({
      path: file,
      layout: src.format === 'torch_bin' ? 'torch .bin' : 'safetensors file',
      format: src.format,
      files: fileSizes(src.files()),
      config: null,
      vision: null,
      visionNote: 'a single file carries no vision config',
      llava: null,
      ...(fileProjector ? { fileProjector } : {}),
      tensors,
      problems,
      notes,
    });
  } finally {
    src.close();
  }
}

function finish(r: Omit<InspectReport, 'totals' | 'gemm'>): InspectReport {
  r.tensors.sort((a, b) => naturalCompare(a.name, b.name));
  const ignored = r.tensors.filter((t) => t.role === 'ignored');
  const ignoredBy: Record<string, RoleTotals> = {};
  for (const reason of [...new Set(ignored.map((t) => t.reason ?? ''))].sort())
    ignoredBy[reason] = totals(ignored.filter((t) => (t.reason ?? '') === reason));
  const by = (role: TensorRole) => totals(r.tensors.filter((t) => t.role === role));
  const gemm = plannedGemm();
  return {
    ...r,
    gemm: { ...gemm, description: describeGemm(gemm.name) },
    totals: {
      tower: by('tower'),
      projector: by('projector'),
      image_newline: by('image_newline'),
      ignored: by('ignored'),
      all: totals(r.tensors),
      ignoredBy,
    },
  };
}
