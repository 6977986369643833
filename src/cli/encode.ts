import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { BACKEND_CHOICES, BackendChoice } from '../backend';
import { encodePixelValues } from '../api/encode_job';
import { LlavaVision, OUTPUT_NAMES, OutputName } from '../api/llava_vision';
import { SelectFeature } from '../config/llava';
import { ConfigError } from '../errors';
import { SafetensorsFile, writeSafetensors } from '../io/safetensors';
import { packageVersion } from '../version';
import { choiceOption, intOption, listOption, parseOptions } from './args';

export const ENCODE_HELP = `encode options:
  --model DIR                  CLIP, CLIP vision-only, original LLaVA or llava-hf folder (auto-detected from config.json)
  --pixel-values FILE          safetensors with a float32 tensor "pixel_values" [N,3,H,W] (e.g. written by Python)
  --out FILE                   output safetensors: images.<i>.{hidden_states.<k>,features,projected,pooler_output}
  --vision-tower DIR           CLIP folder for an original LLaVA checkpoint (default: its mm_vision_tower, as a local path)
  --projector FILE             projector weights (safetensors or mm_projector.bin) overriding the model's
  --projector-type TYPE        linear | mlp<N>x_gelu | identity (default: from config, else inferred from the weights)
  --select-layer N             hidden state to use as features, negative from the end (default: config, else -2)
  --select-feature F           patch | cls_patch (default: config, else patch)
  --interpolate-pos-encoding   run at a resolution other than the model's image_size (HF semantics)
  --save LIST                  comma list of ${OUTPUT_NAMES.join(',')} (default: projected if a projector exists, else features)
  --batch-size N               images per forward (default 1; results do not depend on it)
  --backend B                  ${BACKEND_CHOICES.join(' | ')} (default: $LLAVA_VISION_BACKEND, else auto)
  --quiet                      no backend/progress messages

Examples:
  llava-vision encode --model llava-v1.5-7b --vision-tower clip-vit-large-patch14-336 --pixel-values pv.safetensors --out feats.safetensors
  llava-vision encode --model clip-vit-large-patch14-336 --pixel-values pv.safetensors --save hidden_states,pooler_output --out hs.safetensors`;

const SPEC = {
  model: { type: 'string' },
  'pixel-values': { type: 'string' },
  out: { type: 'string' },
  'vision-tower': { type: 'string' },
  projector: { type: 'string' },
  'projector-type': { type: 'string' },
  'select-layer': { type: 'string' },
  'select-feature': { type: 'string' },
  'interpolate-pos-encoding': { type: 'boolean' },
  save: { type: 'string' },
  'batch-size': { type: 'string' },
  backend: { type: 'string' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function runEncode(argv: string[], io: { out: (s: string) => void; err: (s: string) => void }): Promise<number> {
  const { values: o, positionals } = parseOptions(argv, SPEC);
  if (o.help) {
    io.out(ENCODE_HELP + '\n');
    return 0;
  }
  if (!o.model) throw new ConfigError('encode needs --model DIR');
  if (!o.out) throw new ConfigError('encode needs --out FILE.safetensors');
  if (!o['pixel-values']) throw new ConfigError('encode needs --pixel-values FILE.safetensors');
  if (positionals.length > 0) throw new ConfigError(`unexpected argument "${positionals[0]}" (image files need the image pipeline; use --pixel-values)`);
  const selectFeature = choiceOption<SelectFeature>(o['select-feature'], 'select-feature', ['patch', 'cls_patch']);
  const backend = choiceOption<BackendChoice>(o.backend, 'backend', BACKEND_CHOICES);
  const save = listOption<OutputName>(o.save, 'save', OUTPUT_NAMES);
  const selectLayer = intOption(o['select-layer'], 'select-layer');
  const batchSize = intOption(o['batch-size'], 'batch-size') ?? 1;
  if (batchSize < 1) throw new ConfigError(`--batch-size must be at least 1, got ${batchSize}`);

  const pixelFile = SafetensorsFile.open(o['pixel-values']);
  let pixelData: Float32Array;
  let pixelShape: [number, number, number, number];
  try {
    if (!pixelFile.has('pixel_values')) throw new ConfigError(`${o['pixel-values']}: no tensor named "pixel_values" (found: ${pixelFile.keys().join(', ') || 'none'})`);
    const info = pixelFile.info('pixel_values');
    if (info.shape.length !== 4 || info.shape[1] !== 3) {
      throw new ConfigError(`${o['pixel-values']}: pixel_values must be [N, 3, H, W], got [${info.shape.join(', ')}]`);
    }
    pixelShape = info.shape as [number, number, number, number];
    pixelData = pixelFile.readFloat32('pixel_values');
  } finally {
    pixelFile.close();
  }

  const model = await LlavaVision.load(o.model, {
    visionTower: o['vision-tower'],
    projector: o.projector,
    projectorType: o['projector-type'],
    selectLayer,
    selectFeature,
    backend,
    log: o.quiet ? null : (line) => io.err(line + '\n'),
  });
  // Tensors are created only once the backend is chosen (LlavaVision.load), never on tfjs' default one.
  const pixels = tf.tensor4d(pixelData, pixelShape);
  try {
    const outputs = save ?? [model.projector ? 'projected' : 'features'];
    const tensors = encodePixelValues(model, pixels, { outputs, batchSize, interpolatePosEncoding: o['interpolate-pos-encoding'] });
    const metadata: Record<string, string> = {
      producer: `llava-vision-tfjs ${packageVersion()}`,
      model_dir: path.resolve(o.model),
      layout: model.layout,
      backend: model.backend,
      options: JSON.stringify({
        vision_tower: o['vision-tower'] ?? null,
        projector: o.projector ?? null,
        projector_type: model.projector?.type ?? null,
        select_layer: model.settings.selectLayer,
        select_feature: model.settings.selectFeature,
        interpolate_pos_encoding: o['interpolate-pos-encoding'] ?? false,
        save: outputs,
        batch_size: batchSize,
      }),
      source: path.resolve(o['pixel-values']),
    };
    writeSafetensors(o.out, tensors, metadata);
    if (!o.quiet) io.err(`llava-vision: wrote ${Object.keys(tensors).length} tensors for ${pixels.shape[0]} image(s) to ${o.out}\n`);
  } finally {
    pixels.dispose();
    model.dispose();
  }
  return 0;
}
