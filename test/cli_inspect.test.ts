/**
 * `llava-vision inspect` and `inspectCheckpoint`: layouts, configs, tensors, and what would be loaded or
 * ignored — checked against what `LlavaVision.load` actually reads, tensor by tensor.
 */
import * as fs from 'fs';
import * as path from 'path';
import { InspectReport, inspectCheckpoint, naturalCompare, visionTowerSpecs } from '../src/loading/inspect';
import { LlavaVision, LoadOptions } from '../src/api/llava_vision';
import { initBackend } from '../src/backend';
import { readVisionConfig } from '../src/loading/sources';
import { namedParams } from '../src/model/module';
import { CLIPVisionModel } from '../src/model/vision_transformer';
import { SafetensorsFile, TensorToWrite, writeSafetensors } from '../src/io/safetensors';
import { TorchBinFile } from '../src/io/torch_bin';
import { CASES, FIXTURES } from './helpers/golden';
import { isolatedTempDir } from './helpers/isolation';
import { runCli } from './helpers/cli';

const L16 = path.join(CASES, 's336_llava16_anyres_spatial_unpad');
const L15 = path.join(CASES, 's336_llava15_pad_mlp2x');
const HF_PREFIXED = path.join(CASES, 'tiny_llavahf_model_prefixed_default_bf16', 'model');
const HF_LEGACY = path.join(CASES, 'tiny_llavahf_legacy_keys_full_f32', 'model');
const CLIP_FULL = path.join(CASES, 'tiny_clip_full_layout_f32', 'model');
const CLIP_BIN = path.join(FIXTURES, 'torch_bin', 'tiny_clip_vision_f16', 'pytorch_model.bin');

const tmp = isolatedTempDir('cli-inspect-');
beforeAll(() => initBackend({ log: null }));

let n = 0;
function copyDir(src: string): string {
  const dst = path.join(tmp(), `${n++}-${path.basename(src)}`);
  fs.cpSync(src, dst, { recursive: true });
  return dst;
}

const names = (r: InspectReport, role: string) =>
  r.tensors
    .filter((t) => t.role === role)
    .map((t) => t.name)
    .sort();

/** The tensor names `LlavaVision.load` reads (safetensors and torch .bin), per file. */
async function namesReadByLoad(dir: string, options: LoadOptions = {}): Promise<Map<string, string[]>> {
  const read = new Map<string, string[]>();
  const note = (file: string, name: string) =>
    read.set(path.resolve(file), [...(read.get(path.resolve(file)) ?? []), name]);
  // spies keep calling the originals; the file comes from each call's `this`
  const s1 = jest.spyOn(SafetensorsFile.prototype, 'readBytes');
  const s2 = jest.spyOn(TorchBinFile.prototype, 'readBytes');
  try {
    // One thread: the reads are counted on this thread (shard threads read their slices of the same tensors).
    const model = await LlavaVision.load(dir, { log: null, threads: 1, ...options });
    model.dispose();
    s1.mock.calls.forEach(([name], i) => note((s1.mock.contexts[i] as SafetensorsFile).path, name));
    s2.mock.calls.forEach(([name], i) => note((s2.mock.contexts[i] as TorchBinFile).path, name));
  } finally {
    s1.mockRestore();
    s2.mockRestore();
  }
  for (const [k, v] of read) read.set(k, [...new Set(v)].sort());
  return read;
}

/** Tensors inspect marks as loaded, per file. */
function loadedByInspect(r: InspectReport): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const t of r.tensors) if (t.role !== 'ignored') m.set(t.file, [...(m.get(t.file) ?? []), t.name]);
  for (const [k, v] of m) m.set(k, v.sort());
  return m;
}

describe('inspectCheckpoint agrees with what LlavaVision.load reads', () => {
  test('LLaVA-1.6 sharded folder: tower override, projector, image_newline loaded; the LLM ignored', async () => {
    const dir = path.join(L16, 'llava');
    const r = await inspectCheckpoint(dir);
    expect(r.layout).toBe('llava');
    expect(r.format).toBe('safetensors');
    expect(r.files.map((f) => path.basename(f.file))).toEqual([
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
    ]);
    expect(r.visionTower).toMatchObject({
      name: 'fixtures/clip-s336-patch14',
      resolved: null,
      weightsFrom: 'checkpoint',
    });
    expect(r.visionTower!.unresolved).toMatch(/not a local CLIP folder.*--vision-tower DIR$/);
    expect(r.vision).toBeNull();
    expect(r.llava).toMatchObject({
      selectLayer: -2,
      selectFeature: 'patch',
      aspect: 'anyres',
      mergeType: 'spatial_unpad',
      unfreezeVisionTower: true,
      gridPinpoints: [
        [336, 672],
        [672, 336],
        [672, 672],
        [1008, 336],
        [336, 1008],
      ],
      projector: { type: 'mlp2x_gelu', inFeatures: 64, outFeatures: 128, act: 'gelu', bias: true },
    });
    expect(r.totals.tower.count).toBe(71);
    expect(names(r, 'projector')).toEqual([
      'model.mm_projector.0.bias',
      'model.mm_projector.0.weight',
      'model.mm_projector.2.bias',
      'model.mm_projector.2.weight',
    ]);
    expect(names(r, 'image_newline')).toEqual(['model.image_newline']);
    expect(names(r, 'ignored')).toEqual([
      'lm_head.weight',
      'model.embed_tokens.weight',
      'model.layers.0.input_layernorm.weight',
      'model.layers.0.self_attn.q_proj.weight',
      'model.norm.weight',
    ]);
    expect(Object.keys(r.totals.ignoredBy)).toEqual(['language model']);
    expect(r.totals.ignored.bytes).toBe((64 * 128 * 2 + 128 + 128 * 128 + 128) * 4);
    // The tower's config comes from its folder: without it the load fails, and inspect says so.
    expect(r.problems).toEqual([
      expect.stringMatching(/^mm_vision_tower "fixtures\/clip-s336-patch14" is not a local CLIP folder/),
    ]);

    const withTower = await inspectCheckpoint(dir, { visionTower: path.join(L16, 'clip_tower') });
    expect(withTower.vision).toMatchObject({
      hiddenSize: 64,
      numHiddenLayers: 4,
      numAttentionHeads: 4,
      imageSize: 336,
      patchSize: 14,
      numPatches: 576,
      hiddenAct: 'quick_gelu',
      layerNormEps: 1e-5,
    });
    expect(withTower.problems).toEqual([]);
    expect(loadedByInspect(withTower)).toEqual(
      await namesReadByLoad(dir, { visionTower: path.join(L16, 'clip_tower') }),
    );
  });

  test('LLaVA-1.5 folder: tower from the vision tower folder, projector from the shards', async () => {
    const dir = path.join(L15, 'llava');
    const tower = path.join(L15, 'clip_tower');
    const r = await inspectCheckpoint(dir, { visionTower: tower });
    expect(r.visionTower).toMatchObject({
      resolved: tower,
      weightsFrom: 'vision tower folder',
      folderTensors: { count: 71, dtypes: { F32: 71 } },
    });
    expect(r.totals.tower.count).toBe(0);
    expect(r.notes.join('\n')).toMatch(/mm_projector\.bin is not used/);
    const read = await namesReadByLoad(dir, { visionTower: tower });
    const towerFile = path.join(tower, 'model.safetensors');
    expect(read.get(towerFile)).toHaveLength(71);
    read.delete(towerFile);
    expect(loadedByInspect(r)).toEqual(read);
  });

  test('pretrain release (config.json + mm_projector.bin): the projector comes from the .bin', async () => {
    const dir = path.join(tmp(), 'pretrain');
    fs.mkdirSync(dir);
    for (const f of ['config.json', 'mm_projector.bin']) fs.copyFileSync(path.join(L15, 'llava', f), path.join(dir, f));
    const r = await inspectCheckpoint(dir, { visionTower: path.join(L15, 'clip_tower') });
    expect(r.format).toBeNull();
    expect(r.files).toEqual([
      {
        file: path.join(dir, 'mm_projector.bin'),
        bytes: fs.statSync(path.join(dir, 'mm_projector.bin')).size,
        format: 'torch_bin',
      },
    ]);
    expect(r.llava!.projector.weightsFrom).toEqual([path.join(dir, 'mm_projector.bin')]);
    expect(names(r, 'projector')).toHaveLength(4);
    const read = await namesReadByLoad(dir, { visionTower: path.join(L15, 'clip_tower') });
    read.delete(path.join(L15, 'clip_tower', 'model.safetensors'));
    expect(loadedByInspect(r)).toEqual(read);
  });

  test.each([
    [
      'llava_hf_model_prefixed',
      HF_PREFIXED,
      'BF16',
      ['lm_head.weight', 'model.language_model.embed_tokens.weight', 'model.language_model.norm.weight'],
    ],
    [
      'llava_hf',
      HF_LEGACY,
      'F32',
      ['language_model.lm_head.weight', 'language_model.model.embed_tokens.weight', 'language_model.model.norm.weight'],
    ],
  ])('%s', async (layout, dir, dtype, llm) => {
    const r = await inspectCheckpoint(dir);
    expect(r.layout).toBe(layout);
    expect(r.vision).not.toBeNull();
    expect(r.llava!.projector).toMatchObject({ type: 'mlp2x_gelu', outFeatures: 48, bias: true, act: 'gelu' });
    expect(Object.keys(r.totals.all.dtypes)).toEqual([dtype]);
    expect(names(r, 'ignored')).toEqual(llm);
    expect(r.totals.ignoredBy['language model']).toMatchObject({ count: 3 });
    expect(Object.keys(r.totals.ignoredBy)).toEqual(['language model']);
    expect(r.problems).toEqual([]);
    expect(loadedByInspect(r)).toEqual(await namesReadByLoad(dir));
  });

  test('full CLIP: vision_model.* loaded, the text model ignored; LLaVA defaults reported', async () => {
    const r = await inspectCheckpoint(CLIP_FULL);
    expect(r.layout).toBe('clip');
    expect(r.llava).toMatchObject({
      source: 'defaults',
      selectLayer: -2,
      selectFeature: 'patch',
      projector: { type: null },
    });
    expect(Object.keys(r.totals.ignoredBy)).toEqual(['CLIP text model']);
    expect(names(r, 'ignored')).toContain('logit_scale');
    expect(loadedByInspect(r)).toEqual(await namesReadByLoad(CLIP_FULL));
  });

  test('a pytorch_model.bin folder: torch_bin format, position_ids ignored as a buffer', async () => {
    const dir = path.join(tmp(), 'clip-bin');
    fs.mkdirSync(dir);
    fs.copyFileSync(
      path.join(CASES, 'tiny_clip_vision_only_f16', 'model', 'config.json'),
      path.join(dir, 'config.json'),
    );
    fs.copyFileSync(CLIP_BIN, path.join(dir, 'pytorch_model.bin'));
    const r = await inspectCheckpoint(dir);
    expect([r.layout, r.format]).toEqual(['clip_vision', 'torch_bin']);
    expect(names(r, 'ignored')).toEqual(['vision_model.embeddings.position_ids']);
    expect(r.totals.ignoredBy).toEqual({ 'buffer (position_ids)': { count: 1, bytes: 8 * 10, dtypes: { I64: 1 } } });
    expect(loadedByInspect(r)).toEqual(await namesReadByLoad(dir));
  });
});

describe('problems inspect reports are the ones the loader fails on', () => {
  test('a wrong-shaped tower tensor and a missing projector bias', async () => {
    const dir = copyDir(HF_LEGACY);
    const file = path.join(dir, 'model.safetensors');
    const st = SafetensorsFile.open(file);
    const tensors: Record<string, TensorToWrite> = Object.fromEntries(st.keys().map((k) => [k, st.read(k)]));
    st.close();
    tensors['vision_tower.vision_model.encoder.layers.1.mlp.fc1.weight'] = {
      dtype: 'F32',
      shape: [64, 128],
      data: new Float32Array(64 * 128),
    };
    delete tensors['multi_modal_projector.linear_2.bias'];
    writeSafetensors(file, tensors);
    const r = await inspectCheckpoint(dir);
    expect(r.problems).toEqual([
      `${dir}: vision_tower.vision_model.encoder.layers.1.mlp.fc1.weight has shape [64, 128] but the config expects [128, 64]`,
      `${file}: missing projector tensor multi_modal_projector.linear_2.bias [48]`,
    ]);
    await expect(LlavaVision.load(dir, { log: null })).rejects.toThrow(
      /layers\.1\.mlp\.fc1\.weight" has shape \[64, 128\] but the config expects \[128, 64\]/,
    );
  });

  test('a select layer past the tower depth, and spatial_unpad without image_newline', async () => {
    const dir = copyDir(HF_LEGACY);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(
      path.join(dir, 'config.json'),
      JSON.stringify({ ...cfg, model_type: 'llava_next', vision_feature_layer: -7 }),
    );
    const r = await inspectCheckpoint(dir);
    expect(r.problems).toEqual([
      'select layer -7 is out of range: the tower has 4 hidden states (-4..3)',
      'merge spatial_unpad needs image_newline, not in this checkpoint',
    ]);
  });
});

test('visionTowerSpecs lists exactly the CLIPVisionModel parameters and PyTorch shapes', async () => {
  for (const dir of [path.join(L16, 'clip_tower'), CLIP_FULL, path.join(CASES, 'tiny_clip_vision_only_f16', 'model')]) {
    const cfg = readVisionConfig(dir);
    const model = new CLIPVisionModel(cfg);
    const params = [...namedParams(model)].map(([k, p]) => [k, p.checkpointShape.join('x')]).sort();
    for (const [, p] of namedParams(model)) p.variables.forEach((v) => v.dispose());
    expect(
      visionTowerSpecs(cfg)
        .map((s) => [s.name, s.shape.join('x')])
        .sort(),
    ).toEqual(params);
  }
});

test('natural order puts layers.2 before layers.10', () => {
  expect(['a.layers.10.w', 'a.layers.2.w', 'a.layers.1.w', 'a.b'].sort(naturalCompare)).toEqual([
    'a.b',
    'a.layers.1.w',
    'a.layers.2.w',
    'a.layers.10.w',
  ]);
});

describe('llava-vision inspect (CLI)', () => {
  test('text: checkpoint kind, tower folder, configs, grouped encoder layers, loaded/ignored summary', async () => {
    const r = await runCli(['inspect', '--vision-tower', path.join(L16, 'clip_tower'), path.join(L16, 'llava')]);
    expect(r).toMatchObject({ code: 0, err: '' });
    const out = r.out;
    expect(out).toMatch(/^kind: +llava — original LLaVA/m);
    expect(out).toMatch(
      /^weights: +2 files \([\d.]+ [KM]iB\): model-00001-of-00002\.safetensors, model-00002-of-00002\.safetensors$/m,
    );
    expect(out).toContain(`resolved:        ${path.join(L16, 'clip_tower')}`);
    expect(out).toContain("tower weights:   this checkpoint's fine-tuned copy");
    expect(out).toContain('hidden 64, layers 4, heads 4, intermediate 256');
    expect(out).toContain('image 336, patch 14 (576 patches), act quick_gelu, eps 1e-5');
    expect(out).toContain('select:    layer -2, feature patch');
    expect(out).toContain('projector: mlp2x_gelu 64 -> 128, act gelu, bias yes');
    expect(out).toContain(
      'images:    aspect anyres, pinpoints (w×h) 336×672 672×336 672×672 1008×336 336×1008, merge spatial_unpad',
    );
    expect(out).toContain('unfreeze vision tower: yes');
    expect(out).toMatch(
      /^ {4}model\.vision_tower\.vision_tower\.vision_model\.encoder\.layers\.0\.mlp\.fc1\.weight +F32 +\[256, 64\]$/m,
    );
    expect(out).toContain(
      '    ... model.vision_tower.vision_tower.vision_model.encoder.layers.1..3.*  same names, dtypes and shapes as layer 0 (16 tensors each; --all lists them)',
    );
    expect(out).not.toContain('encoder.layers.2.mlp');
    expect(out).toMatch(/^ {2}ignored: language model \(5 tensors, [\d.]+ KiB, F32\)$/m);
    expect(out).toMatch(
      /^would load: +tower 71 tensors \([\d.]+ MiB\), projector 4 tensors \([\d.]+ KiB\), image_newline 1 tensor \(512 B\)$/m,
    );
    expect(out).toMatch(/^would ignore: 5 tensors \([\d.]+ KiB\): language model 5$/m);
    expect(out).toMatch(/^problems: none$/m);
    // The GEMM a load would run (the one the backend log line names; LLAVA_VISION_GEMM forces one).
    expect(out).toMatch(
      /^GEMM \(wasm\): (fma \(own kernel, relaxed-SIMD FMA\)|mul-add \(own kernel, SIMD mul \+ add\)|xnnpack \(tfjs's XNNPACK\))$/m,
    );

    const all = await runCli(['inspect', '--all', path.join(L16, 'llava')]);
    expect(all.code).toBe(0);
    for (let k = 0; k < 4; k++) expect(all.out).toContain(`encoder.layers.${k}.mlp.fc1.weight`);
    expect(all.out).not.toContain('same names, dtypes and shapes');
    expect(all.out).toMatch(/resolved: +no — mm_vision_tower "fixtures\/clip-s336-patch14" is not a local CLIP folder/);
  });

  test('a layer that differs from layer 0 is listed in full', async () => {
    const dir = copyDir(path.join(L16, 'clip_tower'));
    const file = path.join(dir, 'model.safetensors');
    const st = SafetensorsFile.open(file);
    const tensors: Record<string, TensorToWrite> = Object.fromEntries(st.keys().map((k) => [k, st.read(k)]));
    st.close();
    const k = 'vision_model.encoder.layers.2.mlp.fc1.bias';
    tensors[k] = { dtype: 'F16', shape: [256], data: new Uint16Array(256) };
    writeSafetensors(file, tensors);
    const r = await runCli(['inspect', dir]);
    expect(r.out).toContain('    ... vision_model.encoder.layers.1.*  same names');
    expect(r.out).toContain('    ... vision_model.encoder.layers.3.*  same names');
    expect(r.out).toMatch(/^ {4}vision_model\.encoder\.layers\.2\.mlp\.fc1\.bias +F16 +\[256\]$/m);
    expect(r.out).toMatch(/^ {4}vision_model\.encoder\.layers\.2\.mlp\.fc2\.bias +F32 +\[64\]$/m);
    expect(r.out).toMatch(/vision tower — loaded \(71 tensors, [\d.]+ MiB, F32×70 F16×1\)/);
  });

  test('mm_projector.bin: a torch .bin file, its projector inferred from the names', async () => {
    const file = path.join(L15, 'llava', 'mm_projector.bin');
    const r = await runCli(['inspect', file]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^kind: +torch \.bin — a single torch\.save file/m);
    expect(r.out).toContain('projector (from the tensor names): mlp2x_gelu 64 -> 128, bias yes (model.mm_projector.*)');
    expect(r.out).toMatch(/^ {4}model\.mm_projector\.2\.weight +F32 +\[128, 128\]$/m);
    expect(r.out).toContain('note: as --projector mm_projector.bin: only the model.mm_projector.* tensors are read');
    const j = JSON.parse((await runCli(['inspect', '--json', file])).out) as InspectReport;
    expect(j).toMatchObject({
      layout: 'torch .bin',
      format: 'torch_bin',
      llava: null,
      fileProjector: { type: 'mlp2x_gelu', inFeatures: 64, outFeatures: 128, bias: true },
    });
    expect(j.totals.projector).toEqual({ count: 4, bytes: (128 * 64 + 128 * 128 + 256) * 4, dtypes: { F32: 4 } });
  });

  test('a single safetensors file (CLIP tower): vision tensors, no config', async () => {
    const r = await runCli(['inspect', '--json', path.join(CLIP_FULL, 'model.safetensors')]);
    const j = JSON.parse(r.out) as InspectReport;
    expect(j).toMatchObject({ layout: 'safetensors file', config: null, vision: null, llava: null });
    expect(j.totals.tower.count).toBe(39);
    expect(j.totals.ignoredBy['CLIP text model'].count).toBe(23);
  });

  test('--json holds every tensor (no grouping) and equals inspectCheckpoint', async () => {
    const r = await runCli(['inspect', '--json', HF_PREFIXED]);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as InspectReport;
    expect(j).toEqual(JSON.parse(JSON.stringify(await inspectCheckpoint(HF_PREFIXED))));
    expect(j.tensors).toHaveLength(46);
    expect(j.tensors.map((t) => t.name)).toContain('model.vision_tower.vision_model.encoder.layers.1.mlp.fc2.weight');
    expect(j.tensors.find((t) => t.name === 'lm_head.weight')).toMatchObject({
      dtype: 'BF16',
      shape: [64, 48],
      bytes: 64 * 48 * 2,
      role: 'ignored',
      reason: 'language model',
    });
  });

  test('errors are one line on stderr, exit 1 (failures) or 2 (usage)', async () => {
    const noConfig = path.join(tmp(), 'no-config');
    fs.mkdirSync(noConfig);
    const cases: [string[], RegExp, number][] = [
      [['inspect', path.join(tmp(), 'nope')], /nope: no such file or folder/, 1],
      [['inspect', noConfig], /no-config\/config\.json: model config not found/, 1],
      [['inspect'], /inspect needs exactly one folder or file, got 0/, 2],
      [['inspect', 'a', 'b'], /got 2/, 2],
      [['inspect', '--bogus', HF_LEGACY], /unknown option --bogus/, 2],
      [['inspect', path.join(L15, 'llava', 'config.json')], /config\.json: .*/, 1],
    ];
    for (const [args, pattern, code] of cases) {
      const r = await runCli(args);
      expect({ args, code: r.code, out: r.out }).toEqual({ args, code, out: '' });
      expect(r.err).toMatch(pattern);
      expect(r.err.trim().split('\n')).toHaveLength(1);
      expect(r.err.startsWith('llava-vision: ')).toBe(true);
    }
  });

  test('a LLaVA folder whose tower cannot be found: a problem (not "problems: none"), the one encode fails on', async () => {
    const dir = copyDir(path.join(L15, 'llava'));
    const cache = path.join(tmp(), 'empty-hf-cache');
    const saved = { ...process.env };
    Object.assign(process.env, { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: '1' });
    try {
      const r = await runCli(['inspect', dir]);
      expect(r.code).toBe(0);
      expect(r.out).not.toContain('problems: none');
      const problem =
        /^problems \(LlavaVision\.load would fail or differ\):\n {2}- (mm_vision_tower "[^"]+" is not a local CLIP folder .*)$/m.exec(
          r.out,
        );
      expect(problem).not.toBeNull();
      const json = JSON.parse((await runCli(['inspect', '--json', dir])).out) as InspectReport;
      expect(json.problems).toEqual([problem![1]]);
      const encode = await runCli([
        'encode',
        '--model',
        dir,
        '--quiet',
        path.join(FIXTURES, 'images', 'tiny_rgb_37x23.png'),
        '--out',
        path.join(tmp(), 'never.safetensors'),
      ]);
      expect(encode.code).toBe(1);
      expect(encode.err).toBe(`llava-vision: ${problem![1]}\n`);
    } finally {
      process.env = saved;
    }
  });

  test('--help, and inspect is listed in the main help', async () => {
    const h = await runCli(['inspect', '--help']);
    expect(h.code).toBe(0);
    expect(h.out).toContain('llava-vision inspect [--json] [--all] [--vision-tower DIR] DIR_OR_FILE');
    expect((await runCli(['--help'])).out).toMatch(/^ {2}inspect +a checkpoint folder or file/m);
  });
});

describe('scale: 200k tensors (a spread of that many arguments overflows the stack)', () => {
  const COUNT = 200_000;
  /** `COUNT` one-element tensors named `<prefix>.layers.<k>.weight`, each layer alike (inspect groups them). */
  function manyTensors(prefix: string): Record<string, TensorToWrite> {
    const one = new Float32Array([1]);
    const out: Record<string, TensorToWrite> = {};
    for (let k = 0; k < COUNT; k++) out[`${prefix}.layers.${k}.weight`] = { dtype: 'F32', shape: [1], data: one };
    return out;
  }

  test('inspect of a file with 200k tensors: text, grouped and --all', async () => {
    const file = path.join(tmp(), 'many.safetensors');
    writeSafetensors(file, manyTensors('x'));
    const text = await runCli(['inspect', file]);
    expect(text.err).toBe('');
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/tensors \(200000 tensors, /);
    expect(text.out).toMatch(/\.\.\. x\.layers\.1\.\.199999\.\* +same names, dtypes and shapes as layer 0/);
    const all = await runCli(['inspect', '--all', file]);
    expect(all.code).toBe(0);
    expect(all.out).toContain('x.layers.199999.weight');
  });

  test('a LLaVA folder whose checkpoint holds 200k language-model tensors', async () => {
    const base = path.join(CASES, 'tiny_llava_linear_sel-1_patch');
    const dir = path.join(tmp(), 'llava-many');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(base, 'llava', 'config.json'), path.join(dir, 'config.json'));
    const own = SafetensorsFile.open(path.join(base, 'llava', 'model.safetensors'));
    const tensors = manyTensors('model');
    for (const k of own.keys()) tensors[k] = { dtype: 'F32', shape: own.info(k).shape, data: own.readFloat32(k) };
    own.close();
    writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
    const r = await runCli(['inspect', '--vision-tower', path.join(base, 'clip_tower'), dir]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/ignored: language model \(200005 tensors/); // and the fixture's own 5
    expect(r.out).toMatch(/projector — loaded/);
  });
});
