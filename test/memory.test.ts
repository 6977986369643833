/**
 * Tensor bookkeeping: encoding repeatedly with the outputs disposed leaves tf.memory() unchanged,
 * and `dispose()` frees every tensor a loaded model holds.
 */
import * as path from 'path';
import * as tf from '../src/tf';
import { EncodeResult, LlavaVision, LoadOptions, OutputName } from '../src/api/llava_vision';
import { initBackend } from '../src/backend';
import { countVariables } from '../src/model/module';
import { CASES } from './helpers/golden';

const REPEATS = 20;

const llava = (name: string) =>
  [path.join(CASES, name, 'llava'), { visionTower: path.join(CASES, name, 'clip_tower') }] as const;
const MODELS: [string, string, LoadOptions][] = [
  ['llava linear', ...llava('tiny_llava_linear_sel-1_patch')],
  ['llava mlp3x sharded', ...llava('tiny_llava_mlp3x_sel0_clspatch_pad')],
  ['llava identity', ...llava('tiny_llava_identity_sel-2')],
  ['llava anyres (image_newline)', ...llava('tiny_llava_anyres_spatial_unpad')],
  ['clip full', path.join(CASES, 'tiny_clip_full_layout_f32', 'model'), {}],
  ['clip vision f16', path.join(CASES, 'tiny_clip_vision_only_f16', 'model'), {}],
  ['llava-hf bf16', path.join(CASES, 'tiny_llavahf_model_prefixed_default_bf16', 'model'), {}],
  ['llava-hf legacy', path.join(CASES, 'tiny_llavahf_legacy_keys_full_f32', 'model'), {}],
  // The tower and mlp2x projector sharded across 3 threads (LoadOptions.threads).
  [
    'llava anyres (image_newline) on 3 threads',
    path.join(CASES, 'tiny_llava_anyres_spatial_unpad', 'llava'),
    { visionTower: path.join(CASES, 'tiny_llava_anyres_spatial_unpad', 'clip_tower'), threads: 3 },
  ],
];

beforeAll(async () => {
  await initBackend({ log: null });
});

function all(r: EncodeResult): tf.Tensor[] {
  const maybe: (tf.Tensor | undefined)[] = [...(r.hiddenStates ?? []), r.features, r.projected, r.poolerOutput];
  return maybe.filter((t): t is tf.Tensor => t !== undefined);
}

function pixels(model: LlavaVision, batch: number, seed: number): tf.Tensor4D {
  const s = model.tower.config.imageSize;
  return tf.randomUniform<tf.Rank.R4>([batch, 3, s, s], -1.5, 1.5, 'float32', seed);
}

describe.each(MODELS)('%s', (label, dir, options) => {
  let model: LlavaVision;
  let baseline: number; // before load
  beforeAll(async () => {
    baseline = tf.memory().numTensors;
    model = await LlavaVision.load(dir, { log: null, threads: 1, ...options });
  });
  afterAll(() => {
    model.dispose();
  });

  test('load creates exactly one tensor per stored variable (+ image_newline)', () => {
    // A parameter kept in a derived layout (per attention head, per MLP block) is several variables.
    // On several threads this thread holds the embeddings and its own shards (tensors of the others are
    // theirs), and the whole projector, the one that trains (LlavaVision.projector).
    const tower =
      model.threads > 1 ? model.tower.shardedModel!.weights().length : countVariables(model.tower.visionModel);
    const variables = tower + (model.projector ? countVariables(model.projector) : 0);
    expect(tf.memory().numTensors - baseline).toBe(variables + (model.imageNewline ? 1 : 0));
    expect(model.imageNewline !== null).toBe(label.includes('image_newline'));
    expect(model.projectorConfig !== null).toBe(!label.startsWith('clip'));
  });

  const outputSets: OutputName[][] = [
    ['projected'],
    ['features'],
    ['hidden_states', 'pooler_output'],
    ['hidden_states', 'features', 'projected', 'pooler_output'],
  ];
  test.each(outputSets.map((o) => [o.join('+'), o] as const))(
    `%s: ${REPEATS} encodes with outputs disposed leak nothing`,
    (_name, wanted) => {
      const x = pixels(model, 2, 5);
      const before = tf.memory().numTensors;
      if (!model.projectorConfig && wanted.includes('projected')) {
        // no projector (CLIP): asking for 'projected' is an error, and an error leaks nothing
        for (let i = 0; i < REPEATS; i++)
          expect(() => model.encode(x, { outputs: wanted })).toThrow(/needs a projector/);
        expect(tf.memory().numTensors).toBe(before);
        x.dispose();
        return;
      }
      let expectedCount = -1;
      for (let i = 0; i < REPEATS; i++) {
        const out = model.encode(x, { outputs: wanted });
        const tensors = all(out);
        // what was asked for, and nothing else
        if (expectedCount < 0) expectedCount = tensors.length;
        expect(tensors.length).toBe(expectedCount);
        expect(tf.memory().numTensors).toBe(before + expectedCount);
        tf.dispose(tensors);
        expect(tf.memory().numTensors).toBe(before);
      }
      const L = model.tower.config.numHiddenLayers;
      const want =
        (wanted.includes('hidden_states') ? L + 1 : 0) +
        (['features', 'projected', 'pooler_output'] as const).filter((o) => wanted.includes(o)).length;
      expect(expectedCount).toBe(want);
      x.dispose();
      expect(tf.memory().numTensors).toBe(before - 1);
    },
  );

  test(`tower.forward on a batch (no tidy around it): ${REPEATS} calls with outputs disposed leak nothing`, () => {
    const x = pixels(model, 2, 9);
    const before = tf.memory().numTensors;
    for (let i = 0; i < REPEATS; i++) {
      const out = model.tower.forward(x);
      expect(tf.memory().numTensors).toBe(before + 1);
      out.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
  });

  test(`list forward: ${REPEATS} calls with outputs disposed leak nothing, inputs untouched`, () => {
    const imgs = [0, 1].map((i) => tf.tidy(() => tf.squeeze<tf.Tensor3D>(pixels(model, 1, 11 + i), [0])));
    const before = tf.memory().numTensors;
    for (let i = 0; i < REPEATS; i++) {
      const out = model.tower.forward(imgs);
      expect(out).toHaveLength(2);
      expect(tf.memory().numTensors).toBe(before + 2);
      tf.dispose(out);
    }
    expect(tf.memory().numTensors).toBe(before);
    expect(imgs.some((t) => t.isDisposed)).toBe(false);
    tf.dispose(imgs);
  });

  test('a failing encode (wrong image size) leaks nothing', () => {
    const s = model.tower.config.imageSize;
    const x = tf.zeros<tf.Rank.R4>([1, 3, s + model.tower.config.patchSize, s]);
    const before = tf.memory().numTensors;
    for (const outputs of [undefined, ['hidden_states'] as OutputName[]]) {
      expect(() => model.encode(x, { outputs })).toThrow(/image_size/);
      expect(tf.memory().numTensors).toBe(before);
    }
    if (!model.projectorConfig) {
      expect(() => model.encode(x, { outputs: ['projected'] })).toThrow(/needs a projector/);
      expect(tf.memory().numTensors).toBe(before);
    }
    x.dispose();
  });
});

describe('dispose', () => {
  test.each(MODELS)('%s: dispose() returns numTensors to its value before load', async (_label, dir, options) => {
    const before = tf.memory().numTensors;
    const model = await LlavaVision.load(dir, { log: null, ...options });
    try {
      expect(tf.memory().numTensors).toBeGreaterThan(before);
      const x = pixels(model, 1, 3);
      tf.dispose(
        all(
          model.encode(x, {
            outputs: [
              'hidden_states',
              'features',
              'pooler_output',
              ...(model.projectorConfig ? (['projected'] as const) : []),
            ],
          }),
        ),
      );
      x.dispose();
    } finally {
      model.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
    expect(model.tower.isLoaded).toBe(false);
  });

  test('the same model loaded 5 times and disposed: no growth', async () => {
    const [, dir, options] = MODELS[1];
    const before = tf.memory().numTensors;
    const bytes = tf.memory().numBytes;
    for (let i = 0; i < 5; i++) (await LlavaVision.load(dir, { log: null, ...options })).dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(tf.memory().numBytes).toBe(bytes);
  });
});
