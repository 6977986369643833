/**
 * Every checkpoint users have, through the public loader (issue 4): CLIP towers as `pytorch_model.bin`
 * (single and sharded), LLaVA's `mm_projector.bin`, the LLaVA-1.6 fine-tuned tower override, llava-hf
 * options (list `vision_feature_layer`, select strategy, projector act/bias), llava-next config mapping,
 * F32/F16/BF16 in every layout, and LLM weights never read.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '../src/tf';
import erf = require('@stdlib/math-base-special-erf');
import { encodeImages } from '../src/api/encode_job';
import { EncodeResult, LlavaVision, LoadOptions, OutputName } from '../src/api/llava_vision';
import { findWeights, openTensorSource } from '../src/loading/sources';
import { initBackend } from '../src/backend';
import { llavaHfSettingsFromJson } from '../src/config/llava';
import { CheckpointError } from '../src/errors';
import { DTYPE_SIZE, bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, isFloatDType } from '../src/io/dtype';
import { SafetensorsFile, TensorToWrite, writeSafetensors } from '../src/io/safetensors';
import { TorchBinFile } from '../src/io/torch_bin';
import { crc32 } from '../src/io/zip';
import { checkParity } from '../src/parity';
import {
  CASES,
  FIXTURES,
  GoldenCase,
  expectParity,
  goldenPixelTensor,
  loadCase,
  writeParityReport,
} from './helpers/golden';
import { isolatedTempDir } from './helpers/isolation';
import { JsonObject, editJson, readJson } from './helpers/json';
import fsModule = require('fs');

const tmp = isolatedTempDir('checkpoints-test-');
beforeAll(() => initBackend({ log: null }));
afterAll(() => writeParityReport('checkpoints'));

// ------------------------------------------------------------------------------------------ helpers

let dirCount = 0;
function freshDir(name: string): string {
  const dir = path.join(tmp(), `${dirCount++}-${name}`);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}
function copyDir(src: string, name = path.basename(src)): string {
  const dst = freshDir(name);
  fs.cpSync(src, dst, { recursive: true });
  return dst;
}
function editConfig(dir: string, edit: (c: JsonObject) => void): void {
  editJson(path.join(dir, 'config.json'), edit);
}
/** Every tensor of a safetensors file (raw bytes), and its metadata. */
function readAll(file: string): { tensors: Record<string, TensorToWrite>; metadata: Record<string, string> } {
  const st = SafetensorsFile.open(file);
  try {
    return { tensors: Object.fromEntries(st.keys().map((k) => [k, st.read(k)])), metadata: st.metadata };
  } finally {
    st.close();
  }
}
function rewrite(file: string, edit: (t: Record<string, TensorToWrite>) => void): void {
  const { tensors, metadata } = readAll(file);
  edit(tensors);
  writeSafetensors(file, tensors, metadata);
}
const safetensorsIn = (dir: string) =>
  fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.safetensors'))
    .map((f) => path.join(dir, f));

/** Deterministic pseudo-random floats in [lo, hi). */
function randomFloats(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = lo + ((hi - lo) * s) / 2 ** 32;
  }
  return out;
}
function randomPixels(model: LlavaVision, batch: number, seed: number): tf.Tensor4D {
  const s = model.tower.config.imageSize;
  return tf.tensor4d(randomFloats(batch * 3 * s * s, seed, -1.8, 2.1), [batch, 3, s, s]);
}

interface Outputs {
  [name: string]: Float32Array;
}
/** Every output the model has, as plain arrays (hidden states by index). */
function encodeAll(model: LlavaVision, pixels: tf.Tensor4D): Outputs {
  const outputs: OutputName[] = [
    'hidden_states',
    'features',
    'pooler_output',
    ...(model.projector ? (['projected'] as const) : []),
  ];
  const r: EncodeResult = model.encode(pixels, { outputs });
  const out: Outputs = {};
  r.hiddenStates!.forEach((h, k) => (out[`hidden_states.${k}`] = h.dataSync() as Float32Array));
  out.features = r.features!.dataSync() as Float32Array;
  out.pooler_output = r.poolerOutput!.dataSync() as Float32Array;
  if (r.projected) out.projected = r.projected.dataSync() as Float32Array;
  if (model.imageNewline) out.image_newline = model.imageNewline.dataSync() as Float32Array;
  tf.dispose([...r.hiddenStates!, r.features!, r.poolerOutput!, ...(r.projected ? [r.projected] : [])]);
  return out;
}

const bitsOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
/** Bit-identical float arrays (a NaN-safe, -0-aware comparison). */
function expectSameBits(a: Float32Array, b: Float32Array, what: string): void {
  expect([what, a.length]).toEqual([what, b.length]);
  if (Buffer.compare(bitsOf(a), bitsOf(b)) !== 0) {
    let i = 0;
    while (bitsOf(a.subarray(i, i + 1)).equals(bitsOf(b.subarray(i, i + 1)))) i++;
    throw new Error(`${what}: differs at element ${i}: ${a[i]} vs ${b[i]}`);
  }
}
function expectSameOutputs(a: Outputs, b: Outputs, label: string): void {
  expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
  for (const k of Object.keys(a)) expectSameBits(a[k], b[k], `${label}: ${k}`);
}

async function load(dir: string, options: LoadOptions = {}): Promise<LlavaVision> {
  // One thread: the reads are counted on this thread (shard threads read their slices of the same tensors).
  return LlavaVision.load(dir, { log: null, threads: 1, ...options });
}
async function withModel<T>(dir: string, options: LoadOptions, fn: (m: LlavaVision) => T | Promise<T>): Promise<T> {
  const model = await load(dir, options);
  try {
    return await fn(model);
  } finally {
    model.dispose();
  }
}

// ---------------------------------------------------------------------- a minimal torch.save writer

/**
 * Writes `{name: tensor}` as torch.save does (zip, protocol-2 pickle of an OrderedDict of
 * `_rebuild_tensor_v2` calls, one storage entry per tensor): enough to make sharded `pytorch_model-*.bin`.
 */
function writeTorchBin(
  file: string,
  tensors: Record<string, { dtype: 'F32' | 'F16' | 'BF16'; shape: number[]; data: Uint8Array }>,
): void {
  const STORAGE = { F32: 'FloatStorage', F16: 'HalfStorage', BF16: 'BFloat16Storage' };
  const op: number[] = [];
  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    op.push(0x58, ...u32(b.length), ...b);
  };
  const int = (n: number) => op.push(0x4a, ...u32(n));
  const u32 = (n: number) => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
  const global = (m: string, n: string) => op.push(0x63, ...Buffer.from(`${m}\n${n}\n`));
  const orderedDict = () => {
    global('collections', 'OrderedDict');
    op.push(0x28, 0x74, 0x52);
  };
  op.push(0x80, 2);
  orderedDict();
  op.push(0x28); // MARK for SETITEMS
  const storages: [string, Uint8Array][] = [];
  for (const [name, t] of Object.entries(tensors)) {
    const key = String(storages.length);
    storages.push([key, t.data]);
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const strides = t.shape.map((_, i) => t.shape.slice(i + 1).reduce((a, b) => a * b, 1));
    str(name);
    global('torch._utils', '_rebuild_tensor_v2');
    op.push(0x28); // args tuple
    op.push(0x28);
    str('storage');
    global('torch', STORAGE[t.dtype]);
    str(key);
    str('cpu');
    int(numel);
    op.push(0x74, 0x51);
    int(0);
    op.push(0x28);
    t.shape.forEach(int);
    op.push(0x74);
    op.push(0x28);
    strides.forEach(int);
    op.push(0x74);
    op.push(0x89);
    orderedDict();
    op.push(0x74, 0x52);
  }
  op.push(0x75, 0x2e); // SETITEMS, STOP
  const entries: [string, Uint8Array][] = [
    ['archive/data.pkl', Uint8Array.from(op)],
    ['archive/byteorder', Buffer.from('little')],
    ...storages.map(([k, d]) => [`archive/data/${k}`, d] as [string, Uint8Array]),
    ['archive/version', Buffer.from('3\n')],
  ];
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const n = Buffer.from(name);
    const crc = crc32(data);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(data.length, 18);
    lh.writeUInt32LE(data.length, 22);
    lh.writeUInt16LE(n.length, 26);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(data.length, 20);
    ch.writeUInt32LE(data.length, 24);
    ch.writeUInt16LE(n.length, 28);
    ch.writeUInt32LE(offset, 42);
    parts.push(lh, n, Buffer.from(data));
    central.push(ch, n);
    offset += 30 + n.length + data.length;
  }
  const dir = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(entries.length, 8);
  eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(dir.length, 12);
  eocd.writeUInt32LE(offset, 16);
  fs.writeFileSync(file, Buffer.concat([...parts, dir, eocd]));
}

// ------------------------------------------------------------------------- pytorch_model.bin towers

describe('CLIP tower as pytorch_model.bin', () => {
  const CLIP_F16 = path.join(CASES, 'tiny_clip_vision_only_f16', 'model');
  const BIN = path.join(FIXTURES, 'torch_bin', 'tiny_clip_vision_f16', 'pytorch_model.bin');

  /** A model folder: the safetensors fixture's config/preprocessor, weights as given. */
  function binFolder(name: string): string {
    const dir = freshDir(name);
    for (const f of ['config.json', 'preprocessor_config.json'])
      fs.copyFileSync(path.join(CLIP_F16, f), path.join(dir, f));
    return dir;
  }

  async function expectSameAsSafetensors(dir: string): Promise<void> {
    const gc = loadCase('tiny_clip_vision_only_f16');
    const ref = await load(CLIP_F16);
    const bin = await load(dir);
    try {
      expect(bin.checkpointKind).toBe('clip_vision');
      for (const img of gc.json.images as { id: string }[]) {
        const x = goldenPixelTensor(gc, img.id);
        const a = encodeAll(ref, x);
        const b = encodeAll(bin, x);
        x.dispose();
        expectSameOutputs(b, a, `${dir} ${img.id}`);
        for (let k = 0; `${img.id}.hidden_states.${String(k).padStart(2, '0')}` in gc.json.expected; k++) {
          expectParity(gc, `${img.id}.hidden_states.${String(k).padStart(2, '0')}`, b[`hidden_states.${k}`]);
        }
        expectParity(gc, `${img.id}.pooler_output`, b.pooler_output);
      }
    } finally {
      ref.dispose();
      bin.dispose();
    }
  }

  test('a folder with only pytorch_model.bin loads, bit-identical to the safetensors tower', async () => {
    const dir = binFolder('clip-bin');
    fs.copyFileSync(BIN, path.join(dir, 'pytorch_model.bin'));
    expect(findWeights(dir)).toEqual({ format: 'torch_bin', entry: path.join(dir, 'pytorch_model.bin') });
    await expectSameAsSafetensors(dir);
  });

  test('sharded pytorch_model-0000k-of-00002.bin + pytorch_model.bin.index.json, bit-identical too', async () => {
    const dir = binFolder('clip-bin-sharded');
    const bin = TorchBinFile.open(BIN);
    const weightMap: Record<string, string> = {};
    const shards: Record<string, Record<string, { dtype: 'F16'; shape: number[]; data: Uint8Array }>> = {};
    try {
      bin
        .keys()
        .filter((k) => bin.info(k).dtype === 'F16')
        .forEach((k, i) => {
          const shard = `pytorch_model-0000${(i % 2) + 1}-of-00002.bin`;
          weightMap[k] = shard;
          (shards[shard] ??= {})[k] = { dtype: 'F16', shape: bin.info(k).shape, data: bin.readBytes(k) };
        });
    } finally {
      bin.close();
    }
    for (const [shard, tensors] of Object.entries(shards)) writeTorchBin(path.join(dir, shard), tensors);
    fs.writeFileSync(
      path.join(dir, 'pytorch_model.bin.index.json'),
      JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }),
    );
    const src = openTensorSource(dir);
    try {
      expect(src.format).toBe('torch_bin');
      expect(src.files()).toEqual(
        Object.keys(shards)
          .sort()
          .map((f) => path.join(dir, f)),
      );
    } finally {
      src.close();
    }
    await expectSameAsSafetensors(dir);
  });

  test('safetensors win over pytorch_model.bin when a folder has both (HF order)', () => {
    const dir = copyDir(CLIP_F16, 'both');
    fs.copyFileSync(BIN, path.join(dir, 'pytorch_model.bin'));
    expect(findWeights(dir)).toEqual({ format: 'safetensors', entry: dir });
  });

  test('a sharded .bin index naming a missing shard, and a folder with no weights: CheckpointErrors', () => {
    const dir = binFolder('clip-bin-missing');
    fs.writeFileSync(
      path.join(dir, 'pytorch_model.bin.index.json'),
      JSON.stringify({ weight_map: { a: 'pytorch_model-00001-of-00001.bin' } }),
    );
    expect(() => openTensorSource(dir)).toThrow(CheckpointError);
    expect(() => openTensorSource(dir)).toThrow(/pytorch_model-00001-of-00001\.bin.*not found/);
    const empty = binFolder('clip-no-weights');
    expect(() => openTensorSource(empty)).toThrow(/no weights found.*model\.safetensors.*pytorch_model\.bin/);
  });
});

// ------------------------------------------------------------------------------ mm_projector.bin

/**
 * A copy of a sharded LLaVA folder with the `model.mm_projector.*` tensors moved out of its shards (shards
 * rewritten without them, index updated); the LLM tensors stay.
 */
function withoutProjectorShards(llava: string): string {
  const dir = copyDir(llava, 'no-projector-shards');
  const indexFile = path.join(dir, 'model.safetensors.index.json');
  const index = readJson<{ weight_map: Record<string, string> }>(indexFile);
  for (const file of safetensorsIn(dir)) {
    rewrite(file, (t) => {
      for (const k of Object.keys(t)) if (k.startsWith('model.mm_projector.')) delete t[k];
    });
  }
  for (const k of Object.keys(index.weight_map)) if (k.startsWith('model.mm_projector.')) delete index.weight_map[k];
  fs.writeFileSync(indexFile, JSON.stringify(index, null, 1));
  return dir;
}

/** LLaVA's pretrain-stage release: config.json + mm_projector.bin, no safetensors at all. */
function pretrainFolder(llava: string): string {
  const dir = freshDir('pretrain-release');
  for (const f of ['config.json', 'mm_projector.bin']) fs.copyFileSync(path.join(llava, f), path.join(dir, f));
  return dir;
}

describe.each(['s336_llava15_pad_mlp2x', 's336_llava_square_mlp2x'])('%s: mm_projector.bin', (name) => {
  test('as --projector, as the fallback with the projector shards moved away, and alone: bit-identical to the shards, within the parity rule', async () => {
    const gc = loadCase(name);
    const llava = path.join(gc.dir, 'llava');
    const visionTower = path.join(gc.dir, 'clip_tower');
    const images = gc.json.images as { id: string; file: string }[];
    const run = (dir: string, options: LoadOptions = {}) =>
      withModel(dir, { visionTower, ...options }, async (m) => {
        expect(m.projector?.type).toBe('mlp2x_gelu');
        const { tensors, failures } = await encodeImages(
          m,
          images.map((i) => path.join(gc.dir, i.file)),
          { outputs: ['features', 'projected', 'merged'], batchSize: 4 },
        );
        expect(failures).toEqual([]);
        return Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, t.data]));
      });

    const noShards = withoutProjectorShards(llava);
    const src = openTensorSource(noShards);
    try {
      // the fallback path is the one taken: a checkpoint without projector tensors, LLM tensors still there
      expect(src.keys().filter((k) => k.startsWith('model.mm_projector.'))).toEqual([]);
      expect(src.keys().length).toBeGreaterThan(0);
    } finally {
      src.close();
    }
    const shards = await run(llava);
    const variants = {
      '--projector mm_projector.bin': await run(llava, { projector: path.join(llava, 'mm_projector.bin') }),
      'mm_projector.bin fallback (shards moved away)': await run(noShards),
      'pretrain release (config.json + mm_projector.bin)': await run(pretrainFolder(llava)),
    };
    for (const [label, out] of Object.entries(variants)) expectSameOutputs(out, shards, label);
    const bin = variants['mm_projector.bin fallback (shards moved away)'];
    images.forEach((img, i) => {
      expectParity(gc, `${img.id}.image_features`, bin[`images.${i}.features`]);
      expectParity(gc, `${img.id}.projected`, bin[`images.${i}.projected`]);
      expectParity(gc, `${img.id}.merged`, bin[`images.${i}.merged`]);
    });

    // negative control: with neither the shards nor mm_projector.bin there is nothing to load
    fs.rmSync(path.join(noShards, 'mm_projector.bin'));
    await expect(load(noShards, { visionTower })).rejects.toThrow(
      /mm_projector_type "mlp2x_gelu" but no projector tensors/,
    );
  });
});

// ------------------------------------------------------------------------ LLaVA-1.6 tower override

describe('s336_llava16_anyres_spatial_unpad: the fine-tuned tower in the checkpoint', () => {
  test('overrides clip_tower/ (outputs match the reference), and clip_tower/ alone gives different features', async () => {
    const gc = loadCase('s336_llava16_anyres_spatial_unpad');
    const llava = path.join(gc.dir, 'llava');
    const clipTower = path.join(gc.dir, 'clip_tower');
    const img = gc.json.images[0] as { id: string; file: string };
    const model = await load(llava, { visionTower: clipTower });
    let pixels: tf.Tensor4D;
    try {
      const { tensors } = await encodeImages(model, [path.join(gc.dir, img.file)], {
        outputs: ['pixel_values', 'features', 'projected', 'merged'],
      });
      for (const [k, out] of [
        ['image_features', 'features'],
        ['projected', 'projected'],
        ['merged', 'merged'],
      ]) {
        expectParity(gc, `${img.id}.${k}`, tensors[`images.0.${out}`].data, tensors[`images.0.${out}`].shape);
      }
      const pv = tensors['images.0.pixel_values'];
      pixels = tf.tensor4d(pv.data, pv.shape as [number, number, number, number]);
    } finally {
      model.dispose();
    }
    // The same pixels through the CLIP folder's own weights (same config, select layer -2, patch).
    const clipOnly = await load(clipTower);
    try {
      expect(clipOnly.settings).toMatchObject({ selectLayer: -2, selectFeature: 'patch' });
      const f = clipOnly.encode(pixels, { outputs: ['features'] }).features!;
      const ours = f.dataSync() as Float32Array;
      f.dispose();
      const truth = gc.expected.readFloat32(`${img.id}.image_features`);
      const r = checkParity(ours, truth, gc.json.expected[`${img.id}.image_features`]);
      expect(r.ok).toBe(false);
      expect(r.maxAbsErr).toBeGreaterThan(1e-2);
    } finally {
      clipOnly.dispose();
      pixels.dispose();
    }
  });
});

// --------------------------------------------------------------------------- LLM weights never read

const LLM_KEY = /^(model\.layers\.|model\.embed_tokens\.|lm_head\.|model\.norm\.)/;

describe('LLM weights are never read', () => {
  test('loading s336_llava16 reads no byte of model.layers.*, embed_tokens, lm_head, model.norm', async () => {
    const gc = loadCase('s336_llava16_anyres_spatial_unpad');
    const llava = path.join(gc.dir, 'llava');
    const nodeFs = fsModule;
    const realOpen = nodeFs.openSync;
    const realRead = nodeFs.readSync;
    const fdPath = new Map<number, string>();
    const reads: { file: string; pos: number; len: number }[] = [];
    const openSpy = jest.spyOn(nodeFs, 'openSync').mockImplementation((...args: Parameters<typeof fs.openSync>) => {
      const fd = realOpen(...args);
      fdPath.set(fd, path.resolve(String(args[0])));
      return fd;
    });
    const readSpy = jest.spyOn(nodeFs, 'readSync').mockImplementation(((
      fd: number,
      buf: NodeJS.ArrayBufferView,
      off: number,
      len: number,
      pos: number,
    ) => {
      reads.push({ file: fdPath.get(fd) ?? `fd ${fd}`, pos, len });
      return realRead(fd, buf, off, len, pos);
    }) as typeof fs.readSync);
    const tensorSpy = jest.spyOn(SafetensorsFile.prototype, 'readBytes');
    let model: LlavaVision | null = null;
    try {
      model = await load(llava, { visionTower: path.join(gc.dir, 'clip_tower') });
    } finally {
      openSpy.mockRestore();
      readSpy.mockRestore();
    }
    const named = tensorSpy.mock.calls.map(([n]) => n);
    tensorSpy.mockRestore();
    model.dispose();

    // By name: exactly the tower override, the projector and image_newline.
    expect(named.filter((n) => LLM_KEY.test(n))).toEqual([]);
    expect(
      named.every((n) => /^model\.(vision_tower\.vision_tower\.vision_model\.|mm_projector\.|image_newline$)/.test(n)),
    ).toBe(true);
    expect(named).toContain('model.image_newline');
    expect(named).toContain('model.mm_projector.2.weight');

    // By byte range: no read of a shard touches an LLM tensor's data.
    let llmTensors = 0;
    let shardReads = 0;
    for (const shard of safetensorsIn(llava).map((f) => path.resolve(f))) {
      const st = SafetensorsFile.open(shard);
      const ranges = st
        .keys()
        .filter((k) => LLM_KEY.test(k))
        .map((k) => {
          const i = st.info(k);
          return [st.dataStart + i.begin, st.dataStart + i.end];
        });
      st.close();
      llmTensors += ranges.length;
      for (const r of reads.filter((x) => x.file === shard)) {
        shardReads++;
        for (const [b, e] of ranges) {
          if (r.pos < e && r.pos + r.len > b)
            throw new Error(`read ${r.pos}+${r.len} of ${shard} overlaps an LLM tensor [${b}, ${e})`);
        }
      }
    }
    expect(llmTensors).toBe(5); // lm_head, embed_tokens, 2 of model.layers.0, model.norm
    expect(shardReads).toBeGreaterThan(named.length); // headers + every tensor read went through the spy
  });
});

// ------------------------------------------------------------------------------------------ llava-hf

const HF_LEGACY = path.join(CASES, 'tiny_llavahf_legacy_keys_full_f32', 'model');

/** Stacked pixel_values of every image of a case. */
function allPixels(gc: GoldenCase): tf.Tensor4D {
  const xs = (gc.json.images as { id: string }[]).map((i) => goldenPixelTensor(gc, i.id));
  const x = tf.concat(xs);
  tf.dispose(xs);
  return x;
}

function features(model: LlavaVision, x: tf.Tensor4D): { data: Float32Array; shape: number[] } {
  const f = model.encode(x, { outputs: ['features'] }).features!;
  const out = { data: f.dataSync() as Float32Array, shape: f.shape };
  f.dispose();
  return out;
}

/** float64 reference of llava-hf's projector: linear_2(act(linear_1(x))), biases optional. */
function referenceProjector(
  x: Float32Array,
  rows: number,
  w: Record<string, Float32Array>,
  act: (v: number) => number,
  inW: number,
  outW: number,
): Float64Array {
  const out = new Float64Array(rows * outW);
  const h = new Float64Array(outW);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outW; o++) {
      let s = w.b1 ? w.b1[o] : 0;
      for (let i = 0; i < inW; i++) s += w.w1[o * inW + i] * x[r * inW + i];
      h[o] = act(s);
    }
    for (let o = 0; o < outW; o++) {
      let s = w.b2 ? w.b2[o] : 0;
      for (let i = 0; i < outW; i++) s += w.w2[o * outW + i] * h[i];
      out[r * outW + o] = s;
    }
  }
  return out;
}
const ACTS: Record<string, (v: number) => number> = {
  gelu: (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)),
  quick_gelu: (v) => v / (1 + Math.exp(-1.702 * v)),
};
function projectorWeights(file: string, prefix = 'multi_modal_projector.'): Record<string, Float32Array> {
  const st = SafetensorsFile.open(file);
  try {
    const get = (k: string) => (st.has(prefix + k) ? st.readFloat32(prefix + k) : undefined);
    return Object.fromEntries(
      Object.entries({
        w1: get('linear_1.weight'),
        b1: get('linear_1.bias'),
        w2: get('linear_2.weight'),
        b2: get('linear_2.bias'),
      }).filter(([, v]) => v !== undefined),
    ) as Record<string, Float32Array>;
  } finally {
    st.close();
  }
}
function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('llava-hf options', () => {
  test.each(['default', 'full'])(
    'vision_feature_layer [-2, -1] (%s): features = the two single-layer features concatenated, projector input 2·D',
    async (strategy) => {
      const gc = loadCase('tiny_llavahf_legacy_keys_full_f32');
      const D = gc.json.vision_config!.hidden_size;
      const single = copyDir(HF_LEGACY, `hf-${strategy}`);
      editConfig(single, (c) => (c.vision_feature_select_strategy = strategy));
      const list = copyDir(single, `hf-list-${strategy}`);
      editConfig(list, (c) => (c.vision_feature_layer = [-2, -1]));
      const weights = path.join(list, 'model.safetensors');
      rewrite(weights, (t) => {
        const [out] = t['multi_modal_projector.linear_1.weight'].shape;
        t['multi_modal_projector.linear_1.weight'] = {
          dtype: 'F32',
          shape: [out, 2 * D],
          data: randomFloats(out * 2 * D, 11, -0.15, 0.15),
        };
      });

      const x = allPixels(gc);
      try {
        const [a, b] = [
          await withModel(single, { selectLayer: -2 }, (m) => features(m, x)),
          await withModel(single, { selectLayer: -1 }, (m) => features(m, x)),
        ];
        const [B, N] = a.shape;
        expect(N).toBe(strategy === 'default' ? 16 : 17);
        const concat = new Float32Array(B * N * 2 * D);
        for (let r = 0; r < B * N; r++) {
          concat.set(a.data.subarray(r * D, (r + 1) * D), r * 2 * D);
          concat.set(b.data.subarray(r * D, (r + 1) * D), r * 2 * D + D);
        }
        await withModel(list, {}, (m) => {
          expect(m.settings.selectLayer).toEqual([-2, -1]);
          expect(m.tower.featureSize).toBe(2 * D);
          expect(m.projector!.projectorConfig.inFeatures).toBe(2 * D);
          const out = m.encode(x, { outputs: ['features', 'projected'] });
          expect(out.features!.shape).toEqual([B, N, 2 * D]);
          expectSameBits(out.features!.dataSync() as Float32Array, concat, 'list features');
          const ref = referenceProjector(
            concat,
            B * N,
            projectorWeights(weights),
            ACTS.gelu,
            2 * D,
            out.projected!.shape[2],
          );
          expect(maxAbs(out.projected!.dataSync(), ref)).toBeLessThan(2e-5);
          tf.dispose([out.features!, out.projected!]);
        });
      } finally {
        x.dispose();
      }
    },
  );

  test("vision_feature_select_strategy 'default' drops CLS from 'full' exactly", async () => {
    const gc = loadCase('tiny_llavahf_legacy_keys_full_f32');
    const dflt = copyDir(HF_LEGACY, 'hf-default');
    editConfig(dflt, (c) => (c.vision_feature_select_strategy = 'default'));
    const x = allPixels(gc);
    try {
      const full = await withModel(
        HF_LEGACY,
        {},
        (m) => (expect(m.settings.selectFeature).toBe('cls_patch'), features(m, x)),
      );
      const patch = await withModel(dflt, {}, (m) => (expect(m.settings.selectFeature).toBe('patch'), features(m, x)));
      const [B, T, D] = full.shape;
      expect(patch.shape).toEqual([B, T - 1, D]);
      const dropped = new Float32Array(B * (T - 1) * D);
      for (let b = 0; b < B; b++) dropped.set(full.data.subarray((b * T + 1) * D, (b + 1) * T * D), b * (T - 1) * D);
      expectSameBits(patch.data, dropped, 'default vs full[:, 1:]');
    } finally {
      x.dispose();
    }
    editConfig(dflt, (c) => (c.vision_feature_select_strategy = 'cls'));
    await expect(load(dflt)).rejects.toThrow(/vision_feature_select_strategy "cls" is not supported/);
  });

  test.each(['gelu', 'quick_gelu'])('projector_hidden_act %s is the activation used', async (act) => {
    const gc = loadCase('tiny_llavahf_legacy_keys_full_f32');
    const dir = copyDir(HF_LEGACY, `hf-act-${act}`);
    editConfig(dir, (c) => (c.projector_hidden_act = act));
    const x = allPixels(gc);
    try {
      await withModel(dir, {}, (m) => {
        expect(m.settings.projectorAct).toBe(act);
        const out = m.encode(x, { outputs: ['features', 'projected'] });
        const [B, N, D] = out.features!.shape;
        const w = projectorWeights(path.join(dir, 'model.safetensors'));
        const ours = out.projected!.dataSync();
        const outW = out.projected!.shape[2];
        const f = out.features!.dataSync() as Float32Array;
        const right = referenceProjector(f, B * N, w, ACTS[act], D, outW);
        const wrong = referenceProjector(f, B * N, w, ACTS[act === 'gelu' ? 'quick_gelu' : 'gelu'], D, outW);
        expect(maxAbs(ours, right)).toBeLessThan(2e-5);
        expect(maxAbs(ours, wrong)).toBeGreaterThan(1e-3);
        tf.dispose([out.features!, out.projected!]);
      });
    } finally {
      x.dispose();
    }
  });

  test('multimodal_projector_bias false: no bias keys expected, a checkpoint without them loads; with them they are unused', async () => {
    const gc = loadCase('tiny_llavahf_legacy_keys_full_f32');
    const noBias = copyDir(HF_LEGACY, 'hf-nobias');
    editConfig(noBias, (c) => (c.multimodal_projector_bias = false));
    const extra = copyDir(noBias, 'hf-nobias-extra-keys'); // config says no bias, checkpoint still has them
    rewrite(path.join(noBias, 'model.safetensors'), (t) => {
      delete t['multi_modal_projector.linear_1.bias'];
      delete t['multi_modal_projector.linear_2.bias'];
    });
    const x = allPixels(gc);
    try {
      const run = (dir: string) =>
        withModel(dir, {}, (m) => {
          expect(m.settings.projectorBias).toBe(false);
          expect(m.projector!.weights.map((v) => v.shape.length)).toEqual([2, 2]);
          const out = m.encode(x, { outputs: ['features', 'projected'] });
          const [B, N, D] = out.features!.shape;
          const w = projectorWeights(path.join(dir, 'model.safetensors'));
          delete w.b1;
          delete w.b2;
          const ref = referenceProjector(
            out.features!.dataSync() as Float32Array,
            B * N,
            w,
            ACTS.gelu,
            D,
            out.projected!.shape[2],
          );
          expect(maxAbs(out.projected!.dataSync(), ref)).toBeLessThan(2e-5);
          const p = out.projected!.dataSync() as Float32Array;
          tf.dispose([out.features!, out.projected!]);
          return p;
        });
      expectSameBits(await run(noBias), await run(extra), 'bias keys present but disabled');
    } finally {
      x.dispose();
    }
    // and the default (bias true) with the keys gone names the missing key
    const missing = copyDir(noBias, 'hf-bias-missing');
    editConfig(missing, (c) => delete c.multimodal_projector_bias);
    await expect(load(missing)).rejects.toThrow(/missing tensor "multi_modal_projector\.linear_1\.bias"/);
  });
});

// ---------------------------------------------------------------------------- llava-next (config only)

describe('llava-next (HF model_type llava_next): config mapping only', () => {
  const base = { model_type: 'llava_next', vision_config: { hidden_size: 64 }, text_config: { hidden_size: 48 } };

  test('image_grid_pinpoints [h, w] become LLaVA (w, h); aspect anyres; merge spatial_unpad', () => {
    const s = llavaHfSettingsFromJson(
      {
        ...base,
        image_grid_pinpoints: [
          [336, 672],
          [1008, 336],
        ],
      },
      'config.json',
    );
    expect(s.gridPinpoints).toEqual([
      [672, 336],
      [336, 1008],
    ]);
    expect(s).toMatchObject({
      aspect: 'anyres',
      mergeType: 'spatial_unpad',
      selectLayer: -2,
      selectFeature: 'patch',
      projectorType: 'mlp2x_gelu',
    });
    // plain llava-hf (model_type llava) keeps processor-only square images and the flat merge
    expect(llavaHfSettingsFromJson({ ...base, model_type: 'llava' }, 'config.json')).toMatchObject({
      aspect: 'square',
      mergeType: 'flat',
      gridPinpoints: null,
    });
  });

  test("no image_grid_pinpoints: HF LlavaNextConfig's default list, as (w, h)", () => {
    const s = llavaHfSettingsFromJson(base, 'config.json');
    expect(s.gridPinpoints).toEqual([
      [672, 336],
      [336, 672],
      [672, 672],
      [336, 1008],
      [1008, 336],
    ]);
  });

  test.each([
    ['llava_hf', 'image_newline', HF_LEGACY],
    [
      'llava_hf_model_prefixed',
      'model.image_newline',
      path.join(CASES, 'tiny_llavahf_model_prefixed_default_bf16', 'model'),
    ],
  ])('%s folder: image_newline is read from "%s"', async (layout, key, src) => {
    const dir = copyDir(src, `next-${layout}`);
    editConfig(dir, (c) => (c.model_type = 'llava_next'));
    const text = readJson<{ text_config: { hidden_size: number } }>(path.join(dir, 'config.json')).text_config
      .hidden_size;
    const newline = randomFloats(text, 5);
    rewrite(path.join(dir, 'model.safetensors'), (t) => (t[key] = { dtype: 'F32', shape: [text], data: newline }));
    await withModel(dir, {}, (m) => {
      expect(m.checkpointKind).toBe(layout);
      expect(m.settings).toMatchObject({ aspect: 'anyres', mergeType: 'spatial_unpad' });
      expectSameBits(m.imageNewline!.dataSync() as Float32Array, newline, 'image_newline');
    });
  });
});

// ---------------------------------------------------------------------------- F32 / F16 / BF16 everywhere

type Half = 'F16' | 'BF16';
const ROUND: Record<Half, { toBits: (x: number) => number; fromBits: (b: number) => number }> = {
  F16: { toBits: f32ToF16Bits, fromBits: f16BitsToF32 },
  BF16: { toBits: f32ToBf16Bits, fromBits: bf16BitsToF32 },
};

/**
 * Two copies of a model folder: every float tensor stored as `dtype`, and the same rounded values stored as F32.
 * Returns [half, f32] and how many values the rounding changed.
 */
function halfAndReference(src: string, dtype: Half): { half: string; f32: string; changed: number } {
  const half = copyDir(src, `${dtype}`);
  const f32 = copyDir(src, `${dtype}-as-f32`);
  let changed = 0;
  for (const file of safetensorsIn(src)) {
    const { tensors, metadata } = readAll(file);
    const h: Record<string, TensorToWrite> = {};
    const r: Record<string, TensorToWrite> = {};
    for (const [k, t] of Object.entries(tensors)) {
      if (!isFloatDType(t.dtype)) {
        h[k] = r[k] = t;
        continue;
      }
      const st = SafetensorsFile.open(file);
      const values = st.readFloat32(k);
      st.close();
      const bits = Uint16Array.from(values, ROUND[dtype].toBits);
      const rounded = Float32Array.from(bits, ROUND[dtype].fromBits);
      for (let i = 0; i < values.length; i++) if (rounded[i] !== values[i]) changed++;
      h[k] = { dtype, shape: t.shape, data: new Uint8Array(bits.buffer) };
      r[k] = { dtype: 'F32', shape: t.shape, data: rounded };
      expect(h[k].data.byteLength).toBe(rounded.length * DTYPE_SIZE[dtype]);
    }
    writeSafetensors(path.join(half, path.basename(file)), h, metadata);
    writeSafetensors(path.join(f32, path.basename(file)), r, metadata);
  }
  return { half, f32, changed };
}

const DTYPE_LAYOUTS: [string, string, string, LoadOptions][] = [
  ['clip', 'tiny_clip_full_layout_f32', 'model', {}],
  ['clip_vision', 'tiny_clip_vision_only_f16', 'model', {}],
  [
    'llava',
    's336_llava16_anyres_spatial_unpad',
    'llava',
    { visionTower: path.join(CASES, 's336_llava16_anyres_spatial_unpad', 'clip_tower') },
  ],
  ['llava_hf', 'tiny_llavahf_legacy_keys_full_f32', 'model', {}],
  ['llava_hf_model_prefixed', 'tiny_llavahf_model_prefixed_default_bf16', 'model', {}],
];

describe.each(DTYPE_LAYOUTS)('dtypes in the %s layout', (layout, caseName, sub, options) => {
  test.each(['F16', 'BF16'] as Half[])(
    '%s checkpoint = F32 checkpoint of the same rounded values, bit for bit',
    async (dtype) => {
      const src = path.join(CASES, caseName, sub);
      const { half, f32, changed } = halfAndReference(src, dtype);
      const storedAs = new Set(
        safetensorsIn(half).flatMap((f) => Object.values(readAll(f).tensors).map((t) => t.dtype)),
      );
      expect([...storedAs].filter((d) => isFloatDType(d))).toEqual([dtype]);
      const a = await load(half, options);
      const b = await load(f32, options);
      try {
        expect([a.checkpointKind, b.checkpointKind]).toEqual([layout, layout]);
        if (layout === 'llava') expect(a.imageNewline).not.toBeNull();
        const x = randomPixels(a, 2, 3);
        expectSameOutputs(encodeAll(a, x), encodeAll(b, x), `${layout} ${dtype}`);
        x.dispose();
      } finally {
        a.dispose();
        b.dispose();
      }
      // the rounding changed values (except for a fixture already stored in this dtype), so the check has teeth
      const alreadyThere =
        (caseName.endsWith('_f16') && dtype === 'F16') || (caseName.endsWith('_bf16') && dtype === 'BF16');
      if (alreadyThere) expect(changed).toBe(0);
      else expect(changed).toBeGreaterThan(0);
    },
  );
});
