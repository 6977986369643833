/**
 * weightgen v1 (tools/weightgen.ts) against the golden fixtures: the README's test vectors, the sha256 of
 * every tensor of the full-size ViT-L/14-336 manifest (all 395; ~3 s of generation + ~1 s of hashing),
 * and every tensor stored in the tiny fixture checkpoints (F32, F16 and BF16 files), bit for bit.
 * Then the generated-checkpoint writer (tools/make_checkpoint.ts) on small configs.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createHash } from 'crypto';
import {
  fnv1a32,
  generateCheckpoint,
  generateTensor,
  numel,
  Rule,
  ruleFor,
  TensorSpec,
  uniform01,
} from '../tools/weightgen';
import { clipVisionTensorSpecs, GenDType, writeFullSizeCase, writeGeneratedCheckpoint } from '../tools/make_checkpoint';
import { f32ToBf16Bits, f32ToF16Bits } from '../src/io/dtype';
import { serializeSafetensors } from '../src/io/safetensors';
import { JsonObject, objectAt, readJson } from './helpers/json';

/** An entry of generator_test_vectors.json. */
interface TestVector {
  name: string;
  shape: number[];
  fnv1a32: string;
  rule: Rule;
  center: number;
  halfwidth: number;
  first_values: number[];
  first_values_f32_hex: string[];
  first_values_f16_hex: string[];
  first_values_bf16_hex: string[];
}

/** A safetensors header entry. */
interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

const FIX = path.join(__dirname, 'fixtures');
const FULL_MODEL = path.join(FIX, 'cases/vitl14_336_generated_sel-2_patch/model');
const hex = (x: number, digits: number) => `0x${x.toString(16).padStart(digits, '0')}`;
const bytesOf = (a: Float32Array | Uint16Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** The float32 values as stored in a file of `dtype` (F16/BF16: round-to-nearest-even bits). */
function encode(data: Float32Array, dtype: string): Buffer {
  if (dtype === 'F32') return bytesOf(data);
  const toBits = dtype === 'F16' ? f32ToF16Bits : f32ToBf16Bits;
  return bytesOf(Uint16Array.from(data, toBits));
}

/** Minimal independent safetensors reader (header + raw bytes), so this test does not trust src/io. */
function readSafetensors(file: string) {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const { __metadata__: metadata, ...entries } = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<
    string,
    HeaderEntry
  > & { __metadata__?: Record<string, string> };
  const tensors = Object.entries(entries).map(([name, t]) => ({
    name,
    dtype: t.dtype,
    shape: t.shape,
    bytes: buf.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]),
  }));
  return { headerLen: n, metadata, tensors };
}

function findFiles(dir: string, pred: (f: string) => boolean): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? findFiles(p, pred) : pred(p) ? [p] : [];
  });
}

describe('weightgen v1: README test vectors', () => {
  const { vectors } = readJson<{ vectors: TestVector[] }>(path.join(FIX, 'generator_test_vectors.json'));

  it.each(vectors.map((v) => [v.name, v] as const))('%s', (_name, v) => {
    expect(hex(fnv1a32(v.name), 8)).toBe(v.fnv1a32);
    expect(ruleFor(v.name, v.shape)).toEqual({ rule: v.rule, center: v.center, halfwidth: v.halfwidth });
    const data = generateTensor(v.name, v.shape);
    expect(data.length).toBe(numel(v.shape));
    const k = v.first_values_f32_hex.length;
    const bits = new Uint32Array(data.buffer, 0, k);
    expect([...bits].map((b) => hex(b, 8))).toEqual(v.first_values_f32_hex);
    expect([...data.subarray(0, k)]).toEqual(v.first_values);
    expect([...data.subarray(0, k)].map((x) => hex(f32ToF16Bits(x), 4))).toEqual(v.first_values_f16_hex);
    expect([...data.subarray(0, k)].map((x) => hex(f32ToBf16Bits(x), 4))).toEqual(v.first_values_bf16_hex);
    // value = float32(center + halfwidth * (2u - 1)), u exact multiples of 2^-24 in [0, 1)
    const u = uniform01(v.name, Math.min(4096, data.length));
    for (let i = 0; i < u.length; i++) {
      if (
        Math.fround(v.center + v.halfwidth * (2 * u[i] - 1)) !== data[i] ||
        u[i] < 0 ||
        u[i] >= 1 ||
        !Number.isInteger(u[i] * 2 ** 24)
      )
        throw new Error(`${v.name}[${i}]: u = ${u[i]}, value ${data[i]}`);
    }
  });

  it('fnv1a32 hashes UTF-8 bytes and ruleFor follows the table order', () => {
    expect(fnv1a32('')).toBe(0x811c9dc5);
    expect(fnv1a32('a')).toBe(0xe40c292c); // the published FNV-1a 32 value of "a"
    let h = 0x811c9dc5; // 'é' is the two UTF-8 bytes c3 a9, not one code unit
    for (const b of [0xc3, 0xa9]) h = Math.imul(h ^ b, 0x01000193) >>> 0;
    expect(fnv1a32('é')).toBe(h);
    expect(ruleFor('logit_scale', []).rule).toBe('logit_scale');
    expect(ruleFor('model.image_newline', [64]).rule).toBe('embedding'); // before norm_weight (1-D)
    expect(ruleFor('target.bias', [4]).rule).toBe('target'); // before bias
    expect(ruleFor('x.weight', [3, 4, 5]).halfwidth).toBe(Math.sqrt(3 / 20));
    expect(generateTensor('logit_scale', [])).toEqual(new Float32Array([Math.fround(2.6592600369644)]));
  });
});

describe('weightgen v1: full-size ViT-L/14-336 manifest', () => {
  const manifest = readJson<{
    tensors: (TensorSpec & { rule: Rule; center: number; halfwidth: number; f32_sha256: string })[];
  }>(path.join(FULL_MODEL, 'weights_manifest.json'));
  const entries = manifest.tensors;

  it('lists the HF vision tower of its config plus a 1024->4096->4096 mlp2x projector', () => {
    const byName = (a: TensorSpec, b: TensorSpec) => (a.name < b.name ? -1 : 1);
    const tower = entries.filter((e) => e.name.startsWith('vision_model.')).map(({ name, shape }) => ({ name, shape }));
    expect(tower.sort(byName)).toEqual(
      clipVisionTensorSpecs(readJson<JsonObject>(path.join(FULL_MODEL, 'config.json'))).sort(byName),
    );
    expect(entries.filter((e) => !e.name.startsWith('vision_model.')).map((e) => [e.name, e.shape])).toEqual([
      ['model.mm_projector.0.weight', [4096, 1024]],
      ['model.mm_projector.0.bias', [4096]],
      ['model.mm_projector.2.weight', [4096, 4096]],
      ['model.mm_projector.2.bias', [4096]],
    ]);
  });

  it('rule, center and halfwidth of every tensor', () => {
    for (const e of entries)
      expect([e.name, ruleFor(e.name, e.shape)]).toEqual([
        e.name,
        { rule: e.rule, center: e.center, halfwidth: e.halfwidth },
      ]);
  });

  it('sha256 of every tensor (324M values, float32 little-endian)', () => {
    const t0 = Date.now();
    const bad: string[] = [];
    let n = 0;
    for (const t of generateCheckpoint(entries)) {
      if (createHash('sha256').update(bytesOf(t.data)).digest('hex') !== entries[n].f32_sha256) bad.push(t.name);
      n++;
    }
    expect(n).toBe(395);
    expect(bad).toEqual([]);
    console.log(
      `weightgen: generated + hashed ${entries.length} tensors in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
  });
});

/**
 * tiny_clip_massive_activations is generator weights plus the edits its case.json describes (two
 * outlier channels 11 and 40: fc2 biases +50 / −30, LayerNorm gains 0.03 / 0.05, CLS embedding +30).
 * Each edit, as element -> value from the generated value g, evaluated in float64 and rounded once.
 */
const MASSIVE_EDITS: { match: RegExp; edits: Record<number, (g: number) => number> }[] = [
  { match: /embeddings\.class_embedding$/, edits: { 11: (g) => g + 30 } },
  { match: /layer_norm[12]\.weight$/, edits: { 11: () => 0.03, 40: () => 0.05 } },
  { match: /mlp\.fc2\.bias$/, edits: { 11: (g) => g + 50, 40: (g) => g - 30 } },
];

function expectedWeights(file: string, name: string, shape: number[]): Float32Array {
  const data = generateTensor(name, shape);
  if (!file.includes('tiny_clip_massive_activations')) return data;
  for (const { match, edits } of MASSIVE_EDITS) {
    if (!match.test(name)) continue;
    for (const [i, edit] of Object.entries(edits)) data[Number(i)] = edit(data[Number(i)]);
  }
  return data;
}

describe('weightgen v1: stored fixture checkpoints', () => {
  // checkpoints only: expected*.safetensors hold model outputs, not weights
  const files = findFiles(
    path.join(FIX, 'cases'),
    (f) => f.endsWith('.safetensors') && !path.basename(f).startsWith('expected'),
  );

  it('every tensor of every fixture checkpoint equals the generator bit for bit (plus documented edits)', () => {
    expect(files.length).toBeGreaterThanOrEqual(30);
    const rules = new Set<Rule>();
    const dtypes = new Set<string>();
    const bad: string[] = [];
    for (const file of files) {
      for (const t of readSafetensors(file).tensors) {
        rules.add(ruleFor(t.name, t.shape).rule);
        dtypes.add(t.dtype);
        if (!encode(expectedWeights(file, t.name, t.shape), t.dtype).equals(t.bytes)) bad.push(`${file}: ${t.name}`);
      }
    }
    expect(bad).toEqual([]);
    expect([...dtypes].sort()).toEqual(['BF16', 'F16', 'F32']);
    // every rule but 'target' (training targets live in expected.safetensors) is exercised
    expect([...rules].sort()).toEqual(['bias', 'embedding', 'linear_weight', 'logit_scale', 'norm_weight']);
  });
});

describe('make_checkpoint: generated checkpoint folders', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'weightgen-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const f16Case = path.join(FIX, 'cases/tiny_clip_vision_only_f16/model');

  it('reproduces a stored F16 fixture tower from its config alone', () => {
    const config = readJson<JsonObject>(path.join(f16Case, 'config.json'));
    const out = path.join(tmp, 'f16');
    const r = writeGeneratedCheckpoint(out, { config, dtype: 'F16' });
    expect(r.cached).toBe(false);
    const mine = readSafetensors(path.join(out, 'model.safetensors'));
    const ref = readSafetensors(path.join(f16Case, 'model.safetensors'));
    const strip = (ts: typeof mine.tensors) =>
      ts.map((t) => [t.name, t.dtype, t.shape, t.bytes.toString('hex')]).sort();
    expect(strip(mine.tensors)).toEqual(strip(ref.tensors));
    expect(readJson(path.join(out, 'config.json'))).toEqual(config);
  });

  it.each(['F32', 'F16', 'BF16'] as GenDType[])('%s file is byte-identical to src/io writeSafetensors', (dtype) => {
    const config = readJson<JsonObject>(path.join(FIX, 'cases/tiny_clip_full_layout_f32/model/config.json'));
    const out = path.join(tmp, `ident-${dtype}`);
    writeGeneratedCheckpoint(out, { config, dtype });
    const file = fs.readFileSync(path.join(out, 'model.safetensors'));
    const { metadata, headerLen } = readSafetensors(path.join(out, 'model.safetensors'));
    expect(headerLen % 8).toBe(0);
    expect(metadata).toMatchObject({ format: 'pt', generator: 'weightgen v1', dtype });
    const record: Parameters<typeof serializeSafetensors>[0] = {};
    for (const t of generateCheckpoint(clipVisionTensorSpecs(config)))
      record[t.name] = { dtype, shape: t.shape, data: t.data };
    expect(file.equals(serializeSafetensors(record, metadata))).toBe(true);
  });

  it('keeps a matching file, regenerates on another dtype / key set / a damaged file / force', () => {
    const config = readJson<JsonObject>(path.join(f16Case, 'config.json'));
    const out = path.join(tmp, 'cache');
    const file = path.join(out, 'model.safetensors');
    const gen = (o: Partial<Parameters<typeof writeGeneratedCheckpoint>[1]> = {}) =>
      writeGeneratedCheckpoint(out, { config, dtype: 'F32', ...o }).cached;
    expect(gen()).toBe(false);
    expect(gen()).toBe(true);
    expect(gen({ dtype: 'BF16' })).toBe(false);
    expect(gen({ dtype: 'BF16' })).toBe(true);
    expect(gen({ dtype: 'BF16', keys: (n) => !n.includes('post_layernorm') })).toBe(false);
    expect(readSafetensors(file).tensors.some((t) => t.name.includes('post_layernorm'))).toBe(false);
    fs.truncateSync(file, fs.statSync(file).size - 4);
    expect(gen({ dtype: 'BF16', keys: (n) => !n.includes('post_layernorm') })).toBe(false);
    expect(gen({ dtype: 'BF16', keys: (n) => !n.includes('post_layernorm'), force: true })).toBe(false);
  });

  it('writeFullSizeCase lays out clip_tower/ + llava/ from a case model folder', () => {
    // A small stand-in for the ViT-L case folder: same files, small tower, mlp2x projector.
    const caseDir = path.join(tmp, 'case');
    const modelDir = path.join(caseDir, 'model');
    fs.mkdirSync(modelDir, { recursive: true });
    const config = readJson<JsonObject>(path.join(FULL_MODEL, 'config.json'));
    Object.assign(objectAt(config, 'vision_config'), {
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 2,
      image_size: 28,
    });
    fs.writeFileSync(path.join(modelDir, 'config.json'), JSON.stringify(config, null, 2));
    fs.copyFileSync(path.join(FULL_MODEL, 'preprocessor_config.json'), path.join(modelDir, 'preprocessor_config.json'));
    fs.copyFileSync(path.join(FULL_MODEL, '../case.json'), path.join(caseDir, 'case.json'));
    const proj = [
      { name: 'model.mm_projector.0.weight', shape: [24, 16] },
      { name: 'model.mm_projector.0.bias', shape: [24] },
      { name: 'model.mm_projector.2.weight', shape: [24, 24] },
      { name: 'model.mm_projector.2.bias', shape: [24] },
    ];
    const tensors = [...clipVisionTensorSpecs(config), ...proj];
    fs.writeFileSync(path.join(modelDir, 'weights_manifest.json'), JSON.stringify({ dtype: 'F32', tensors }));

    const out = path.join(tmp, 'full');
    const r = writeFullSizeCase(modelDir, out, 'F32');
    expect([r.towerDir, r.llavaDir]).toEqual([path.join(out, 'clip_tower'), path.join(out, 'llava')]);
    for (const f of ['config.json', 'preprocessor_config.json']) {
      expect(fs.readFileSync(path.join(r.towerDir, f))).toEqual(fs.readFileSync(path.join(modelDir, f)));
    }
    const tower = readSafetensors(path.join(r.towerDir, 'model.safetensors')).tensors;
    expect(tower.map((t) => t.name).sort()).toEqual(
      tensors
        .slice(0, -4)
        .map((t) => t.name)
        .sort(),
    );
    const llava = readSafetensors(path.join(r.llavaDir, 'model.safetensors')).tensors;
    expect(llava.map((t) => [t.name, t.shape])).toEqual(
      [...proj].sort((a, b) => (a.name < b.name ? -1 : 1)).map((t) => [t.name, t.shape]),
    );
    for (const t of llava) expect(t.bytes.equals(bytesOf(generateTensor(t.name, t.shape)))).toBe(true);
    expect(readJson(path.join(r.llavaDir, 'config.json'))).toMatchObject({
      model_type: 'llava',
      mm_projector_type: 'mlp2x_gelu',
      mm_hidden_size: 16,
      hidden_size: 24,
      mm_vision_select_layer: -2,
      mm_vision_select_feature: 'patch',
    });
    expect(writeFullSizeCase(modelDir, out, 'F32').tower.cached).toBe(true);
  });
});
