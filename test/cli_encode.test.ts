import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { main } from '../src/cli/main';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors';
import { expectParity, loadCase } from './helpers/golden';

const ROOT = path.join(__dirname, '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(args, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

/** The fixture's pixel_values of all images stacked into one [N,3,H,W] file, as Python would write it. */
function writePixelValues(gc: ReturnType<typeof loadCase>, file: string): string[] {
  const ids: string[] = gc.json.images.map((i: { id: string }) => i.id);
  const parts = ids.map((id) => gc.expected.readFloat32(`${id}.pixel_values`));
  const [c, h, w] = gc.json.expected[`${ids[0]}.pixel_values`].shape;
  const data = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((off, p) => (data.set(p, off), off + p.length), 0);
  writeSafetensors(file, { pixel_values: { dtype: 'F32', shape: [ids.length, c, h, w], data } });
  return ids;
}

test('encode --pixel-values on a LLaVA checkpoint matches the golden tensors', async () => {
  const gc = loadCase('tiny_llava_linear_sel-1_patch');
  const pv = path.join(tmp, 'pv.safetensors');
  const outFile = path.join(tmp, 'out.safetensors');
  const ids = writePixelValues(gc, pv);
  const r = await run(['encode', '--model', path.join(gc.dir, 'llava'), '--vision-tower', path.join(gc.dir, 'clip_tower'),
    '--pixel-values', pv, '--save', 'features,projected,hidden_states', '--batch-size', '2', '--quiet', '--out', outFile]);
  expect(r).toMatchObject({ code: 0, err: '' });
  const out = SafetensorsFile.open(outFile);
  ids.forEach((id, i) => {
    expectParity(gc, `${id}.image_features`, out.readFloat32(`images.${i}.features`), out.info(`images.${i}.features`).shape);
    expectParity(gc, `${id}.projected`, out.readFloat32(`images.${i}.projected`), out.info(`images.${i}.projected`).shape);
    expect(out.info(`images.${i}.hidden_states.3`).shape).toEqual([1, 17, 64]);
  });
  expect(out.has('images.0.hidden_states.4')).toBe(false);
  const meta = out.metadata;
  expect(meta.layout).toBe('llava');
  expect(JSON.parse(meta.options)).toMatchObject({ select_layer: -1, select_feature: 'patch', projector_type: 'linear' });
  expect(meta.producer).toMatch(/^llava-vision-tfjs \d+\.\d+\.\d+/);
  out.close();
});

test('default --save is projected when a projector exists, features otherwise', async () => {
  const gc = loadCase('tiny_clip_full_layout_f32');
  const pv = path.join(tmp, 'pv_clip.safetensors');
  writePixelValues(gc, pv);
  const outFile = path.join(tmp, 'clip.safetensors');
  expect((await run(['encode', '--model', path.join(gc.dir, 'model'), '--pixel-values', pv, '--quiet', '--out', outFile])).code).toBe(0);
  const out = SafetensorsFile.open(outFile);
  expect(out.keys()).toEqual(['images.0.features', 'images.1.features', 'images.2.features', 'images.3.features']);
  expect(out.info('images.0.features').shape).toEqual([1, 4, 32]); // layer -2, CLS dropped
  out.close();
});

test.each([
  [['encode', '--out', 'x.safetensors', '--pixel-values', 'pv'], /needs --model/],
  [['encode', '--model', 'm', '--pixel-values', 'pv'], /needs --out/],
  [['encode', '--model', 'm', '--out', 'o', '--pixel-values', 'pv', '--save', 'features,logits'], /--save must be one of/],
  [['encode', '--model', 'm', '--out', 'o', '--pixel-values', 'pv', '--select-layer', 'two'], /--select-layer must be an integer/],
  [['encode', '--model', 'm', '--out', 'o', '--pixel-values', 'pv', '--backend', 'webgpu'], /--backend must be one of/],
  [['encode', '--frobnicate'], /unknown option --frobnicate/],
  [['encode', '--model', 'm', '--out', 'o', '--pixel-values', '/nonexistent/pv.safetensors'], /\/nonexistent\/pv.safetensors: cannot open/],
])('bad input %j is a one-line error and exit code 1', async (args, message) => {
  const r = await run(args as string[]);
  expect(r.code).toBe(1);
  expect(r.err).toMatch(message);
  expect(r.err.trim().split('\n')).toHaveLength(1);
});

test('a pixel-values file without "pixel_values" names what it holds', async () => {
  const gc = loadCase('tiny_clip_full_layout_f32');
  const bad = path.join(tmp, 'bad.safetensors');
  writeSafetensors(bad, { pixels: { dtype: 'F32', shape: [1, 3, 28, 28], data: new Float32Array(3 * 28 * 28) } });
  const r = await run(['encode', '--model', path.join(gc.dir, 'model'), '--pixel-values', bad, '--out', path.join(tmp, 'o.safetensors')]);
  expect(r.code).toBe(1);
  expect(r.err).toMatch(/no tensor named "pixel_values" \(found: pixels\)/);
  expect(fs.existsSync(path.join(tmp, 'o.safetensors'))).toBe(false);
});

test('the installed bin runs (compiled CLI) and fails cleanly', () => {
  const bin = path.join(ROOT, 'bin', 'llava-vision.js');
  expect(execFileSync(process.execPath, [bin, 'encode', '--help'], { encoding: 'utf8' })).toMatch(/--pixel-values FILE/);
  const r = spawnSync(process.execPath, [bin, 'encode', '--model', '/nonexistent', '--pixel-values', 'x', '--out', 'y'], { encoding: 'utf8' });
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(/cannot open|not found/);
});
