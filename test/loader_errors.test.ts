/**
 * Bad checkpoints through `LlavaVision.load`: each failure is the right error class, names the
 * tensor / file / option at fault, and leaves no tensors behind.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '../src/tf';
import { LlavaVision, LoadOptions } from '../src/api/llava_vision';
import { initBackend } from '../src/backend';
import { CheckpointError, ConfigError } from '../src/errors';
import { countVariables, namedParams } from '../src/model/module';
import { SafetensorsFile, TensorToWrite, writeSafetensors } from '../src/io/safetensors';
import { CASES } from './helpers/golden';
import { isolatedTempDir } from './helpers/isolation';
import { JsonObject, editJson, readJson } from './helpers/json';

const LLAVA_CASE = path.join(CASES, 'tiny_llava_linear_sel-1_patch'); // tower hidden 64 x 3 layers; LLM hidden 48
const TOWER = path.join(LLAVA_CASE, 'clip_tower');
const LLAVA = path.join(LLAVA_CASE, 'llava');
const MLP3 = path.join(CASES, 'tiny_llava_mlp3x_sel0_clspatch_pad'); // sharded llava checkpoint, mlp3x_gelu
const CLIP_FULL = path.join(CASES, 'tiny_clip_full_layout_f32', 'model');

const tmp = isolatedTempDir('loader-errors-');
beforeAll(() => initBackend({ log: null }));

let count = 0;
function copyDir(src: string): string {
  const dst = path.join(tmp(), `m${count++}-${path.basename(src)}`);
  fs.cpSync(src, dst, { recursive: true });
  return dst;
}

/** Rewrites a safetensors file through `edit`, which gets every tensor (raw bytes) by name. */
function rewrite(file: string, edit: (tensors: Record<string, TensorToWrite>) => void): void {
  const st = SafetensorsFile.open(file);
  const tensors: Record<string, TensorToWrite> = {};
  for (const k of st.keys()) tensors[k] = st.read(k);
  const metadata = st.metadata;
  st.close();
  edit(tensors);
  writeSafetensors(file, tensors, metadata);
}

function keysOf(file: string): string[] {
  const st = SafetensorsFile.open(file);
  try {
    return st.keys();
  } finally {
    st.close();
  }
}

const f32 = (shape: number[], fill = 0.5): TensorToWrite => ({
  dtype: 'F32',
  shape,
  data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill),
});

function editConfig(dir: string, edit: (c: JsonObject) => void): void {
  editJson(path.join(dir, 'config.json'), edit);
}

/** The error of a load that must fail, checking that it left tf.memory() as it found it. */
async function failedLoad(dir: string, options: LoadOptions = {}): Promise<Error> {
  const before = tf.memory().numTensors;
  let error: Error | null = null;
  try {
    const model = await LlavaVision.load(dir, { log: null, ...options });
    model.dispose();
  } catch (e) {
    error = e as Error;
  }
  expect(tf.memory().numTensors).toBe(before);
  if (!error) throw new Error(`loading ${dir} was expected to fail`);
  return error;
}

const MISSING = 'vision_model.encoder.layers.1.mlp.fc2.bias';

describe('tower tensors', () => {
  test('a missing tower key is a CheckpointError naming the key and its expected shape (CLIP vision folder)', async () => {
    const dir = copyDir(TOWER);
    rewrite(path.join(dir, 'model.safetensors'), (t) => delete t[MISSING]);
    expect(keysOf(path.join(dir, 'model.safetensors'))).not.toContain(MISSING);
    const e = await failedLoad(dir);
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain(`missing tensor "${MISSING}"`);
    expect(e.message).toContain('expected shape [64]');
    expect(e.message).toContain(dir);
  });

  test('the same through a LLaVA folder whose --vision-tower lacks the key', async () => {
    const tower = copyDir(TOWER);
    rewrite(path.join(tower, 'model.safetensors'), (t) => delete t['vision_model.embeddings.patch_embedding.weight']);
    const e = await failedLoad(LLAVA, { visionTower: tower });
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain('"vision_model.embeddings.patch_embedding.weight"');
    expect(e.message).toContain('expected shape [64, 3, 14, 14]');
  });

  test('a tensor of the wrong shape names the key, the expected and the found shapes', async () => {
    const dir = copyDir(TOWER);
    rewrite(path.join(dir, 'model.safetensors'), (t) => (t[MISSING] = f32([32])));
    const e = await failedLoad(dir);
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain(`"${MISSING}"`);
    expect(e.message).toContain('has shape [32]');
    expect(e.message).toContain('expects [64]');
  });

  test('a 2-D weight transposed ([in, out] instead of [out, in]) is caught too', async () => {
    const dir = copyDir(TOWER);
    const key = 'vision_model.encoder.layers.2.mlp.fc1.weight'; // torch [128, 64]
    rewrite(path.join(dir, 'model.safetensors'), (t) => (t[key] = f32([64, 128])));
    const e = await failedLoad(dir);
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain(`"${key}" has shape [64, 128] but the config expects [128, 64]`);
  });

  test('config hidden_size disagreeing with every tensor is named at the first tensor', async () => {
    const dir = copyDir(TOWER);
    editConfig(dir, (c) => (c.hidden_size = 32));
    const e = await failedLoad(dir);
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toMatch(/tensor "vision_model\.[^"]+" has shape \[[\d, ]+\] but the config expects \[[\d, ]+\]/);
  });

  test('the LLaVA-1.6 fine-tuned tower copy inside the LLaVA checkpoint is checked as strictly', async () => {
    const dir = copyDir(LLAVA);
    const prefix = 'model.vision_tower.vision_tower.';
    const towerFile = SafetensorsFile.open(path.join(TOWER, 'model.safetensors'));
    const towerTensors = Object.fromEntries(towerFile.keys().map((k) => [prefix + k, towerFile.read(k)]));
    towerFile.close();
    rewrite(path.join(dir, 'model.safetensors'), (t) => {
      Object.assign(t, towerTensors);
      delete t[prefix + MISSING];
    });
    const e = await failedLoad(dir, { visionTower: TOWER });
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain(`missing tensor "${prefix}${MISSING}" (expected shape [64])`);
  });
});

describe('config files', () => {
  test('config.json missing: ConfigError naming the file', async () => {
    const dir = copyDir(TOWER);
    fs.rmSync(path.join(dir, 'config.json'));
    const e = await failedLoad(dir);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain(path.join(dir, 'config.json'));
    expect(e.message).toContain('not found');
  });

  test('config.json not valid JSON: ConfigError naming the file', async () => {
    const dir = copyDir(TOWER);
    fs.writeFileSync(path.join(dir, 'config.json'), '{"hidden_size": 64,');
    const e = await failedLoad(dir);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain(path.join(dir, 'config.json'));
    expect(e.message).toMatch(/not valid JSON/);
  });

  test('config.json a JSON array: ConfigError naming the file', async () => {
    const dir = copyDir(TOWER);
    fs.writeFileSync(path.join(dir, 'config.json'), '[1, 2]');
    const e = await failedLoad(dir);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain(path.join(dir, 'config.json'));
  });

  test("the vision tower folder's config.json missing: ConfigError naming it", async () => {
    const tower = copyDir(TOWER);
    fs.rmSync(path.join(tower, 'config.json'));
    const e = await failedLoad(LLAVA, { visionTower: tower });
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain(path.join(tower, 'config.json'));
  });

  test("the vision tower folder's config.json invalid: ConfigError naming it", async () => {
    const tower = copyDir(TOWER);
    fs.writeFileSync(path.join(tower, 'config.json'), 'not json');
    const e = await failedLoad(LLAVA, { visionTower: tower });
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain(path.join(tower, 'config.json'));
    expect(e.message).toContain('not valid JSON');
  });

  test('an unknown model type is a ConfigError naming the file and model_type', async () => {
    const dir = copyDir(TOWER);
    editConfig(dir, (c) => (c.model_type = 'siglip_vision_model'));
    const e = await failedLoad(dir);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain('siglip_vision_model');
    expect(e.message).toContain(path.join(dir, 'config.json'));
  });

  test('a bad hidden_act in the tower config names it', async () => {
    const dir = copyDir(TOWER);
    editConfig(dir, (c) => (c.hidden_act = 'relu'));
    const e = await failedLoad(dir);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain('hidden_act "relu"');
  });
});

describe('LLaVA folders', () => {
  test.each(['mlp2x_relu', 'foo', 'mlp0x_gelu'])(
    'unknown mm_projector_type %p: ConfigError listing the supported types',
    async (type) => {
      const dir = copyDir(LLAVA);
      editConfig(dir, (c) => (c.mm_projector_type = type));
      const e = await failedLoad(dir, { visionTower: TOWER });
      expect(e).toBeInstanceOf(ConfigError);
      expect(e.message).toContain(`Unknown projector type: ${type}`);
      expect(e.message).toContain('supported: linear, mlp{N}x_gelu, identity');
    },
  );

  test('mm_vision_tower that does not resolve, no visionTower option: tells to pass --vision-tower', async () => {
    const dir = copyDir(LLAVA); // its mm_vision_tower "fixtures/clip-tower" exists nowhere near the copy
    const e = await failedLoad(dir);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain('mm_vision_tower "fixtures/clip-tower"');
    expect(e.message).toContain('--vision-tower');
  });

  test('mm_vision_tower relative to the LLaVA folder resolves without the option', async () => {
    const dir = copyDir(LLAVA);
    fs.cpSync(TOWER, path.join(dir, 'fixtures', 'clip-tower'), { recursive: true });
    const before = tf.memory().numTensors;
    const model = await LlavaVision.load(dir, { log: null });
    try {
      expect(model.tower.visionTowerName).toBe(path.join(dir, 'fixtures', 'clip-tower'));
    } finally {
      model.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  test('projector weights of the wrong output width (config hidden_size 48, tensor 40)', async () => {
    const dir = copyDir(LLAVA);
    rewrite(path.join(dir, 'model.safetensors'), (t) => {
      t['model.mm_projector.weight'] = f32([40, 64]);
      t['model.mm_projector.bias'] = f32([40]);
    });
    const e = await failedLoad(dir, { visionTower: TOWER });
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain('"model.mm_projector.weight" has shape [40, 64] but the config expects [48, 64]');
  });

  test('projector weights of the wrong input width (tower features 64, tensor 32)', async () => {
    const dir = copyDir(LLAVA);
    rewrite(path.join(dir, 'model.safetensors'), (t) => (t['model.mm_projector.weight'] = f32([48, 32])));
    const e = await failedLoad(dir, { visionTower: TOWER });
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain('"model.mm_projector.weight" has shape [48, 32] but the config expects [48, 64]');
  });

  test('an mlp3x projector missing its last linear (sharded checkpoint)', async () => {
    const dir = copyDir(path.join(MLP3, 'llava'));
    const index = readJson<{ weight_map: Record<string, string> }>(path.join(dir, 'model.safetensors.index.json'));
    const shard = index.weight_map['model.mm_projector.4.weight'];
    expect(shard).toBeDefined();
    rewrite(path.join(dir, shard), (t) => delete t['model.mm_projector.4.weight']);
    delete index.weight_map['model.mm_projector.4.weight'];
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
    const e = await failedLoad(dir, { visionTower: path.join(MLP3, 'clip_tower') });
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain('missing tensor "model.mm_projector.4.weight" (expected shape [48, 48])');
  });

  test('mm_hidden_size disagreeing with the tower: ConfigError naming both widths', async () => {
    const dir = copyDir(LLAVA);
    editConfig(dir, (c) => (c.mm_hidden_size = 32));
    const e = await failedLoad(dir, { visionTower: TOWER });
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain('mm_hidden_size 32');
    expect(e.message).toContain('64');
  });

  test('a projector type but no projector tensors: tells to pass --projector', async () => {
    const dir = copyDir(LLAVA);
    rewrite(path.join(dir, 'model.safetensors'), (t) => {
      delete t['model.mm_projector.weight'];
      delete t['model.mm_projector.bias'];
    });
    const e = await failedLoad(dir, { visionTower: TOWER });
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain('mm_projector_type "linear"');
    expect(e.message).toContain('--projector');
  });

  test('--projector FILE of the wrong width names that file and key', async () => {
    const file = path.join(tmp(), `projector-${count++}.safetensors`);
    writeSafetensors(file, { 'mm_projector.weight': f32([40, 64]), 'mm_projector.bias': f32([40]) });
    const e = await failedLoad(LLAVA, { visionTower: TOWER, projector: file });
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain(file);
    expect(e.message).toContain('"mm_projector.weight" has shape [40, 64] but the config expects [48, 64]');
  });

  test('llava-hf: a missing tower key is named with its llava-hf prefix', async () => {
    const dir = copyDir(path.join(CASES, 'tiny_llavahf_legacy_keys_full_f32', 'model'));
    rewrite(path.join(dir, 'model.safetensors'), (t) => delete t[`vision_tower.${MISSING}`]);
    const e = await failedLoad(dir);
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain(`missing tensor "vision_tower.${MISSING}" (expected shape [64])`);
  });

  test('llava-hf: a projector linear of the wrong width is named with its llava-hf key', async () => {
    const dir = copyDir(path.join(CASES, 'tiny_llavahf_legacy_keys_full_f32', 'model'));
    rewrite(path.join(dir, 'model.safetensors'), (t) => (t['multi_modal_projector.linear_2.weight'] = f32([48, 40])));
    const e = await failedLoad(dir);
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain(
      '"multi_modal_projector.linear_2.weight" has shape [48, 40] but the config expects [48, 48]',
    );
  });

  test('a bad selectLayer option is a ConfigError before anything is loaded', async () => {
    const e = await failedLoad(LLAVA, { visionTower: TOWER, selectLayer: 7 });
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain('select layer 7');
  });
});

describe('keys the vision side does not use', () => {
  test('text_model.*, logit_scale, projections of a full CLIP checkpoint are ignored', async () => {
    const keys = keysOf(path.join(CLIP_FULL, 'model.safetensors'));
    expect(keys).toContain('logit_scale');
    expect(keys).toContain('text_projection.weight');
    expect(keys).toContain('visual_projection.weight');
    expect(keys.filter((k) => k.startsWith('text_model.')).length).toBeGreaterThan(10);
    const before = tf.memory().numTensors;
    const model = await LlavaVision.load(CLIP_FULL, { log: null, threads: 1 }); // the tower's layers on this thread, to look at
    expect(model.checkpointKind).toBe('clip');
    try {
      expect(model.projector).toBeNull();
      // only the vision tensors became variables
      const vision = keys.filter((k) => k.startsWith('vision_model.'));
      expect([...namedParams(model.tower.visionModel)].length).toBe(vision.length);
      expect(tf.memory().numTensors - before).toBe(countVariables(model.tower.visionModel));
      const x = tf.zeros<tf.Rank.R4>([1, 3, 28, 28]);
      const out = model.encode(x, { outputs: ['features'] });
      expect(out.features!.shape).toEqual([1, 4, 32]);
      tf.dispose([x, out.features!]);
    } finally {
      model.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  test('unknown extra keys added to a vision-only folder are ignored too', async () => {
    const dir = copyDir(TOWER);
    rewrite(path.join(dir, 'model.safetensors'), (t) => {
      t['logit_scale'] = f32([]);
      t['text_model.embeddings.token_embedding.weight'] = f32([7, 3]);
      t['vision_model.some_future_buffer'] = f32([2]);
    });
    const model = await LlavaVision.load(dir, { log: null });
    try {
      expect(model.checkpointKind).toBe('clip_vision');
    } finally {
      model.dispose();
    }
  });
});
