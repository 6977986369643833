/**
 * Issue 13: hostile and absurd inputs end quickly in one-line package errors naming the file and the
 * field or tensor (or give a correct result), never in raw engine errors, hangs or GB allocations, and
 * a failing image never takes the others of a job down. One describe per class of the issue; each
 * regression is an input the fuzzer found (or one of its kind) that used to load, hang or crash.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import sharp from 'sharp';
import * as tf from '../src/tf';
import { encodeImages } from '../src/api/encode_job';
import { main } from '../src/cli/main';
import { LlavaVision, LoadOptions } from '../src/api/llava_vision';
import { initBackend } from '../src/backend';
import { parsePreprocessorConfig } from '../src/config/preprocessor';
import { CheckpointError, ConfigError, ImageError, LlavaVisionError } from '../src/errors';
import { decodeImage } from '../src/image';
import { CLIPImageProcessor } from '../src/image/processor';
import { DEFAULT_MAX_IMAGE_PIXELS } from '../src/image/limits';
import { readIndex } from '../src/io/shards';
import { Checkpoint } from '../src/io/checkpoint';
import { SafetensorsFile, TensorToWrite, serializeSafetensors } from '../src/io/safetensors';
import { TorchBinFile } from '../src/io/torch_bin';
import { crc32 } from '../src/io/zip';
import { ReferenceFile } from '../src/check/reference';
import { CASES } from './helpers/golden';
import { FIXTURES, pngChunk, pngHeader } from './helpers/images';
import { isolatedTempDir } from './helpers/isolation';
import { P, buildZip, f32bytes, ints, stateDict, tensor, torchZip } from './helpers/torch_zip';
import { editJson } from './helpers/json';
import { readPixelValuesFile } from '../src/api/pixel_values_file';

const CASE = path.join(CASES, 'tiny_llava_linear_sel-1_patch'); // tower hidden 64, 3 layers, image 56; LLM hidden 48
const TOWER = path.join(CASE, 'clip_tower');
const LLAVA = path.join(CASE, 'llava');
const IMAGE = path.join(CASES, '..', 'images', 'tiny_rgb_37x23.png');

const tmp = isolatedTempDir('hostile-');
beforeAll(() => initBackend({ log: null }));

let count = 0;
const file = (name: string, bytes?: Uint8Array | string): string => {
  const p = path.join(tmp(), `${count++}-${name}`);
  if (bytes !== undefined) fs.writeFileSync(p, bytes);
  return p;
};
function copyDir(src: string): string {
  const dst = file(path.basename(src));
  fs.cpSync(src, dst, { recursive: true });
  return dst;
}
/** The error `fn` throws (sync or async), asserting it is one of ours, one line, short, and quick. */
async function refused<T extends LlavaVisionError>(
  cls: new (message: string) => T,
  fn: () => unknown,
  seconds = 5,
): Promise<string> {
  const t0 = Date.now();
  let error: unknown = null;
  try {
    await fn();
  } catch (e) {
    error = e;
  }
  expect((Date.now() - t0) / 1000).toBeLessThan(seconds);
  if (!(error instanceof cls))
    throw new Error(
      `expected a ${cls.name}, got ${error instanceof Error ? `${error.name}: ${error.message.slice(0, 300)}` : String(error)}`,
    );
  const message = (error as Error).message;
  expect(message).not.toContain('\n');
  expect(message.length).toBeLessThan(1500);
  return message;
}

/** A load that must fail, leaving tf.memory() as it found it (nothing allocated from a refused config). */
async function failedLoad<T extends LlavaVisionError>(
  cls: new (message: string) => T,
  dir: string,
  options: LoadOptions = {},
): Promise<string> {
  const before = tf.memory().numTensors;
  const message = await refused(cls, async () => (await LlavaVision.load(dir, { log: null, ...options })).dispose());
  expect(tf.memory().numTensors).toBe(before);
  return message;
}

/** A safetensors file from a header text (its length as given, or exact) and data bytes. */
function rawSafetensors(header: string, data: Uint8Array, lengthDelta = 0): Buffer {
  const json = Buffer.from(header, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length + lengthDelta));
  return Buffer.concat([len, json, Buffer.from(data)]);
}
const twoTensors = (a = [0, 16], b = [16, 32]) =>
  `{"a":{"dtype":"F32","shape":[4],"data_offsets":[${a.join()}]},"b":{"dtype":"F32","shape":[4],"data_offsets":[${b.join()}]}}`;
const data32 = () => new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]).buffer);
const deep = (n: number, inner = '1') => '['.repeat(n) + inner + ']'.repeat(n);

describe('1. corrupt safetensors are refused: the tensors must tile the data region exactly', () => {
  test('header length one byte short (the JSON padded with a space): would load with every tensor shifted', async () => {
    const p = file('short_len.safetensors', rawSafetensors(twoTensors() + ' ', data32(), -1));
    const msg = await refused(CheckpointError, () => SafetensorsFile.open(p));
    expect(msg).toContain(p);
    expect(msg).toContain('cover 32 bytes but the data region after the header has 33');
  });

  test('bytes inserted before the data region, and appended after it', async () => {
    const inserted = rawSafetensors(twoTensors(), new Uint8Array([0, 0, 0, 0, ...data32()]));
    expect(
      await refused(CheckpointError, () => SafetensorsFile.open(file('inserted.safetensors', inserted))),
    ).toContain('has 36');
    const appended = rawSafetensors(twoTensors(), new Uint8Array([...data32(), 9]));
    expect(
      await refused(CheckpointError, () => SafetensorsFile.open(file('appended.safetensors', appended))),
    ).toContain('has 33');
  });

  test('a hole between tensors, a hole at the start, and overlapping tensors name the tensors', async () => {
    const hole = rawSafetensors(twoTensors([0, 16], [20, 36]), new Uint8Array(36));
    expect(await refused(CheckpointError, () => SafetensorsFile.open(file('hole.safetensors', hole)))).toContain(
      'tensor "b" [20, 36] leaves a hole of 4 bytes after tensor "a"',
    );
    const start = rawSafetensors(twoTensors([4, 20], [20, 36]), new Uint8Array(36));
    expect(await refused(CheckpointError, () => SafetensorsFile.open(file('start.safetensors', start)))).toContain(
      'at the start of the data region',
    );
    const overlap = rawSafetensors(twoTensors([0, 16], [8, 24]), new Uint8Array(24));
    expect(await refused(CheckpointError, () => SafetensorsFile.open(file('overlap.safetensors', overlap)))).toContain(
      'overlap',
    );
  });

  test('valid files still open: empty tensors, metadata only, our own padded writer, long names', () => {
    const long = `vision_model.${'x'.repeat(1000)}`; // names are only cut in messages, never in files
    const named = SafetensorsFile.open(
      file(
        'long.safetensors',
        serializeSafetensors({ [long]: { dtype: 'U8', shape: [1], data: new Uint8Array([7]) } }),
      ),
    );
    expect(named.keys()).toEqual([long]);
    named.close();
    const empty = `{"__metadata__":{"k":"v"},"e":{"dtype":"F32","shape":[0,3],"data_offsets":[16,16]},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`;
    const st = SafetensorsFile.open(file('empty.safetensors', rawSafetensors(empty, data32().subarray(0, 16))));
    expect(st.keys()).toEqual(['a', 'e']);
    st.close();
    SafetensorsFile.open(
      file('meta.safetensors', rawSafetensors('{"__metadata__":{"k":"v"}}', new Uint8Array(0))),
    ).close();
    const ours = serializeSafetensors(
      { w: { dtype: 'F16', shape: [3], data: new Uint16Array([1, 2, 3]) } },
      { x: 'y' },
    );
    expect([...SafetensorsFile.open(file('ours.safetensors', ours)).read('w').data]).toEqual([1, 0, 2, 0, 3, 0]);
  });

  test('the same rule for every shard of an index, and through --projector', async () => {
    const dir = copyDir(path.join(CASES, 'tiny_llava_mlp3x_sel0_clspatch_pad', 'llava'));
    const shard = fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.safetensors'))
      .sort()
      .pop()!;
    const bytes = fs.readFileSync(path.join(dir, shard));
    const n = Number(bytes.readBigUInt64LE(0));
    fs.writeFileSync(
      path.join(dir, shard),
      Buffer.concat([bytes.subarray(0, 8 + n), Buffer.alloc(4), bytes.subarray(8 + n)]),
    );
    const ck = Checkpoint.open(dir);
    const key = ck
      .keys()
      .find(
        (k) =>
          ck.files().length && readIndex(path.join(dir, 'model.safetensors.index.json')).weightMap.get(k) === shard,
      )!;
    expect(await refused(CheckpointError, () => ck.info(key))).toContain(path.join(dir, shard));
    ck.close();
    // A corrupt projector file through the loader: refused, not "loaded" with shifted weights.
    const projector = file(
      'projector.safetensors',
      rawSafetensors(
        '{"mm_projector.weight":{"dtype":"F32","shape":[48,64],"data_offsets":[0,12288]},"mm_projector.bias":{"dtype":"F32","shape":[48],"data_offsets":[12288,12480]}} ',
        new Uint8Array(12480),
        -1,
      ),
    );
    expect(await failedLoad(CheckpointError, LLAVA, { visionTower: TOWER, projector })).toContain(projector);
  });

  test('through the CLI: exit 1, one line naming the file, no output and no temp file left', async () => {
    const projector = file(
      'cli_projector.safetensors',
      rawSafetensors(
        '{"mm_projector.weight":{"dtype":"F32","shape":[48,64],"data_offsets":[0,12288]},"mm_projector.bias":{"dtype":"F32","shape":[48],"data_offsets":[12288,12480]}}',
        new Uint8Array(12484),
      ),
    );
    const outDir = file('cli_out');
    fs.mkdirSync(outDir);
    let err = '';
    const code = await main(
      [
        'encode',
        '--model',
        LLAVA,
        '--vision-tower',
        TOWER,
        '--projector',
        projector,
        '--quiet',
        IMAGE,
        '--out',
        path.join(outDir, 'tokens.safetensors'),
      ],
      { out: () => {}, err: (s) => (err += s) },
    );
    expect(code).toBe(1);
    expect(err.trim().split('\n')).toHaveLength(1);
    expect(err).toContain(
      `llava-vision: ${projector}: the tensors cover 12480 bytes but the data region after the header has 12484`,
    );
    expect(fs.readdirSync(outDir)).toEqual([]);
  });
});

describe('2. deeply nested JSON is refused naming the file; echoed values are capped', () => {
  const DEPTH = 20_000;

  test('safetensors header: nested in __metadata__ and in a tensor entry', async () => {
    const meta = rawSafetensors(`{"__metadata__":{"k":${deep(DEPTH)}}}`, new Uint8Array(0));
    const p = file('deep_meta.safetensors', meta);
    expect(await refused(CheckpointError, () => SafetensorsFile.open(p))).toMatch(
      new RegExp(`^${p}: header nests .* more than 3 levels`),
    );
    const entry = rawSafetensors(
      `{"a":{"dtype":"F32","shape":${deep(DEPTH, '4')},"data_offsets":[0,16]}}`,
      data32().subarray(0, 16),
    );
    await refused(CheckpointError, () => SafetensorsFile.open(file('deep_entry.safetensors', entry)));
  });

  test('index weight_map value, config.json and preprocessor_config.json', async () => {
    const index = file('model.safetensors.index.json', `{"weight_map":{"a":${deep(DEPTH, '"x.safetensors"')}}}`);
    expect(await refused(CheckpointError, () => readIndex(index))).toContain(`${index}: index nests`);
    const tower = copyDir(TOWER);
    fs.writeFileSync(path.join(tower, 'config.json'), `{"model_type":"clip_vision_model","x":${deep(DEPTH)}}`);
    expect(await failedLoad(ConfigError, tower)).toContain(path.join(tower, 'config.json'));
    const llava = copyDir(LLAVA);
    fs.writeFileSync(
      path.join(llava, 'config.json'),
      `{"mm_vision_tower":"x","mm_projector_type":${deep(DEPTH, '"linear"')}}`,
    );
    expect(await failedLoad(ConfigError, llava)).toContain(`${path.join(llava, 'config.json')}: model config nests`);
    const pre = file('preprocessor_config.json', `{"size":${deep(DEPTH, '5')}}`);
    expect(await refused(ConfigError, () => CLIPImageProcessor.fromFile(pre))).toContain(pre);
  });

  test('a syntax error next to a line break still gives a one-line message (V8 quotes the text around it)', async () => {
    const index = file('broken.index.json', '{"weight_map":{"a":\nm}}');
    expect(await refused(CheckpointError, () => readIndex(index))).toMatch(
      new RegExp(`^${index}: index is not valid JSON \\(`),
    );
  });

  test('megabyte-long names and values are cut in messages', async () => {
    const long = 'x'.repeat(5_000_000);
    const pkl = Uint8Array.from([...P.proto(), ...P.global('os', long), ...P.stop]);
    const bin = file('global.bin', torchZip(pkl, {}));
    const msg = await refused(CheckpointError, () => TorchBinFile.open(bin));
    expect(msg).toContain('pickle references global "os.xxx');
    expect(msg).toContain('(5000003 chars)');
    const header = rawSafetensors(`{"${long}":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}`, new Uint8Array(4));
    expect(await refused(CheckpointError, () => SafetensorsFile.open(file('longname.safetensors', header)))).toContain(
      'unknown dtype "F99"',
    );
    const dims = rawSafetensors(
      `{"w":{"dtype":"F32","shape":[${new Array<number>(100_000).fill(1).join()}],"data_offsets":[0,8]}}`,
      new Uint8Array(8),
    );
    expect(await refused(CheckpointError, () => SafetensorsFile.open(file('dims.safetensors', dims)))).toContain(
      'F32 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, … (100000 dims)] needs 4',
    );
    const cfg = copyDir(TOWER);
    editJson(path.join(cfg, 'config.json'), (c) => (c.hidden_act = long));
    expect(await failedLoad(ConfigError, cfg)).toContain('hidden_act "xxxx');
  });
});

describe('3. amplification in .bin: a view may not repeat a tiny storage into GBs', () => {
  test('size (1e9,) with stride 0 over a 4-element storage: refused at open, nothing allocated', async () => {
    const pkl = stateDict([
      ['model.mm_projector.weight', tensor({ numel: 4, size: [P.long(1_000_000_000n)], stride: ints(0) })],
    ]);
    const p = file('stride0.bin', torchZip(pkl, { 0: f32bytes(1, 2, 3, 4) }));
    expect(fs.statSync(p).size).toBeLessThan(1000);
    const msg = await refused(CheckpointError, () => TorchBinFile.open(p), 2);
    expect(msg).toContain(
      'tensor "model.mm_projector.weight": shape [1000000000] has 1000000000 elements but its storage "0" only 4',
    );
  });

  test('many tensors viewing one storage (every layer of a big config on 64 KiB) are refused; tied weights are fine', async () => {
    const views = Array.from({ length: 200 }, (_, i): [string, number[]] => [
      `vision_model.encoder.layers.${i}.mlp.fc1.weight`,
      tensor({ numel: 16384, size: ints(128, 128), stride: ints(128, 1) }),
    ]);
    const p = file('aliased.bin', torchZip(stateDict(views), { 0: new Uint8Array(65536) }));
    expect(await refused(CheckpointError, () => TorchBinFile.open(p), 2)).toContain(
      'its 200 tensors hold 13107200 bytes but its storages only 65536: views repeat the same data',
    );
    const tied = stateDict([
      ['embed.weight', tensor({ numel: 16384, size: ints(128, 128), stride: ints(128, 1) })],
      ['lm_head.weight', tensor({ numel: 16384, size: ints(128, 128), stride: ints(128, 1) })],
    ]);
    const f = TorchBinFile.open(file('tied.bin', torchZip(tied, { 0: new Uint8Array(65536) })));
    expect(f.keys()).toEqual(['embed.weight', 'lm_head.weight']);
    f.close();
  });

  test('small broadcast views (HF position_ids, expand of a bias) still read', () => {
    const pkl = stateDict([['b', tensor({ numel: 2, size: ints(3, 2), stride: ints(0, 1) })]]);
    const f = TorchBinFile.open(file('bcast.bin', torchZip(pkl, { 0: f32bytes(1, -2) })));
    expect([...f.readFloat32('b')]).toEqual([1, -2, 1, -2, 1, -2]);
    f.close();
  });

  test('image_newline of the wrong shape is refused before it is read', async () => {
    const dir = copyDir(path.join(CASES, 'tiny_llava_anyres_spatial_unpad', 'llava'));
    const st = SafetensorsFile.open(
      path.join(
        dir,
        fs.readdirSync(dir).find((f) => f.endsWith('.safetensors'))!,
      ),
    );
    const key = st.keys().find((k) => k.endsWith('image_newline'));
    st.close();
    expect(key).toBeDefined();
    // Rewrite the file with image_newline of another length.
    const ck = SafetensorsFile.open(st.path);
    const tensors: Record<string, TensorToWrite> = {};
    for (const k of ck.keys()) tensors[k] = ck.read(k);
    ck.close();
    tensors[key!] = { dtype: 'F32', shape: [7], data: new Float32Array(7) };
    fs.writeFileSync(st.path, serializeSafetensors(tensors));
    const tower = path.join(CASES, 'tiny_llava_anyres_spatial_unpad', 'clip_tower');
    expect(await failedLoad(CheckpointError, dir, { visionTower: tower })).toContain(
      `tensor "${key}" has shape [7] but the projected features are`,
    );
  });
});

describe('4. deflate bombs in .bin: compressed storages are refused', () => {
  test('1 GiB of zeros deflated into ~1 MB, declared as a [16384, 16384] tensor: refused at open, quickly', async () => {
    const gib = 2 ** 30;
    // Deflate output of a zero run is periodic: build it from a 64 MiB chunk's stream without inflating 1 GiB here.
    const zeros = Buffer.alloc(64 * 2 ** 20);
    const body = zlib.deflateRawSync(zeros, { level: 9 });
    const pkl = stateDict([
      ['model.mm_projector.0.weight', tensor({ numel: gib / 4, size: ints(16384, 16384), stride: ints(16384, 1) })],
    ]);
    // The entry claims 1 GiB: the reader must refuse it from the directory, before reading a byte of it.
    const z = buildZip([
      { name: 'archive/data.pkl', data: pkl },
      { name: 'archive/data/0', data: zeros, method: 8, size: gib, crc: crc32(zeros) },
    ]);
    expect(body.length).toBeLessThan(2 ** 20);
    const msg = await refused(CheckpointError, () => TorchBinFile.open(file('bomb.bin', z)), 2);
    expect(msg).toContain('storage "0" is compressed (zip method 8)');
    expect(process.memoryUsage().rss).toBeLessThan(1.5 * 2 ** 30);
  });
});

describe('5. config numbers are bounded and checked against the checkpoint before anything is allocated', () => {
  test.each([
    ['image_size', 1e9],
    ['hidden_size', 1e6],
    ['hidden_size', 2 ** 53],
    ['intermediate_size', 1e9],
    ['num_channels', 1e6],
    ['num_hidden_layers', 1e6],
    ['patch_size', 1.5],
    ['num_attention_heads', -4],
    ['hidden_size', '64'],
  ])('vision %s = %p: ConfigError naming the file and field', async (field, value) => {
    const dir = copyDir(TOWER);
    editJson(path.join(dir, 'config.json'), (c) => (c[field] = value));
    const msg = await failedLoad(ConfigError, dir);
    expect(msg).toContain(`${path.join(dir, 'config.json')}: ${field} must be`);
  });

  test.each([
    [
      'intermediate_size',
      4096,
      'tensor "vision_model.encoder.layers.0.mlp.fc1.weight" has shape [128, 64] but the config expects [4096, 64]',
    ],
    ['num_hidden_layers', 200, 'missing tensor "vision_model.encoder.layers.199.mlp.fc1.weight"'],
    ['image_size', 4000, 'tensor "vision_model.embeddings.position_embedding.weight" has shape [17, 64]'],
    [
      'hidden_size',
      8192,
      'tensor "vision_model.embeddings.class_embedding" has shape [64] but the config expects [8192]',
    ],
    ['num_channels', 16, 'tensor "vision_model.embeddings.patch_embedding.weight" has shape [64, 3, 14, 14]'],
  ])(
    "vision %s = %p within range but not the checkpoint's: refused before the build, naming the field",
    async (field, value, tensorMsg) => {
      const dir = copyDir(TOWER);
      editJson(path.join(dir, 'config.json'), (c) => (c[field] = value));
      const msg = await failedLoad(CheckpointError, dir);
      expect(msg).toContain(tensorMsg);
      expect(msg).toMatch(
        new RegExp(`— (asked for by|from) ${field} ${value}(, patch_size 14)? in ${path.join(dir, 'config.json')}$`),
      );
    },
  );

  test.each([
    ['hidden_size', -5, 'hidden_size must be a positive integer'],
    ['hidden_size', '4096', 'hidden_size must be a positive integer'],
    ['mm_hidden_size', 1e300, 'mm_hidden_size must be a positive integer'],
    [
      'mm_projector_type',
      'mlp1000000x_gelu',
      'projector type "mlp1000000x_gelu" has 1000000 linear layers; at most 32',
    ],
    ['mm_projector_type', 7, 'mm_projector_type must be a string'],
    ['mm_vision_tower', { a: 1 }, 'mm_vision_tower must be a string'],
    ['image_grid_pinpoints', [[336, 1e9]], 'image_grid_pinpoints entry [336,1000000000] is larger than 4096'],
  ])('LLaVA %s = %p: ConfigError naming the file and field', async (field, value, expected) => {
    const dir = copyDir(LLAVA);
    editJson(path.join(dir, 'config.json'), (c) => (c[field] = value));
    const msg = await failedLoad(ConfigError, dir, { visionTower: TOWER });
    expect(msg).toContain(`${path.join(dir, 'config.json')}: ${expected}`);
  });

  test("LLaVA hidden_size and mm_projector_type in range but not the checkpoint's: refused before the projector is built", async () => {
    const wide = copyDir(LLAVA);
    editJson(path.join(wide, 'config.json'), (c) => (c.hidden_size = 65536));
    expect(await failedLoad(CheckpointError, wide, { visionTower: TOWER })).toContain(
      `has shape [48, 64] but the config expects [65536, 64] — from mm_projector_type "linear", hidden_size 65536 in ${path.join(wide, 'config.json')}`,
    );
    const deepMlp = copyDir(LLAVA);
    editJson(path.join(deepMlp, 'config.json'), (c) => (c.mm_projector_type = 'mlp32x_gelu'));
    expect(await failedLoad(CheckpointError, deepMlp, { visionTower: TOWER })).toContain(
      'missing tensor "model.mm_projector.0.weight" (expected shape [48, 64]) — asked for by mm_projector_type "mlp32x_gelu"',
    );
  });

  test.each([
    [{ size: 40000 }, 'size must be a positive integer (at most 4096), got 40000'],
    [{ size: 30000 }, 'size must be a positive integer'],
    [{ crop_size: 1e308 }, 'crop_size must be a positive integer (at most 4096), got 1e+308'],
    [{ crop_size: { height: 30000, width: 30000 } }, 'crop_size.height must be'],
    [{ crop_size: [30000, 30000] }, 'crop_size[0] must be'],
    [{ size: { shortest_edge: -1 } }, 'size.shortest_edge must be'],
  ])('preprocessor %j: ConfigError naming the file and field', async (json, expected) => {
    expect(await refused(ConfigError, () => parsePreprocessorConfig(json, '/x/preprocessor_config.json'))).toContain(
      `/x/preprocessor_config.json: ${expected}`,
    );
  });

  test('a preprocessor crop_size the tower cannot take fails the job up front, not per image after the work', async () => {
    const tower = copyDir(TOWER);
    editJson(path.join(tower, 'preprocessor_config.json'), (c) => (c.crop_size = 4000));
    const model = await LlavaVision.load(LLAVA, { log: null, visionTower: tower });
    try {
      const msg = await refused(ConfigError, () => encodeImages(model, [IMAGE], { outputs: ['merged'] }));
      expect(msg).toContain(
        `${path.join(tower, 'preprocessor_config.json')}: crop_size 4000x4000 disagrees with the vision tower's image_size 56`,
      );
    } finally {
      model.dispose();
    }
  });
});

async function png(width: number, height: number): Promise<string> {
  const p = file(`${width}x${height}.png`);
  await sharp({ create: { width, height, channels: 3, background: { r: 200, g: 30, b: 90 } } })
    .png()
    .toFile(p);
  return p;
}

describe("6. images of extreme sizes: over Pillow's limit refused from the header; absurd processing fails that image only", () => {
  let model: LlavaVision;
  beforeAll(async () => {
    model = await LlavaVision.load(LLAVA, { log: null, visionTower: TOWER });
  });
  afterAll(() => model.dispose());

  test('16000x16000 and 100000x2000 are refused like DecompressionBombError, before decoding', async () => {
    for (const [w, h] of [
      [16000, 16000],
      [100000, 2000],
    ]) {
      const p = file(`bomb_${w}x${h}.png`, pngHeader(w, h));
      const msg = await refused(ImageError, () => decodeImage(p), 2);
      expect(msg).toBe(
        `image ${p} is ${w}x${h} = ${w * h} pixels, over the limit of ${DEFAULT_MAX_IMAGE_PIXELS} ` +
          "(as Pillow's DecompressionBombError: 2 x Image.MAX_IMAGE_PIXELS; set LLAVA_VISION_MAX_IMAGE_PIXELS to raise it)",
      );
    }
  });

  test('16-bit samples within the pixel limit but over its bytes (a 2 MB RGBA16 PNG of 13000x13000 took 2.5 GB)', async () => {
    const p = file('rgba16.png', pngHeader(13000, 13000, 16, 6));
    const msg = await refused(ImageError, () => decodeImage(p), 2);
    expect(msg).toBe(
      `image ${p} is 13000x13000 with 4 channels of 16 bits: 1352000000 bytes decoded, over the limit of ` +
        `${3 * DEFAULT_MAX_IMAGE_PIXELS} (3 bytes per pixel of the ${DEFAULT_MAX_IMAGE_PIXELS}-pixel limit; set LLAVA_VISION_MAX_IMAGE_PIXELS to raise it)`,
    );
    // The same size in 8 bits is within both limits: it gets as far as decoding (whose missing pixel data fails here).
    expect(await refused(ImageError, () => decodeImage(file('rgba8.png', pngHeader(13000, 13000, 8, 6))))).toMatch(
      /^cannot decode image/,
    );
  });

  test('the limit can be raised, lowered or lifted (option, environment)', async () => {
    const big = file('big_header.png', pngHeader(16000, 16000));
    // Lifted: the header passes the check, and decoding then fails on the missing pixel data, as it should.
    expect(await refused(ImageError, () => decodeImage(big, { maxImagePixels: null }))).toMatch(/^cannot decode image/);
    expect(await refused(ImageError, () => decodeImage(IMAGE, { maxImagePixels: 100 }))).toContain(
      '37x23 = 851 pixels, over the limit of 100',
    );
    process.env.LLAVA_VISION_MAX_IMAGE_PIXELS = '100';
    try {
      await refused(ImageError, () => decodeImage(IMAGE));
      process.env.LLAVA_VISION_MAX_IMAGE_PIXELS = 'none';
      expect(await refused(ImageError, () => decodeImage(big))).toMatch(/^cannot decode image/);
    } finally {
      delete process.env.LLAVA_VISION_MAX_IMAGE_PIXELS;
    }
    expect((await decodeImage(IMAGE)).width).toBe(37);
  });

  test.each(['square', 'pad'] as const)(
    '30000x1 and 1x30000 among good images (%s): those fail by name, the others are encoded',
    async (aspect) => {
      const wide = await png(30000, 1);
      const tall = await png(1, 30000);
      const t0 = Date.now();
      const { tensors, failures } = await encodeImages(model, [IMAGE, wide, tall, IMAGE], {
        outputs: ['merged'],
        aspect,
      });
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(Object.keys(tensors).sort()).toEqual(['images.0.merged', 'images.3.merged']);
      expect(failures.map((f) => f.index)).toEqual([1, 2]);
      const made =
        aspect === 'pad'
          ? 'pad of 30000x1 to a square: the canvas is 30000x30000'
          : 'resize of 30000x1 to 1680000x56: the result';
      expect(failures[0].message).toContain(`image ${wide}: preprocessing failed: ${made}`);
      expect(failures[0].message).toContain(
        "over the limit of 16777216 (preprocessing makes images of at most max(4096x4096, 4 x the input's 30000 pixels)",
      );
      expect(failures[1].message).toContain(`image ${tall}: preprocessing failed:`);
      expect(
        Buffer.from(tensors['images.0.merged'].data.buffer).equals(Buffer.from(tensors['images.3.merged'].data.buffer)),
      ).toBe(true);
      expect(process.memoryUsage().rss).toBeLessThan(1.5 * 2 ** 30);
    },
  );

  test('anyres fits the same images onto a pinpoint canvas: a correct result, quickly', async () => {
    const wide = await png(30000, 1);
    const t0 = Date.now();
    const { tensors, failures } = await encodeImages(model, [wide, IMAGE], {
      outputs: ['pixel_values'],
      aspect: 'anyres',
      gridPinpoints: [
        [56, 112],
        [112, 56],
      ],
    });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(failures).toEqual([]);
    expect(tensors['images.0.pixel_values'].shape).toEqual([3, 3, 56, 56]); // base + the 112x56 canvas in two tiles
  });

  test("an error that is not ours inside one image's preprocessing is that image's failure, not the job's", async () => {
    const processor = model.imageProcessor;
    const original = processor.preprocess.bind(processor);
    processor.preprocess = (img) => {
      if (img.width === 1) throw new RangeError('Invalid typed array length: 30240000000');
      return original(img);
    };
    try {
      const thin = await png(1, 40);
      const { tensors, failures } = await encodeImages(model, [thin, IMAGE], { outputs: ['merged'], aspect: 'square' });
      expect(Object.keys(tensors)).toEqual(['images.1.merged']);
      expect(failures).toEqual([
        {
          index: 0,
          source: thin,
          message: `image ${thin}: preprocessing failed: RangeError: Invalid typed array length: 30240000000`,
        },
      ]);
    } finally {
      processor.preprocess = original;
    }
  });
});

describe('7. minor: floats in .bin sizes, duplicate keys in JSON headers and indexes', () => {
  test('a float inside a size tuple is refused (torch refuses 2.0 as a size)', async () => {
    const pkl = stateDict([['w', tensor({ numel: 4, size: [P.float(2), P.int(2)], stride: ints(2, 1) })]]);
    expect(
      await refused(CheckpointError, () =>
        TorchBinFile.open(file('float.bin', torchZip(pkl, { 0: f32bytes(1, 2, 3, 4) }))),
      ),
    ).toContain('size must be a tuple of non-negative integers, but element 0 is a float');
  });

  test('duplicate keys in a safetensors header (incl. escaped spellings) and in an index', async () => {
    const dup = rawSafetensors(
      '{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"\\u0061":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}',
      data32().subarray(0, 16),
    );
    expect(await refused(CheckpointError, () => SafetensorsFile.open(file('dup.safetensors', dup)))).toContain(
      'header has the key "a" twice',
    );
    const index = file('dup.index.json', '{"weight_map":{"w":"a.safetensors","w":"b.safetensors"}}');
    expect(await refused(CheckpointError, () => readIndex(index))).toContain(`${index}: index has the key "w" twice`);
    // The same key in different objects is fine.
    const ok = file('ok.index.json', '{"metadata":{"w":1},"weight_map":{"w":"a.safetensors"}}');
    expect(readIndex(ok).weightMap.get('w')).toBe('a.safetensors');
  });
});

describe('8. reference files (llava-vision check): their metadata is as untrusted as a checkpoint header', () => {
  const pixels = { pixel_values: { dtype: 'F32' as const, shape: [1, 3, 2, 2], data: new Float32Array(12) } };
  const reference = (name: string, metadata: Record<string, string>) =>
    file(name, serializeSafetensors(pixels, metadata));

  test('expected nested 20,000 deep, a bound of 1e400 (Infinity), a negative error: one line naming the field', async () => {
    const deep = `{"pixel_values":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
    expect(
      await refused(CheckpointError, () => ReferenceFile.open(reference('deep.safetensors', { expected: deep }))),
    ).toMatch(/: __metadata__\.expected nests objects\/arrays more than 3 levels deep \(the format needs at most 3\)$/);
    const huge = reference('huge.safetensors', { expected: '{"pixel_values":{"torch_fp32_max_abs_err":1e400}}' });
    expect(await refused(CheckpointError, () => ReferenceFile.open(huge))).toBe(
      `${huge}: __metadata__.expected["pixel_values"].torch_fp32_max_abs_err must be a finite number >= 0, got null`,
    );
    const negative = reference('negative.safetensors', {
      expected: '{"pixel_values":{"f32_storage_max_abs_err":-0.5}}',
    });
    expect(await refused(CheckpointError, () => ReferenceFile.open(negative))).toContain(
      'f32_storage_max_abs_err must be a finite number >= 0, got -0.5',
    );
  });

  test('run.tiles_per_image that does not add up, a hostile select_layer: one line, through the CLI too', async () => {
    const tiles = reference('tiles.safetensors', { run: '{"tiles_per_image":[3]}' });
    const image = path.join(CASES, '..', 'images', 'tiny_rgb_37x23.png');
    let err = '';
    const code = await main(
      ['check', '--quiet', '--reference', tiles, '--model', LLAVA, '--vision-tower', TOWER, image],
      { out: () => undefined, err: (s) => (err += s) },
    );
    expect(code).toBe(1);
    expect(err).toBe(`llava-vision: ${tiles}: run.tiles_per_image adds up to 3 tiles, pixel_values hold 1\n`);
    const layer = reference('layer.safetensors', { run: '{"select_layer":1e300}' });
    expect(await refused(CheckpointError, () => ReferenceFile.open(layer))).toBe(
      `${layer}: __metadata__.run.select_layer must be an integer, got 1e+300`,
    );
  });
});

describe('9. pixel-values files: every image named once, no empty tensors, only known aspect modes', () => {
  const tile = (tiles: number, side = 56): TensorToWrite => ({
    dtype: 'F32',
    shape: [tiles, 3, side, side],
    data: new Float32Array(tiles * 3 * side * side).fill(0.25),
  });
  const pixelFile = (tensors: Record<string, TensorToWrite>, metadata: Record<string, string> = {}) => {
    const p = file('pv.safetensors');
    fs.writeFileSync(p, serializeSafetensors(tensors, metadata));
    return p;
  };
  /** `encode --pixel-values` of the file: exit 1 and one line, no output written. */
  async function encodeRefused(pv: string): Promise<string> {
    const out = file('out.safetensors');
    const lines: string[] = [];
    const code = await main(
      ['encode', '--model', LLAVA, '--vision-tower', TOWER, '--pixel-values', pv, '--quiet', '--out', out],
      { out: () => {}, err: (s) => lines.push(s) },
    );
    expect({ code, written: fs.existsSync(out) }).toEqual({ code: 1, written: false });
    expect(lines.join('').trim().split('\n')).toHaveLength(1);
    return lines.join('');
  }

  test('images.1 and images.01 (one image twice): refused naming the tensor, not one of them dropped', async () => {
    const pv = pixelFile({
      'images.0.pixel_values': tile(1),
      'images.1.pixel_values': tile(1),
      'images.01.pixel_values': tile(1),
    });
    expect(await refused(ConfigError, () => readPixelValuesFile(pv))).toBe(
      `${pv}: tensor "images.01.pixel_values": the image index must be a plain non-negative integer (images.0.pixel_values, images.1.pixel_values, ...)`,
    );
    expect(await encodeRefused(pv)).toContain(
      '"images.01.pixel_values": the image index must be a plain non-negative integer',
    );
    for (const index of ['-1', '1e2', '+3', ' 2', '99999999999999999999', 'x']) {
      expect(
        await refused(ConfigError, () => readPixelValuesFile(pixelFile({ [`images.${index}.pixel_values`]: tile(1) }))),
      ).toContain('the image index must be');
    }
    // Gaps (images that failed when the file was written) stay fine.
    expect(
      (
        readPixelValuesFile(pixelFile({ 'images.0.pixel_values': tile(1), 'images.7.pixel_values': tile(1) })) as {
          images: { index: number }[];
        }
      ).images.map((i) => i.index),
    ).toEqual([0, 7]);
  });

  test('zero tiles, zero images, an empty image plane: one line, not a backend error', async () => {
    const noTiles = pixelFile({ 'images.0.pixel_values': tile(1), 'images.1.pixel_values': tile(0) });
    expect(await encodeRefused(noTiles)).toBe(
      `llava-vision: ${noTiles}: "images.1.pixel_values" has no tiles (shape [0, 3, 56, 56])\n`,
    );
    const noImages = pixelFile({ pixel_values: tile(0) });
    expect(await encodeRefused(noImages)).toBe(
      `llava-vision: ${noImages}: "pixel_values" has no images (shape [0, 3, 56, 56])\n`,
    );
    const flat = pixelFile({
      'images.0.pixel_values': { dtype: 'F32', shape: [1, 3, 0, 56], data: new Float32Array(0) },
    });
    expect(await encodeRefused(flat)).toContain('"images.0.pixel_values" has an empty image plane');
  });

  test('an aspect mode the file records but nobody knows is refused, not taken as square', async () => {
    const pv = pixelFile({ 'images.0.pixel_values': tile(1) }, { options: JSON.stringify({ aspect: 'squash' }) });
    expect(await encodeRefused(pv)).toBe(
      `llava-vision: ${pv}: __metadata__.options.aspect "squash" is not one of square, pad, anyres\n`,
    );
    const numeric = pixelFile({ 'images.0.pixel_values': tile(1) }, { options: JSON.stringify({ aspect: 2 }) });
    expect(await encodeRefused(numeric)).toContain('__metadata__.options.aspect 2 is not one of square, pad, anyres');
    // Known modes, and none recorded, still read.
    expect(
      (
        readPixelValuesFile(
          pixelFile({ 'images.0.pixel_values': tile(1) }, { options: JSON.stringify({ aspect: 'pad' }) }),
        ) as { aspect: string }
      ).aspect,
    ).toBe('pad');
    expect(
      (readPixelValuesFile(pixelFile({ 'images.0.pixel_values': tile(1) })) as { aspect: null }).aspect,
    ).toBeNull();
  });
});

describe("10. image readers that follow Pillow's rules: bounded time and memory on hostile files", () => {
  const crc = pngChunk;

  test('PNG: 65 zTXt chunks each inflating to 1 MiB (a 65 MiB text bomb in 70 KB): refused by the text limit, quickly', async () => {
    const valid = fs.readFileSync(IMAGE);
    const one = zlib.deflateSync(Buffer.alloc(1 << 20, 97), { level: 9 });
    const bombs = Array.from({ length: 65 }, (_, i) =>
      crc('zTXt', Buffer.concat([Buffer.from(`k${i}\0\0`, 'latin1'), one])),
    );
    const bytes = Buffer.concat([valid.subarray(0, 33), ...bombs, valid.subarray(33)]);
    expect(bytes.length).toBeLessThan(200_000);
    expect(await refused(ImageError, () => decodeImage(file('text_bomb.png', bytes)))).toMatch(
      /Too much memory used in text chunks.*Pillow 9\.4 refuses it too/,
    );
  });

  test('PNG: image data inflating far past its rows (a deflate bomb in IDAT) is read no further than the rows', async () => {
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(64, 0);
    ihdr.writeUInt32BE(64, 4);
    ihdr.set([8, 0, 0, 0, 0], 8);
    const rows = Buffer.alloc(64 * 65 + (1 << 26)); // the rows, then 64 MiB more (from 65 KB of data)
    const bytes = Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      crc('IHDR', ihdr),
      crc('IDAT', zlib.deflateSync(rows, { level: 9 })),
      crc('IEND', Buffer.alloc(0)),
    ]);
    const t0 = Date.now();
    const img = await decodeImage(bytes, { name: 'idat_bomb.png' });
    expect([img.width, img.height]).toEqual([64, 64]);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  test('TIFF: 200,000 strip offsets all pointing past the end are refused in bounded time', async () => {
    const n = 200_000;
    const out = Buffer.alloc(8 + 2 + 12 * 6 + 4 + 4 * n);
    out.write('II*\0', 0, 'latin1');
    out.writeUInt32LE(8, 4);
    out.writeUInt16LE(6, 8);
    const entry = (i: number, tag: number, type: number, count: number, value: number) => {
      const at = 10 + 12 * i;
      out.writeUInt16LE(tag, at);
      out.writeUInt16LE(type, at + 2);
      out.writeUInt32LE(count, at + 4);
      out.writeUInt32LE(value, at + 8);
    };
    entry(0, 256, 4, 1, 1);
    entry(1, 257, 4, 1, n);
    entry(2, 258, 3, 1, 8);
    entry(3, 262, 3, 1, 1);
    entry(4, 273, 4, n, 10 + 12 * 6 + 4);
    entry(5, 278, 4, 1, 1);
    // every strip offset points past the end of the file
    for (let i = 0; i < n; i++) out.writeUInt32LE(0xfffffff0, 10 + 12 * 6 + 4 + 4 * i);
    expect(await refused(ImageError, () => decodeImage(file('strips.tif', out)), 10)).toMatch(
      /image file is truncated; Pillow 9\.4 refuses it too$/,
    );
  });

  test('JPEG: megabytes of FF fill and FF00 pairs after the scan are walked in bounded time', async () => {
    const valid = fs.readFileSync(path.join(FIXTURES, 'images', 'rocket.jpg'));
    const fill = Buffer.alloc(4 << 20, 0xff);
    for (let i = 1; i < fill.length; i += 2) fill[i] = i % 4 === 1 ? 0x00 : 0xff;
    const bytes = Buffer.concat([valid.subarray(0, valid.length - 2), fill, Buffer.from([0xff, 0xd9])]);
    const t0 = Date.now();
    await decodeImage(bytes, { name: 'fill.jpg' }).catch((e: unknown) => {
      if (!(e instanceof ImageError)) throw e;
    });
    expect(Date.now() - t0).toBeLessThan(5000);
  });
});
