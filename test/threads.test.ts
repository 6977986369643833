/**
 * The tensor-parallel forward (LoadOptions.threads, issue 10): parity at 1–4 threads (more threads
 * than this machine's cores is fine), outputs bit-identical from run to run, no weight held twice,
 * stable tensor counts in every thread, threads ended by dispose, a dead thread failing the call.
 */
import * as path from 'path';
import { spawnSync } from 'child_process';
import * as tf from '../src/tf';
import { LlavaVision } from '../src/api/llava_vision';
import { BackendError, ConfigError } from '../src/errors';
import { ThreadMemory } from '../src/parallel/tensor/protocol';
import { ShardTeam } from '../src/parallel/tensor/team';
import { requestedThreads, THREADS_ENV_VAR } from '../src/parallel/thread_count';
import { inspectCheckpoint } from '../src/loading/inspect';
import { describeOnBackend } from './helpers/backend_gate';
import { expectParity, goldenPixelTensor, loadCase } from './helpers/golden';
import { isolatedTempDir } from './helpers/isolation';
import { runCli } from './helpers/cli';
import { SafetensorsFile } from '../src/io/safetensors';

const pad2 = (k: number) => String(k).padStart(2, '0');
const DEMO = path.join(__dirname, '..', 'weights', 'demo');

const bits = (a: Float32Array | Int32Array | Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** Per-thread memory figures of a sharded model (ranks 1..N-1). */
function threadMemory(model: LlavaVision): ThreadMemory[] {
  return model.shardRuntime!.team.request<ThreadMemory>(() => ({ kind: 'memory' }));
}

// The sharded path runs on wasm only (other backends use one thread).
const onWasm = process.env.LLAVA_VISION_BACKEND === undefined || process.env.LLAVA_VISION_BACKEND === 'wasm';
const describeSharded = onWasm ? describeOnBackend : describe.skip;

describeSharded.each([1, 2, 3, 4])('%i thread(s)', (threads) => {
  test('LLaVA-1.6 (anyres, mlp2x_gelu projector sharded too): features and projection within the parity bound, identical on a second run', async () => {
    const gc = loadCase('tiny_llava_anyres_spatial_unpad');
    const model = await LlavaVision.load(path.join(gc.dir, 'llava'), {
      visionTower: path.join(gc.dir, 'clip_tower'),
      log: null,
      threads,
    });
    try {
      expect(model.threads).toBe(threads);
      for (const img of gc.json.images) {
        const x = goldenPixelTensor(gc, img.id);
        const out = model.encode(x, { outputs: ['features', 'projected'] });
        const [features, projected] = [await out.features!.data(), await out.projected!.data()] as Float32Array[];
        expectParity(gc, `${img.id}.image_features`, features, out.features!.shape);
        expectParity(gc, `${img.id}.projected`, projected, out.projected!.shape);
        const again = model.encode(x, { outputs: ['projected'] });
        expect(bits((await again.projected!.data()) as Float32Array).equals(bits(projected))).toBe(true);
        tf.dispose([x, out.features!, out.projected!, again.projected!]);
      }
    } finally {
      model.dispose();
    }
  });

  test("CLIP with massive activations: every hidden state and pooler_output within 3x PyTorch fp32's error", async () => {
    const gc = loadCase('tiny_clip_massive_activations');
    const model = await LlavaVision.load(path.join(gc.dir, 'model'), { log: null, threads });
    try {
      expect(model.threads).toBe(threads);
      for (const img of gc.json.images) {
        const x = goldenPixelTensor(gc, img.id);
        const out = model.encode(x, { outputs: ['hidden_states', 'pooler_output'] });
        for (const [k, h] of out.hiddenStates!.entries()) {
          expect(
            expectParity(gc, `${img.id}.hidden_states.${pad2(k)}`, await h.data(), h.shape.slice(1)),
          ).toBeLessThanOrEqual(3);
        }
        expect(
          expectParity(gc, `${img.id}.pooler_output`, await out.poolerOutput!.data(), out.poolerOutput!.shape.slice(1)),
        ).toBeLessThanOrEqual(3);
        tf.dispose([x, ...out.hiddenStates!, out.poolerOutput!]);
      }
    } finally {
      model.dispose();
    }
  });
});

describeSharded('sharded model', () => {
  test('each weight is held once in the shards (they add up to the single-thread model), plus the trainable projector on this thread', async () => {
    const gc = loadCase('tiny_llava_anyres_spatial_unpad');
    const load = (threads: number) =>
      LlavaVision.load(path.join(gc.dir, 'llava'), {
        visionTower: path.join(gc.dir, 'clip_tower'),
        log: null,
        threads,
      });
    const one = await load(1);
    const whole = [...one.tower.visionModel.visionModel.weights, ...one.projector!.weights].reduce(
      (s, w) => s + w.read().size,
      0,
    );
    const projectorSize = one.projector!.weights.reduce((s, w) => s + w.read().size, 0);
    one.dispose();
    const three = await load(3);
    try {
      const runtime = three.shardRuntime!;
      const hostVectors =
        three.tower.config.numHiddenLayers * 6 * three.tower.config.hiddenSize + 4 * three.tower.config.hiddenSize; // LayerNorms, out_proj and fc2 biases
      const projectorBias = three.projectedWidth!;
      const own = three.tower.shardedModel!.weights().reduce((s, w) => s + w.size, 0);
      const others = threadMemory(three).reduce((s, m) => s + m.weightBytes / 4, 0);
      expect(own + others + hostVectors + projectorBias).toBe(whole);
      expect(runtime.threads).toBe(3);
      // The projector that tfjs trains (its variables must exist before a first optimizer step) is whole on this thread.
      const projector = three.projector!;
      expect(projector.trainableWeights.reduce((n, w) => n + w.read().size, 0)).toBe(projectorSize);
    } finally {
      three.dispose();
    }
  });

  test('tf.memory().numTensors stays the same in every thread over repeated calls', async () => {
    const model = await LlavaVision.load(DEMO, { log: null, threads: 2 });
    try {
      const s = model.tower.config.imageSize;
      const x = tf.randomUniform<tf.Rank.R4>([1, 3, s, s], -1, 1, 'float32', 3);
      const run = () => {
        const out = model.encode(x, { outputs: ['projected', 'hidden_states', 'pooler_output'] });
        tf.dispose([out.projected!, ...out.hiddenStates!, out.poolerOutput!]);
      };
      run();
      const before = [tf.memory().numTensors, ...threadMemory(model).map((m) => m.numTensors)];
      for (let i = 0; i < 3; i++) run();
      expect([tf.memory().numTensors, ...threadMemory(model).map((m) => m.numTensors)]).toEqual(before);
      x.dispose();
    } finally {
      model.dispose();
    }
  });

  test('dispose ends the threads; the model then says it was disposed', async () => {
    const model = await LlavaVision.load(DEMO, { log: null, threads: 3 });
    const runtime = model.shardRuntime!;
    model.dispose();
    await runtime.team.whenEnded();
    const s = model.tower.config.imageSize;
    const x = tf.zeros<tf.Rank.R4>([1, 3, s, s]);
    expect(() => model.encode(x)).toThrow(ConfigError);
    x.dispose();
  });

  test('the trainable projector on this thread is the one the shards were cut from', async () => {
    const gc = loadCase('tiny_llava_anyres_spatial_unpad');
    const load = (threads: number) =>
      LlavaVision.load(path.join(gc.dir, 'llava'), {
        visionTower: path.join(gc.dir, 'clip_tower'),
        log: null,
        threads,
      });
    const [one, two] = [await load(1), await load(2)];
    try {
      const values = (m: LlavaVision) => m.projector!.weights.map((w) => Array.from(w.read().dataSync()));
      expect(values(two)).toEqual(values(one));
      expect(two.projector!.trainableWeights.length).toBe(one.projector!.trainableWeights.length);
      const x = goldenPixelTensor(gc, gc.json.images[0].id);
      const [a, b] = [one.encode(x, { outputs: ['projected'] }), two.encode(x, { outputs: ['projected'] })];
      expect(tf.max(tf.abs(tf.sub(a.projected!, b.projected!))).dataSync()[0]).toBeLessThan(1e-5);
      tf.dispose([x, a.projected!, b.projected!]);
    } finally {
      one.dispose();
      two.dispose();
    }
  });

  test('a thread that dies fails the call with a BackendError naming it, and the model stays failed', async () => {
    // The threads run a test entry: the shipped one plus the request that makes a thread die.
    ShardTeam.entry = path.join(__dirname, 'helpers', 'shard_die.js');
    let model: LlavaVision;
    try {
      model = await LlavaVision.load(DEMO, { log: null, threads: 2 });
    } finally {
      ShardTeam.entry = null;
    }
    try {
      model.shardRuntime!.team.request(() => ({ kind: 'dieOnNextStep' }));
      const s = model.tower.config.imageSize;
      const x = tf.zeros<tf.Rank.R4>([1, 3, s, s]);
      expect(() => model.encode(x)).toThrow(/thread 1 of 2 .*(ended|failed)/);
      expect(() => model.encode(x)).toThrow(BackendError);
      x.dispose();
    } finally {
      model.dispose();
    }
  });

  test('a process that never disposes its sharded model still exits', () => {
    const script = `require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'src'))}).LlavaVision.load(${JSON.stringify(DEMO)}, { threads: 2, log: null }).then((m) => console.log('threads', m.threads))`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60000 });
    expect(r.error).toBeUndefined();
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('threads 2');
  });

  test('a failed load ends the threads it started', async () => {
    const gc = loadCase('tiny_llava_anyres_spatial_unpad');
    // A projector file of the wrong width: the tower loads sharded first, then the projector check fails.
    const args = `${JSON.stringify(path.join(gc.dir, 'llava'))}, { visionTower: ${JSON.stringify(path.join(gc.dir, 'clip_tower'))}, threads: 2, log: null, projector: ${JSON.stringify(path.join(DEMO, 'model.safetensors'))} }`;
    await expect(
      LlavaVision.load(path.join(gc.dir, 'llava'), {
        visionTower: path.join(gc.dir, 'clip_tower'),
        log: null,
        threads: 2,
        projector: path.join(DEMO, 'model.safetensors'),
      }),
    ).rejects.toThrow(/mm_projector\.0\.weight" has shape/);
    // In a fresh process, counting the worker threads made and ended.
    const script = `const wt = require('worker_threads'); let made = 0, ended = 0;
      wt.Worker = class extends wt.Worker { constructor(...a) { super(...a); made++; this.on('exit', () => ended++); } };
      require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'src'))}).LlavaVision.load(${args})
        .then(() => console.log('loaded'), () => console.log('failed', made, ended));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60000 });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('failed 1 1');
  });
});

describe('threads option', () => {
  const saved = process.env[THREADS_ENV_VAR];
  afterEach(() => {
    if (saved === undefined) delete process.env[THREADS_ENV_VAR];
    else process.env[THREADS_ENV_VAR] = saved;
  });

  test('the option, else LLAVA_VISION_THREADS, else the available cores; bad values are a ConfigError naming them', () => {
    delete process.env[THREADS_ENV_VAR];
    expect(requestedThreads(3)).toBe(3);
    expect(requestedThreads(undefined)).toBeGreaterThanOrEqual(1);
    process.env[THREADS_ENV_VAR] = '5';
    expect(requestedThreads(undefined)).toBe(5);
    expect(requestedThreads(2)).toBe(2);
    process.env[THREADS_ENV_VAR] = 'many';
    expect(() => requestedThreads(undefined)).toThrow(/LLAVA_VISION_THREADS="many"/);
    expect(() => requestedThreads(0)).toThrow(ConfigError);
    expect(() => requestedThreads(1.5)).toThrow(/threads must be a positive integer/);
  });

  (onWasm ? test : test.skip)('more threads than attention heads: one thread per head', async () => {
    const model = await LlavaVision.load(DEMO, { log: null, threads: 64 });
    try {
      expect(model.threads).toBe(model.tower.config.numAttentionHeads);
    } finally {
      model.dispose();
    }
  });
});

describe('llava-vision encode --threads', () => {
  const tempDir = isolatedTempDir('llava-threads-');
  const CHELSEA = path.join(DEMO, 'images', 'chelsea.png');
  const merged = (file: string) => {
    const st = SafetensorsFile.open(file);
    try {
      return st.readFloat32('images.0.merged');
    } finally {
      st.close();
    }
  };

  (onWasm ? test : test.skip)(
    '1, 2 and 3 threads write the same tokens within float32 rounding; --threads 2 is identical run to run',
    async () => {
      const out = (n: string) => path.join(tempDir(), `t${n}.safetensors`);
      for (const n of ['1', '2', '3', '2b'])
        expect(
          (await runCli(['encode', CHELSEA, '--threads', n.replace('b', ''), '--quiet', '--out', out(n)])).code,
        ).toBe(0);
      const one = merged(out('1'));
      for (const n of ['2', '3']) {
        const other = merged(out(n));
        let worst = 0;
        for (let i = 0; i < one.length; i++) worst = Math.max(worst, Math.abs(other[i] - one[i]));
        expect(worst).toBeLessThan(1e-4);
      }
      expect(bits(merged(out('2b'))).equals(bits(merged(out('2'))))).toBe(true);
    },
  );

  test('--threads 0 and --threads two are usage errors (exit 2) naming the option', async () => {
    for (const bad of ['0', 'two']) {
      const r = await runCli(['encode', CHELSEA, '--threads', bad, '--out', path.join(tempDir(), 'x.safetensors')]);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/--threads/);
    }
  });
});

test('inspect reports how a load would split the model across threads', async () => {
  const saved = process.env[THREADS_ENV_VAR];
  process.env[THREADS_ENV_VAR] = '3';
  try {
    const report = await inspectCheckpoint(DEMO);
    expect(report.threads).toEqual({
      requested: 3,
      from: THREADS_ENV_VAR,
      threads: 3,
      heads: [2, 1, 1],
      features: [86, 85, 85],
      projectorHidden: [43, 43, 42],
    });
    process.env[THREADS_ENV_VAR] = '1';
    expect((await inspectCheckpoint(DEMO)).threads).toMatchObject({ threads: 1, heads: [4], projectorHidden: null });
  } finally {
    if (saved === undefined) delete process.env[THREADS_ENV_VAR];
    else process.env[THREADS_ENV_VAR] = saved;
  }
});
