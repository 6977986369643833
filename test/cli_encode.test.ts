import { execFileSync, spawnSync } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors';
import { expectParity, goldenPixelValues, loadCase } from './helpers/golden';
import { readJson } from './helpers/json';
import { runCli } from './helpers/cli';

const ROOT = path.join(__dirname, '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The fixture's pixel_values of all images stacked into one [N,3,H,W] file, as Python would write it. */
function writePixelValues(gc: ReturnType<typeof loadCase>, file: string): string[] {
  const ids: string[] = gc.json.images.map((i: { id: string }) => i.id);
  const parts = ids.map((id) => goldenPixelValues(gc, id));
  const [, c, h, w] = parts[0].shape;
  const data = new Float32Array(parts.reduce((n, p) => n + p.data.length, 0));
  parts.reduce((off, p) => (data.set(p.data, off), off + p.data.length), 0);
  const tiles = parts.reduce((n, p) => n + p.shape[0], 0);
  writeSafetensors(file, { pixel_values: { dtype: 'F32', shape: [tiles, c, h, w], data } });
  return ids;
}

test('encode --pixel-values on a LLaVA checkpoint matches the golden tensors', async () => {
  const gc = loadCase('tiny_llava_linear_sel-1_patch');
  const pv = path.join(tmp, 'pv.safetensors');
  const outFile = path.join(tmp, 'out.safetensors');
  const ids = writePixelValues(gc, pv);
  const r = await runCli([
    'encode',
    '--model',
    path.join(gc.dir, 'llava'),
    '--vision-tower',
    path.join(gc.dir, 'clip_tower'),
    '--pixel-values',
    pv,
    '--save',
    'features,projected,hidden_states',
    '--batch-size',
    '2',
    '--quiet',
    '--out',
    outFile,
  ]);
  expect(r).toMatchObject({ code: 0, err: '' });
  const out = SafetensorsFile.open(outFile);
  ids.forEach((id, i) => {
    expectParity(
      gc,
      `${id}.image_features`,
      out.readFloat32(`images.${i}.features`),
      out.info(`images.${i}.features`).shape,
    );
    expectParity(
      gc,
      `${id}.projected`,
      out.readFloat32(`images.${i}.projected`),
      out.info(`images.${i}.projected`).shape,
    );
    expect(out.info(`images.${i}.hidden_states.3`).shape).toEqual([1, 17, 64]);
  });
  expect(out.has('images.0.hidden_states.4')).toBe(false);
  const meta = out.metadata;
  expect(meta.layout).toBe('llava');
  expect(JSON.parse(meta.options)).toMatchObject({
    select_layer: -1,
    select_feature: 'patch',
    projector_type: 'linear',
  });
  expect(meta.producer).toMatch(/^llava-vision-tfjs \d+\.\d+\.\d+/);
  out.close();
});

test('default --save is projected when a projector exists, features otherwise', async () => {
  const gc = loadCase('tiny_clip_full_layout_f32');
  const pv = path.join(tmp, 'pv_clip.safetensors');
  writePixelValues(gc, pv);
  const outFile = path.join(tmp, 'clip.safetensors');
  expect(
    (await runCli(['encode', '--model', path.join(gc.dir, 'model'), '--pixel-values', pv, '--quiet', '--out', outFile]))
      .code,
  ).toBe(0);
  const out = SafetensorsFile.open(outFile);
  expect(out.keys()).toEqual(['images.0.features', 'images.1.features', 'images.2.features', 'images.3.features']);
  expect(out.info('images.0.features').shape).toEqual([1, 4, 32]); // layer -2, CLS dropped
  out.close();
});

test.each([
  [['encode', '--model', 'm', '--pixel-values', 'pv'], /needs --out/],
  [['encode', '--model', 'm', '--out', 'o'], /needs image files/],
  [['encode', '--model', 'm', '--out', 'o', '--pixel-values', 'pv', 'a.png'], /either image files or --pixel-values/],
  [
    ['encode', '--model', 'm', '--out', 'o', 'a.png', '--aspect', 'wide'],
    /--aspect must be one of square, pad, anyres/,
  ],
  [['encode', '--model', 'm', '--out', 'o', 'a.png', '--merge', 'grid'], /--merge must be one of/],
  [['encode', '--model', 'm', '--out', 'o', 'a.png', '--grid-pinpoints', '[[336,'], /--grid-pinpoints must be JSON/],
  [['encode', '--model', 'm', '--out', 'o', 'a.png', '--grid-pinpoints', '[[336]]'], /--grid-pinpoints/],
  [
    ['encode', '--model', 'm', '--out', 'o', '--pixel-values', 'pv', '--aspect', 'pad'],
    /--aspect applies to image files/,
  ],
  [['preprocess', '--out', 'o'], /preprocess needs image files/],
  [['frobnicate'], /unknown command "frobnicate"/],
  [
    ['encode', '--model', 'm', '--out', 'o', '--pixel-values', 'pv', '--save', 'features,logits'],
    /--save must be one of/,
  ],
  [
    ['encode', '--model', 'm', '--out', 'o', '--pixel-values', 'pv', '--select-layer', 'two'],
    /--select-layer must be an integer/,
  ],
  [['encode', '--model', 'm', '--out', 'o', '--pixel-values', 'pv', '--backend', 'webgl'], /--backend must be one of/],
  [['encode', '--frobnicate'], /unknown option --frobnicate/],
  [['encode', '--out'], /--out needs a value/],
])('usage error %j is one line and exit code 2', async (args, message) => {
  const r = await runCli(args);
  expect(r.code).toBe(2);
  expect(r.err).toMatch(message);
  expect(r.err.trim().split('\n')).toHaveLength(1);
});

test.each([
  [
    [
      'encode',
      '--model',
      '/nonexistent',
      '--out',
      path.join(tmp, 'o.safetensors'),
      path.join(ROOT, 'weights', 'demo', 'images', 'chelsea.png'),
    ],
    /\/nonexistent: no such model folder/,
  ],
  [
    ['encode', '--model', 'm', '--out', 'o', '--pixel-values', '/nonexistent/pv.safetensors'],
    /\/nonexistent\/pv.safetensors: no such file/,
  ],
])('a failure %j is one line and exit code 1', async (args, message) => {
  const r = await runCli(args);
  expect(r.code).toBe(1);
  expect(r.err).toMatch(message);
  expect(r.err.trim().split('\n')).toHaveLength(1);
});

test('a pixel-values file without "pixel_values" names what it holds', async () => {
  const gc = loadCase('tiny_clip_full_layout_f32');
  const bad = path.join(tmp, 'bad.safetensors');
  writeSafetensors(bad, { pixels: { dtype: 'F32', shape: [1, 3, 28, 28], data: new Float32Array(3 * 28 * 28) } });
  const r = await runCli([
    'encode',
    '--model',
    path.join(gc.dir, 'model'),
    '--pixel-values',
    bad,
    '--out',
    path.join(tmp, 'o.safetensors'),
  ]);
  expect(r.code).toBe(1);
  expect(r.err).toMatch(/no tensor named "pixel_values" nor "images.<i>.pixel_values" \(found: pixels\)/);
  expect(fs.existsSync(path.join(tmp, 'o.safetensors'))).toBe(false);
});

test('the installed bin runs (compiled CLI) and fails cleanly', () => {
  const bin = path.join(ROOT, 'bin', 'llava-vision.js');
  expect(execFileSync(process.execPath, [bin, 'encode', '--help'], { encoding: 'utf8' })).toMatch(
    /--pixel-values FILE/,
  );
  const r = spawnSync(
    process.execPath,
    [bin, 'encode', '--model', '/nonexistent', '--pixel-values', 'x', '--out', 'y'],
    { encoding: 'utf8' },
  );
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(/x: no such file/);
});

describe('image files', () => {
  const hashOf = (file: string, key: string) => {
    const st = SafetensorsFile.open(file);
    const raw = st.read(key).data;
    st.close();
    return createHash('sha256').update(raw).digest('hex');
  };

  test('encode IMAGE on the LLaVA-1.6 golden case writes what expected.safetensors holds', async () => {
    const gc = loadCase('s336_llava16_anyres_spatial_unpad', 'expected.subset.safetensors');
    const subset = readJson<{ rules: Record<string, { sha256: string }> }>(path.join(gc.dir, 'subset.json')).rules;
    const outFile = path.join(tmp, 'llava16.safetensors');
    const image = path.join(gc.dir, gc.json.images[0].file);
    const r = await runCli([
      'encode',
      '--model',
      path.join(gc.dir, 'llava'),
      '--vision-tower',
      path.join(gc.dir, 'clip_tower'),
      '--save',
      'pixel_values,features,projected,merged',
      '--quiet',
      image,
      '--out',
      outFile,
    ]);
    expect(r).toMatchObject({ code: 0, err: '' });
    const out = SafetensorsFile.open(outFile);
    const id = gc.json.images[0].id;
    expect(hashOf(outFile, 'images.0.pixel_values')).toBe(subset[`${id}.pixel_values`].sha256);
    expectParity(gc, `${id}.image_features`, out.readFloat32('images.0.features'), out.info('images.0.features').shape);
    expectParity(gc, `${id}.projected`, out.readFloat32('images.0.projected'), out.info('images.0.projected').shape);
    expectParity(gc, `${id}.merged`, out.readFloat32('images.0.merged'), out.info('images.0.merged').shape);
    expect(JSON.parse(out.metadata.options)).toMatchObject({ aspect: 'anyres', merge: 'spatial_unpad' });
    expect(JSON.parse(out.metadata.image_sizes)).toEqual([[451, 300]]);
    out.close();
  });

  test('the README demo: no --model runs the bundled demo checkpoint on its example images', async () => {
    const outFile = path.join(tmp, 'demo.safetensors');
    const demo = path.join(ROOT, 'weights', 'demo', 'images');
    const r = await runCli(['encode', path.join(demo, 'chelsea.png'), path.join(demo, 'rocket.jpg'), '--out', outFile]);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/bundled demo checkpoint .* not a trained model/);
    const out = SafetensorsFile.open(outFile);
    expect(out.keys()).toEqual(['images.0.merged', 'images.1.merged']);
    expect(out.info('images.0.merged').shape).toEqual([576, 128]); // pad -> 336x336 -> 24x24 patches, projected to 128
    expect(out.metadata.layout).toBe('llava');
    out.close();
  });

  test('one undecodable file: the others are still written, the failure is named, exit code 1', async () => {
    const gc = loadCase('tiny_llava_linear_sel-1_patch');
    const bad = path.join(tmp, 'broken.png');
    fs.writeFileSync(bad, Buffer.from('\x89PNG\r\n\x1a\nnot really a png'));
    const good = path.join(gc.dir, gc.json.images[0].file);
    const outFile = path.join(tmp, 'partial.safetensors');
    const r = await runCli([
      'encode',
      '--model',
      path.join(gc.dir, 'llava'),
      '--vision-tower',
      path.join(gc.dir, 'clip_tower'),
      '--quiet',
      good,
      bad,
      good,
      '--out',
      outFile,
    ]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/broken\.png/);
    expect(r.err).toMatch(/1 of 3 image\(s\) failed/);
    const out = SafetensorsFile.open(outFile);
    expect(out.keys()).toEqual(['images.0.merged', 'images.2.merged']);
    expect(JSON.parse(out.metadata.failed)).toMatchObject([{ index: 1, source: bad }]);
    expect(
      Buffer.compare(Buffer.from(out.read('images.0.merged').data), Buffer.from(out.read('images.2.merged').data)),
    ).toBe(0);
    out.close();
  });

  test('preprocess writes the exact pixel_values of LLaVA pad', async () => {
    const gc = loadCase('s336_llava15_pad_mlp2x', 'expected.subset.safetensors');
    const subset = readJson<{ rules: Record<string, { sha256: string }> }>(path.join(gc.dir, 'subset.json')).rules;
    const outFile = path.join(tmp, 'pv_pad.safetensors');
    const images = gc.json.images.map((i: { file: string }) => path.join(gc.dir, i.file));
    const r = await runCli([
      'preprocess',
      '--preprocessor',
      path.join(gc.dir, 'clip_tower'),
      '--aspect',
      'pad',
      ...images,
      '--out',
      outFile,
    ]);
    expect(r.code).toBe(0);
    gc.json.images.forEach((img: { id: string }, i: number) => {
      expect(hashOf(outFile, `images.${i}.pixel_values`)).toBe(subset[`${img.id}.pixel_values`].sha256);
    });
  });
});
