/**
 * Writes the bundled demo checkpoint, weights/demo/: a LLaVA-1.5-shaped model at toy size (CLIP
 * ViT at 336 px / patch 14, hidden 64, 4 layers; mlp2x_gelu projector 64 -> 128; aspect `pad`),
 * with weightgen v1 generator weights. It is NOT a trained model: its features mean nothing; it
 * exists so that `llava-vision encode IMAGE` works offline on a fresh clone.
 *
 *   node dist/tools/make_demo.js
 */
import * as fs from 'fs';
import * as path from 'path';
import { writeFileAtomic } from '../src/io/atomic';
import { clipVisionTensorSpecs, writeGeneratedSafetensors } from './make_checkpoint';
import { packageRoot } from '../src/version';

export const DEMO_VISION_CONFIG = {
  model_type: 'clip_vision_model',
  architectures: ['CLIPVisionModel'],
  hidden_size: 64,
  intermediate_size: 256,
  projection_dim: 64,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_channels: 3,
  image_size: 336,
  patch_size: 14,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
  torch_dtype: 'float32',
  _note: 'GENERATED WEIGHTS (weightgen v1), NOT A TRAINED MODEL: a demo of the pipeline only',
};

export const DEMO_LLAVA_CONFIG = {
  architectures: ['LlavaLlamaForCausalLM'],
  model_type: 'llava',
  hidden_size: 128,
  mm_vision_tower: 'clip_tower',
  mm_hidden_size: 64,
  mm_projector_type: 'mlp2x_gelu',
  mm_vision_select_layer: -2,
  mm_vision_select_feature: 'patch',
  image_aspect_ratio: 'pad',
  mm_patch_merge_type: 'flat',
  torch_dtype: 'float32',
  _note: 'GENERATED WEIGHTS (weightgen v1), NOT A TRAINED MODEL: a demo of the pipeline only',
};

const PREPROCESSOR = {
  crop_size: 336,
  do_center_crop: true,
  do_normalize: true,
  do_resize: true,
  feature_extractor_type: 'CLIPFeatureExtractor',
  image_mean: [0.48145466, 0.4578275, 0.40821073],
  image_std: [0.26862954, 0.26130258, 0.27577711],
  resample: 3,
  size: 336,
};

const json = (x: unknown) => Buffer.from(JSON.stringify(x, null, 1) + '\n');

export function writeDemo(dir: string): void {
  const tower = path.join(dir, 'clip_tower');
  fs.mkdirSync(tower, { recursive: true });
  writeFileAtomic(path.join(tower, 'config.json'), json(DEMO_VISION_CONFIG));
  writeFileAtomic(path.join(tower, 'preprocessor_config.json'), json(PREPROCESSOR));
  writeGeneratedSafetensors(path.join(tower, 'model.safetensors'), clipVisionTensorSpecs(DEMO_VISION_CONFIG), 'F32');
  writeFileAtomic(path.join(dir, 'config.json'), json(DEMO_LLAVA_CONFIG));
  const projector = [
    { name: 'model.mm_projector.0.weight', shape: [128, 64] },
    { name: 'model.mm_projector.0.bias', shape: [128] },
    { name: 'model.mm_projector.2.weight', shape: [128, 128] },
    { name: 'model.mm_projector.2.bias', shape: [128] },
  ];
  writeGeneratedSafetensors(path.join(dir, 'model.safetensors'), projector, 'F32');
}

if (require.main === module) {
  const dir = path.join(packageRoot(), 'weights', 'demo');
  writeDemo(dir);
  process.stdout.write(`wrote ${dir}\n`);
}
