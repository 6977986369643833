/**
 * LLaVA `CLIPVisionTower` semantics (llava/model/multimodal_encoder/clip_encoder.py, haotian-liu/LLaVA
 * c121f04): select_layer indexing, select_feature, list forward, delay_load, dummy_feature, freezing,
 * the projector types of `build_vision_projector`, and HF's CLIPVisionConfig defaults.
 *
 * Reference tensors are the full `visionModel.forward(...).hiddenStates` of the same tiny tower, so
 * every comparison is against our own HF-equivalent forward (itself checked by tower_parity.test.ts).
 */
import * as path from 'path';
import * as tf from '../src/tf';
import erf from '@stdlib/math-base-special-erf';
import { initBackend } from '../src/backend';
import { CLIPVisionTower, VisionTowerOptions } from '../src/api/vision_tower';
import { LlavaVision } from '../src/api/llava_vision';
import { clipVisionConfigFromJson } from '../src/config/clip';
import { ConfigError } from '../src/errors';
import { countVariables, namedParams } from '../src/model/module';
import { Projector, ProjectorConfig } from '../src/model/projector';
import { CASES, maxAbsDiff } from './helpers/golden';

// clip_tower of this case: hidden 64, 3 layers, image 56, patch 14 -> 16 patches (+ CLS = 17 tokens).
const CASE = path.join(CASES, 'tiny_llava_linear_sel-1_patch');
const TOWER = path.join(CASE, 'clip_tower');
const L = 3;
const D = 64;
const N = 16;

let x: tf.Tensor4D; // [2, 3, 56, 56]
let full: tf.Tensor3D[]; // the L+1 hidden states of x
let reference: CLIPVisionTower;

beforeAll(async () => {
  await initBackend({ log: null });
  x = tf.randomUniform<tf.Rank.R4>([2, 3, 56, 56], -2, 2, 'float32', 1234);
  reference = new CLIPVisionTower(TOWER, { selectLayer: -1, selectFeature: 'cls_patch' });
  const out = reference.visionModel.forward(x);
  full = out.hiddenStates;
  expect(out.lastHiddenState).toBe(full[L]);
  out.poolerOutput.dispose();
});

afterAll(() => {
  tf.dispose([x, ...full]);
  reference.dispose();
});

/** All of a tensor's values, then the tensor disposed. */
function take(t: tf.Tensor): Float32Array {
  const v = t.dataSync() as Float32Array;
  t.dispose();
  return Float32Array.from(v);
}

function sliceTokens(h: tf.Tensor3D, from: number): Float32Array {
  const [b, t, d] = h.shape;
  return take(tf.slice(h, [0, from, 0], [b, t - from, d]));
}

function tower(options: VisionTowerOptions): CLIPVisionTower {
  return new CLIPVisionTower(TOWER, options);
}

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error, none was thrown');
}

describe('select_layer (Python indexing into the L+1 hidden states)', () => {
  test('the reference hidden states are distinct per layer (so the index matters)', () => {
    expect(full).toHaveLength(L + 1);
    for (let k = 1; k <= L; k++) expect(maxAbsDiff(full[k].dataSync(), full[k - 1].dataSync())).toBeGreaterThan(1e-3);
  });

  test.each([
    [-1, 3],
    [-2, 2],
    [-3, 1],
    [-(L + 1), 0],
    [0, 0],
    [1, 1],
    [2, 2],
    [L, 3],
  ])('selectLayer %i is hidden_states[%i], bit for bit, only the needed layers run', (select, index) => {
    const t = tower({ selectLayer: select, selectFeature: 'cls_patch' });
    try {
      const ran: number[] = [];
      const layers = t.visionModel.visionModel.layers;
      layers.forEach((layer, i) => {
        const call = layer.call.bind(layer);
        layer.call = (inputs) => {
          ran.push(i);
          return call(inputs);
        };
      });
      const got = t.forward(x);
      expect(got.shape).toEqual([2, N + 1, D]);
      expect(take(got)).toEqual(Float32Array.from(full[index].dataSync()));
      expect(ran).toEqual([...Array(index).keys()]); // layers after the selected one are skipped
    } finally {
      t.dispose();
    }
  });

  test('patch features are the selected hidden state without its CLS row', () => {
    for (const [select, index] of [
      [-1, 3],
      [-2, 2],
      [0, 0],
    ]) {
      const t = tower({ selectLayer: select, selectFeature: 'patch' });
      try {
        const got = t.forward(x);
        expect(got.shape).toEqual([2, N, D]);
        expect(take(got)).toEqual(sliceTokens(full[index], 1));
      } finally {
        t.dispose();
      }
    }
  });

  test('a list of layers is concatenated on the feature axis', () => {
    const t = tower({ selectLayer: [-2, -1], selectFeature: 'patch' });
    try {
      expect(t.featureSize).toBe(2 * D);
      const got = t.forward(x);
      expect(got.shape).toEqual([2, N, 2 * D]);
      const want = tf.tidy(() => tf.slice(tf.concat([full[2], full[3]], -1), [0, 1, 0], [2, N, 2 * D]));
      expect(take(got)).toEqual(take(want));
    } finally {
      t.dispose();
    }
  });

  test.each([[L + 1], [-(L + 2)], [1.5], [100], [-100]])('selectLayer %p is a ConfigError naming it', (select) => {
    const e = errorOf(() => tower({ selectLayer: select, delayLoad: true }));
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain(`select layer ${select} `);
    expect(e.message).toContain(`${L + 1} hidden states`);
  });

  test('a bad index inside a list of layers is rejected too', () => {
    const e = errorOf(() => tower({ selectLayer: [-1, L + 1], delayLoad: true }));
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain(`select layer ${L + 1} `);
  });
});

describe('select_feature', () => {
  test("'patch' drops CLS ([B, N, D]), 'cls_patch' keeps it ([B, N+1, D])", () => {
    const patch = tower({ selectLayer: -2, selectFeature: 'patch' });
    const clsPatch = tower({ selectLayer: -2, selectFeature: 'cls_patch' });
    try {
      expect(patch.numPatches).toBe(N);
      const p = patch.forward(x);
      const c = clsPatch.forward(x);
      expect(p.shape).toEqual([2, patch.numPatches, D]);
      expect(c.shape).toEqual([2, patch.numPatches + 1, D]);
      // cls_patch row 0 is the CLS token of hidden_states[-2]; rows 1.. are the patch features.
      const cls = tf.tidy(() => tf.slice(c, [0, 0, 0], [2, 1, D]));
      expect(take(cls)).toEqual(take(tf.slice(full[2], [0, 0, 0], [2, 1, D])));
      expect(sliceTokens(c, 1)).toEqual(take(p));
      c.dispose();
    } finally {
      patch.dispose();
      clsPatch.dispose();
    }
  });

  test('featureSelect on a full hidden-state list matches forward', () => {
    for (const selectFeature of ['patch', 'cls_patch'] as const) {
      const t = tower({ selectLayer: -2, selectFeature, delayLoad: true });
      const fromList = t.featureSelect(full);
      expect(take(fromList)).toEqual(
        selectFeature === 'patch' ? sliceTokens(full[2], 1) : Float32Array.from(full[2].dataSync()),
      );
    }
    expect(full.every((h) => !h.isDisposed)).toBe(true); // featureSelect must not free its input
  });

  test.each(['cls', 'full', 'default', '', 'PATCH'])(
    'selectFeature %p is an "Unexpected select feature" error',
    (bad) => {
      const e = errorOf(() => tower({ selectFeature: bad as never, delayLoad: true }));
      expect(e).toBeInstanceOf(ConfigError);
      expect(e.message).toContain('Unexpected select feature');
      expect(e.message).toContain(bad);
    },
  );
});

describe('forward on a list of images', () => {
  test('each [C, H, W] image gives a [1, N, D] equal to its row of the batched forward', () => {
    const t = tower({ selectLayer: -2, selectFeature: 'patch' });
    try {
      const img0 = tf.tidy(() => tf.reshape<tf.Rank.R3>(tf.slice(x, [0, 0, 0, 0], [1, 3, 56, 56]), [3, 56, 56]));
      const img1 = tf.tidy(() => tf.reshape<tf.Rank.R3>(tf.slice(x, [1, 0, 0, 0], [1, 3, 56, 56]), [3, 56, 56]));
      const before = tf.memory().numTensors;
      const list = t.forward([img0, img1]);
      expect(tf.memory().numTensors).toBe(before + 2); // just the two outputs
      expect(Array.isArray(list)).toBe(true);
      expect(list).toHaveLength(2);
      const batched = t.forward(x);
      list.forEach((f, i) => {
        expect(f.shape).toEqual([1, N, D]);
        const row = take(tf.slice(batched, [i, 0, 0], [1, N, D]));
        expect(maxAbsDiff(take(f), row)).toBeLessThanOrEqual(1e-6);
      });
      // and equal to hidden_states[-2] of the full forward, CLS dropped
      const want = sliceTokens(full[2], 1);
      expect(maxAbsDiff(take(batched), want)).toBeLessThanOrEqual(1e-6);
      expect(img0.isDisposed || img1.isDisposed).toBe(false); // the caller's images are left alone
      tf.dispose([img0, img1]);
    } finally {
      t.dispose();
    }
  });
});

describe('delay_load', () => {
  test('config without weights, then loadModel once; a second loadModel warns and skips', () => {
    const warnings: string[] = [];
    const before = tf.memory().numTensors;
    const t = tower({ delayLoad: true, warn: (m) => warnings.push(m) });
    try {
      expect(tf.memory().numTensors).toBe(before);
      expect(t.isLoaded).toBe(false);
      expect(t.hiddenSize).toBe(D);
      expect(t.numPatchesPerSide).toBe(4);
      expect(t.numPatches).toBe(N);
      expect(t.config.imageSize).toBe(56);
      expect(t.config.patchSize).toBe(14);
      expect(t.config.numHiddenLayers).toBe(L);
      const e = errorOf(() => t.visionModel);
      expect(e).toBeInstanceOf(ConfigError);
      expect(e.message).toMatch(/not loaded/);
      expect(e.message).toContain('loadModel()');
      expect(e.message).toContain(TOWER);
      expect(() => t.forward(x)).toThrow(/not loaded/);
      expect(tf.memory().numTensors).toBe(before);

      t.loadModel();
      expect(t.isLoaded).toBe(true);
      const model = t.visionModel;
      const numParams = [...namedParams(model)].length;
      expect(numParams).toBe(5 + 16 * L + 2); // embeddings 3 + pre_layrnorm 2, 16 per layer, post_layernorm 2
      const numVariables = countVariables(model); // more: per-head / per-block derived layouts
      expect(tf.memory().numTensors).toBe(before + numVariables);
      expect(warnings).toEqual([]);
      const got = t.forward(x);
      expect(take(got)).toEqual(sliceTokens(full[2], 1)); // the real weights, default select layer -2 / patch

      t.loadModel();
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain('already loaded');
      expect(t.visionModel).toBe(model); // not rebuilt
      expect(tf.memory().numTensors).toBe(before + numVariables); // not reloaded
    } finally {
      t.dispose();
    }
    expect(t.isLoaded).toBe(false);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('dummy_feature and num_patches', () => {
  test('dummyFeature is zeros [1, hidden_size]', () => {
    const t = tower({ delayLoad: true });
    const dummy = t.dummyFeature;
    expect(dummy.shape).toEqual([1, D]);
    expect(dummy.dtype).toBe('float32');
    expect(Array.from(take(dummy))).toEqual(new Array(D).fill(0));
  });

  test.each([
    ['tiny_llava_linear_sel-1_patch/clip_tower', 56, 14, 16],
    ['tiny_clip_full_layout_f32/model', 28, 14, 4],
    ['vitl14_336_generated_sel-2_patch/model', 336, 14, 576],
  ])('%s: numPatches = (image_size / patch_size)^2', (dir, imageSize, patchSize, patches) => {
    const t = new CLIPVisionTower(path.join(CASES, dir), { delayLoad: true });
    expect(t.config.imageSize).toBe(imageSize);
    expect(t.config.patchSize).toBe(patchSize);
    expect(t.numPatchesPerSide).toBe(imageSize / patchSize);
    expect(t.numPatches).toBe(patches);
  });
});

describe('the tower is frozen, the projector trains', () => {
  test('weights flags, and variableGrads of a loss on projector(tower(x)) reach only the projector', () => {
    const t = tower({ selectLayer: -2, selectFeature: 'patch' });
    try {
      const vm = t.visionModel.visionModel;
      expect(vm.weights.length).toBe(countVariables(t.visionModel));
      expect(vm.weights.every((w) => w.trainable === false)).toBe(true);
      expect(vm.trainableWeights).toHaveLength(0);
      expect(vm.trainable).toBe(false);
      for (const layer of vm.layers) expect(layer.trainableWeights).toHaveLength(0);

      const projector = new Projector({ type: 'mlp2x_gelu', inFeatures: D, outFeatures: 8 });
      for (const [i, w] of projector.weights.entries()) {
        const value = tf.randomNormal(w.shape as number[], 0, 0.1, 'float32', 99 + i);
        w.write(value);
        value.dispose();
      }
      expect(projector.weights).toHaveLength(4);
      expect(projector.weights.every((w) => w.trainable)).toBe(true);
      expect(projector.trainableWeights).toHaveLength(4);

      // loss = sum(projector(features)): d loss / d (2.bias) is the number of feature rows, 2 images x 16.
      const { value, grads } = tf.variableGrads(() => tf.sum<tf.Scalar>(projector.call(t.forward(x))));
      const names = projector.trainableWeights.map((w) => w.name).sort();
      expect(Object.keys(grads).sort()).toEqual(names);
      const towerNames = new Set(vm.weights.map((w) => w.name));
      expect(Object.keys(grads).some((n) => towerNames.has(n))).toBe(false);
      const bias2 = projector.linears[1].bias!;
      expect(Array.from(grads[bias2.name].dataSync())).toEqual(new Array(8).fill(2 * N));
      for (const g of Object.values(grads))
        expect(maxAbsDiff(g.dataSync(), new Float32Array(g.size))).toBeGreaterThan(0);
      tf.dispose([value, ...Object.values(grads)]);
      for (const w of projector.weights) w.dispose();
    } finally {
      t.dispose();
    }
  });

  test('LlavaVision.load: frozen tower, trainable projector', async () => {
    const model = await LlavaVision.load(path.join(CASE, 'llava'), { log: null, visionTower: TOWER, threads: 1 }); // the tower's layers on this thread, to look at
    expect(model.tower.selectLayers).toEqual([-1]);
    try {
      expect(model.tower.selectFeature).toBe('patch');
      expect(model.tower.visionModel.visionModel.trainableWeights).toHaveLength(0);
      expect(model.tower.visionModel.visionModel.weights.every((w) => !w.trainable)).toBe(true);
      expect(model.projector!.type).toBe('linear');
      expect(model.projector!.trainableWeights).toHaveLength(2);
    } finally {
      model.dispose();
    }
  });
});

describe('projector types (build_vision_projector)', () => {
  const make = (type: string, extra: Partial<ProjectorConfig> = {}) =>
    new Projector({ type, inFeatures: 64, outFeatures: 48, ...extra });
  const shapes = (p: Projector) => Object.fromEntries([...namedParams(p)].map(([k, v]) => [k, v.checkpointShape]));
  const free = (p: Projector) => p.weights.forEach((w) => w.dispose());

  test('mlp2x_gelu: Linear at checkpoint indices 0 and 2', () => {
    const p = make('mlp2x_gelu');
    expect(shapes(p)).toEqual({ '0.weight': [48, 64], '0.bias': [48], '2.weight': [48, 48], '2.bias': [48] });
    expect(p.linears).toHaveLength(2);
    free(p);
  });

  test('mlp3x_gelu: Linear at 0, 2, 4', () => {
    const p = make('mlp3x_gelu');
    expect(shapes(p)).toEqual({
      '0.weight': [48, 64],
      '0.bias': [48],
      '2.weight': [48, 48],
      '2.bias': [48],
      '4.weight': [48, 48],
      '4.bias': [48],
    });
    free(p);
  });

  test('linear: a bare nn.Linear, keys weight and bias', () => {
    const p = make('linear');
    expect(shapes(p)).toEqual({ weight: [48, 64], bias: [48] });
    free(p);
  });

  test('identity: no weights, returns its input values', () => {
    const before = tf.memory().numTensors;
    const p = make('identity');
    expect([...namedParams(p)]).toEqual([]);
    expect(p.weights).toHaveLength(0);
    expect(tf.memory().numTensors).toBe(before);
    expect(p.outFeatures).toBe(64);
    const input = tf.randomNormal([2, 5, 64], 0, 1, 'float32', 7);
    const out = p.call(input);
    expect(out.shape).toEqual([2, 5, 64]);
    expect(take(out)).toEqual(take(input));
  });

  test.each(['mlp2x_relu', 'foo', 'mlp0x_gelu', 'mlp_gelu', 'Linear', ''])(
    'unknown type %p is a ConfigError listing the supported ones',
    (type) => {
      const before = tf.memory().numTensors;
      const e = errorOf(() => make(type));
      expect(e).toBeInstanceOf(ConfigError);
      expect(e.message).toContain(`Unknown projector type: ${type}`);
      expect(e.message).toContain('linear');
      expect(e.message).toContain('mlp{N}x_gelu');
      expect(e.message).toContain('identity');
      expect(tf.memory().numTensors).toBe(before);
    },
  );

  test('input of the wrong width is a ConfigError naming both widths', () => {
    const p = make('linear');
    const input = tf.zeros([1, 3, 32]);
    expect(() => p.call(input)).toThrow(/width 64.*got 32/);
    input.dispose();
    free(p);
  });

  test('mlp2x_gelu uses exact (erf) GELU: equal to a float64 computation within 1e-6 relative', () => {
    const [inF, outF, rows] = [6, 5, 7];
    // Hand-made weights exactly representable in float32 (multiples of 1/64), spread so the hidden
    // pre-activations cover roughly [-4, 4] where erf-GELU, tanh-GELU and quick_gelu all differ.
    const w0 = Array.from({ length: outF * inF }, (_, i) => (((i * 37) % 29) - 14) / 16); // [out, in]
    const b0 = Array.from({ length: outF }, (_, i) => (i - 2) / 8);
    const w2 = Array.from({ length: outF * outF }, (_, i) => (((i * 11) % 13) - 6) / 32);
    const b2 = Array.from({ length: outF }, (_, i) => (3 - i) / 64);
    const xs = Array.from({ length: rows * inF }, (_, i) => (((i * 23) % 31) - 15) / 8);

    const p = new Projector({ type: 'mlp2x_gelu', inFeatures: inF, outFeatures: outF });
    const [lin0, lin2] = p.linears;
    const setLinear = (lin: typeof lin0, w: number[], b: number[], nIn: number) => {
      // our kernel is [in, out]: the transpose of torch's [out, in] weight
      const kernel = new Float32Array(nIn * outF);
      for (let o = 0; o < outF; o++) for (let i = 0; i < nIn; i++) kernel[i * outF + o] = w[o * nIn + i];
      const values = [tf.tensor2d(kernel, [nIn, outF]), tf.tensor1d(b)];
      lin.kernel.write(values[0]);
      lin.bias!.write(values[1]);
      tf.dispose(values);
    };
    setLinear(lin0, w0, b0, inF);
    setLinear(lin2, w2, b2, outF);

    const gelu = (v: number) => v * 0.5 * (1 + erf(v / Math.SQRT2));
    const want: number[] = [];
    const pre: number[] = [];
    for (let r = 0; r < rows; r++) {
      const h: number[] = [];
      for (let o = 0; o < outF; o++) {
        let s = b0[o];
        for (let i = 0; i < inF; i++) s += w0[o * inF + i] * xs[r * inF + i];
        pre.push(s);
        h.push(gelu(s));
      }
      for (let o = 0; o < outF; o++) {
        let s = b2[o];
        for (let i = 0; i < outF; i++) s += w2[o * outF + i] * h[i];
        want.push(s);
      }
    }
    // the test's inputs do reach the region where the GELU variants disagree
    expect(Math.max(...pre)).toBeGreaterThan(1.5);
    expect(Math.min(...pre)).toBeLessThan(-1.5);

    const input = tf.tensor3d(xs, [1, rows, inF]);
    const got = take(p.call(input));
    input.dispose();
    const scale = Math.max(...want.map(Math.abs));
    const rel = maxAbsDiff(got, want) / scale;
    expect(rel).toBeLessThanOrEqual(1e-6);

    // sanity: a tanh-approximated GELU would be caught at this tolerance
    const tanhGelu = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
    const gap = Math.max(...pre.map((v) => Math.abs(tanhGelu(v) - gelu(v))));
    expect(gap).toBeGreaterThan(1e-5);
    free(p);
  });
});

describe('HF CLIPVisionConfig defaults and config shapes', () => {
  const HF_DEFAULTS = {
    hiddenSize: 768,
    intermediateSize: 3072,
    projectionDim: 512,
    numHiddenLayers: 12,
    numAttentionHeads: 12,
    numChannels: 3,
    imageSize: 224,
    patchSize: 32,
    hiddenAct: 'quick_gelu',
    layerNormEps: 1e-5,
  };

  test('clip_vision_model with no fields takes every HF default', () => {
    expect(clipVisionConfigFromJson({ model_type: 'clip_vision_model' })).toEqual(HF_DEFAULTS);
  });

  test('clip: the nested vision_config, missing keys defaulted, text_config ignored', () => {
    const cfg = clipVisionConfigFromJson({
      model_type: 'clip',
      projection_dim: 768,
      text_config: { hidden_size: 768, hidden_act: 'gelu_but_text' },
      vision_config: {
        hidden_size: 1024,
        intermediate_size: 4096,
        num_hidden_layers: 24,
        num_attention_heads: 16,
        image_size: 336,
        patch_size: 14,
      },
    });
    expect(cfg).toEqual({
      ...HF_DEFAULTS,
      hiddenSize: 1024,
      intermediateSize: 4096,
      numHiddenLayers: 24,
      numAttentionHeads: 16,
      imageSize: 336,
      patchSize: 14,
    });
  });

  test('llava-hf: vision_config of a llava config', () => {
    const cfg = clipVisionConfigFromJson({
      model_type: 'llava',
      vision_feature_layer: -2,
      text_config: { model_type: 'llama', hidden_size: 4096 },
      vision_config: {
        model_type: 'clip_vision_model',
        hidden_size: 1024,
        image_size: 336,
        patch_size: 14,
        num_hidden_layers: 24,
        num_attention_heads: 16,
        intermediate_size: 4096,
        projection_dim: 768,
        hidden_act: 'quick_gelu',
        layer_norm_eps: 1e-5,
      },
    });
    expect(cfg).toEqual({
      ...HF_DEFAULTS,
      hiddenSize: 1024,
      imageSize: 336,
      patchSize: 14,
      numHiddenLayers: 24,
      numAttentionHeads: 16,
      intermediateSize: 4096,
      projectionDim: 768,
    });
  });

  test('the fixture configs parse to their values', () => {
    const t = new CLIPVisionTower(path.join(CASES, 'tiny_clip_full_layout_f32', 'model'), { delayLoad: true });
    expect(t.config).toEqual({
      ...HF_DEFAULTS,
      hiddenSize: 32,
      intermediateSize: 64,
      projectionDim: 16,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      imageSize: 28,
      patchSize: 14,
    });
  });

  test.each([
    [{ model_type: 'clip_vision_model', hidden_act: 'relu' }, 'relu'],
    [{ model_type: 'clip', vision_config: { hidden_act: 'swish' } }, 'swish'],
    [{ model_type: 'llava', vision_config: { hidden_act: 'silu' } }, 'silu'],
  ])('bad hidden_act is a ConfigError naming it (%#)', (json, act) => {
    const e = errorOf(() => clipVisionConfigFromJson(json, 'some/config.json'));
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain(`hidden_act "${act}"`);
    expect(e.message).toContain('some/config.json');
    expect(e.message).toContain('quick_gelu');
  });

  test('gelu variants HF allows are accepted', () => {
    for (const act of ['gelu', 'gelu_new', 'gelu_pytorch_tanh', 'quick_gelu']) {
      expect(clipVisionConfigFromJson({ model_type: 'clip_vision_model', hidden_act: act }).hiddenAct).toBe(act);
    }
  });
});
