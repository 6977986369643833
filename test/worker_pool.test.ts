/**
 * `workers: N`: N model instances (this thread + N − 1 worker threads, each loading its own copy) give
 * byte-identical output, in input order, whatever N; failures are still reported per image. The N − 1
 * threads are counted (helpers/worker_threads_spy.ts): each must start and encode units itself.
 * Worker threads run the built worker script (dist/, made by `npm test`'s build step).
 */
jest.mock('worker_threads', () =>
  jest
    .requireActual<typeof import('./helpers/worker_threads_spy')>('./helpers/worker_threads_spy')
    .spiedWorkerThreads(),
);
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '../src/tf';
import { EncodeUnit, encodeImages, encodePixelValues, encodePixelValuesAsync } from '../src/api/encode_job';
import { LlavaVision } from '../src/api/llava_vision';
import { BackendError, CheckpointError } from '../src/errors';
import { TensorToWrite } from '../src/io/safetensors';
import { EncoderPool } from '../src/parallel/pool/worker_pool';
import { rebuildError, toThreadError } from '../src/parallel/worker_thread';
import { threadMark, encodeThreadsSince } from './helpers/worker_threads_spy';

const DEMO = path.join(__dirname, '..', 'weights', 'demo');
const IMAGES = ['chelsea.png', 'rocket.jpg'].map((f) => path.join(DEMO, 'images', f));

let model: LlavaVision;
beforeAll(async () => {
  model = await LlavaVision.load(DEMO, { log: null });
});
afterAll(() => model.dispose());

const bytes = (t: TensorToWrite) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);

/** Exactly `count` worker threads started since `mark`, distinct, and each encoded at least one unit. */
function expectThreadsWorked(mark: number, count: number): void {
  const threads = encodeThreadsSince(mark);
  expect(threads).toHaveLength(count);
  expect(new Set(threads.map((t) => t.threadId)).size).toBe(count);
  for (const t of threads) expect(t.done).toBeGreaterThan(0);
}

function expectIdentical(a: Record<string, TensorToWrite>, b: Record<string, TensorToWrite>): void {
  expect(Object.keys(b).sort()).toEqual(Object.keys(a).sort());
  for (const [k, t] of Object.entries(a)) {
    expect(b[k].shape).toEqual(t.shape);
    if (!bytes(t).equals(bytes(b[k]))) throw new Error(`${k} differs`);
  }
}

test('images: workers 1, 2, 3 start 0, 1, 2 threads that each encode, and give byte-identical tensors, sizes and failures; nothing leaks', async () => {
  const inputs = [...IMAGES, path.join(DEMO, 'missing.png'), ...IMAGES];
  const before = tf.memory().numTensors;
  const progress: number[] = [];
  const runs = [];
  for (const workers of [1, 2, 3]) {
    const mark = threadMark();
    runs.push(
      await encodeImages(model, inputs, {
        outputs: ['merged', 'features', 'pixel_values'],
        workers,
        onProgress: (d) => workers === 3 && progress.push(d),
      }),
    );
    expectThreadsWorked(mark, workers - 1);
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

test('pixel values: the async variant with workers 2 runs a thread and equals encodePixelValues', async () => {
  const s = model.tower.config.imageSize;
  const pixels = Float32Array.from({ length: 3 * 3 * s * s }, (_, i) => Math.sin(i) * 1.5);
  const shape: [number, number, number, number] = [3, 3, s, s];
  const here = encodePixelValues(model, pixels, shape, { outputs: ['projected', 'hidden_states'] });
  const mark = threadMark();
  expectIdentical(
    here,
    await encodePixelValuesAsync(model, pixels, shape, { outputs: ['projected', 'hidden_states'], workers: 2 }),
  );
  expectThreadsWorked(mark, 1);
  expect(() => encodePixelValues(model, pixels, shape, { outputs: ['projected'], workers: 2 })).toThrow(
    /encodePixelValuesAsync/,
  );
  await expect(encodePixelValuesAsync(model, pixels, shape, { outputs: ['projected'], workers: 0 })).rejects.toThrow(
    /workers must be a positive integer/,
  );
}, 60_000);

test("a worker's error is the class and message the same call throws on this thread", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-vision-pool-'));
  try {
    for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(DEMO, f), path.join(dir, f));
    fs.truncateSync(path.join(dir, 'model.safetensors'), 1000); // its header promises more bytes than it has
    const options = { visionTower: path.join(DEMO, 'clip_tower'), log: null };
    const here = await LlavaVision.load(dir, options).catch((e: Error) => e);
    expect(here).toBeInstanceOf(CheckpointError);
    const none = () => ({}) as Record<string, TensorToWrite>;
    const there = await EncoderPool.start<EncodeUnit, object, Record<string, TensorToWrite>>(
      1,
      { modelDir: dir, options: { visionTower: options.visionTower } },
      none,
      {},
    ).catch((e: Error) => e);
    expect(there).toBeInstanceOf(CheckpointError);
    expect((there as Error).message).toBe((here as Error).message);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 60_000);

test('errors cross threads as our classes; any other error becomes a BackendError naming the thread', () => {
  const ours = rebuildError(toThreadError(new CheckpointError('x.safetensors: truncated')), 'thread 1');
  expect(ours).toBeInstanceOf(CheckpointError);
  expect(ours.message).toBe('x.safetensors: truncated');
  const other = rebuildError(toThreadError(new TypeError('x is undefined')), 'thread 1');
  expect(other).toBeInstanceOf(BackendError);
  expect(other.message).toBe('thread 1: TypeError: x is undefined');
  expect(rebuildError({ errorClass: 'constructor', message: 'm' }, 'w')).toBeInstanceOf(BackendError);
});
