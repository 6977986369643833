/**
 * Stage-1 style training through the whole vision side: tower forward (frozen) + projector step.
 * The tower's weights must come out bit-identical, and nothing may leak across steps.
 */
import * as path from 'path';
import * as tf from '../src/tf';
import { LlavaVision } from '../src/api/llava_vision';
import { namedParams } from '../src/model/module';
import { readParam } from '../src/model/weights';
import { Projector } from '../src/model/projector';
import { TorchAdam, initProjector, mseLoss, trainStep } from '../src/train';
import { CASES } from './helpers/golden';

const MODEL = path.join(CASES, 'tiny_projector_train_step', 'model');

let model: LlavaVision;
let projector: Projector;
let pixels: tf.Tensor4D;
let target: tf.Tensor;

beforeAll(async () => {
  model = await LlavaVision.load(MODEL, { log: null, threads: 1 }); // the tower's variables on this thread, to look at
  projector = new Projector({ type: 'mlp2x_gelu', inFeatures: model.tower.featureSize, outFeatures: 24 });
  initProjector(projector, 1);
  pixels = tf.randomUniform<tf.Rank.R4>([2, 3, 56, 56], -1.8, 2.1, 'float32', 3);
  target = tf.randomNormal([2, 16, 24], 0, 0.5, 'float32', 4);
});

afterAll(() => {
  tf.dispose([pixels, target]);
  projector.weights.forEach((w) => w.dispose());
  model.dispose();
});

function towerSnapshot(): Map<string, Buffer> {
  return new Map([...namedParams(model.tower.visionModel)].map(([key, p]) => [key, Buffer.from(readParam(p).buffer)]));
}

test('only the projector is trainable: the tower has no trainable weight and its tf.Variables are not trainable', () => {
  const towerVars = [...namedParams(model.tower.visionModel)].flatMap(([, p]) => p.variables);
  expect(towerVars.length).toBeGreaterThan(30);
  expect(towerVars.every((v) => !v.trainable && !(v.read() as tf.Variable).trainable)).toBe(true);
  expect(model.tower.visionModel.visionModel.trainableWeights).toHaveLength(0);
  expect(projector.trainableWeights.map((w) => w.shape)).toEqual([[64, 24], [24], [24, 24], [24]]);
});

test('full steps (tower forward + projector step, optimizer over ALL trainable variables): tower bit-identical, numTensors stable over 20 steps', () => {
  const before = towerSnapshot();
  const projectorBefore = projector.weights.map((w) => w.read().dataSync().slice());
  const opt = new TorchAdam({ learningRate: 1e-2 });
  // No varList: minimize() differentiates w.r.t. every trainable variable in the engine, so a tower
  // weight that were trainable would be stepped here.
  const step = () => {
    const cost = opt.minimize(() => {
      const { features } = model.encode(pixels, { outputs: ['features'] });
      return mseLoss(projector.call(features!), target);
    }, true);
    const value = cost!.dataSync()[0];
    cost!.dispose();
    return value;
  };
  const losses = [step()]; // the first step creates the optimizer's state (2 tensors per parameter)
  const counts: number[] = [];
  for (let i = 1; i < 20; i++) {
    losses.push(step());
    counts.push(tf.memory().numTensors);
  }
  expect(new Set(counts).size).toBe(1);
  expect(losses[19]).toBeLessThan(losses[0]);

  const after = towerSnapshot();
  expect([...after.keys()]).toEqual([...before.keys()]);
  for (const [key, bytes] of before) if (!bytes.equals(after.get(key)!)) throw new Error(`tower weight ${key} changed`);
  // ... while the projector did move.
  projector.weights.forEach((w, i) => expect(w.read().dataSync()).not.toEqual(projectorBefore[i]));
  opt.dispose();
});

test('trainStep on cached features leaves the tensor count unchanged (tf.train.sgd and TorchAdam)', () => {
  const features = model.encode(pixels, { outputs: ['features'] }).features!;
  for (const opt of [tf.train.sgd(0.05), new TorchAdam()]) {
    trainStep(projector, features, target, opt);
    const n = tf.memory().numTensors;
    for (let i = 0; i < 20; i++) trainStep(projector, features, target, opt);
    expect(tf.memory().numTensors).toBe(n);
    opt.dispose();
  }
  features.dispose();
});
