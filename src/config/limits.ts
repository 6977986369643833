/**
 * Bounds on config numbers, checked when a config is read, before anything is allocated from it.
 *
 * Every size a model or a preprocessing step allocates comes from a config, and a config is a file
 * from the internet: `image_size: 1e9` or `num_hidden_layers: 1e6` would otherwise exhaust memory or
 * hang in a build loop before any consistency check runs. These caps are generous (several times the
 * largest CLIP / LLaVA model published) and only refuse sizes no model of this family has; the real
 * check is against the checkpoint's own tensor shapes, done before the model is built
 * (src/model/config_checks.ts).
 */
import { ConfigError, quote } from '../errors';

export const LIMITS = Object.freeze({
  /** Vision width (ViT-L 1024, ViT-bigG 1664, ViT-22B 6144). */
  hiddenSize: 16384,
  /** Vision MLP width (ViT-22B 24576). */
  intermediateSize: 65536,
  /** Vision layers (ViT-22B 48). */
  numHiddenLayers: 256,
  /** Input channels (RGB: 3). */
  numChannels: 16,
  /** Any image side a config asks for: image_size, patch_size, size, crop_size, grid pinpoints (LLaVA: 336..2304). */
  imageSide: 4096,
  /** LLM width a projector maps to (LLaMA-3 405B: 16384). */
  llmHiddenSize: 65536,
  /** Linear layers of an `mlp{N}x_gelu` projector (LLaVA: 2). */
  projectorDepth: 32,
  /** Entries of a vision_feature_layer list (llava-hf uses up to 4). */
  selectLayers: 64,
  /** Entries of image_grid_pinpoints (LLaVA-OneVision: 49). */
  gridPinpoints: 1024,
});

/** Nesting a config.json may have: HF configs use 3 or 4 levels; 20,000 would overflow later walks. */
export const CONFIG_MAX_DEPTH = 32;

/**
 * An integer config value in [min, max], or a ConfigError naming the file and the field. JSON has no
 * integer type: 2.5, 1e308, "768" and -1 are all refused here, the last two being what Python would
 * fail on later in the build.
 */
export function intInRange(value: unknown, source: string, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = min === 1 ? `a positive integer (at most ${max})` : `an integer from ${min} to ${max}`;
    throw new ConfigError(`${source}: ${field} must be ${range}, got ${quote(value)}`);
  }
  return value;
}
