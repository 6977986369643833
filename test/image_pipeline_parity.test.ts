/**
 * End-to-end parity from the image files through the public API (decode -> process_images -> tower ->
 * projector -> LLaVA merge) on every golden model case: pixel_values bit-identical, every float
 * tensor within the parity rule.
 */
import * as path from 'path';
import { encodeImages, SaveName } from '../src/api/encode_job';
import { LlavaVision } from '../src/api/llava_vision';
import { TensorToWrite } from '../src/io/safetensors';
import { GoldenCase, expectParity, loadCase, recordExactPixels, writeParityReport } from './helpers/golden';
import { Expected } from './helpers/images';
import { describeOnBackend } from './helpers/backend_gate';

afterAll(() => writeParityReport('images'));

const pad2 = (k: number) => String(k).padStart(2, '0');

/** pixel_values must be the same float32 bits (or their sha256, for trimmed cases); LLaVA's non-anyres tensors are [3,H,W], ours [1,3,H,W]. */
function expectExactPixels(gc: GoldenCase, id: string, ours: TensorToWrite): void {
  const key = `${id}.pixel_values`;
  const expected = Expected.forCase(gc.dir)!;
  const data = ours.data as Float32Array;
  const shape = expected.shape(key);
  expect(ours.shape.slice(ours.shape.length - shape.length)).toEqual(shape);
  expect(expected.compare(key, new Uint8Array(data.buffer, data.byteOffset, data.byteLength))).toBeNull();
  recordExactPixels(gc.name, 1);
}

const imageFile = (gc: GoldenCase, img: { file: string }) => path.join(gc.dir, img.file);

const LLAVA = [
  'tiny_llava_identity_sel-2',
  'tiny_llava_linear_sel-1_patch',
  'tiny_llava_mlp3x_sel0_clspatch_pad',
  'tiny_llava_anyres_flat',
  'tiny_llava_anyres_spatial',
  'tiny_llava_anyres_spatial_unpad',
  's336_llava_square_mlp2x',
  's336_llava15_pad_mlp2x',
  's336_llava16_anyres_spatial_unpad',
];

describeOnBackend.each(LLAVA)('LLaVA %s from image files', (name) => {
  test('pixel_values exact; features, projected, merged (and hidden states) within the parity rule', async () => {
    const gc = loadCase(name);
    const model = await LlavaVision.load(path.join(gc.dir, 'llava'), {
      visionTower: path.join(gc.dir, 'clip_tower'),
      log: null,
    });
    try {
      const images = gc.json.images as { id: string; file: string }[];
      const wantHidden = images.some((i) => `${i.id}.hidden_states.00` in gc.json.expected);
      const outputs: SaveName[] = [
        'pixel_values',
        'features',
        'projected',
        'merged',
        ...(wantHidden ? (['hidden_states'] as const) : []),
      ];
      const { tensors, failures } = await encodeImages(
        model,
        images.map((i) => imageFile(gc, i)),
        { outputs, batchSize: 4 },
      );
      expect(failures).toEqual([]);
      images.forEach((img, i) => {
        const t = (n: string) => tensors[`images.${i}.${n}`];
        expectExactPixels(gc, img.id, t('pixel_values'));
        expectParity(gc, `${img.id}.image_features`, t('features').data, t('features').shape);
        expectParity(gc, `${img.id}.projected`, t('projected').data, t('projected').shape);
        expectParity(gc, `${img.id}.merged`, t('merged').data, t('merged').shape);
        for (let k = 0; `${img.id}.hidden_states.${pad2(k)}` in gc.json.expected; k++) {
          expectParity(
            gc,
            `${img.id}.hidden_states.${pad2(k)}`,
            t(`hidden_states.${k}`).data,
            t(`hidden_states.${k}`).shape,
          );
        }
      });
    } finally {
      model.dispose();
    }
  });
});

describeOnBackend.each([
  'tiny_clip_full_layout_f32',
  'tiny_clip_vision_only_f16',
  'tiny_clip_interpolate_pos_encoding',
  'tiny_clip_massive_activations',
])('CLIP %s from image files', (name) => {
  test('pixel_values exact; hidden states and pooler_output within the parity rule', async () => {
    const gc = loadCase(name);
    const model = await LlavaVision.load(path.join(gc.dir, 'model'), { log: null });
    try {
      const images = gc.json.images as { id: string; file: string }[];
      const { tensors } = await encodeImages(
        model,
        images.map((i) => imageFile(gc, i)),
        {
          outputs: ['pixel_values', 'hidden_states', 'pooler_output'],
          interpolatePosEncoding: gc.json.run.interpolate_pos_encoding,
        },
      );
      images.forEach((img, i) => {
        const t = (n: string) => tensors[`images.${i}.${n}`];
        expectExactPixels(gc, img.id, t('pixel_values'));
        for (let k = 0; `${img.id}.hidden_states.${pad2(k)}` in gc.json.expected; k++) {
          expectParity(
            gc,
            `${img.id}.hidden_states.${pad2(k)}`,
            t(`hidden_states.${k}`).data,
            t(`hidden_states.${k}`).shape.slice(1),
          );
        }
        expectParity(gc, `${img.id}.pooler_output`, t('pooler_output').data, t('pooler_output').shape.slice(1));
      });
    } finally {
      model.dispose();
    }
  });
});

describeOnBackend.each(['tiny_llavahf_legacy_keys_full_f32', 'tiny_llavahf_model_prefixed_default_bf16'])(
  'llava-hf %s from image files',
  (name) => {
    test('pixel_values exact; selected and projected features within the parity rule', async () => {
      const gc = loadCase(name);
      const model = await LlavaVision.load(path.join(gc.dir, 'model'), { log: null });
      try {
        const images = gc.json.images as { id: string; file: string }[];
        const { tensors } = await encodeImages(
          model,
          images.map((i) => imageFile(gc, i)),
          { outputs: ['pixel_values', 'features', 'projected'], batchSize: 8 },
        );
        images.forEach((img, i) => {
          const t = (n: string) => tensors[`images.${i}.${n}`];
          expectExactPixels(gc, img.id, t('pixel_values'));
          expectParity(gc, `${img.id}.image_features`, t('features').data, t('features').shape.slice(1));
          expectParity(gc, `${img.id}.image_features_projected`, t('projected').data, t('projected').shape.slice(1));
        });
      } finally {
        model.dispose();
      }
    });
  },
);
