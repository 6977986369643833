/**
 * Training the projector through `model.encode` (issue 20): `optimizer.minimize(f)` and
 * `tf.variableGrads(f)`, with no var list, at 1, 2 and 3 threads (the tower and an `mlp2x_gelu`
 * projector sharded across them), against the single-thread gradients, with the tower frozen.
 * tfjs lists the trainable variables before `f` runs: the projector's must exist from the load.
 */
import * as path from 'path';
import * as tf from '../src/tf';
import { LlavaVision } from '../src/api/llava_vision';
import { namedParams } from '../src/model/module';
import { toCheckpointLayout } from '../src/model/weights';
import { TorchAdam, mseLoss } from '../src/train';
import { describeOnBackend } from './helpers/backend_gate';
import { loadCase } from './helpers/golden';

// The sharded path runs on wasm only (other backends use one thread).
const onWasm = process.env.LLAVA_VISION_BACKEND === undefined || process.env.LLAVA_VISION_BACKEND === 'wasm';
const describeSharded = onWasm ? describeOnBackend : describe.skip;

const gc = loadCase('tiny_llava_anyres_spatial_unpad'); // mlp2x_gelu 64 -> 48 -> 48, 4 heads
const load = (threads: number) =>
  LlavaVision.load(path.join(gc.dir, 'llava'), { visionTower: path.join(gc.dir, 'clip_tower'), log: null, threads });

/** The projector's gradients (or values) by checkpoint key, in the checkpoint's layout, from a map by variable name. */
function byKey(model: LlavaVision, byName: (v: tf.Variable) => tf.Tensor | null): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [key, param] of namedParams(model.projector!)) {
    const parts = param.variables.map((v) => byName(v.read() as tf.Variable));
    if (parts.some((p) => p === null)) throw new Error(`no gradient for ${key}`);
    out.set(
      key,
      toCheckpointLayout(
        param,
        parts.map((p) => p!.dataSync() as Float32Array),
      ),
    );
  }
  return out;
}

const maxAbs = (a: Float32Array) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

interface Run {
  threads: number;
  loss: number;
  grads: Map<string, Float32Array>;
  losses: number[];
  trained: Map<string, Float32Array>;
}

describeSharded('training the projector through encode', () => {
  const runs: Run[] = [];

  test.each([1, 2, 3])(
    '%i thread(s): variableGrads and minimize with no var list; the tower frozen, encode then uses the trained weights',
    async (threads) => {
      const model = await load(threads);
      try {
        expect(model.threads).toBe(threads);
        const s = model.tower.config.imageSize;
        const x = tf.randomUniform<tf.Rank.R4>([2, 3, s, s], -1.8, 2.1, 'float32', 3);
        const target = tf.randomNormal(
          [2, model.tower.numPatchesPerSide ** 2, model.projectedWidth!],
          0,
          0.5,
          'float32',
          4,
        );
        const loss = () => mseLoss(model.encode(x, { outputs: ['projected'] }).projected!, target);
        const featuresBefore = tf.tidy(
          () => model.encode(x, { outputs: ['features'] }).features!.dataSync() as Float32Array,
        );

        // Every trainable variable tfjs finds is the projector's: one gradient each, nothing of the tower.
        const { value, grads } = tf.variableGrads(loss);
        const projectorVars = model.projector!.trainableWeights.map((w) => (w.read() as tf.Variable).name);
        expect(Object.keys(grads).sort()).toEqual([...projectorVars].sort());
        const run: Run = {
          threads,
          loss: value.dataSync()[0],
          grads: byKey(model, (v) => grads[v.name] ?? null),
          losses: [],
          trained: new Map(),
        };
        tf.dispose([value, ...Object.values(grads)]);

        const optimizer = new TorchAdam({ learningRate: 1e-2 });
        const step = () => {
          const cost = optimizer.minimize(loss, true)!;
          run.losses.push(cost.dataSync()[0]);
          cost.dispose();
        };
        // The first step creates the optimizer's state; the second retires the shards (at threads > 1).
        step();
        step();
        const count = tf.memory().numTensors;
        for (let i = 0; i < 3; i++) step();
        expect(tf.memory().numTensors).toBe(count);
        expect(run.losses[4]).toBeLessThan(0.5 * run.losses[0]);
        run.trained = byKey(model, (v) => v);

        // The tower did not move (its forward is the same bits), and encode projects with the trained weights.
        const after = tf.tidy(() => {
          const out = model.encode(x, { outputs: ['features', 'projected'] });
          const local = model.projector!.call(out.features!);
          return {
            features: out.features!.dataSync() as Float32Array,
            projected: out.projected!.dataSync() as Float32Array,
            local: local.dataSync() as Float32Array,
          };
        });
        expect(Buffer.from(after.features.buffer).equals(Buffer.from(featuresBefore.buffer))).toBe(true);
        expect(Buffer.from(after.projected.buffer).equals(Buffer.from(after.local.buffer))).toBe(true);
        tf.dispose([x, target]);
        optimizer.dispose();
        runs.push(run);
      } finally {
        model.dispose();
      }
    },
  );

  test("the gradients, losses and trained weights at 2 and 3 threads are the single thread's (within the tower's parity bound)", () => {
    expect(runs.map((r) => r.threads)).toEqual([1, 2, 3]);
    const [one, ...sharded] = runs;
    expect([...one.grads.keys()].sort()).toEqual(['0.bias', '0.weight', '2.bias', '2.weight']);
    for (const run of sharded) {
      expect(Math.abs(run.loss - one.loss)).toBeLessThan(1e-5 * one.loss);
      run.losses.forEach((l, i) => expect(Math.abs(l - one.losses[i])).toBeLessThan(1e-5 * one.losses[i]));
      for (const [key, g] of one.grads) {
        const diff = maxDiff(run.grads.get(key)!, g);
        expect({ threads: run.threads, key, ok: diff <= 1e-5 * maxAbs(g) }).toEqual({
          threads: run.threads,
          key,
          ok: true,
        });
      }
      // Adam divides by the gradient's running size: a tiny gradient's rounding moves its weight by a step, hence a looser bound.
      for (const [key, w] of one.trained) {
        const diff = maxDiff(run.trained.get(key)!, w);
        expect({ threads: run.threads, key, ok: diff <= 1e-4 * maxAbs(w) }).toEqual({
          threads: run.threads,
          key,
          ok: true,
        });
      }
    }
  });
});
