/**
 * `workers: N`: N model instances (this thread + N − 1 worker threads, each loading its own copy) give
 * byte-identical output, in input order, whatever N; failures are still reported per image.
 * Worker threads run the built worker script (dist/, made by `npm test`'s build step).
 */
import * as path from 'path';
import * as tf from '../src/tf';
import { encodeImages, encodePixelValues, encodePixelValuesAsync } from '../src/api/encode_job';
import { LlavaVision } from '../src/api/llava_vision';
import { TensorToWrite } from '../src/io/safetensors';

const DEMO = path.join(__dirname, '..', 'weights', 'demo');
const IMAGES = ['chelsea.png', 'rocket.jpg'].map((f) => path.join(DEMO, 'images', f));

let model: LlavaVision;
beforeAll(async () => {
  model = await LlavaVision.load(DEMO, { log: null });
});
afterAll(() => model.dispose());

const bytes = (t: TensorToWrite) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);

function expectIdentical(a: Record<string, TensorToWrite>, b: Record<string, TensorToWrite>): void {
  expect(Object.keys(b).sort()).toEqual(Object.keys(a).sort());
  for (const [k, t] of Object.entries(a)) {
    expect(b[k].shape).toEqual(t.shape);
    if (!bytes(t).equals(bytes(b[k]))) throw new Error(`${k} differs`);
  }
}

test('images: workers 1, 2, 3 give byte-identical tensors, sizes and failures; nothing leaks', async () => {
  const inputs = [...IMAGES, path.join(DEMO, 'missing.png'), ...IMAGES];
  const before = tf.memory().numTensors;
  const progress: number[] = [];
  const runs = [];
  for (const workers of [1, 2, 3]) {
    runs.push(
      await encodeImages(model, inputs, {
        outputs: ['merged', 'features', 'pixel_values'],
        workers,
        onProgress: (d) => workers === 3 && progress.push(d),
      }),
    );
  }
  expect(tf.memory().numTensors).toBe(before);
  expect(runs[0].failures.map((f) => f.index)).toEqual([2]);
  expect(Object.keys(runs[0].tensors)).toContain('images.4.merged');
  for (const r of runs.slice(1)) {
    expectIdentical(runs[0].tensors, r.tensors);
    expect(r.sizes).toEqual(runs[0].sizes);
    expect(r.failures).toEqual(runs[0].failures);
  }
  expect(progress).toEqual([1, 2, 3, 4]);
}, 60_000);

test('pixel values: the async variant with workers equals encodePixelValues', async () => {
  const s = model.tower.config.imageSize;
  const pixels = Float32Array.from({ length: 3 * 3 * s * s }, (_, i) => Math.sin(i) * 1.5);
  const shape: [number, number, number, number] = [3, 3, s, s];
  const here = encodePixelValues(model, pixels, shape, { outputs: ['projected', 'hidden_states'] });
  expectIdentical(
    here,
    await encodePixelValuesAsync(model, pixels, shape, { outputs: ['projected', 'hidden_states'], workers: 2 }),
  );
  expect(() => encodePixelValues(model, pixels, shape, { outputs: ['projected'], workers: 2 })).toThrow(
    /encodePixelValuesAsync/,
  );
  await expect(encodePixelValuesAsync(model, pixels, shape, { outputs: ['projected'], workers: 0 })).rejects.toThrow(
    /workers must be a positive integer/,
  );
}, 60_000);
