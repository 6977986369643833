/**
 * The tower's layouts (src/model/layout.ts) on the default backend: `batched`, the one GPUs run, meets
 * the same parity rule as `wasm`, keeps whole weights, and exports exactly the checkpoint's tensors.
 */
import * as path from 'path';
import * as tf from '../src/tf';
import { initBackend } from '../src/backend';
import { LlavaVision } from '../src/api/llava_vision';
import { countVariables, namedParams } from '../src/model/module';
import { exportWeights } from '../src/model/weights';
import { Checkpoint } from '../src/io/checkpoint';
import { CASES, expectTowerParityOnImages, loadCase } from './helpers/golden';

beforeAll(() => initBackend({ backend: 'wasm', log: null }));

describe.each(['tiny_clip_full_layout_f32', 'tiny_clip_vision_only_f16', 'tiny_clip_interpolate_pos_encoding'])(
  '%s',
  (name) => {
    test('layout batched: every hidden state and pooler_output within the parity rule; whole weights, same export', async () => {
      const gc = loadCase(name);
      const dir = path.join(gc.dir, 'model');
      const model = await LlavaVision.load(dir, { backend: 'wasm', log: null, layout: 'batched' });
      try {
        const vision = model.tower.visionModel;
        expect(vision.visionModel.layout).toBe('batched');
        expect(countVariables(vision)).toBe([...namedParams(vision)].length); // no per-head or per-block parts
        const file = Checkpoint.open(dir);
        try {
          for (const [key, t] of Object.entries(exportWeights(vision)))
            expect(`${key}: ${Buffer.from(t.data.buffer).equals(Buffer.from(file.readFloat32(key).buffer))}`).toBe(
              `${key}: true`,
            );
        } finally {
          file.close();
        }
        await expectTowerParityOnImages(gc, model);
      } finally {
        model.dispose();
      }
    });
  },
);

test('the default layout follows the backend (wasm on wasm); an explicit layout wins', async () => {
  const dir = path.join(CASES, 'tiny_clip_full_layout_f32', 'model');
  const [auto, batched] = [
    await LlavaVision.load(dir, { backend: 'wasm', log: null, threads: 1 }),
    await LlavaVision.load(dir, { backend: 'wasm', log: null, layout: 'batched' }),
  ];
  try {
    expect(auto.backend).toBe('wasm');
    expect(auto.tower.visionModel.visionModel.layout).toBe('wasm');
    expect(countVariables(auto.tower.visionModel)).toBeGreaterThan([...namedParams(auto.tower.visionModel)].length);
    // Same function: the layouts differ only in float32 rounding.
    const x = tf.randomNormal<tf.Rank.R4>([1, 3, 28, 28], 0, 1, 'float32', 7);
    const [a, b] = [auto.encode(x, { outputs: ['hidden_states'] }), batched.encode(x, { outputs: ['hidden_states'] })];
    const last = (r: typeof a) => r.hiddenStates![r.hiddenStates!.length - 1];
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(last(a), last(b)))).dataSync()[0])).toBeLessThan(1e-5);
    tf.dispose([x, a.hiddenStates!, b.hiddenStates!]);
  } finally {
    auto.dispose();
    batched.dispose();
  }
});
