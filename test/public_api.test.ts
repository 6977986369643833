/**
 * The public API's types and defaults (issue 12, item 12): every type a signature shows can be
 * imported, results are typed as what they are, and the encode jobs work with no options.
 */
import * as path from 'path';
import { findUnexportedReferences } from '../tools/check_public_types';
import { initBackend } from '../src/backend';
import { LlavaVision } from '../src/api/llava_vision';
import { EncodedTensor, encodeImages, encodePixelValues } from '../src/api/encode_job';
import { ConfigError, ImageError } from '../src/errors';
import { decodeImage } from '../src/image';
import * as fs from 'fs';
import * as os from 'os';

const ROOT = path.join(__dirname, '..');
const DEMO = path.join(ROOT, 'weights', 'demo');
const IMAGE = path.join(DEMO, 'images', 'chelsea.png');

test('every type the public declarations refer to is exported (dist/src/index.d.ts, built by npm test)', () => {
  const entry = path.join(ROOT, 'dist', 'src', 'index.d.ts');
  expect(fs.existsSync(entry)).toBe(true);
  expect(findUnexportedReferences(entry)).toEqual([]);
});

test('the check finds an unexported type (here: a fixture declaring one)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-types-'));
  try {
    fs.writeFileSync(
      path.join(dir, 'hidden.d.ts'),
      'export interface Hidden { x: number }\nexport type Shown = { h: Hidden };\n',
    );
    fs.writeFileSync(
      path.join(dir, 'index.d.ts'),
      "import { Hidden } from './hidden';\nexport declare function f(h: Hidden): import('./hidden').Shown;\n",
    );
    expect(findUnexportedReferences(path.join(dir, 'index.d.ts'))).toEqual([
      { name: 'Hidden', declaredIn: 'hidden.d.ts', referencedBy: ['f'] },
      { name: 'Shown', declaredIn: 'hidden.d.ts', referencedBy: ['f'] },
    ]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

describe('encode jobs: defaults and inputs', () => {
  let model: LlavaVision;
  beforeAll(async () => {
    await initBackend({ log: null });
    model = await LlavaVision.load(DEMO, { log: null });
  });
  afterAll(() => model.dispose());

  test('encodeImages(model, files) with no options: merged tokens, typed Float32Array, same as asking for them', async () => {
    const { tensors, failures, sizes } = await encodeImages(model, [IMAGE]);
    expect(Object.keys(tensors)).toEqual(['images.0.merged']);
    const merged: EncodedTensor = tensors['images.0.merged'];
    const data: Float32Array = merged.data; // compile-time: not a union of every typed array
    expect(data).toBeInstanceOf(Float32Array);
    expect(merged).toMatchObject({ dtype: 'F32', shape: [576, 128] });
    expect(failures).toEqual([]);
    expect(sizes).toEqual([[451, 300]]);
    const explicit = await encodeImages(model, [IMAGE], { outputs: ['merged'], aspect: 'pad', mergeType: 'flat' });
    expect(explicit.tensors['images.0.merged'].data).toEqual(data);
  });

  test('one input alone (a path, bytes or decoded pixels) is the same as a list of one', async () => {
    const listed = (await encodeImages(model, [IMAGE])).tensors['images.0.merged'].data;
    expect((await encodeImages(model, IMAGE)).tensors['images.0.merged'].data).toEqual(listed);
    const bytes = new Uint8Array(fs.readFileSync(IMAGE));
    expect((await encodeImages(model, bytes)).tensors['images.0.merged'].data).toEqual(listed);
    const rgb = await decodeImage(bytes);
    expect((await encodeImages(model, rgb)).tensors['images.0.merged'].data).toEqual(listed);
  });

  test('a failing image: one given alone throws its ImageError; in a list it is in failures, the others encoded', async () => {
    const bad = path.join(os.tmpdir(), `llava-bad-${process.pid}.png`);
    fs.writeFileSync(bad, 'not a png');
    try {
      // Alone: thrown, one line naming the file (no empty result to trip over later).
      const alone: unknown = await encodeImages(model, bad).catch((e: unknown) => e);
      expect(alone).toBeInstanceOf(ImageError);
      expect((alone as Error).message).toBe(
        `cannot decode image ${bad}: unsupported image format (llava-vision-tfjs decodes PNG, JPEG, GIF, WebP, TIFF and BMP)`,
      );
      expect((alone as Error).message).not.toContain('\n');
      await expect(encodeImages(model, path.join(DEMO, 'images', 'no-such.png'))).rejects.toThrow(ImageError);
      await expect(encodeImages(model, new Uint8Array([1, 2, 3]))).rejects.toThrow(/image input 0: /);
      // In a list, even of one: returned.
      const one = await encodeImages(model, [bad]);
      expect(one).toEqual({
        tensors: {},
        failures: [{ index: 0, source: bad, message: (alone as Error).message }],
        sizes: [null],
      });
      const mixed = await encodeImages(model, [bad, IMAGE]);
      expect(Object.keys(mixed.tensors)).toEqual(['images.1.merged']);
      expect(mixed.failures.map((f) => f.index)).toEqual([0]);
      expect(mixed.sizes).toEqual([null, [451, 300]]);
    } finally {
      fs.rmSync(bad, { force: true });
    }
  });

  test('anything else is a ConfigError naming the input, not a TypeError from inside', async () => {
    await expect(encodeImages(model, 42 as never)).rejects.toThrow(
      new ConfigError(
        "images[0] is number: expected a file path, the file's bytes (Uint8Array) or an RgbImage { width, height, data }",
      ),
    );
    await expect(encodeImages(model, [IMAGE, null] as never)).rejects.toThrow(
      /^images\[1\] is null: expected a file path/,
    );
    await expect(encodeImages(model, [IMAGE], { outputs: 'merged' as never })).rejects.toThrow(
      /outputs must be an array of output names/,
    );
    await expect(encodeImages(model, [IMAGE], { mergeType: 'spatial_pad' as never })).rejects.toThrow(
      /unknown merge type "spatial_pad"/,
    );
  });

  test('encodePixelValues with no options: projected features, Float32Array', () => {
    const pixels = new Float32Array(3 * 336 * 336).fill(0.25);
    const out = encodePixelValues(model, pixels, [1, 3, 336, 336]);
    expect(Object.keys(out)).toEqual(['images.0.projected']);
    expect(out['images.0.projected'].data).toBeInstanceOf(Float32Array);
    expect(out['images.0.projected'].shape).toEqual([1, 576, 128]);
  });
});

test('renamed public names keep their deprecated aliases for one release (layout → checkpoint kind)', async () => {
  const api = await import('../src');
  const config = JSON.parse(fs.readFileSync(path.join(DEMO, 'config.json'), 'utf8')) as Record<string, unknown>;
  const keys = () => [];
  expect(api.detectLayout).toBe(api.detectCheckpointKind);
  expect(api.detectCheckpointKind(DEMO, config, keys)).toBe('llava');
  const model = await LlavaVision.load(DEMO, { threads: 1 });
  try {
    expect(model.checkpointKind).toBe('llava');
    expect(model.layout).toBe(model.checkpointKind);
  } finally {
    model.dispose();
  }
  // The types: the old names are the new ones.
  const kind: import('../src').Layout = 'clip';
  const inspected: import('../src').InspectLayout = kind;
  const sameKind: import('../src').CheckpointKind = kind;
  const sameInspected: import('../src').InspectKind = inspected;
  expect([sameKind, sameInspected]).toEqual(['clip', 'clip']);
});
