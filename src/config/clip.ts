import { ConfigError, quote } from '../errors';
import { LIMITS, intInRange } from './limits';

export type HiddenAct = 'quick_gelu' | 'gelu' | 'gelu_new' | 'gelu_pytorch_tanh';
export const HIDDEN_ACTS: readonly HiddenAct[] = ['quick_gelu', 'gelu', 'gelu_new', 'gelu_pytorch_tanh'];

/** HF `CLIPVisionConfig`, camel-cased. */
export interface CLIPVisionConfig {
  hiddenSize: number;
  intermediateSize: number;
  projectionDim: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numChannels: number;
  imageSize: number;
  patchSize: number;
  hiddenAct: HiddenAct;
  layerNormEps: number;
}

/** HF transformers' `CLIPVisionConfig.__init__` defaults: a key missing from config.json takes these. */
export const CLIP_VISION_DEFAULTS: Readonly<CLIPVisionConfig> = Object.freeze({
  hiddenSize: 768,
  intermediateSize: 3072,
  projectionDim: 512,
  numHiddenLayers: 12,
  numAttentionHeads: 12,
  numChannels: 3,
  imageSize: 224,
  patchSize: 32,
  hiddenAct: 'quick_gelu',
  layerNormEps: 1e-5,
});

const JSON_KEYS: Record<keyof CLIPVisionConfig, string> = {
  hiddenSize: 'hidden_size',
  intermediateSize: 'intermediate_size',
  projectionDim: 'projection_dim',
  numHiddenLayers: 'num_hidden_layers',
  numAttentionHeads: 'num_attention_heads',
  numChannels: 'num_channels',
  imageSize: 'image_size',
  patchSize: 'patch_size',
  hiddenAct: 'hidden_act',
  layerNormEps: 'layer_norm_eps',
};

/** Largest value of each integer field (see limits.ts): a bigger one is no model of this family. */
const MAX_INT: Record<Exclude<keyof CLIPVisionConfig, 'hiddenAct' | 'layerNormEps'>, number> = {
  hiddenSize: LIMITS.hiddenSize,
  intermediateSize: LIMITS.intermediateSize,
  projectionDim: LIMITS.llmHiddenSize, // not used by the vision tower, but still a width
  numHiddenLayers: LIMITS.numHiddenLayers,
  numAttentionHeads: LIMITS.hiddenSize,
  numChannels: LIMITS.numChannels,
  imageSize: LIMITS.imageSide,
  patchSize: LIMITS.imageSide,
};

type Json = Record<string, unknown>;

function isObject(x: unknown): x is Json {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/**
 * The vision part of a config.json: `model_type` `clip` (nested `vision_config`), `clip_vision_model`
 * (top level), or any config with a `vision_config` (llava-hf). Missing keys take HF's defaults.
 */
export function clipVisionConfigFromJson(json: unknown, source = 'config.json'): CLIPVisionConfig {
  if (!isObject(json)) throw new ConfigError(`${source}: expected a JSON object`);
  let vision: Json;
  if (isObject(json.vision_config)) vision = json.vision_config;
  else if (json.model_type === 'clip_vision_model' || json.model_type === undefined) vision = json;
  else {
    throw new ConfigError(
      `${source}: model_type ${quote(json.model_type)} has no vision_config; expected a CLIP, CLIP vision or llava-hf config`,
    );
  }
  return parseVisionFields(vision, source);
}

export function parseVisionFields(vision: Json, source: string): CLIPVisionConfig {
  const cfg: CLIPVisionConfig = { ...CLIP_VISION_DEFAULTS };
  for (const [field, key] of Object.entries(JSON_KEYS) as [keyof CLIPVisionConfig, string][]) {
    const value = vision[key];
    if (value === undefined || value === null) continue;
    if (field === 'hiddenAct') {
      if (!HIDDEN_ACTS.includes(value as HiddenAct)) {
        throw new ConfigError(
          `${source}: hidden_act ${quote(value)} is not supported (supported: ${HIDDEN_ACTS.join(', ')})`,
        );
      }
      cfg.hiddenAct = value as HiddenAct;
    } else if (field === 'layerNormEps') {
      if (typeof value !== 'number' || !(value > 0) || !(value < 1)) {
        throw new ConfigError(`${source}: layer_norm_eps must be a number between 0 and 1, got ${quote(value)}`);
      }
      cfg.layerNormEps = value;
    } else {
      cfg[field] = intInRange(value, source, key, 1, MAX_INT[field]);
    }
  }
  validateVisionConfig(cfg, source);
  return cfg;
}

/** Ranges (as when parsed) and the relations between fields; a config built in code is checked here too. */
export function validateVisionConfig(cfg: CLIPVisionConfig, source = 'config'): void {
  for (const [field, max] of Object.entries(MAX_INT) as [keyof typeof MAX_INT, number][]) {
    intInRange(cfg[field], source, JSON_KEYS[field], 1, max);
  }
  if (cfg.hiddenSize % cfg.numAttentionHeads !== 0) {
    throw new ConfigError(
      `${source}: hidden_size ${cfg.hiddenSize} is not divisible by num_attention_heads ${cfg.numAttentionHeads}`,
    );
  }
  if (cfg.imageSize < cfg.patchSize) {
    throw new ConfigError(`${source}: image_size ${cfg.imageSize} is smaller than patch_size ${cfg.patchSize}`);
  }
}

/**
 * A Python-style index into a tower's L+1 hidden states (0 = embeddings, -1 = the last layer's output),
 * or a ConfigError naming it (`what`: e.g. `select layer`).
 */
export function hiddenStateIndex(index: number, numHiddenLayers: number, what = 'hidden state index'): number {
  const n = numHiddenLayers + 1;
  const k = index < 0 ? n + index : index;
  if (!Number.isInteger(index) || k < 0 || k >= n) {
    throw new ConfigError(`${what} ${index} is out of range: the tower has ${n} hidden states (${-n}..${n - 1})`);
  }
  return k;
}

export function numPatchesPerSide(cfg: CLIPVisionConfig): number {
  return Math.floor(cfg.imageSize / cfg.patchSize);
}

export function visionConfigToJson(cfg: CLIPVisionConfig): Json {
  const out: Json = { model_type: 'clip_vision_model' };
  for (const [field, key] of Object.entries(JSON_KEYS) as [keyof CLIPVisionConfig, string][]) out[key] = cfg[field];
  return out;
}
