/**
 * The low-level classes used on their own (issue 12, item 13): they choose the backend as
 * LlavaVision.load does, and misuse gets errors that say what happened.
 * Backend choice is per process, so those cases run the built package (dist/) in fresh processes.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import * as tf from '../src/tf';
import { initBackend } from '../src/backend';
import { LlavaVision } from '../src/api/llava_vision';
import { CLIPVisionTower } from '../src/api/vision_tower';
import { encodeImages, encodePixelValues } from '../src/api/encode_job';
import { main } from '../src/cli/main';
import { ConfigError } from '../src/errors';

const ROOT = path.join(__dirname, '..');
const DEMO = path.join(ROOT, 'weights', 'demo');
const TOWER = path.join(DEMO, 'clip_tower');
const IMAGE = path.join(DEMO, 'images', 'chelsea.png');

/** Runs `body` (async JS, with `lib` = the built package and `tf`) in a fresh node; returns its JSON result and stderr. */
function fresh(body: string, env: Record<string, string> = {}): { result: Record<string, unknown>; stderr: string } {
  const script = `const lib = require(${JSON.stringify(path.join(ROOT, 'dist', 'src'))}); const { tf } = lib;
    (async () => { ${body} })().then((r) => process.stdout.write(JSON.stringify(r)), (e) => { console.error(e); process.exit(3); });`;
  const env2 = { ...process.env, ...env };
  if (!('LLAVA_VISION_BACKEND' in env)) delete env2.LLAVA_VISION_BACKEND;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: env2 });
  if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`);
  return { result: JSON.parse(r.stdout) as Record<string, unknown>, stderr: r.stderr };
}

const FORWARD = `const y = tower.forward(tf.zeros([1, 3, 336, 336])); const shape = y.shape; y.dispose();`;

describe('backend choice of the low-level classes', () => {
  test('await CLIPVisionTower.load(dir): the backend LlavaVision.load would choose (wasm here), no hint', () => {
    const { result, stderr } = fresh(`const tower = await lib.CLIPVisionTower.load(${JSON.stringify(TOWER)}); ${FORWARD}
      return { backend: tf.getBackend(), shape };`);
    expect(result).toEqual({ backend: 'wasm', shape: [1, 576, 64] });
    expect(stderr.trim().split('\n')).toEqual([expect.stringMatching(/^llava-vision: tfjs backend "wasm"/)]);
  });

  test('new CLIPVisionTower(dir) alone cannot start wasm (asynchronous): runs on cpu and says in one line how to get wasm', () => {
    const { result, stderr } = fresh(`const tower = new lib.CLIPVisionTower(${JSON.stringify(TOWER)}); ${FORWARD}
      return { backend: tf.getBackend(), shape };`);
    expect(result).toEqual({ backend: 'cpu', shape: [1, 576, 64] });
    const lines = stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^llava-vision: tfjs backend "cpu" \(pure JS, slow\): .*await initBackend\(\).*CLIPVisionTower\.load/,
    );
  });

  test('after await initBackend(), a synchronous load keeps its backend (wasm) and says nothing more', () => {
    const { result, stderr } =
      fresh(`await lib.initBackend(); const tower = new lib.CLIPVisionTower(${JSON.stringify(TOWER)}); ${FORWARD}
      return { backend: tf.getBackend() };`);
    expect(result).toEqual({ backend: 'wasm' });
    expect(stderr.trim().split('\n')).toEqual([expect.stringMatching(/^llava-vision: tfjs backend "wasm"/)]);
  });

  test("the app's own tf.setBackend choice is kept", () => {
    const { result, stderr } = fresh(`require('@tensorflow/tfjs-backend-wasm'); await tf.setBackend('wasm');
      const tower = new lib.CLIPVisionTower(${JSON.stringify(TOWER)}); const p = new lib.Projector({ type: 'linear', inFeatures: 64, outFeatures: 8 });
      await lib.CLIPVisionTower.load(${JSON.stringify(TOWER)});
      return { backend: tf.getBackend() };`);
    expect(result).toEqual({ backend: 'wasm' });
    expect(stderr).toBe('');
  });

  test('LLAVA_VISION_BACKEND=cpu is obeyed by a synchronous load, with the usual line and no hint', () => {
    const { result, stderr } = fresh(
      `const p = new lib.Projector({ type: 'linear', inFeatures: 4, outFeatures: 2 }); return { backend: tf.getBackend() };`,
      { LLAVA_VISION_BACKEND: 'cpu' },
    );
    expect(result).toEqual({ backend: 'cpu' });
    expect(stderr.trim().split('\n')).toEqual([
      expect.stringMatching(/^llava-vision: tfjs backend "cpu" \(pure JS, slow: the default wasm backend/),
    ]);
  });
});

describe('misuse says what happened', () => {
  let model: LlavaVision;
  beforeAll(async () => {
    await initBackend({ log: null });
    model = await LlavaVision.load(DEMO, { log: null });
  });
  afterAll(() => model.dispose());

  test('NHWC pixels: "expected NCHW [N, 3, H, W]", and that it looks like NHWC', () => {
    const nhwc = tf.zeros<tf.Rank.R4>([1, 336, 336, 3]);
    expect(() => model.encode(nhwc)).toThrow(
      new ConfigError(
        'pixel_values must be NCHW [N, 3, H, W] (num_channels 3); got [1, 336, 336, 3], which looks like NHWC (channels last): transpose it with tf.transpose(x, [0, 3, 1, 2])',
      ),
    );
    const odd = tf.zeros<tf.Rank.R4>([1, 4, 336, 336]);
    expect(() => model.encode(odd)).toThrow(
      new ConfigError('pixel_values must be NCHW [N, 3, H, W] (num_channels 3); got [1, 4, 336, 336]'),
    );
    const chw = tf.zeros([3, 336, 336]) as unknown as tf.Tensor4D;
    expect(() => model.tower.forward(chw)).toThrow(
      new ConfigError('pixel_values must be 4-D, NCHW [N, 3, H, W]; got shape [3, 336, 336]'),
    );
    tf.dispose([nhwc, odd, chw]);
  });

  test('merge spatial_unpad without image_newline fails before any decoding or forward (API and CLI)', async () => {
    const encode = jest.spyOn(model, 'encode');
    const missing = path.join(ROOT, 'no-such-image.png'); // decoding it would be reported as a failure, not thrown
    await expect(encodeImages(model, [missing, IMAGE], { mergeType: 'spatial_unpad' })).rejects.toThrow(
      new ConfigError(
        `merge "spatial_unpad" needs model.image_newline, which ${DEMO} lacks (use merge "spatial" or "flat")`,
      ),
    );
    expect(encode).not.toHaveBeenCalled();
    encode.mockRestore();
    let err = '';
    const code = await main(
      ['encode', '--merge', 'spatial_unpad', '--quiet', IMAGE, '--out', path.join(ROOT, 'never-written.safetensors')],
      { out: () => {}, err: (s) => (err += s) },
    );
    expect(code).toBe(1);
    expect(err).toMatch(/merge "spatial_unpad" needs model\.image_newline/);
    expect(err).not.toMatch(/encoding/);
  });

  test('a disposed model or tower says it was disposed (not "not loaded yet"); dispose twice is harmless', async () => {
    const own = await LlavaVision.load(DEMO, { log: null });
    own.dispose();
    own.dispose();
    expect(own.isDisposed).toBe(true);
    const pixels = tf.zeros<tf.Rank.R4>([1, 3, 336, 336]);
    expect(() => own.encode(pixels)).toThrow(
      new ConfigError(`this LlavaVision (${DEMO}) was disposed: LlavaVision.load it again to use it`),
    );
    await expect(encodeImages(own, IMAGE)).rejects.toThrow(/was disposed/);
    expect(() => encodePixelValues(own, new Float32Array(3 * 336 * 336), [1, 3, 336, 336])).toThrow(/was disposed/);
    expect(() => own.tower.forward(pixels)).toThrow(
      new ConfigError(`vision tower ${TOWER} was disposed: load it again (loadModel()) to use it`),
    );
    const delayed = new CLIPVisionTower(TOWER, { delayLoad: true });
    expect(() => delayed.forward(pixels)).toThrow(/is not loaded yet \(delayLoad\): call loadModel\(\) first/);
    pixels.dispose();
  });
});
