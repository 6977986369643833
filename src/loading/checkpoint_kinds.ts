/**
 * The kinds of model folder users have (checkpoint kinds), one row each: how a folder is recognised, where its tower's
 * config and LLaVA settings come from, and how our module paths (which equal HF `CLIPVisionModel` keys,
 * `vision_model.*`, and LLaVA projector indices `0.weight`, `2.bias`, ...) map to its checkpoint keys.
 * The load plan (loading/load_plan.ts) reads only these rows: adding a kind is adding a row (and its test).
 */
import * as path from 'path';
import { LlavaVisionSettings, llavaHfSettingsFromJson, llavaSettingsFromJson } from '../config/llava';
import { CheckpointError, ConfigError, quote } from '../errors';

export type CheckpointKind = 'clip' | 'clip_vision' | 'llava' | 'llava_hf' | 'llava_hf_model_prefixed';
/** @deprecated Use `CheckpointKind` ("layout" now means only the tower's per-backend layout, `TowerLayout`). */
export type Layout = CheckpointKind;

type Json = Record<string, unknown>;

export interface CheckpointKindRow {
  /** What it is, in one line (`llava-vision inspect` prints it). */
  description: string;
  /** Whether a config.json is of this kind (rows are tried in order). */
  matchesConfig: (config: Json) => boolean;
  /** The config alone does not tell: the checkpoint must also hold `towerPrefix + 'vision_model.*'`. */
  matchesTensors?: boolean;
  /** Where the tower's config lives: this folder's config.json, or the CLIP folder `mm_vision_tower` names. */
  towerConfig: 'config.json' | 'mm_vision_tower';
  /** The LLaVA settings its config.json gives; none: LLaVA's defaults (a plain CLIP tower). */
  settings?: (config: Json, where: string) => LlavaVisionSettings;
  /** The folder may hold no weights at all (LLaVA's pretrain stage releases config.json + mm_projector.bin). */
  weightsOptional?: boolean;
  /** Prefix in front of `vision_model.*` for the tower's weights in this folder's checkpoint. */
  towerPrefix: string;
  /** Prefix that marks projector tensors, for detection and for inferring the type. */
  projectorPrefix?: string;
  /** Checkpoint key of a projector module path (`0.weight`, or `weight` for a bare linear). */
  projectorKey?: (path: string) => string;
  /** A file beside the checkpoint the projector is read from when the checkpoint holds none. */
  projectorFile?: string;
  /** The config field of the LLM width the projector maps to (named in errors). */
  llmWidthField?: string;
  imageNewline?: string;
}

/** llava-hf's `LlavaMultiModalProjector` names its linears `linear_1`, `linear_2` where LLaVA has `0`, `2`. */
const hfLinear = (path: string) => path.replace(/^(\d+)\./, (_, i: string) => `linear_${Number(i) / 2 + 1}.`);
const hasVisionConfig = (c: Json) => c.vision_config !== undefined;

/** The rows, in the order they are tried. */
export const CHECKPOINT_KINDS: Readonly<Record<CheckpointKind, CheckpointKindRow>> = {
  // Original LLaVA: the tower is the CLIP folder `mm_vision_tower` names; a LLaVA-1.6 checkpoint carries
  // a fine-tuned copy of it under `towerPrefix`, which then overrides that folder's weights.
  llava: {
    description: 'original LLaVA (mm_vision_tower + model.mm_projector.*)',
    matchesConfig: (c) => c.mm_vision_tower !== undefined || c.mm_projector_type !== undefined,
    towerConfig: 'mm_vision_tower',
    settings: llavaSettingsFromJson,
    weightsOptional: true,
    towerPrefix: 'model.vision_tower.vision_tower.',
    projectorPrefix: 'model.mm_projector.',
    projectorKey: (p) => `model.mm_projector.${p}`,
    projectorFile: 'mm_projector.bin',
    llmWidthField: 'hidden_size',
    imageNewline: 'model.image_newline',
  },
  clip: {
    description: 'CLIP (full model, vision_model.* used)',
    matchesConfig: (c) => c.model_type === 'clip',
    towerConfig: 'config.json',
    towerPrefix: '',
  },
  clip_vision: {
    description: 'CLIP vision-only',
    matchesConfig: (c) => c.model_type === 'clip_vision_model',
    towerConfig: 'config.json',
    towerPrefix: '',
  },
  // llava-hf since transformers 4.52 (`_checkpoint_conversion_mapping` maps the old names to these).
  llava_hf_model_prefixed: {
    description: 'llava-hf, transformers >= 4.52 names (model.vision_tower.* + model.multi_modal_projector.*)',
    matchesConfig: hasVisionConfig,
    matchesTensors: true,
    towerConfig: 'config.json',
    settings: llavaHfSettingsFromJson,
    towerPrefix: 'model.vision_tower.',
    projectorPrefix: 'model.multi_modal_projector.',
    projectorKey: (p) => `model.multi_modal_projector.${hfLinear(p)}`,
    llmWidthField: 'text_config.hidden_size',
    imageNewline: 'model.image_newline',
  },
  // llava-hf before transformers 4.52.
  llava_hf: {
    description: 'llava-hf (vision_tower.* + multi_modal_projector.*)',
    matchesConfig: hasVisionConfig,
    matchesTensors: true,
    towerConfig: 'config.json',
    settings: llavaHfSettingsFromJson,
    towerPrefix: 'vision_tower.',
    projectorPrefix: 'multi_modal_projector.',
    projectorKey: (p) => `multi_modal_projector.${hfLinear(p)}`,
    llmWidthField: 'text_config.hidden_size',
    imageNewline: 'image_newline',
  },
};

const ROWS = Object.entries(CHECKPOINT_KINDS) as [CheckpointKind, CheckpointKindRow][];

/** Every prefix a tower's `vision_model.*` may sit under in some checkpoint kind, longest first. */
export const TOWER_PREFIXES: readonly string[] = [...new Set(ROWS.map(([, r]) => r.towerPrefix))].sort(
  (a, b) => b.length - a.length,
);

/**
 * What a model folder is, from its config.json and, for the rows that need it, its tensor names
 * (`keys` is called only then, so a folder whose config settles it is never opened).
 */
export function detectCheckpointKind(
  modelDir: string,
  config: Record<string, unknown>,
  keys: () => string[],
): CheckpointKind {
  const candidates = ROWS.filter(([, r]) => r.matchesConfig(config));
  if (candidates.length === 0) {
    throw new ConfigError(
      `${path.join(modelDir, 'config.json')}: cannot tell the model type (model_type ${quote(config.model_type)}, no mm_vision_tower)`,
    );
  }
  if (!candidates[0][1].matchesTensors) return candidates[0][0];
  const byTensors = candidates.filter(([, r]) => r.matchesTensors);
  const names = keys();
  const found = byTensors.find(([, r]) => names.some((n) => n.startsWith(`${r.towerPrefix}vision_model.`)));
  if (found) return found[0];
  const wanted = byTensors.map(([, r]) => `${r.towerPrefix}vision_model.*`).sort((a, b) => a.length - b.length);
  throw new CheckpointError(`${modelDir}: llava-hf config but no ${wanted.join(' or ')} tensors`);
}

/** Projector key prefixes a standalone projector file may use (LLaVA, `mm_projector.bin`, llava-hf, either naming of saveProjector), most specific first. */
export const PROJECTOR_PREFIXES = [
  'model.mm_projector.',
  'mm_projector.',
  'model.multi_modal_projector.',
  'multi_modal_projector.',
];

/**
 * The projector in a file of any of those namings: its key prefix and how module paths (`0.weight`)
 * map to its keys (llava-hf's `linear_N` under a `multi_modal_projector` prefix). Null when it has none.
 */
export function findProjectorKeys(keys: string[]): { prefix: string; keyFor: (path: string) => string } | null {
  const prefix = PROJECTOR_PREFIXES.find((p) => keys.some((k) => k.startsWith(p)));
  if (!prefix) return null;
  return { prefix, keyFor: prefix.includes('multi_modal') ? (p) => prefix + hfLinear(p) : (p) => prefix + p };
}

/**
 * Infers a LLaVA projector type from its checkpoint keys: `weight`/`bias` at the top is `linear`,
 * N linears at indices 0, 2, ... is `mlp{N}x_gelu`. llava-hf projectors are always `mlp2x_gelu`-shaped.
 */
export function inferProjectorType(keys: string[], prefix: string): string | null {
  const rest = keys.filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
  if (rest.length === 0) return null;
  if (rest.includes('weight')) return 'linear';
  const indices = new Set<number>();
  for (const r of rest) {
    const m = /^(?:(\d+)|linear_(\d+))\.weight$/.exec(r);
    if (m) indices.add(m[1] !== undefined ? Number(m[1]) : (Number(m[2]) - 1) * 2);
  }
  if (indices.size === 0) return null;
  return `mlp${indices.size}x_gelu`;
}

/** @deprecated Use `detectCheckpointKind`. */
export const detectLayout = detectCheckpointKind;
