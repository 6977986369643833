/**
 * `preprocess --model M` feeds `encode --model M --pixel-values` unchanged, with the same defaults, and
 * gives the very tensors `encode --model M IMAGE...` gives (issue 12, item 6).
 */
import * as fs from 'fs';
import * as path from 'path';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors';
import { expectParity, loadCase } from './helpers/golden';
import { isolatedTempDir } from './helpers/isolation';
import { runCli } from './helpers/cli';

const ROOT = path.join(__dirname, '..');
const DEMO_IMAGES = path.join(ROOT, 'weights', 'demo', 'images');
const tempDir = isolatedTempDir('llava-chain-');

function contents(file: string): {
  tensors: Record<string, { shape: number[]; bytes: Buffer }>;
  metadata: Record<string, string>;
} {
  const st = SafetensorsFile.open(file);
  try {
    const tensors = Object.fromEntries(
      st.keys().map((k) => {
        const t = st.read(k);
        return [k, { shape: t.shape, bytes: Buffer.from(t.data) }];
      }),
    );
    return { tensors, metadata: st.metadata };
  } finally {
    st.close();
  }
}

/** preprocess then encode --pixel-values, and encode IMAGE, with the same model arguments. */
async function bothWays(model: string[], images: string[], encodeArgs: string[], name: string) {
  const pv = path.join(tempDir(), `${name}.pv.safetensors`);
  const viaPixels = path.join(tempDir(), `${name}.via-pixels.safetensors`);
  const direct = path.join(tempDir(), `${name}.direct.safetensors`);
  const p = await runCli(['preprocess', ...model, '--quiet', ...images, '--out', pv]);
  expect(p.code).toBe(0);
  const e = await runCli(['encode', ...model, ...encodeArgs, '--quiet', '--pixel-values', pv, '--out', viaPixels]);
  expect(e.code).toBe(0);
  const d = await runCli(['encode', ...model, ...encodeArgs, '--quiet', ...images, '--out', direct]);
  expect(d.code).toBe(0);
  return { pv: contents(pv), viaPixels: contents(viaPixels), direct: contents(direct), stderr: [p.err, e.err, d.err] };
}

test('the demo model (pad, default --save): preprocess | encode --pixel-values is bit-identical to encode IMAGE', async () => {
  const images = [
    path.join(DEMO_IMAGES, 'chelsea.png'),
    path.join(ROOT, 'test', 'fixtures', 'images', 'tiny_rgb_37x23.png'),
  ];
  const { pv, viaPixels, direct, stderr } = await bothWays([], images, [], 'demo');
  // The model's defaults, not preprocess's old `square`: the demo config says pad.
  expect(JSON.parse(pv.metadata.options)).toMatchObject({ aspect: 'pad', grid_pinpoints: null });
  expect(Object.keys(pv.tensors)).toEqual(['images.0.pixel_values', 'images.1.pixel_values']);
  expect(Object.keys(viaPixels.tensors)).toEqual(['images.0.merged', 'images.1.merged']);
  expect(viaPixels.tensors).toEqual(direct.tensors);
  expect(viaPixels.metadata.image_sizes).toBe(direct.metadata.image_sizes);
  expect(viaPixels.metadata.sources).toBe(direct.metadata.sources);
  for (const file of [viaPixels, direct])
    expect(JSON.parse(file.metadata.options)).toMatchObject({ aspect: 'pad', merge: 'flat', save: ['merged'] });
  for (const err of stderr) expect(err).toMatch(/^llava-vision: no --model given: using the bundled demo checkpoint/);
});

test('anyres + spatial_unpad (several tiles per image, merge needs the image size): bit-identical, and the pixels too', async () => {
  const gc = loadCase('tiny_llava_anyres_spatial_unpad');
  const model = ['--model', path.join(gc.dir, 'llava'), '--vision-tower', path.join(gc.dir, 'clip_tower')];
  // A wide and a tall image: different grids.
  const picked = gc.json.images.filter((i: { id: string }) => /^tiny_(gray_19x33|rgb_37x23)/.test(i.id));
  const images = picked.map((i: { file: string }) => path.join(gc.dir, i.file));
  const save = ['--save', 'pixel_values', '--save', 'features,projected,merged'];
  const { pv, viaPixels, direct } = await bothWays(model, images, save, 'anyres');
  expect(JSON.parse(pv.metadata.options)).toMatchObject({ aspect: 'anyres' });
  expect(JSON.parse(pv.metadata.image_sizes)).toEqual(JSON.parse(direct.metadata.image_sizes));
  const tiles = images.map((_: string, i: number) => pv.tensors[`images.${i}.pixel_values`].shape[0]);
  expect(Math.max(...tiles)).toBeGreaterThan(1);
  expect(Object.keys(viaPixels.tensors).sort()).toEqual(Object.keys(direct.tensors).sort());
  expect(viaPixels.tensors).toEqual(direct.tensors);
  images.forEach((_: string, i: number) => {
    expect(pv.tensors[`images.${i}.pixel_values`]).toEqual(direct.tensors[`images.${i}.pixel_values`]);
  });
  // And against the golden truth (the chain is not merely self-consistent).
  const out = SafetensorsFile.open(path.join(tempDir(), 'anyres.via-pixels.safetensors'));
  picked.forEach((img: { id: string }, i: number) => {
    expectParity(gc, `${img.id}.merged`, out.readFloat32(`images.${i}.merged`), out.info(`images.${i}.merged`).shape);
  });
  out.close();
});

test('an encode output with --save pixel_values feeds encode --pixel-values too (default --save: merged)', async () => {
  const gc = loadCase('tiny_llava_anyres_spatial_unpad');
  const model = ['--model', path.join(gc.dir, 'llava'), '--vision-tower', path.join(gc.dir, 'clip_tower')];
  const direct = path.join(tempDir(), 'anyres.direct.safetensors'); // written by the test above
  const again = path.join(tempDir(), 'again.safetensors');
  expect((await runCli(['encode', ...model, '--quiet', '--pixel-values', direct, '--out', again])).code).toBe(0);
  const merged = contents(again).tensors;
  const before = contents(direct).tensors;
  expect(Object.keys(merged)).toEqual(Object.keys(before).filter((k) => k.endsWith('.merged')));
  for (const k of Object.keys(merged)) expect(merged[k]).toEqual(before[k]);
});

test("the file's own aspect is used and a mismatch with the model is said; image-only options are refused with --pixel-values", async () => {
  const gc = loadCase('tiny_llava_anyres_spatial_unpad');
  const model = ['--model', path.join(gc.dir, 'llava'), '--vision-tower', path.join(gc.dir, 'clip_tower')];
  const image = path.join(gc.dir, gc.json.images[0].file);
  const pv = path.join(tempDir(), 'pad.pv.safetensors');
  expect((await runCli(['preprocess', ...model, '--aspect', 'pad', image, '--out', pv])).code).toBe(0);
  const out = path.join(tempDir(), 'pad.safetensors');
  const r = await runCli(['encode', ...model, '--pixel-values', pv, '--out', out]);
  expect(r.code).toBe(0);
  expect(r.err).toMatch(/was preprocessed with aspect pad; .* uses anyres/);
  const direct = path.join(tempDir(), 'pad.direct.safetensors');
  expect((await runCli(['encode', ...model, '--aspect', 'pad', '--quiet', image, '--out', direct])).code).toBe(0);
  expect(contents(out).tensors).toEqual(contents(direct).tensors);
  const bad = await runCli(['encode', ...model, '--pixel-values', pv, '--aspect', 'anyres', '--out', out]);
  expect(bad).toMatchObject({
    code: 2,
    err: 'llava-vision: --aspect applies to image files: --pixel-values were preprocessed already (preprocess takes it)\n',
  });
});

test("preprocess --preprocessor alone keeps its old default (square, no model); --model and --preprocessor together take the model's aspect", async () => {
  const gc = loadCase('tiny_llava_anyres_spatial_unpad');
  const image = path.join(gc.dir, gc.json.images[0].file);
  const square = path.join(tempDir(), 'square.pv.safetensors');
  const r = await runCli(['preprocess', '--preprocessor', path.join(gc.dir, 'clip_tower'), image, '--out', square]);
  expect(r).toEqual({ code: 0, out: '', err: '' });
  const meta = contents(square).metadata;
  expect(JSON.parse(meta.options)).toMatchObject({ aspect: 'square' });
  expect(meta.model_dir).toBeUndefined();
  const both = path.join(tempDir(), 'both.pv.safetensors');
  expect(
    (
      await runCli([
        'preprocess',
        '--model',
        path.join(gc.dir, 'llava'),
        '--vision-tower',
        path.join(gc.dir, 'clip_tower'),
        '--preprocessor',
        path.join(gc.dir, 'clip_tower'),
        image,
        '--out',
        both,
      ])
    ).code,
  ).toBe(0);
  expect(JSON.parse(contents(both).metadata.options)).toMatchObject({ aspect: 'anyres' });
  expect(fs.existsSync(both)).toBe(true);
});

test('a per-image file with anyres tiles but no image sizes is refused before the model loads, naming the file', async () => {
  const pv = path.join(tempDir(), 'unsized.safetensors');
  writeSafetensors(pv, {
    'images.0.pixel_values': { dtype: 'F32', shape: [3, 3, 28, 28], data: new Float32Array(3 * 3 * 28 * 28) },
  });
  const r = await runCli([
    'encode',
    '--model',
    '/nonexistent-model',
    '--pixel-values',
    pv,
    '--out',
    path.join(tempDir(), 'u.safetensors'),
  ]);
  expect(r).toEqual({
    code: 1,
    out: '',
    err: `llava-vision: ${pv}: images.0.pixel_values are anyres tiles, and __metadata__.image_sizes lacks that image's size\n`,
  });
});
