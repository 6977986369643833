/**
 * The webgpu backend's own behaviour (`npm run test:webgpu` only; its parity is checked by the
 * parity suites in the same run): the adapter logged, the GPU layout, no growth of tensors or GPU
 * buffers over repeated encodes, GPU errors refused instead of zeros, sync-only paths refused clearly.
 */
import * as path from 'path';
import * as tf from '../src/tf';
import { encodeImages, encodePixelValues, encodePixelValuesAsync } from '../src/api/encode_job';
import { LlavaVision } from '../src/api/llava_vision';
import { BackendError } from '../src/errors';
import { exportWeights } from '../src/model/weights';
import { describeOnBackend } from './helpers/backend_gate';
import { CASES } from './helpers/golden';

const CASE = path.join(CASES, 'tiny_llava_anyres_spatial_unpad');
const IMAGES = ['chelsea.png', 'tiny_gray_19x33.png'].map((f) => path.join(CASES, '..', 'images', f));

describeOnBackend('webgpu backend', () => {
  let model: LlavaVision;
  const lines: string[] = [];
  let beforeLoad: number;
  beforeAll(async () => {
    beforeLoad = tf.memory().numTensors;
    model = await LlavaVision.load(path.join(CASE, 'llava'), {
      visionTower: path.join(CASE, 'clip_tower'),
      backend: 'webgpu',
      log: (l) => lines.push(l),
    });
  });

  test('runs on webgpu with the batched layout and logs the adapter', () => {
    expect(model.backend).toBe('webgpu');
    expect(tf.getBackend()).toBe('webgpu');
    expect(model.tower.visionModel.visionModel.layout).toBe('batched');
    expect(lines).toEqual([
      expect.stringMatching(/^llava-vision: tfjs backend "webgpu" \((vulkan|metal|d3d12|opengles): \S+/),
    ]);
  });

  test('repeated encodes give the same output and grow neither tensors nor GPU buffers', async () => {
    const memory = () => {
      const m = tf.memory() as unknown as { numTensors: number; numBytesInGPU: number; numBytesAllocatedInGPU: number };
      return {
        numTensors: m.numTensors,
        numBytesInGPU: m.numBytesInGPU,
        numBytesAllocatedInGPU: m.numBytesAllocatedInGPU,
      };
    };
    const encode = () => encodeImages(model, IMAGES, { outputs: ['merged', 'hidden_states'], batchSize: 4 });
    const first = await encode();
    expect(first.failures).toEqual([]);
    expect(Object.keys(first.tensors)).toHaveLength(2 * (1 + model.tower.config.numHiddenLayers + 1));
    const afterFirst = memory();
    await encode(); // tfjs's buffer pool settles on the second run (buffers of the first are released as its work completes)
    const after = memory();
    expect(after.numTensors).toBe(afterFirst.numTensors);
    expect(after.numBytesInGPU).toBe(afterFirst.numBytesInGPU);
    expect(after.numBytesInGPU).toBeGreaterThan(0);
    for (let i = 0; i < 3; i++) {
      const again = await encode();
      expect(memory()).toEqual(after);
      for (const [name, t] of Object.entries(first.tensors))
        expect(`${name}: ${Buffer.from(again.tensors[name].data.buffer).equals(Buffer.from(t.data.buffer))}`).toBe(
          `${name}: true`,
        );
    }
  });

  test('a WebGPU error during a job is a BackendError, not a silent result', async () => {
    const device = (
      tf.backend() as unknown as { device: { createBuffer(d: { size: number; usage: number }): { destroy(): void } } }
    ).device;
    device.createBuffer({ size: 4, usage: 0 }); // invalid: WebGPU reports it asynchronously, as it does a binding over the adapter's limits
    await expect(encodeImages(model, IMAGES.slice(0, 1), { outputs: ['merged'] })).rejects.toThrow(BackendError);
    // Reported once: the next job runs.
    const { tensors } = await encodeImages(model, IMAGES.slice(0, 1), { outputs: ['merged'] });
    expect(tensors['images.0.merged'].shape).toEqual([70, model.projector!.outFeatures]); // the case's merged_shape for chelsea.png
  });

  test('paths that need synchronous reads or several model instances say so', async () => {
    const s = model.tower.config.imageSize;
    const pixels = new Float32Array(2 * 3 * s * s);
    expect(() => encodePixelValues(model, pixels, [2, 3, s, s], { outputs: ['projected'] })).toThrow(
      /webgpu backend reads results asynchronously: use encodePixelValuesAsync/,
    );
    await expect(
      encodePixelValuesAsync(model, pixels, [2, 3, s, s], { outputs: ['projected'], workers: 2 }),
    ).rejects.toThrow(/workers 2: the webgpu backend runs one model instance/);
    const { 'images.1.projected': p } = await encodePixelValuesAsync(model, pixels, [2, 3, s, s], {
      outputs: ['projected'],
    });
    expect(p.shape).toEqual([1, model.tower.numPatches, model.projector!.outFeatures]);
    const t = tf.tidy(() => tf.add(tf.ones([1000]), 1)); // large enough to run on the GPU (tfjs does tiny ops on the CPU)
    expect(() => t.dataSync()).toThrow(
      /webgpu backend cannot read tensors synchronously in Node .*use await tensor.data\(\)/,
    );
    expect(() => exportWeights(model.projector!)).toThrow(BackendError);
    expect(await t.data()).toEqual(new Float32Array(1000).fill(2));
    expect(t.dataSync()).toEqual(new Float32Array(1000).fill(2)); // once on the CPU, a sync read is fine
    t.dispose();
  });

  test('dispose frees every tensor and GPU buffer the model held', () => {
    model.dispose();
    expect(tf.memory().numTensors).toBe(beforeLoad);
    expect((tf.memory() as unknown as { numBytesInGPU: number }).numBytesInGPU).toBe(0);
  });
});
