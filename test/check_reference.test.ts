/**
 * `llava-vision check` / `checkAgainstReference` and the Python reference writer:
 *
 * - references made here from the model's own outputs (no Python needed): a pass, one wrong value
 *   named, missing metadata, shapes and keys that do not match, NaN counted, --json, bad files;
 * - the round trip (needs PyTorch): python/llava_vision_reference.py on PyTorch modules loaded with
 *   the demo's generated weights (tools/torch_clip.py) -> check passes, preprocessing bit for bit;
 *   a weight perturbed by 3 ulps still passes, by 300 ulps fails naming the first tensor that breaks;
 * - the writer's float64 truth against the golden fixtures' (an HF-style tower and a LLaVA one), and
 *   its cases on small modules (test/python/writer_cases.py).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '../src/tf';
import { checkAgainstReference } from '../src/api/check';
import { LlavaVision } from '../src/api/llava_vision';
import { REFERENCE_FORMAT, ReferenceFile, readReference } from '../src/check/reference';
import { SafetensorsFile, TensorToWrite, writeSafetensors } from '../src/io/safetensors';
import { runCli } from './helpers/cli';
import { CASES, FIXTURES } from './helpers/golden';
import { describeWithTorch, runPython } from './helpers/python';

const ROOT = path.join(__dirname, '..');
const DEMO = path.join(ROOT, 'weights', 'demo');
const CHELSEA = path.join(DEMO, 'images', 'chelsea.png');
const ROCKET = path.join(DEMO, 'images', 'rocket.jpg');
const MAKE_REFERENCE = path.join(ROOT, 'tools', 'make_reference.py');

let dir: string;
beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-check-'))));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Lines of the check's table, by tensor name. */
function rows(out: string): Record<string, string> {
  const table: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^(pixel_values\S*|hidden_states\.\d+|pooler_output|features|projected)\s+(.*)$/.exec(line);
    if (m) table[m[1]] = m[2];
  }
  return table;
}

describe("check against references made from the model's own outputs", () => {
  let model: LlavaVision;
  let own: { tensors: Record<string, TensorToWrite & { data: Float32Array }>; expected: Record<string, object> };

  beforeAll(async () => {
    model = await LlavaVision.load(DEMO, { log: null });
    const pixels = new Float32Array(3 * 336 * 336).map((_, i) => Math.sin(i * 0.37) * 1.5);
    const x = tf.tensor4d(pixels, [1, 3, 336, 336]);
    const out = model.encode(x, { outputs: ['hidden_states', 'pooler_output', 'features', 'projected'] });
    const tensors: Record<string, TensorToWrite & { data: Float32Array }> = {
      pixel_values: { dtype: 'F32', shape: [1, 3, 336, 336], data: pixels },
    };
    const add = (name: string, t: tf.Tensor) =>
      (tensors[name] = { dtype: 'F32', shape: t.shape, data: t.dataSync() as Float32Array });
    out.hiddenStates!.forEach((h, k) => add(`hidden_states.${k}`, h));
    add('pooler_output', out.poolerOutput!);
    add('features', out.features!);
    add('projected', out.projected!);
    tf.dispose([x, ...out.hiddenStates!, out.poolerOutput!, out.features!, out.projected!]);
    const expected: Record<string, object> = { pixel_values: { exact: true } };
    for (const name of Object.keys(tensors))
      if (name !== 'pixel_values') expected[name] = { torch_fp32_max_abs_err: 1e-6, f32_storage_max_abs_err: 1e-7 };
    own = { tensors, expected };
  });
  afterAll(() => model.dispose());

  /** A reference: the model's outputs, edited. */
  function reference(
    name: string,
    edit: (t: typeof own.tensors, expected: Record<string, object>, run: Record<string, unknown>) => void = () =>
      undefined,
    withMetadata = true,
  ): string {
    const tensors = Object.fromEntries(
      Object.entries(own.tensors).map(([k, v]) => [k, { ...v, data: v.data.slice() }]),
    );
    const expected = structuredClone(own.expected);
    const run: Record<string, unknown> = { select_layer: -2, select_feature: 'patch' };
    edit(tensors, expected, run);
    const file = path.join(dir, `${name}.safetensors`);
    writeSafetensors(
      file,
      tensors,
      withMetadata
        ? {
            format: REFERENCE_FORMAT,
            producer: 'check_reference.test.ts',
            expected: JSON.stringify(expected),
            run: JSON.stringify(run),
          }
        : undefined,
    );
    return file;
  }

  test("the model against its own outputs: every tensor ok, exit 0, in the model's order", async () => {
    const r = await runCli(['check', '--quiet', '--reference', reference('own'), '--model', DEMO]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(Object.keys(rows(r.out))).toEqual([
      'pixel_values',
      'hidden_states.0',
      'hidden_states.1',
      'hidden_states.2',
      'hidden_states.3',
      'hidden_states.4',
      'pooler_output',
      'features',
      'projected',
    ]);
    expect(rows(r.out)['hidden_states.3']).toMatch(/^\[1, 577, 64\]\s+0\s+1\.00e-6\s+0\.00\s+1\s+ok$/);
    expect(rows(r.out).pixel_values).toMatch(/input \(give the image files to check preprocessing too\)$/);
    expect(r.out).toMatch(/\nllava-vision check: all 8 tensors within the bound\n$/);
  });

  test('one value off: that tensor fails, named with its element, both values and the counts; exit 1', async () => {
    const file = reference('one-off', (t) => {
      t['hidden_states.3'].data[2 * 64 + 5] += 1e-3;
    });
    const r = await runCli(['check', '--quiet', '--reference', file, '--model', DEMO]);
    expect(r.code).toBe(1);
    const table = rows(r.out);
    expect(table['hidden_states.2']).toMatch(/ok$/);
    expect(table['hidden_states.3']).toMatch(
      /^\[1, 577, 64\]\s+1\.00e-3\s+1\.00e-6\s+1000\s+1 - \d\.\de-\d+\s+FAIL: 1 of 36928 \(0\.0027%\) over 4\.10e-6; worst at \[0, 2, 5\]: ours -?[\d.]+, truth -?[\d.]+$/,
    );
    expect(r.out).toMatch(
      /\nllava-vision check: 1 of 8 tensors FAILED; the first: hidden_states\.3 \(1000 x PyTorch fp32's error, bound 4\)\n$/,
    );
    // --bound loosens it
    expect((await runCli(['check', '--quiet', '--reference', file, '--model', DEMO, '--bound', '2000'])).code).toBe(0);
  });

  test('--json: the report as JSON, NaN and Infinity as strings, never null', async () => {
    const file = reference('nan', (t, expected) => {
      t.features.data[7] = NaN;
      (expected.projected as { torch_fp32_max_abs_err: number }).torch_fp32_max_abs_err = 0;
      t.projected.data[0] += 1;
    });
    const r = await runCli(['check', '--quiet', '--json', '--reference', file, '--model', DEMO]);
    expect(r.code).toBe(1);
    const report = JSON.parse(r.out) as {
      ok: boolean;
      firstFailure: string;
      tensors: {
        name: string;
        ok: boolean;
        ratio: unknown;
        comparison: { outOfTolerance: number; nonFinite: Record<string, number> };
      }[];
    };
    expect(report.ok).toBe(false);
    expect(report.firstFailure).toBe('features');
    const features = report.tensors.find((t) => t.name === 'features')!;
    expect(features.comparison.outOfTolerance).toBe(1);
    expect(features.comparison.nonFinite).toEqual({ actualNaN: 0, expectedNaN: 1, actualInf: 0, expectedInf: 0 });
    expect(report.tensors.find((t) => t.name === 'projected')!.ratio).toBe('Infinity');
    const table = rows((await runCli(['check', '--quiet', '--reference', file, '--model', DEMO])).out);
    expect(table.features).toMatch(/FAIL: 1 of 36864 .*; NaN: ours 0, truth 1; ±Inf: ours 0, truth 0$/);
  });

  test('a reference without error metadata: each tensor fails naming the missing field (the API says the same)', async () => {
    const file = reference('bare', () => undefined, false);
    const r = await runCli(['check', '--quiet', '--reference', file, '--model', DEMO]);
    expect(r.code).toBe(1);
    expect(rows(r.out).features).toBe(
      '[1, 576, 64]      -         -            -      -       FAIL: no __metadata__.expected["features"].torch_fp32_max_abs_err in the reference, so no bound (write it with python/llava_vision_reference.py)',
    );
    const report = await checkAgainstReference(model, file);
    expect(report.firstFailure).toBe('hidden_states.0');
    expect(report.tensors.filter((t) => t.problem?.includes('torch_fp32_max_abs_err'))).toHaveLength(8);
  });

  test('shapes and keys that do not match: one line naming the tensor; unknown tensors are noted, not checked', async () => {
    const file = reference('mismatch', (t, expected) => {
      t.features = { dtype: 'F32', shape: [1, 577, 64], data: t['hidden_states.3'].data };
      t['hidden_states.9'] = t['hidden_states.4'];
      expected['hidden_states.9'] = expected['hidden_states.4'];
      t.logits = { dtype: 'F32', shape: [2], data: new Float32Array(2) };
    });
    const r = await runCli(['check', '--quiet', '--reference', file, '--model', DEMO]);
    expect(r.code).toBe(1);
    expect(r.out).toContain(
      'note: logits: not checked (check compares pixel_values, hidden_states.<k>, pooler_output, features, projected)',
    );
    expect(rows(r.out).features).toMatch(/FAIL: \[1, 577, 64\] in the reference, \[1, 576, 64\] from the model$/);
    expect(rows(r.out)['hidden_states.9']).toMatch(/FAIL: the reference has hidden state 9, the model 5 \(0\.\.4\)$/);
    expect(rows(r.out)['hidden_states.4']).toMatch(/ok$/);
  });

  test("settings that differ from the reference's are noted", async () => {
    const file = reference('layer', (_t, _e, run) => (run.select_layer = -1));
    const r = await runCli(['check', '--quiet', '--reference', file, '--model', DEMO]);
    expect(r.out).toContain(
      'note: the reference was written with select_layer -1, the model uses -2: features and projected compare different layers',
    );
  });

  test("images: each must preprocess to the reference's pixel values bit for bit; the count must match", async () => {
    const file = reference('pixels');
    const r = await runCli(['check', '--quiet', '--reference', file, '--model', DEMO, CHELSEA]);
    expect(r.code).toBe(1);
    expect(rows(r.out)['pixel_values[chelsea.png]']).toMatch(
      /^\[1, 3, 336, 336\]\s+\S+\s+exact\s+-\s+\S+\s+FAIL: \d+ of 338688 \([\d.]+%\) differ; worst at \[0, \d, \d+, \d+\]: ours -?[\d.]+, truth -?[\d.]+$/,
    );
    expect(r.out).toMatch(/the first: pixel_values\[chelsea\.png\]\n$/);
    const two = await runCli(['check', '--quiet', '--reference', file, '--model', DEMO, CHELSEA, ROCKET]);
    expect(two).toMatchObject({
      code: 1,
      out: '',
      err: "llava-vision: 2 image(s) given, and the reference's pixel_values [1, 3, 336, 336] hold 1 tiles with no tiles_per_image recorded\n",
    });
  });

  test('bad files and usage: one line each', async () => {
    const noPixels = reference('no-pixels', (t, expected) => {
      delete (t as Partial<typeof t>).pixel_values;
      delete expected.pixel_values;
    });
    expect(await runCli(['check', '--quiet', '--reference', noPixels, '--model', DEMO])).toMatchObject({
      code: 1,
      err: `llava-vision: ${noPixels}: no tensor "pixel_values" (a reference holds the pixel values the PyTorch modules got)\n`,
    });
    const badMeta = path.join(dir, 'bad-meta.safetensors');
    writeSafetensors(
      badMeta,
      { pixel_values: own.tensors.pixel_values },
      { expected: '{"pixel_values": {"exact": "yes"}}' },
    );
    expect((await runCli(['check', '--quiet', '--reference', badMeta, '--model', DEMO])).err).toBe(
      `llava-vision: ${badMeta}: __metadata__.expected["pixel_values"].exact must be true or false, got "yes"\n`,
    );
    const small = path.join(dir, 'small.safetensors');
    writeSafetensors(small, {
      pixel_values: { dtype: 'F32', shape: [1, 3, 224, 224], data: new Float32Array(3 * 224 * 224) },
    });
    expect((await runCli(['check', '--quiet', '--reference', small, '--model', DEMO])).err).toBe(
      `llava-vision: ${small}: pixel_values are 224x224, the model's image_size is 336 (${DEMO}); a reference of another model, or pass interpolate_pos_encoding (--interpolate-pos-encoding)\n`,
    );
    expect(await runCli(['check', '--model', DEMO])).toMatchObject({
      code: 2,
      err: 'llava-vision: check needs --reference FILE.safetensors (written by python/llava_vision_reference.py)\n',
    });
    expect((await runCli(['check', '--reference', path.join(dir, 'missing.safetensors')])).err).toMatch(
      /missing\.safetensors: (does not exist|no such file)/,
    );
    expect((await runCli(['check', '--reference', noPixels, '--bound', '-1'])).code).toBe(2);
    expect(await runCli(['check', '--reference', noPixels, '--out', 'x.safetensors'])).toMatchObject({
      code: 2,
      err: 'llava-vision: --out is an option of encode, not of check (see check --help)\n',
    });
  });
});

describeWithTorch('round trip: the Python writer on PyTorch modules, then check', (python) => {
  const make = (out: string, ...args: string[]) => runPython(python, [MAKE_REFERENCE, ...args, '--out', out]);

  test("the demo in PyTorch (LLaVA tower + mlp2x_gelu): check passes, pixel values bit for bit; the file is in the fixtures' format", async () => {
    const ref = path.join(dir, 'demo.safetensors');
    make(ref, '--llava', DEMO, CHELSEA, ROCKET);
    const r = await runCli(['check', '--quiet', '--reference', ref, '--model', DEMO, CHELSEA, ROCKET]);
    expect(r.code).toBe(0);
    const table = rows(r.out);
    expect(Object.keys(table)).toEqual([
      'pixel_values[chelsea.png]',
      'pixel_values[rocket.jpg]',
      ...[0, 1, 2, 3, 4].map((k) => `hidden_states.${k}`),
      'pooler_output',
      'features',
      'projected',
    ]);
    expect(table['pixel_values[rocket.jpg]']).toMatch(
      /^\[1, 3, 336, 336\]\s+0\s+exact\s+-\s+1\s+ok \(bit-identical\)$/,
    );
    expect(r.out).toContain('llava-vision check: all 10 tensors within the bound');

    const file = ReferenceFile.open(ref);
    try {
      expect(file.format).toBe(REFERENCE_FORMAT);
      expect(file.producer).toMatch(/^llava_vision_reference\.py 1 \(torch [\d.]+/);
      expect(file.run).toMatchObject({
        select_layer: -2,
        select_feature: 'patch',
        images: ['chelsea.png', 'rocket.jpg'],
        tower_kind: 'llava_clip_vision_tower',
        projector: 'Sequential',
      });
      const fixtureFields = [
        'dtype',
        'f32_storage_max_abs_err',
        'ref_max_abs',
        'ref_rms',
        'shape',
        'torch_fp32_max_abs_err',
        'torch_fp32_max_rel_err',
        'torch_fp32_rms_err',
        'what',
      ];
      for (const name of ['hidden_states.0', 'hidden_states.4', 'pooler_output', 'features', 'projected']) {
        const meta = file.meta(name);
        expect(meta.torch_fp32_max_abs_err).toBeGreaterThan(0);
        expect(meta.torch_fp32_max_abs_err).toBeLessThan(1e-4);
        expect(meta.f32_storage_max_abs_err).toBeGreaterThan(0);
      }
      // The same fields as the golden fixtures' case.json entries.
      const st = SafetensorsFile.open(ref);
      const header = JSON.parse(st.metadata.expected) as Record<string, Record<string, unknown>>;
      st.close();
      expect(Object.keys(header.features).sort()).toEqual(fixtureFields);
      expect(header.pixel_values).toMatchObject({ exact: true, shape: [2, 3, 336, 336] });
    } finally {
      file.close();
    }
  });

  test('one weight perturbed: by 3 ulps it passes, by 300 ulps it fails naming the first tensor that breaks (layer 1 -> hidden_states.2)', async () => {
    const weight = 'vision_model.encoder.layers.1.self_attn.out_proj.weight';
    const small = path.join(dir, 'p3.safetensors');
    const large = path.join(dir, 'p300.safetensors');
    make(small, '--llava', DEMO, '--perturb', `${weight}=3`, CHELSEA);
    make(large, '--llava', DEMO, '--perturb', `${weight}=300`, CHELSEA);
    expect((await runCli(['check', '--quiet', '--reference', small, '--model', DEMO, CHELSEA])).code).toBe(0);
    const r = await runCli(['check', '--quiet', '--reference', large, '--model', DEMO, CHELSEA]);
    expect(r.code).toBe(1);
    const table = rows(r.out);
    for (const ok of ['pixel_values[chelsea.png]', 'hidden_states.0', 'hidden_states.1'])
      expect(table[ok]).toMatch(/ok( \(bit-identical\))?$/);
    for (const bad of [
      'hidden_states.2',
      'hidden_states.3',
      'hidden_states.4',
      'pooler_output',
      'features',
      'projected',
    ])
      expect(table[bad]).toMatch(/FAIL: \d+ of \d+/);
    expect(r.out).toMatch(
      /llava-vision check: 6 of 9 tensors FAILED; the first: hidden_states\.2 \(\d+\.\d+ x PyTorch fp32's error, bound 4\)\n$/,
    );
    process.stdout.write(`round trip, ${weight} + 300 ulps:\n${r.out}`);
  });

  test("the writer's float64 truth is the golden fixtures' (HF-style tower: F16 weights, gelu, eps 1e-6; LLaVA tower: pad, cls_patch, layer 0, mlp3x)", () => {
    const cases = [
      {
        name: 'tiny_clip_vision_only_f16',
        args: ['--clip', path.join(CASES, 'tiny_clip_vision_only_f16', 'model'), '--select-layer', '-1'],
      },
      {
        name: 'tiny_llava_mlp3x_sel0_clspatch_pad',
        args: [
          '--llava',
          path.join(CASES, 'tiny_llava_mlp3x_sel0_clspatch_pad', 'llava'),
          '--vision-tower',
          path.join(CASES, 'tiny_llava_mlp3x_sel0_clspatch_pad', 'clip_tower'),
        ],
      },
    ];
    for (const c of cases) {
      const json = JSON.parse(fs.readFileSync(path.join(CASES, c.name, 'case.json'), 'utf8')) as {
        images: { id: string }[];
        expected: Record<string, { f32_storage_max_abs_err?: number }>;
      };
      const ids = json.images.map((i) => i.id);
      const ref = path.join(dir, `${c.name}.safetensors`);
      make(ref, ...c.args, ...ids.map((id) => path.join(FIXTURES, 'images', id)));
      const ours = readReference(ref);
      const golden = ReferenceFile.open(path.join(CASES, c.name, 'expected.safetensors'));
      try {
        let compared = 0;
        for (const [i, id] of ids.entries()) {
          const pairs: [string, string][] = [
            ['pixel_values', 'pixel_values'],
            ['pooler_output', 'pooler_output'],
            ['features', 'image_features'],
            ['projected', 'projected'],
          ];
          for (let k = 0; k < 10; k++)
            pairs.push([`hidden_states.${k}`, `hidden_states.${String(k).padStart(2, '0')}`]);
          for (const [mine, theirs] of pairs) {
            if (!ours[mine] || !golden.has(`${id}.${theirs}`)) continue;
            const truth = golden.read(`${id}.${theirs}`).data;
            const per = ours[mine].data.length / ours[mine].shape[0];
            const row = ours[mine].data.subarray(i * per, (i + 1) * per);
            // Both are float64 results rounded to float32: at most one rounding apart.
            const tolerance =
              mine === 'pixel_values' ? 0 : 2 * (json.expected[`${id}.${theirs}`].f32_storage_max_abs_err ?? 0);
            if (row.length !== truth.length)
              throw new Error(
                `${c.name} ${id}.${theirs}: ${row.length} values in the writer's, ${truth.length} in the fixture`,
              );
            let worst = 0;
            for (let j = 0; j < truth.length; j++) worst = Math.max(worst, Math.abs(row[j] - truth[j]));
            if (!(worst <= tolerance))
              throw new Error(
                `${c.name} ${id}.${theirs}: the writer's truth is ${worst} from the fixture's (allowed ${tolerance})`,
              );
            compared++;
          }
        }
        expect(compared).toBeGreaterThanOrEqual(c.name.includes('clip') ? 12 : 6);
      } finally {
        golden.close();
      }
    }
  });

  test('write_reference on small modules: float64 softmax, input forms, images with a processor, errors, the module left as it was', async () => {
    const out = path.join(dir, 'cases');
    fs.mkdirSync(out);
    const r = JSON.parse(runPython(python, [path.join(ROOT, 'test', 'python', 'writer_cases.py'), out])) as {
      softmax: { file: string; torch_err: number; truth_f32: number[] };
      select_layer_conflict: string;
      forms: Record<
        string,
        { file: string; run: { tiles_per_image: number[] | null; module_dtype: string; pixel_values_dtype: string } }
      >;
      module_untouched: boolean;
      leftovers: string[];
      nan: string;
      no_pixels: string;
      bad_feature: string;
      images: Record<'callable' | 'hf', string>;
      images_without_processor: string;
    };
    // A softmax asked for in float32 is computed in float64 in the float64 run: the truth is the float64 softmax.
    const softmax = ReferenceFile.open(r.softmax.file);
    expect(softmax.run.float64_softmax_upcasts).toBe(1);
    expect(Array.from(softmax.read('hidden_states.1').data)).toEqual(
      Array.from(Float32Array.from(r.softmax.truth_f32)),
    );
    softmax.close();
    expect(r.softmax.torch_err).toBeGreaterThan(0);
    expect(r.select_layer_conflict).toBe(
      "ValueError: select_layer=-2 differs from the LLaVA tower's own select_layer -1",
    );
    expect(r.forms.list.run.tiles_per_image).toEqual([2, 1]);
    expect(r.forms.five_d.run.tiles_per_image).toEqual([2]);
    expect(r.forms.numpy.run.tiles_per_image).toBeNull();
    expect(r.forms.list.run.module_dtype).toBe('float16');
    const batch = readReference(r.forms.numpy.file);
    for (const form of ['list', 'dict']) {
      const other = readReference(r.forms[form].file);
      expect(other.pixel_values.shape).toEqual([3, 3, 28, 28]);
      for (const name of ['pixel_values', 'hidden_states.2', 'features'])
        expect(other[name].data).toEqual(batch[name].data);
    }
    expect(r.module_untouched).toBe(true);
    expect(r.leftovers).toEqual([]);
    expect(r.nan).toBe(
      'ValueError: hidden_states.1: the float64 run gave 96 NaN or Inf values: no reference can be made from it',
    );
    expect(r.no_pixels).toBe('ValueError: give pixel_values, or images with a processor');
    expect(r.bad_feature).toBe("ValueError: select_feature must be 'patch' or 'cls_patch', got 'cls'");
    // Image files with a processor (a callable like LLaVA's process_images, or an HF image processor): opened as
    // LLaVA does, named in run.images, and (pad, here) the pixel values our preprocessing gives bit for bit.
    for (const file of [r.images.callable, r.images.hf]) {
      const ref = ReferenceFile.open(file);
      expect(ref.run.images).toEqual(['chelsea.png']);
      ref.close();
    }
    expect(readReference(r.images.hf).pixel_values.data).toEqual(readReference(r.images.callable).pixel_values.data);
    const checked = await runCli(['check', '--quiet', '--reference', r.images.hf, '--model', DEMO, CHELSEA]);
    expect(checked.out).toContain('llava-vision check: all 8 tensors within the bound'); // pixel values, 5 hidden states, pooled, features
    expect(checked.code).toBe(0);
    expect(r.images_without_processor).toBe(
      "ValueError: images need a processor (an HF image processor, or a callable such as LLaVA's process_images)",
    );
  });
});
