/**
 * Checkpoint key layouts users have, and how each maps our module paths (which equal HF
 * `CLIPVisionModel` keys, `vision_model.*`, and LLaVA projector indices `0.weight`, `2.bias`, ...)
 * to its keys. One small table: adding a layout is adding a row.
 */
export type Layout = 'clip' | 'clip_vision' | 'llava' | 'llava_hf' | 'llava_hf_model_prefixed';

export interface LayoutKeys {
  /** Prefix in front of `vision_model.*` for the tower's weights. */
  towerPrefix: string;
  /** Checkpoint key of a projector module path (`0.weight`, or `weight` for a bare linear). */
  projectorKey?: (path: string) => string;
  /** Prefix that marks projector tensors, for detection and for inferring the type. */
  projectorPrefix?: string;
  imageNewline?: string;
}

/** llava-hf's `LlavaMultiModalProjector` names its linears `linear_1`, `linear_2` where LLaVA has `0`, `2`. */
const hfLinear = (path: string) => path.replace(/^(\d+)\./, (_, i: string) => `linear_${Number(i) / 2 + 1}.`);

export const LAYOUT_KEYS: Record<Layout, LayoutKeys> = {
  clip: { towerPrefix: '' },
  clip_vision: { towerPrefix: '' },
  // Original LLaVA: a LLaVA-1.6 checkpoint carries its fine-tuned tower under this prefix.
  llava: {
    towerPrefix: 'model.vision_tower.vision_tower.',
    projectorPrefix: 'model.mm_projector.',
    projectorKey: (p) => `model.mm_projector.${p}`,
    imageNewline: 'model.image_newline',
  },
  // llava-hf before transformers 4.52.
  llava_hf: {
    towerPrefix: 'vision_tower.',
    projectorPrefix: 'multi_modal_projector.',
    projectorKey: (p) => `multi_modal_projector.${hfLinear(p)}`,
    imageNewline: 'image_newline',
  },
  // llava-hf since transformers 4.52 (`_checkpoint_conversion_mapping` maps the old names to these).
  llava_hf_model_prefixed: {
    towerPrefix: 'model.vision_tower.',
    projectorPrefix: 'model.multi_modal_projector.',
    projectorKey: (p) => `model.multi_modal_projector.${hfLinear(p)}`,
    imageNewline: 'model.image_newline',
  },
};

/** Projector key prefixes a standalone projector file may use (LLaVA, `mm_projector.bin`, llava-hf, either naming of saveProjector), most specific first. */
export const PROJECTOR_PREFIXES = ['model.mm_projector.', 'mm_projector.', 'model.multi_modal_projector.', 'multi_modal_projector.'];

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
