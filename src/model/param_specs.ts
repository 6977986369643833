/**
 * The parameters the tower and the projector declare (`namedParams`: module path and PyTorch shape),
 * computed from their configs without building them: the load plan (loading/load_plan.ts) needs them from
 * tensor headers alone, where building would allocate every weight (1.2 GB for ViT-L). Each entry is
 * the module's own declaration: `sameParams` compares a built module with them, and the tests do so
 * for every fixture config, both tower layouts and every projector type.
 */
import { CLIPVisionConfig, numPatchesPerSide } from '../config/clip';
import { projectorDepth } from '../config/llava';
import { Module, namedParams } from './module';

export interface ParamSpec {
  /** Module path, e.g. `vision_model.encoder.layers.0.mlp.fc1.weight` (the HF key). */
  name: string;
  /** PyTorch shape. */
  shape: number[];
}

const layerNorm = (p: string, d: number): ParamSpec[] => [
  { name: `${p}.weight`, shape: [d] },
  { name: `${p}.bias`, shape: [d] },
];
const linear = (p: string, out: number, inp: number, bias = true): ParamSpec[] => [
  { name: `${p}.weight`, shape: [out, inp] },
  ...(bias ? [{ name: `${p}.bias`, shape: [out] }] : []),
];

/** HF `CLIPVisionModel`'s parameters (`vision_model.*`), as `CLIPVisionModel` declares them for `cfg`. */
export function visionTowerSpecs(cfg: CLIPVisionConfig): ParamSpec[] {
  const { hiddenSize: D, intermediateSize: I, patchSize: P } = cfg;
  const specs: ParamSpec[] = [
    { name: 'vision_model.embeddings.class_embedding', shape: [D] },
    { name: 'vision_model.embeddings.patch_embedding.weight', shape: [D, cfg.numChannels, P, P] },
    { name: 'vision_model.embeddings.position_embedding.weight', shape: [numPatchesPerSide(cfg) ** 2 + 1, D] },
    ...layerNorm('vision_model.pre_layrnorm', D),
  ];
  for (let i = 0; i < cfg.numHiddenLayers; i++) {
    const p = `vision_model.encoder.layers.${i}`;
    for (const proj of ['k_proj', 'v_proj', 'q_proj', 'out_proj'])
      specs.push(...linear(`${p}.self_attn.${proj}`, D, D));
    specs.push(
      ...layerNorm(`${p}.layer_norm1`, D),
      ...linear(`${p}.mlp.fc1`, I, D),
      ...linear(`${p}.mlp.fc2`, D, I),
      ...layerNorm(`${p}.layer_norm2`, D),
    );
  }
  specs.push(...layerNorm('vision_model.post_layernorm', D));
  return specs;
}

/**
 * A LLaVA projector's parameters (module paths `0.weight`, `2.bias`, ..., or `weight` for a bare
 * `linear`), as `Projector` declares them. Throws a ConfigError for an unknown type.
 */
export function projectorSpecs(cfg: {
  type: string;
  inFeatures: number;
  outFeatures: number;
  bias: boolean;
}): ParamSpec[] {
  const depth = projectorDepth(cfg.type);
  if (cfg.type === 'linear')
    return linear('', cfg.outFeatures, cfg.inFeatures, cfg.bias).map((s) => ({ ...s, name: s.name.slice(1) }));
  return Array.from({ length: depth }, (_, i) =>
    linear(String(2 * i), cfg.outFeatures, i === 0 ? cfg.inFeatures : cfg.outFeatures, cfg.bias),
  ).flat();
}

/** A built module's parameters as specs, in `namedParams` order. */
export function specsOf(module: Module): ParamSpec[] {
  return [...namedParams(module)].map(([name, p]) => ({ name, shape: [...p.checkpointShape] }));
}

/** True when the module declares exactly these parameters (any order). */
export function sameParams(module: Module, specs: ParamSpec[]): boolean {
  const key = (s: ParamSpec) => `${s.name}:${s.shape.join('x')}`;
  const built = specsOf(module).map(key).sort();
  const declared = specs.map(key).sort();
  return built.length === declared.length && built.every((k, i) => k === declared[i]);
}
