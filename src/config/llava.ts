import { ConfigError, quote } from '../errors';
import { LIMITS, intInRange } from './limits';

export type SelectFeature = 'patch' | 'cls_patch';
export type MergeType = 'flat' | 'spatial' | 'spatial_unpad';

/** The vision-side settings of a LLaVA (original or llava-hf) config.json, with LLaVA's defaults. */
export interface LlavaVisionSettings {
  /** `mm_vision_tower`: hub id or path of the CLIP tower (original LLaVA only). */
  visionTower: string | null;
  /** `mm_vision_select_layer` / `vision_feature_layer`; a list is concatenated on the feature axis (newer llava-hf). */
  selectLayer: number | number[];
  /** `mm_vision_select_feature`; llava-hf `default` = `patch`, `full` = `cls_patch`. */
  selectFeature: SelectFeature;
  /** `mm_projector_type`, or null when the config has no projector. */
  projectorType: string | null;
  /** Projector input width (`mm_hidden_size`) and output width (the LLM `hidden_size`). */
  projectorIn: number | null;
  projectorOut: number | null;
  projectorAct: string;
  projectorBias: boolean;
  /** `image_aspect_ratio`: LLaVA treats anything but `pad`/`anyres*` as plain processor resizing. */
  aspect: AspectMode;
  /** `image_grid_pinpoints` as (width, height) pairs, as LLaVA reads them. */
  gridPinpoints: Pinpoints | null;
  /** `mm_patch_merge_type`. */
  mergeType: MergeType;
  unfreezeVisionTower: boolean;
}

export const LLAVA_DEFAULTS: Readonly<LlavaVisionSettings> = Object.freeze({
  visionTower: null,
  selectLayer: -2,
  selectFeature: 'patch',
  projectorType: null,
  projectorIn: null,
  projectorOut: null,
  projectorAct: 'gelu',
  projectorBias: true,
  aspect: 'square',
  gridPinpoints: null,
  mergeType: 'flat',
  unfreezeVisionTower: false,
});

type Json = Record<string, unknown>;

export function parseSelectFeature(value: unknown, where: string): SelectFeature {
  if (value === 'patch' || value === 'cls_patch') return value;
  throw new ConfigError(`${where}: Unexpected select feature: ${quote(value)} (expected patch or cls_patch)`);
}

export function parseMergeType(value: unknown, where: string): MergeType {
  if (value === undefined || value === null || value === 'flat') return 'flat';
  if (value === 'spatial' || value === 'spatial_unpad') return value;
  throw new ConfigError(
    `${where}: mm_patch_merge_type ${quote(value)} is not supported (flat, spatial, spatial_unpad)`,
  );
}

export type AspectMode = 'square' | 'pad' | 'anyres';
/** [width, height] pairs, as LLaVA's `image_grid_pinpoints` (NOT [h, w] as in HF's llava-next). */
export type Pinpoints = [number, number][];

/** LLaVA treats any image_aspect_ratio other than 'pad' / 'anyres' (incl. none) as plain processing. */
export function aspectModeFromConfig(imageAspectRatio: unknown): AspectMode {
  return imageAspectRatio === 'pad' || imageAspectRatio === 'anyres' ? imageAspectRatio : 'square';
}

/**
 * `image_grid_pinpoints`: a list of [w, h] lists, or a Python literal string such as
 * "[(336, 672), (672, 336)]" (LLaVA runs ast.literal_eval on strings).
 */
export function parseGridPinpoints(value: unknown, source = 'config.json'): Pinpoints {
  let list: unknown = value;
  if (typeof value === 'string') {
    const pairs: Pinpoints = [];
    const rest = value.replace(/[[(]\s*(\d+)\s*,\s*(\d+)\s*,?\s*[\])]/g, (_m, w, h) => {
      pairs.push([Number(w), Number(h)]);
      return '#';
    });
    if (!/^\s*\[\s*(#\s*,\s*)*(#\s*,?\s*)?\]\s*$/.test(rest)) {
      throw new ConfigError(
        `${source}: image_grid_pinpoints string ${quote(value)} is not a list of (width, height) pairs`,
      );
    }
    list = pairs;
  }
  if (
    !Array.isArray(list) ||
    list.length === 0 ||
    !list.every((p) => Array.isArray(p) && p.length === 2 && p.every((n) => Number.isInteger(n) && n > 0))
  ) {
    throw new ConfigError(
      `${source}: image_grid_pinpoints must be a non-empty list of [width, height], got ${quote(value)}`,
    );
  }
  // Each pinpoint is a canvas the image is resized onto and cut into tiles: bounded like any image side.
  if (list.length > LIMITS.gridPinpoints) {
    throw new ConfigError(
      `${source}: image_grid_pinpoints has ${list.length} entries (at most ${LIMITS.gridPinpoints})`,
    );
  }
  const tooBig = (list as number[][]).find((p) => p[0] > LIMITS.imageSide || p[1] > LIMITS.imageSide);
  if (tooBig) {
    throw new ConfigError(
      `${source}: image_grid_pinpoints entry ${quote(tooBig)} is larger than ${LIMITS.imageSide} pixels on a side`,
    );
  }
  return (list as number[][]).map((p) => [p[0], p[1]]);
}

function parseSelectLayer(value: unknown, where: string): number | number[] {
  const isInt = (x: unknown) => Number.isInteger(x);
  if (isInt(value)) return value as number;
  if (Array.isArray(value) && value.length > 0 && value.length <= LIMITS.selectLayers && value.every(isInt))
    return value as number[];
  throw new ConfigError(
    `${where}: select layer must be an integer or a list of at most ${LIMITS.selectLayers} integers, got ${quote(value)}`,
  );
}

export const PROJECTOR_TYPES = ['linear', 'mlp{N}x_gelu', 'identity'] as const;

/**
 * Number of Linear layers of a projector type (LLaVA's `build_vision_projector`: linear, mlp{N}x_gelu,
 * identity), or a ConfigError naming the type. N is bounded: each linear is allocated when the
 * projector is built, so `mlp1000000x_gelu` must fail here, not in the allocator.
 */
export function projectorDepth(type: unknown, where?: string): number {
  const at = where ? `${where}: ` : '';
  if (type === 'linear') return 1;
  if (type === 'identity') return 0;
  const m = typeof type === 'string' ? /^mlp(\d+)x_gelu$/.exec(type) : null;
  if (m && Number(m[1]) >= 1) {
    const depth = Number(m[1]);
    if (depth > LIMITS.projectorDepth) {
      throw new ConfigError(
        `${at}projector type ${quote(type)} has ${m[1]} linear layers; at most ${LIMITS.projectorDepth} are supported`,
      );
    }
    return depth;
  }
  throw new ConfigError(
    `${at}Unknown projector type: ${typeof type === 'string' ? type.slice(0, 200) : quote(type)} (supported: ${PROJECTOR_TYPES.join(', ')})`,
  );
}

/** An optional width (`hidden_size`, `mm_hidden_size`): absent or null is null. */
function optionalWidth(value: unknown, where: string, field: string): number | null {
  return value === undefined || value === null ? null : intInRange(value, where, field, 1, LIMITS.llmHiddenSize);
}

function optionalString(value: unknown, where: string, field: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') throw new ConfigError(`${where}: ${field} must be a string, got ${quote(value)}`);
  return value;
}

/** Original LLaVA config.json (`mm_vision_tower`, `mm_projector_type`, ...). */
export function llavaSettingsFromJson(json: Json, where: string): LlavaVisionSettings {
  const s: LlavaVisionSettings = { ...LLAVA_DEFAULTS };
  s.visionTower =
    optionalString(json.mm_vision_tower, where, 'mm_vision_tower') ??
    optionalString(json.vision_tower, where, 'vision_tower');
  if (json.mm_vision_select_layer !== undefined) s.selectLayer = parseSelectLayer(json.mm_vision_select_layer, where);
  if (json.mm_vision_select_feature !== undefined)
    s.selectFeature = parseSelectFeature(json.mm_vision_select_feature, where);
  s.projectorType = optionalString(json.mm_projector_type, where, 'mm_projector_type') ?? 'linear';
  // An absurd depth is refused here, naming the file; an unknown type still fails when the projector is
  // built (an override such as --projector-type may replace it before that).
  if (/^mlp\d+x_gelu$/.test(s.projectorType)) projectorDepth(s.projectorType, where);
  s.projectorIn = optionalWidth(json.mm_hidden_size, where, 'mm_hidden_size');
  s.projectorOut = optionalWidth(json.hidden_size, where, 'hidden_size');
  s.aspect = aspectModeFromConfig(json.image_aspect_ratio);
  s.gridPinpoints = json.image_grid_pinpoints == null ? null : parseGridPinpoints(json.image_grid_pinpoints, where);
  s.mergeType = parseMergeType(json.mm_patch_merge_type, where);
  s.unfreezeVisionTower = json.unfreeze_mm_vision_tower === true;
  return s;
}

/** transformers' LlavaNextConfig default `image_grid_pinpoints`, [height, width]. */
const LLAVA_NEXT_DEFAULT_PINPOINTS_HW = [
  [336, 672],
  [672, 336],
  [672, 672],
  [1008, 336],
  [336, 1008],
];

/** llava-hf config.json (`vision_config`, `vision_feature_layer`, `projector_hidden_act`, ...). */
export function llavaHfSettingsFromJson(json: Json, where: string): LlavaVisionSettings {
  const s: LlavaVisionSettings = { ...LLAVA_DEFAULTS };
  if (json.vision_feature_layer !== undefined) s.selectLayer = parseSelectLayer(json.vision_feature_layer, where);
  const strategy = json.vision_feature_select_strategy ?? 'default';
  if (strategy !== 'default' && strategy !== 'full') {
    throw new ConfigError(
      `${where}: vision_feature_select_strategy ${quote(strategy)} is not supported (default, full)`,
    );
  }
  s.selectFeature = strategy === 'full' ? 'cls_patch' : 'patch';
  s.projectorType = 'mlp2x_gelu';
  const sub = (key: string): Json => {
    const v = json[key];
    if (v === undefined || v === null) return {};
    if (typeof v !== 'object' || Array.isArray(v))
      throw new ConfigError(`${where}: ${key} must be an object, got ${quote(v)}`);
    return v as Json;
  };
  const visionWidth = optionalWidth(sub('vision_config').hidden_size, where, 'vision_config.hidden_size') ?? 1024;
  const layers = Array.isArray(s.selectLayer) ? s.selectLayer.length : 1;
  s.projectorIn = visionWidth * layers;
  s.projectorOut = optionalWidth(sub('text_config').hidden_size, where, 'text_config.hidden_size') ?? 4096;
  s.projectorAct = optionalString(json.projector_hidden_act, where, 'projector_hidden_act') ?? 'gelu';
  const bias = json.multimodal_projector_bias ?? true;
  if (typeof bias !== 'boolean')
    throw new ConfigError(`${where}: multimodal_projector_bias must be true or false, got ${quote(bias)}`);
  s.projectorBias = bias;
  if (json.model_type === 'llava_next') {
    s.aspect = 'anyres';
    // llava-hf stores pinpoints as [height, width]; LLaVA's code (which we follow) reads (width, height).
    // A config without them gets LlavaNextConfig's default list, as in transformers.
    const hw = parseGridPinpoints(json.image_grid_pinpoints ?? LLAVA_NEXT_DEFAULT_PINPOINTS_HW, where);
    s.gridPinpoints = hw.map(([h, w]) => [w, h] as [number, number]);
    s.mergeType = 'spatial_unpad';
  }
  return s;
}
