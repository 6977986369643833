/**
 * Every checkpoint users have, through the public loader (issue 4): CLIP towers as `pytorch_model.bin`
 * (single and sharded), LLaVA's `mm_projector.bin`, the LLaVA-1.6 fine-tuned tower override, llava-hf
 * options (list `vision_feature_layer`, select strategy, projector act/bias), llava-next config mapping,
 * F32/F16/BF16 in every layout, and LLM weights never read.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { EncodeResult, LlavaVision, LoadOptions, OutputName } from '../src/api/llava_vision';
import { findWeights, openTensorSource } from '../src/api/sources';
import { initBackend } from '../src/backend';
import { CheckpointError } from '../src/errors';
import { TorchBinFile } from '../src/io/torch_bin';
import { crc32 } from '../src/io/zip';
import { CASES, FIXTURES, GoldenCase, expectParity, loadCase, writeParityReport } from './helpers/golden';

let tmp: string;
let savedHubCache: string | undefined;
beforeAll(async () => {
  await initBackend({ log: null });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'checkpoints-test-'));
  // mm_vision_tower must never resolve through a real HF cache on this machine
  savedHubCache = process.env.HF_HUB_CACHE;
  process.env.HF_HUB_CACHE = path.join(tmp, 'empty-hub');
});
afterAll(() => {
  writeParityReport('checkpoints');
  if (savedHubCache === undefined) delete process.env.HF_HUB_CACHE;
  else process.env.HF_HUB_CACHE = savedHubCache;
  fs.rmSync(tmp, { recursive: true, force: true });
});

// ------------------------------------------------------------------------------------------ helpers

let dirCount = 0;
function freshDir(name: string): string {
  const dir = path.join(tmp, `${dirCount++}-${name}`);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}
function copyDir(src: string, name = path.basename(src)): string {
  const dst = freshDir(name);
  fs.cpSync(src, dst, { recursive: true });
  return dst;
}

interface Outputs { [name: string]: Float32Array }
/** Every output the model has, as plain arrays (hidden states by index). */
function encodeAll(model: LlavaVision, pixels: tf.Tensor4D): Outputs {
  const outputs: OutputName[] = ['hidden_states', 'features', 'pooler_output', ...(model.projector ? (['projected'] as const) : [])];
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
  return LlavaVision.load(dir, { log: null, ...options });
}

/** A golden case's pixel_values of image `id` as a batch of one. */
function fixturePixels(gc: GoldenCase, id: string): tf.Tensor4D {
  const key = `${id}.pixel_values`;
  const shape = gc.json.expected[key].shape as number[];
  return tf.tensor4d(gc.expected.readFloat32(key), (shape.length === 3 ? [1, ...shape] : shape) as [number, number, number, number]);
}

// ---------------------------------------------------------------------- a minimal torch.save writer

/**
 * Writes `{name: tensor}` as torch.save does (zip, protocol-2 pickle of an OrderedDict of
 * `_rebuild_tensor_v2` calls, one storage entry per tensor): enough to make sharded `pytorch_model-*.bin`.
 */
function writeTorchBin(file: string, tensors: Record<string, { dtype: 'F32' | 'F16' | 'BF16'; shape: number[]; data: Uint8Array }>): void {
  const STORAGE = { F32: 'FloatStorage', F16: 'HalfStorage', BF16: 'BFloat16Storage' };
  const op: number[] = [];
  const str = (s: string) => { const b = Buffer.from(s, 'utf8'); op.push(0x58, ...u32(b.length), ...b); };
  const int = (n: number) => op.push(0x4a, ...u32(n));
  const u32 = (n: number) => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
  const global = (m: string, n: string) => op.push(0x63, ...Buffer.from(`${m}\n${n}\n`));
  const orderedDict = () => { global('collections', 'OrderedDict'); op.push(0x28, 0x74, 0x52); };
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
    op.push(0x28); str('storage'); global('torch', STORAGE[t.dtype]); str(key); str('cpu'); int(numel); op.push(0x74, 0x51);
    int(0);
    op.push(0x28); t.shape.forEach(int); op.push(0x74);
    op.push(0x28); strides.forEach(int); op.push(0x74);
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
    lh.writeUInt32LE(0x04034b50, 0); lh.writeUInt16LE(20, 4); lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(data.length, 18); lh.writeUInt32LE(data.length, 22); lh.writeUInt16LE(n.length, 26);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0); ch.writeUInt16LE(20, 4); ch.writeUInt16LE(20, 6); ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(data.length, 20); ch.writeUInt32LE(data.length, 24); ch.writeUInt16LE(n.length, 28); ch.writeUInt32LE(offset, 42);
    parts.push(lh, n, Buffer.from(data));
    central.push(ch, n);
    offset += 30 + n.length + data.length;
  }
  const dir = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0); eocd.writeUInt16LE(entries.length, 8); eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(dir.length, 12); eocd.writeUInt32LE(offset, 16);
  fs.writeFileSync(file, Buffer.concat([...parts, dir, eocd]));
}

// ------------------------------------------------------------------------- pytorch_model.bin towers

describe('CLIP tower as pytorch_model.bin', () => {
  const CLIP_F16 = path.join(CASES, 'tiny_clip_vision_only_f16', 'model');
  const BIN = path.join(FIXTURES, 'torch_bin', 'tiny_clip_vision_f16', 'pytorch_model.bin');

  /** A model folder: the safetensors fixture's config/preprocessor, weights as given. */
  function binFolder(name: string): string {
    const dir = freshDir(name);
    for (const f of ['config.json', 'preprocessor_config.json']) fs.copyFileSync(path.join(CLIP_F16, f), path.join(dir, f));
    return dir;
  }

  async function expectSameAsSafetensors(dir: string): Promise<void> {
    const gc = loadCase('tiny_clip_vision_only_f16');
    const ref = await load(CLIP_F16);
    const bin = await load(dir);
    try {
      expect(bin.layout).toBe('clip_vision');
      for (const img of gc.json.images as { id: string }[]) {
        const x = fixturePixels(gc, img.id);
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
      bin.keys().filter((k) => bin.info(k).dtype === 'F16').forEach((k, i) => {
        const shard = `pytorch_model-0000${(i % 2) + 1}-of-00002.bin`;
        weightMap[k] = shard;
        (shards[shard] ??= {})[k] = { dtype: 'F16', shape: bin.info(k).shape, data: bin.readBytes(k) };
      });
    } finally {
      bin.close();
    }
    for (const [shard, tensors] of Object.entries(shards)) writeTorchBin(path.join(dir, shard), tensors);
    fs.writeFileSync(path.join(dir, 'pytorch_model.bin.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
    const src = openTensorSource(dir);
    try {
      expect(src.format).toBe('torch_bin');
      expect(src.files()).toEqual(Object.keys(shards).sort().map((f) => path.join(dir, f)));
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
    fs.writeFileSync(path.join(dir, 'pytorch_model.bin.index.json'), JSON.stringify({ weight_map: { a: 'pytorch_model-00001-of-00001.bin' } }));
    expect(() => openTensorSource(dir)).toThrow(CheckpointError);
    expect(() => openTensorSource(dir)).toThrow(/pytorch_model-00001-of-00001\.bin.*not found/);
    const empty = binFolder('clip-no-weights');
    expect(() => openTensorSource(empty)).toThrow(/no weights found.*model\.safetensors.*pytorch_model\.bin/);
  });
});
