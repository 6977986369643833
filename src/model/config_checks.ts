/**
 * A config checked against the checkpoint it comes with, before the model is built. Building
 * allocates every weight from the config's sizes, so a config that claims `intermediate_size: 1e9`
 * or `mlp1000000x_gelu` must be caught here, from tensor headers alone: the checkpoint's own shapes
 * are the real bound (a tensor's bytes are in the file). `loadWeights` still checks every tensor
 * after the build; these checks cover each config field that sizes an allocation, and name it.
 */
import { CLIPVisionConfig, numPatchesPerSide } from '../config/clip';
import { projectorDepth } from '../config/llava';
import { CheckpointError, quote, shapeText } from '../errors';
import { KeyMap, TensorSource } from './weights';

const fmt = shapeText;
const same = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => v === b[i]);

/**
 * `key` must exist with shape `expected`; else the loader's own error (a CheckpointError naming the
 * tensor, its shape and the expected one), plus `because`: the config field that asked for it.
 */
function expectShape(source: TensorSource, key: string, expected: number[], because: string): void {
  if (!source.has(key)) {
    throw new CheckpointError(
      `${source.source}: missing tensor ${quote(key)} (expected shape ${fmt(expected)}) — asked for by ${because}`,
    );
  }
  const { shape } = source.info(key);
  if (!same(shape, expected)) {
    throw new CheckpointError(
      `${source.source}: tensor ${quote(key)} has shape ${fmt(shape)} but the config expects ${fmt(expected)} — from ${because}`,
    );
  }
}

/**
 * Every size a CLIP vision tower allocates (hidden_size, num_channels, patch_size, image_size,
 * intermediate_size, num_hidden_layers) against the tensors that carry it. `keyFor` maps module paths
 * (`vision_model.embeddings.class_embedding`) to checkpoint keys, as for `loadWeights`.
 */
export function checkVisionConfigAgainstWeights(
  cfg: CLIPVisionConfig,
  source: TensorSource,
  keyFor: KeyMap,
  configFile: string,
): void {
  const D = cfg.hiddenSize;
  const P = cfg.patchSize;
  const field = (...names: (keyof typeof JSON_NAMES)[]) =>
    `${names.map((n) => `${JSON_NAMES[n]} ${cfg[n]}`).join(', ')} in ${configFile}`;
  const check = (path: string, expected: number[], because: string) =>
    expectShape(source, keyFor(`vision_model.${path}`), expected, because);
  // In an order where each check adds one field to those already confirmed, so the field named is the one at fault.
  check('embeddings.class_embedding', [D], field('hiddenSize'));
  check('embeddings.patch_embedding.weight', [D, cfg.numChannels, P, P], field('numChannels', 'patchSize'));
  check('embeddings.position_embedding.weight', [numPatchesPerSide(cfg) ** 2 + 1, D], field('imageSize', 'patchSize'));
  check('encoder.layers.0.mlp.fc1.weight', [cfg.intermediateSize, D], field('intermediateSize'));
  check(
    `encoder.layers.${cfg.numHiddenLayers - 1}.mlp.fc1.weight`,
    [cfg.intermediateSize, D],
    field('numHiddenLayers'),
  );
}

const JSON_NAMES = {
  hiddenSize: 'hidden_size',
  numChannels: 'num_channels',
  patchSize: 'patch_size',
  imageSize: 'image_size',
  intermediateSize: 'intermediate_size',
  numHiddenLayers: 'num_hidden_layers',
} as const;

/**
 * The projector's linear weights ([out, in]) against the checkpoint before any is allocated: the
 * type's depth (every linear must exist) and both widths. `origin` says where the type and the LLM
 * width came from (e.g. `mm_projector_type "mlp2x_gelu", hidden_size 4096 in config.json`).
 */
export function checkProjectorAgainstWeights(
  cfg: { type: string; inFeatures: number; outFeatures: number },
  source: TensorSource,
  keyFor: KeyMap,
  origin: string,
): void {
  const depth = projectorDepth(cfg.type);
  for (let i = 0; i < depth; i++) {
    const key = keyFor(cfg.type === 'linear' ? 'weight' : `${2 * i}.weight`);
    expectShape(
      source,
      key,
      [cfg.outFeatures, i === 0 ? cfg.inFeatures : cfg.outFeatures],
      `${origin}, vision features ${cfg.inFeatures} wide`,
    );
  }
}
