import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CheckpointError } from '../src/errors';
import { Checkpoint, findCheckpointFiles } from '../src/io/checkpoint';
import { writeSafetensors } from '../src/io/safetensors';

const CASES = path.join(__dirname, 'fixtures', 'cases');
const SHARDED = path.join(CASES, 'tiny_llava_anyres_spatial_unpad', 'llava');
let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-test-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

let dirCount = 0;
/** A fresh folder holding the given safetensors files ({file: {tensor: values}}) and optional index. */
function makeDir(files: Record<string, Record<string, number[]>>, index?: unknown): string {
  const dir = path.join(tmp, `d${dirCount++}`);
  fs.mkdirSync(dir);
  for (const [file, tensors] of Object.entries(files)) {
    const t = Object.fromEntries(
      Object.entries(tensors).map(([k, v]) => [
        k,
        { dtype: 'F32' as const, shape: [v.length], data: new Float32Array(v) },
      ]),
    );
    writeSafetensors(path.join(dir, file), t, { format: 'pt', file });
  }
  if (index !== undefined) fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
  return dir;
}

function keysOf(source: string): string[] {
  const ck = Checkpoint.open(source);
  try {
    return ck.keys();
  } finally {
    ck.close();
  }
}

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CheckpointError);
    return (e as Error).message;
  }
  throw new Error('expected a CheckpointError');
}

describe('golden fixtures', () => {
  test('sharded folder (index + 2 shards)', () => {
    const ck = Checkpoint.open(SHARDED);
    try {
      expect(ck.source).toBe(SHARDED);
      expect(ck.keys().length).toBe(10);
      expect(ck.keys()).toContain('model.mm_projector.0.weight');
      expect(ck.has('model.image_newline')).toBe(true);
      expect(ck.has('vision_model.x')).toBe(false);
      const info = ck.info('model.mm_projector.0.weight');
      expect(info).toMatchObject({ dtype: 'F32', shape: [48, 64] });
      expect(info.file).toBe(path.join(SHARDED, 'model-00002-of-00002.safetensors'));
      const w = ck.readFloat32('model.mm_projector.0.weight');
      expect(w.length).toBe(48 * 64);
      expect(w[0]).toBe(Math.fround(-0.1849806159734726));
      expect(w.reduce((s, x) => s + x, 0)).toBeCloseTo(-11.509082023287192, 8);
      const nl = ck.read('model.image_newline');
      expect(nl.dtype).toBe('F32');
      expect(new Float32Array(nl.data.buffer, nl.data.byteOffset, 48)[1]).toBe(Math.fround(0.04257640987634659));
      expect(ck.info('model.image_newline').file).toBe(path.join(SHARDED, 'model-00001-of-00002.safetensors'));
      expect(ck.metadata()).toEqual({ format: 'pt', total_size: '56256' });
      expect(() => ck.readFloat32('nope')).toThrow(/llava.*no tensor "nope"/);
    } finally {
      ck.close();
    }
    expect(findCheckpointFiles(SHARDED)).toEqual([
      path.join(SHARDED, 'model-00001-of-00002.safetensors'),
      path.join(SHARDED, 'model-00002-of-00002.safetensors'),
    ]);
    // The index file itself is accepted as a source too.
    expect(keysOf(path.join(SHARDED, 'model.safetensors.index.json'))).toEqual(keysOf(SHARDED));
  });

  test('folder with model.safetensors (F16) and single files', () => {
    const dir = path.join(CASES, 'tiny_clip_vision_only_f16', 'model');
    const ck = Checkpoint.open(dir);
    expect(ck.keys().length).toBe(39);
    expect(ck.info('vision_model.post_layernorm.weight').file).toBe(path.join(dir, 'model.safetensors'));
    expect(Array.from(ck.readFloat32('vision_model.post_layernorm.weight').subarray(0, 2))).toEqual([
      1.0869140625, 0.97900390625,
    ]);
    expect(ck.metadata()).toEqual({ format: 'pt' });
    ck.close();
    expect(findCheckpointFiles(dir)).toEqual([path.join(dir, 'model.safetensors')]);

    const bf16 = Checkpoint.open(
      path.join(CASES, 'tiny_llavahf_model_prefixed_default_bf16', 'model', 'model.safetensors'),
    );
    expect(bf16.info('model.multi_modal_projector.linear_1.weight').dtype).toBe('BF16');
    expect(bf16.readFloat32('model.multi_modal_projector.linear_1.weight')[0]).toBe(-0.07373046875);
    bf16.close();

    const exp = Checkpoint.open(path.join(CASES, 'tiny_clip_full_layout_f32', 'expected.safetensors'));
    expect(exp.keys().length).toBe(28);
    expect(exp.read('foo3x5x4indexed.png.resized_u8').dtype).toBe('U8');
    expect(() => exp.readFloat32('foo3x5x4indexed.png.resized_u8')).toThrow(/resized_u8.*U8.*float32/);
    exp.close();
  });
});

describe('folder layouts', () => {
  test('exactly one *.safetensors file with another name is used', () => {
    const dir = makeDir({ 'weights.safetensors': { a: [1, 2] } });
    const ck = Checkpoint.open(dir);
    expect(ck.keys()).toEqual(['a']);
    expect(Array.from(ck.readFloat32('a'))).toEqual([1, 2]);
    ck.close();
  });

  test('model.safetensors wins over other files; the index wins over model.safetensors', () => {
    const dir = makeDir({ 'model.safetensors': { a: [1] }, 'other.safetensors': { b: [2] } });
    expect(keysOf(dir)).toEqual(['a']);
    const dir2 = makeDir(
      { 'model.safetensors': { a: [1] }, 's1.safetensors': { b: [2] } },
      { weight_map: { b: 's1.safetensors' } },
    );
    expect(keysOf(dir2)).toEqual(['b']);
  });

  test('no or several candidate files: error lists what was looked for', () => {
    const empty = makeDir({});
    const msg = errorOf(() => Checkpoint.open(empty));
    expect(msg).toContain(empty);
    expect(msg).toContain('model.safetensors.index.json');
    expect(msg).toContain('model.safetensors');
    expect(msg).toContain('found 0');
    expect(findCheckpointFiles(empty)).toBeNull();
    const two = makeDir({ 'a.safetensors': { a: [1] }, 'b.safetensors': { b: [1] } });
    expect(errorOf(() => Checkpoint.open(two))).toMatch(/found 2: a\.safetensors, b\.safetensors/);
    expect(errorOf(() => Checkpoint.open(path.join(tmp, 'does-not-exist')))).toMatch(/does-not-exist.*no such/);
  });

  test('metadata: first shard overlaid by the index metadata', () => {
    const dir = makeDir(
      { 's1.safetensors': { a: [1] }, 's2.safetensors': { b: [2] } },
      { metadata: { total_size: 8, note: 'x' }, weight_map: { a: 's1.safetensors', b: 's2.safetensors' } },
    );
    const ck = Checkpoint.open(dir);
    expect(ck.metadata()).toEqual({ format: 'pt', file: 's1.safetensors', total_size: '8', note: 'x' });
    expect(Array.from(ck.readFloat32('b'))).toEqual([2]);
    ck.close();
  });
});

describe('bad sharded indexes', () => {
  const shardDir = (entry: string) =>
    makeDir({ 's1.safetensors': { a: [1] } }, { weight_map: { a: 's1.safetensors', evil: entry } });

  test.each(['../x.safetensors', '/etc/passwd', 'sub/x.safetensors', '..\\x.safetensors', 'x\0.safetensors', '..', ''])(
    'shard name %j pointing outside the folder is refused',
    (entry) => {
      const dir = shardDir(entry);
      const msg = errorOf(() => Checkpoint.open(dir));
      expect(msg).toContain(path.join(dir, 'model.safetensors.index.json'));
      expect(msg).toContain('"evil"');
      expect(msg).toContain(JSON.stringify(entry));
      expect(msg).toContain('plain file name');
      expect(() => findCheckpointFiles(dir)).toThrow(CheckpointError);
    },
  );

  test('index naming a missing shard', () => {
    const dir = makeDir(
      { 's1.safetensors': { a: [1] } },
      { weight_map: { a: 's1.safetensors', b: 'model-00002-of-00002.safetensors' } },
    );
    const msg = errorOf(() => Checkpoint.open(dir));
    expect(msg).toContain('model.safetensors.index.json');
    expect(msg).toContain('"model-00002-of-00002.safetensors"');
    expect(msg).toContain('not found');
  });

  test('tensor listed in the index but missing from its shard', () => {
    const dir = makeDir(
      { 's1.safetensors': { a: [1] }, 's2.safetensors': { b: [2] } },
      { weight_map: { a: 's1.safetensors', b: 's2.safetensors', ghost: 's2.safetensors' } },
    );
    const ck = Checkpoint.open(dir);
    expect(ck.has('ghost')).toBe(true);
    expect(Array.from(ck.readFloat32('a'))).toEqual([1]); // other shards still work
    for (const name of ['ghost', 'b']) {
      // any tensor of the bad shard reports the problem
      const msg = errorOf(() => ck.readFloat32(name));
      expect(msg).toContain('"ghost"');
      expect(msg).toContain(path.join(dir, 's2.safetensors'));
      expect(msg).toContain('missing from shard');
    }
    ck.close();
  });

  test('malformed index JSON', () => {
    const dir = makeDir({ 's1.safetensors': { a: [1] } }, { weights: {} });
    expect(errorOf(() => Checkpoint.open(dir))).toMatch(/index\.json.*weight_map/);
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{not json');
    expect(errorOf(() => Checkpoint.open(dir))).toMatch(/index\.json.*JSON/);
    const dir2 = makeDir({ 's1.safetensors': { a: [1] } }, { weight_map: { a: 3 } });
    expect(errorOf(() => Checkpoint.open(dir2))).toMatch(/"a".*not a string/);
  });
});
