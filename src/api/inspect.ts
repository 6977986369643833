/**
 * What a checkpoint folder or weights file is, without loading it: the detected layout, the vision
 * and LLaVA settings the loader would use, every tensor (name, dtype, shape, bytes) and whether
 * `LlavaVision.load` would read it (tower, projector, image_newline) or leave it on disk (ignored).
 * Reads config files and tensor headers only; no tensor data, no tfjs backend, no download.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CLIPVisionConfig, clipVisionConfigFromJson, numPatchesPerSide } from '../config/clip';
import { AspectMode, MergeType, Pinpoints, SelectFeature } from '../config/llava';
import { CheckpointError, LlavaVisionError } from '../errors';
import { DTYPE_SIZE, DType } from '../io/dtype';
import { LAYOUT_KEYS, Layout, PROJECTOR_PREFIXES, findProjectorKeys, inferProjectorType } from '../io/layouts';
import { cachedSnapshot, hubCacheDir, isRepoId } from '../io/hub';
import { projectorDepth } from '../model/projector';
import { detectLayout, settingsFor } from './llava_vision';
import { OpenedSource, SourceFormat, emptySource, findWeights, isDir, openTensorSource, readJsonFile, resolveVisionTower } from './sources';
import { readVisionConfig, resolveLayer } from './vision_tower';

export type InspectLayout = Layout | 'safetensors file' | 'torch .bin';
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
  projector: { type: string | null; inFeatures: number | null; outFeatures: number | null; act: string; bias: boolean; weightsFrom: string[] };
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
  layout: InspectLayout;
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
  fileProjector?: { prefix: string; type: string | null; inFeatures: number | null; outFeatures: number | null; bias: boolean };
  visionTower?: VisionTowerSummary;
  tensors: InspectedTensor[];
  totals: Record<TensorRole, RoleTotals> & { all: RoleTotals; ignoredBy: Record<string, RoleTotals> };
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
const TOWER_PREFIXES = ['model.vision_tower.vision_tower.', 'model.vision_tower.', 'vision_tower.', ''];

const fmtShape = (s: number[]) => `[${s.join(', ')}]`;
const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** HF `CLIPVisionModel`'s parameters (`vision_model.*`) and PyTorch shapes for a config. */
export function visionTowerSpecs(cfg: CLIPVisionConfig): { name: string; shape: number[] }[] {
  const D = cfg.hiddenSize;
  const I = cfg.intermediateSize;
  const P = cfg.patchSize;
  const specs = [
    { name: 'vision_model.embeddings.class_embedding', shape: [D] },
    { name: 'vision_model.embeddings.patch_embedding.weight', shape: [D, cfg.numChannels, P, P] },
    { name: 'vision_model.embeddings.position_embedding.weight', shape: [numPatchesPerSide(cfg) ** 2 + 1, D] },
  ];
  const ln = (p: string) => [{ name: `${p}.weight`, shape: [D] }, { name: `${p}.bias`, shape: [D] }];
  const linear = (p: string, out: number, inp: number) => [{ name: `${p}.weight`, shape: [out, inp] }, { name: `${p}.bias`, shape: [out] }];
  specs.push(...ln('vision_model.pre_layrnorm'));
  for (let i = 0; i < cfg.numHiddenLayers; i++) {
    const p = `vision_model.encoder.layers.${i}`;
    for (const proj of ['k_proj', 'v_proj', 'q_proj', 'out_proj']) specs.push(...linear(`${p}.self_attn.${proj}`, D, D));
    specs.push(...ln(`${p}.layer_norm1`), ...linear(`${p}.mlp.fc1`, I, D), ...linear(`${p}.mlp.fc2`, D, I), ...ln(`${p}.layer_norm2`));
  }
  specs.push(...ln('vision_model.post_layernorm'));
  return specs;
}

/** LLaVA projector parameters (module paths `0.weight`, ... or `weight` for a bare linear) and shapes. */
export function projectorSpecs(type: string, inF: number, outF: number, bias: boolean): { name: string; shape: number[] }[] {
  if (type === 'linear') return [{ name: 'weight', shape: [outF, inF] }, ...(bias ? [{ name: 'bias', shape: [outF] }] : [])];
  const specs: { name: string; shape: number[] }[] = [];
  for (let i = 0; i < projectorDepth(type); i++) {
    specs.push({ name: `${2 * i}.weight`, shape: [outF, i === 0 ? inF : outF] });
    if (bias) specs.push({ name: `${2 * i}.bias`, shape: [outF] });
  }
  return specs;
}

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
    return { name, dtype, shape, bytes: numel(shape) * DTYPE_SIZE[dtype], file, role: 'ignored' as TensorRole };
  });
}

function fileSizes(files: string[]): InspectReport['files'] {
  return files.map((file) => ({ file, bytes: fs.statSync(file).size, format: /\.(bin|pt|pth)$/.test(file) ? 'torch_bin' : 'safetensors' }));
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

/** Checks tensors against expected specs (by checkpoint key); marks the found ones with `role`. */
function matchSpecs(
  byName: Map<string, InspectedTensor>,
  specs: { name: string; shape: number[] }[],
  keyFor: (p: string) => string,
  role: TensorRole,
  problems: string[],
  where: string,
): void {
  const missing: string[] = [];
  for (const spec of specs) {
    const key = keyFor(spec.name);
    const t = byName.get(key);
    if (!t) {
      missing.push(`${key} ${fmtShape(spec.shape)}`);
      continue;
    }
    t.role = role;
    if (fmtShape(t.shape) !== fmtShape(spec.shape)) problems.push(`${where}: ${key} has shape ${fmtShape(t.shape)} but the config expects ${fmtShape(spec.shape)}`);
    if (!['F32', 'F16', 'BF16', 'F64'].includes(t.dtype)) problems.push(`${where}: ${key} has dtype ${t.dtype}, not a float`);
  }
  if (missing.length) {
    const shown = missing.slice(0, 3).join(', ') + (missing.length > 3 ? `, ... (${missing.length} in all)` : '');
    problems.push(`${where}: missing ${role} tensor${missing.length > 1 ? 's' : ''} ${shown}`);
  }
}

function ignoreReason(name: string): string {
  if (LLM.test(name)) return 'language model';
  if (CLIP_TEXT.test(name)) return 'CLIP text model';
  if (/(^|\.)position_ids$/.test(name)) return 'buffer (position_ids)';
  if (PROJECTOR_PREFIXES.some((p) => name.startsWith(p))) return 'projector tensor the config does not use';
  if (TOWER_PREFIXES.some((p) => name.startsWith(p + 'vision_model.'))) return 'vision tensor the config does not use';
  return 'not part of the vision side';
}

/** Inspects a model folder (any layout `LlavaVision.load` accepts; a hub id the HF cache holds) or a single weights file. */
export async function inspectCheckpoint(target: string, options: InspectOptions = {}): Promise<InspectReport> {
  // Only headers are read, so any cached snapshot will do; inspect never downloads.
  const cached = fs.existsSync(target) ? null : cachedSnapshot(target);
  if (!fs.existsSync(target) && !cached) {
    throw new CheckpointError(`${target}: no such file or folder${isRepoId(target) ? `, nor in the HuggingFace cache (${hubCacheDir()}); get it with "llava-vision download ${target}"` : ''}`);
  }
  const abs = path.resolve(cached ?? target);
  return isDir(abs) ? inspectFolder(abs, options) : inspectFile(abs);
}

async function inspectFolder(dir: string, options: InspectOptions): Promise<InspectReport> {
  const configFile = path.join(dir, 'config.json');
  const config = readJsonFile(configFile, 'model config');
  const weights = findWeights(dir);
  let src: OpenedSource | null = null;
  const open = () => (src ??= weights ? openTensorSource(dir) : emptySource(dir));
  const extra: OpenedSource[] = [];
  try {
    const layout = detectLayout(dir, config, () => open().keys());
    const settings = settingsFor(layout, config, configFile);
    const keys = LAYOUT_KEYS[layout];
    const ck = open();
    const problems: string[] = [];
    const notes: string[] = [];
    if (!weights) {
      if (layout !== 'llava') throw new CheckpointError(`${dir}: no weights found (model.safetensors[.index.json], pytorch_model.bin[.index.json])`);
      notes.push('no weights files in this folder (a pretrain release: config.json + mm_projector.bin?)');
    }
    const tensors = listTensors(ck);
    const byName = new Map(tensors.map((t) => [t.name, t]));

    // Vision config and where the tower weights come from.
    let vision: CLIPVisionConfig | null = null;
    let visionSource = configFile;
    let visionNote: string | undefined;
    let visionTower: VisionTowerSummary | undefined;
    const hasOverride = layout === 'llava' && tensors.some((t) => t.name.startsWith(keys.towerPrefix + 'vision_model.'));
    if (layout === 'llava') {
      visionTower = { name: settings.visionTower, resolved: null, weightsFrom: hasOverride ? 'checkpoint' : 'vision tower folder' };
      try {
        visionTower.resolved = options.visionTower ?? (await resolveVisionTower(settings.visionTower ?? '', dir, { download: false }));
        visionSource = path.join(visionTower.resolved, 'config.json');
        vision = readVisionConfig(visionTower.resolved);
      } catch (e) {
        if (!(e instanceof LlavaVisionError)) throw e;
        // inspect never downloads: the hint is the --vision-tower option
        visionTower.unresolved = visionTower.resolved ? e.message : `${e.message.replace(/;\s*pass --download[\s\S]*$/, '')}; pass --vision-tower DIR`;
        visionNote = visionTower.resolved ? e.message : 'the vision tower folder is not resolved, so its config is unknown';
        if (!visionTower.resolved && !hasOverride) visionTower.weightsFrom = 'unknown';
      }
      if (hasOverride) notes.push(`tower weights: this checkpoint's fine-tuned copy (${keys.towerPrefix}vision_model.*) overrides the vision tower folder's; that folder gives the config and preprocessor only`);
    } else {
      vision = clipVisionConfigFromJson(config, configFile);
    }

    // Tower tensors: in this checkpoint (CLIP, llava-hf, LLaVA-1.6 override) or in the tower folder.
    if (layout !== 'llava' || hasOverride) {
      if (vision) matchSpecs(byName, visionTowerSpecs(vision), (p) => keys.towerPrefix + p, 'tower', problems, dir);
      else for (const t of tensors) if (t.name.startsWith(keys.towerPrefix + 'vision_model.')) t.role = 'tower';
    } else if (visionTower?.resolved && vision) {
      const towerSrc = openTensorSource(options.visionTower ?? visionTower.resolved);
      extra.push(towerSrc);
      const towerTensors = listTensors(towerSrc);
      const towerByName = new Map(towerTensors.map((t) => [t.name, t]));
      matchSpecs(towerByName, visionTowerSpecs(vision), (p) => p, 'tower', problems, visionTower.resolved);
      const used = towerTensors.filter((t) => t.role === 'tower');
      visionTower.folderTensors = { ...totals(used), files: towerSrc.files(), format: towerSrc.format };
    }

    // Select layer(s) against the tower depth.
    if (vision) {
      for (const l of Array.isArray(settings.selectLayer) ? settings.selectLayer : [settings.selectLayer]) {
        try {
          resolveLayer(l, vision.numHiddenLayers);
        } catch (e) {
          problems.push((e as Error).message);
        }
      }
    }

    // Projector: this checkpoint, else (original LLaVA) mm_projector.bin next to it.
    let projectorFrom: string | null = null;
    const projectorType = settings.projectorType;
    const featureWidth = vision ? vision.hiddenSize * (Array.isArray(settings.selectLayer) ? settings.selectLayer.length : 1) : null;
    let projectorIn = settings.projectorIn ?? featureWidth;
    let projectorOut = settings.projectorOut;
    if (projectorType && keys.projectorPrefix) {
      let psrc: OpenedSource | null = null;
      let pByName = byName;
      if (tensors.some((t) => t.name.startsWith(keys.projectorPrefix!))) {
        psrc = ck;
        projectorFrom = ck.files().length === 1 ? ck.files()[0] : dir;
        if (fs.existsSync(path.join(dir, 'mm_projector.bin'))) notes.push('mm_projector.bin is not used: the checkpoint holds the projector');
      } else if (layout === 'llava' && fs.existsSync(path.join(dir, 'mm_projector.bin'))) {
        psrc = openTensorSource(path.join(dir, 'mm_projector.bin'));
        extra.push(psrc);
        const binTensors = listTensors(psrc);
        tensors.push(...binTensors);
        pByName = new Map(binTensors.map((t) => [t.name, t]));
        projectorFrom = psrc.files()[0];
      }
      const first = keys.projectorKey!(projectorType === 'linear' ? 'weight' : '0.weight');
      if (projectorOut === null && pByName.has(first)) projectorOut = pByName.get(first)!.shape[0];
      if (projectorIn !== null && featureWidth !== null && projectorIn !== featureWidth) {
        problems.push(`projector input width ${projectorIn} (mm_hidden_size) disagrees with the vision feature width ${featureWidth}`);
      }
      if (projectorType !== 'identity') {
        if (!psrc) {
          problems.push(`projector type ${projectorType} but no projector tensors (${keys.projectorPrefix}*) found; LlavaVision.load needs --projector FILE`);
        } else {
          const inferred = inferProjectorType([...pByName.keys()], keys.projectorPrefix);
          if (inferred && inferred !== projectorType && !(layout !== 'llava' && inferred === 'mlp2x_gelu')) {
            problems.push(`the config says ${projectorType} but the projector tensors are ${inferred}-shaped`);
          }
          try {
            matchSpecs(pByName, projectorSpecs(projectorType, projectorIn ?? 0, projectorOut ?? 0, settings.projectorBias), keys.projectorKey!, 'projector', problems, projectorFrom!);
          } catch (e) {
            if (!(e instanceof LlavaVisionError)) throw e;
            problems.push(e.message);
          }
        }
      }
    }

    // image_newline: read whenever present (anyres merges need it).
    if (keys.imageNewline && layout !== 'clip' && layout !== 'clip_vision' && byName.has(keys.imageNewline)) byName.get(keys.imageNewline)!.role = 'image_newline';
    if (settings.mergeType === 'spatial_unpad' && !(keys.imageNewline && byName.has(keys.imageNewline))) {
      problems.push(`merge spatial_unpad needs ${keys.imageNewline ?? 'image_newline'}, not in this checkpoint`);
    }

    for (const t of tensors) if (t.role === 'ignored') t.reason = ignoreReason(t.name);
    const llava: LlavaSummary = {
      source: layout === 'clip' || layout === 'clip_vision' ? 'defaults' : configFile,
      selectLayer: settings.selectLayer,
      selectFeature: settings.selectFeature,
      projector: {
        type: projectorType,
        inFeatures: projectorType ? projectorIn : null,
        outFeatures: projectorType ? (projectorType === 'identity' ? projectorIn : projectorOut) : null,
        act: settings.projectorAct,
        bias: settings.projectorBias,
        weightsFrom: [...new Set(tensors.filter((t) => t.role === 'projector').map((t) => t.file))].sort(),
      },
      aspect: settings.aspect,
      gridPinpoints: settings.gridPinpoints,
      mergeType: settings.mergeType,
      unfreezeVisionTower: settings.unfreezeVisionTower,
    };
    return finish({
      path: dir,
      layout,
      format: weights ? ck.format : null,
      files: fileSizes([...ck.files(), ...(projectorFrom && projectorFrom.endsWith('mm_projector.bin') ? [projectorFrom] : [])]),
      config: { file: configFile, modelType: typeof config.model_type === 'string' ? config.model_type : null },
      vision: vision ? visionSummary(vision, visionSource) : null,
      ...(visionNote ? { visionNote } : {}),
      llava,
      ...(visionTower ? { visionTower } : {}),
      tensors,
      problems,
      notes,
    });
  } finally {
    (src as OpenedSource | null)?.close();
    for (const s of extra) s.close();
  }
}

/** A single weights file: what its keys look like (tower, projector, newline), as `--projector FILE` or a tower would read it. */
function inspectFile(file: string): InspectReport {
  const src = openTensorSource(file);
  try {
    const tensors = listTensors(src);
    const notes: string[] = [];
    const problems: string[] = [];
    const names = tensors.map((t) => t.name);
    const projectorPrefix = findProjectorKeys(names)?.prefix;
    const towerPrefix = TOWER_PREFIXES.find((p) => names.some((n) => n.startsWith(p + 'vision_model.')));
    for (const t of tensors) {
      if (projectorPrefix && t.name.startsWith(projectorPrefix)) t.role = 'projector';
      else if (towerPrefix !== undefined && t.name.startsWith(towerPrefix + 'vision_model.') && !/position_ids$/.test(t.name)) t.role = 'tower';
      else if (/^(model\.)?image_newline$/.test(t.name)) t.role = 'image_newline';
      else t.reason = ignoreReason(t.name);
    }
    let fileProjector: InspectReport['fileProjector'];
    if (projectorPrefix) {
      const type = inferProjectorType(names, projectorPrefix);
      const firstKey = type === 'linear' ? 'weight' : projectorPrefix.includes('multi_modal') ? 'linear_1.weight' : '0.weight';
      const first = tensors.find((t) => t.name === projectorPrefix + firstKey);
      const bias = names.some((n) => n.startsWith(projectorPrefix) && /(^|\.)bias$/.test(n.slice(projectorPrefix.length)));
      fileProjector = { prefix: projectorPrefix, type, inFeatures: first?.shape[1] ?? null, outFeatures: first?.shape[0] ?? null, bias };
      notes.push(`as --projector ${path.basename(file)}: only the ${projectorPrefix}* tensors are read`);
    }
    if (towerPrefix !== undefined) notes.push(`vision tower tensors under "${towerPrefix}vision_model."; their config comes from the folder's config.json`);
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

function finish(r: Omit<InspectReport, 'totals'>): InspectReport {
  r.tensors.sort((a, b) => naturalCompare(a.name, b.name));
  const ignored = r.tensors.filter((t) => t.role === 'ignored');
  const ignoredBy: Record<string, RoleTotals> = {};
  for (const reason of [...new Set(ignored.map((t) => t.reason ?? ''))].sort()) ignoredBy[reason] = totals(ignored.filter((t) => (t.reason ?? '') === reason));
  const by = (role: TensorRole) => totals(r.tensors.filter((t) => t.role === role));
  return {
    ...r,
    totals: { tower: by('tower'), projector: by('projector'), image_newline: by('image_newline'), ignored: by('ignored'), all: totals(r.tensors), ignoredBy },
  };
}
