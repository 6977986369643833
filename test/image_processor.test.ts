import * as path from 'path';
import {
  CLIPImageProcessorConfig,
  defaultPreprocessorConfig,
  parsePreprocessorConfig,
} from '../src/config/preprocessor';
import { ConfigError } from '../src/errors';
import { decodeImage } from '../src/image/decode';
import { CLIPImageProcessor } from '../src/image/processor';
import { RgbImage } from '../src/image/types';
import { recordExactPixels, writeParityReport } from './helpers/golden';
import { CASES, Expected, IMAGES, casesWithExpected, readJson } from './helpers/images';
import { CaseJson } from './helpers/json';

interface GoldenRun {
  label: string;
  image: string;
  configFile: string;
  expected: Expected;
  name: string; // tensor name prefix: "<variant>.<image id>" or "<image id>"
  caseName: string;
}

afterAll(() => writeParityReport('processor'));

/** Every pixel_values of the `clip`, `processor`, `llava_hf` and `fullsize` cases (processor only, no LLaVA code). */
function goldenRuns(): GoldenRun[] {
  const runs: GoldenRun[] = [];
  for (const c of casesWithExpected()) {
    const dir = path.join(CASES, c);
    const meta = readJson<CaseJson>(path.join(dir, 'case.json'));
    if (!['clip', 'processor', 'llava_hf', 'fullsize'].includes(meta.kind)) continue;
    const expected = Expected.forCase(dir)!;
    if (meta.variants) {
      for (const v of meta.variants) {
        for (const im of v.images) {
          runs.push({
            label: `${c}/${v.name}/${im.id}`,
            image: path.join(IMAGES, im.id),
            configFile: path.join(dir, v.preprocessor_config),
            expected,
            name: `${v.name}.${im.id}`,
            caseName: c,
          });
        }
      }
    } else {
      for (const im of meta.images) {
        runs.push({
          label: `${c}/${im.id}`,
          image: path.join(IMAGES, im.id),
          configFile: path.join(dir, 'model', 'preprocessor_config.json'),
          expected,
          name: im.id,
          caseName: c,
        });
      }
    }
  }
  return runs;
}

describe('CLIPImageProcessor.preprocess = HF 4.37.2 slow processor, bit for bit', () => {
  const runs = goldenRuns();
  test('covers clip, processor, llava_hf and fullsize cases', () => {
    expect(runs.length).toBeGreaterThanOrEqual(21);
  });
  for (const r of runs) {
    test(r.label, async () => {
      const img = await decodeImage(r.image);
      const proc = CLIPImageProcessor.fromFile(r.configFile);
      const exp = r.expected;
      if (exp.has(`${r.name}.resized_u8`)) {
        const got = proc.resize(img);
        expect([got.height, got.width]).toEqual(exp.shape(`${r.name}.resized_u8`).slice(0, 2));
        expect(exp.compare(`${r.name}.resized_u8`, got.data)).toBeNull();
      }
      const out = proc.preprocess(img);
      expect([3, out.height, out.width]).toEqual(exp.shape(`${r.name}.pixel_values`));
      expect(exp.compare(`${r.name}.pixel_values`, new Uint8Array(out.pixelValues.buffer))).toBeNull();
      if (r.caseName === 'processor_variants') recordExactPixels(r.caseName, 1);
    });
  }
});

describe('parsePreprocessorConfig', () => {
  const src = '/x/preprocessor_config.json';

  test('empty object = transformers 4.37.2 CLIPImageProcessor defaults', () => {
    const d: CLIPImageProcessorConfig = parsePreprocessorConfig({}, src);
    expect(d).toEqual({
      doResize: true,
      size: { shortestEdge: 224 },
      resample: 3,
      doCenterCrop: true,
      cropSize: { height: 224, width: 224 },
      doRescale: true,
      rescaleFactor: 1 / 255,
      doNormalize: true,
      imageMean: [0.48145466, 0.4578275, 0.40821073],
      imageStd: [0.26862954, 0.26130258, 0.27577711],
      doConvertRgb: true,
    });
    expect(d).toEqual(defaultPreprocessorConfig());
  });

  test('old CLIPFeatureExtractor format: int size = shortest edge, int crop = square', () => {
    const c = parsePreprocessorConfig(
      { size: 336, crop_size: 336, resample: 3, feature_extractor_type: 'CLIPFeatureExtractor' },
      src,
    );
    expect(c.size).toEqual({ shortestEdge: 336 });
    expect(c.cropSize).toEqual({ height: 336, width: 336 });
    expect(c.doRescale).toBe(true);
    expect(c.rescaleFactor).toBe(1 / 255);
  });

  test('dict and list sizes; null means default', () => {
    expect(parsePreprocessorConfig({ size: { height: 28, width: 40 } }, src).size).toEqual({ height: 28, width: 40 });
    expect(parsePreprocessorConfig({ size: [28, 40] }, src).size).toEqual({ height: 28, width: 40 });
    expect(parsePreprocessorConfig({ size: { shortest_edge: 30, longest_edge: 99 } }, src).size).toEqual({
      shortestEdge: 30,
    });
    expect(parsePreprocessorConfig({ crop_size: { height: 26, width: 20 } }, src).cropSize).toEqual({
      height: 26,
      width: 20,
    });
    expect(parsePreprocessorConfig({ size: null }, src).size).toEqual({ shortestEdge: 224 });
    expect(parsePreprocessorConfig({ image_mean: 0.5 }, src).imageMean).toEqual([0.5, 0.5, 0.5]);
  });

  test.each([
    [{ resample: 7 }, /resample 7/],
    [{ resample: 'bicubic' }, /resample "bicubic"/],
    [{ size: { longest_edge: 5 } }, /size must be/],
    [{ size: 0 }, /size must be a positive integer/],
    [{ size: { shortest_edge: 2.5 } }, /size\.shortest_edge/],
    [{ crop_size: { shortest_edge: 5 } }, /crop_size/],
    [{ image_mean: [0.5, 0.5] }, /image_mean/],
    [{ image_std: [0.5, 0, 0.5] }, /image_std must not contain 0/],
    [{ do_resize: 'yes' }, /do_resize must be true or false/],
    [{ rescale_factor: '1/255' }, /rescale_factor/],
  ])('rejects %j', (json, msg) => {
    expect(() => parsePreprocessorConfig(json, src)).toThrow(ConfigError);
    expect(() => parsePreprocessorConfig(json, src)).toThrow(msg);
    expect(() => parsePreprocessorConfig(json, src)).toThrow(/\/x\/preprocessor_config\.json/);
  });

  test('not an object / unreadable file', () => {
    expect(() => parsePreprocessorConfig([1], src)).toThrow(/preprocessor_config\.json: expected a JSON object/);
    expect(() => CLIPImageProcessor.fromFile('/nonexistent/dir')).toThrow(ConfigError);
    expect(() => CLIPImageProcessor.fromFile(path.join(CASES, 'processor_variants'))).toThrow(
      /preprocessor_config\.json/,
    );
  });
});

describe('CLIPImageProcessor geometry', () => {
  const img = (w: number, h: number): RgbImage => ({ width: w, height: h, data: new Uint8Array(w * h * 3).fill(200) });

  test('shortest_edge truncates the long side (640x427 -> 503x336, not 504)', () => {
    const p = new CLIPImageProcessor({ size: { shortestEdge: 336 } });
    expect(p.resizeOutputSize(640, 427)).toEqual([503, 336]);
    expect(p.resizeOutputSize(427, 640)).toEqual([336, 503]);
    expect(p.resizeOutputSize(300, 300)).toEqual([336, 336]);
    expect(new CLIPImageProcessor({ size: { height: 28, width: 40 } }).resizeOutputSize(5, 3)).toEqual([40, 28]);
  });

  test('center crop: floor offsets', () => {
    const p = new CLIPImageProcessor({ cropSize: { height: 2, width: 3 } });
    const src: RgbImage = { width: 6, height: 5, data: new Uint8Array(90).map((_, i) => i) };
    const out = p.centerCrop(src);
    // top = (5 - 2) // 2 = 1, left = (6 - 3) // 2 = 1
    expect(out.width).toBe(3);
    expect(Array.from(out.data.subarray(0, 3))).toEqual([21, 22, 23]);
  });

  test('center crop zero-pads a small image, centred for an even padding amount', () => {
    const p = new CLIPImageProcessor({ cropSize: { height: 6, width: 6 } });
    const out = p.centerCrop(img(2, 4));
    expect([out.width, out.height]).toEqual([6, 6]);
    const at = (x: number, y: number) => out.data[(y * 6 + x) * 3];
    expect([at(1, 1), at(2, 1), at(3, 4), at(4, 4), at(2, 5)]).toEqual([0, 200, 200, 0, 0]);
  });

  test('center crop with an ODD padding amount is one pixel short (transformers 4.37.2 quirk)', () => {
    const p = new CLIPImageProcessor({ cropSize: { height: 6, width: 6 } });
    const out = p.centerCrop(img(3, 6));
    // pad 3 columns: image at (6 - 3) // 2 = 1, crop left = -2 + 1 -> clipped, right = 4 + 1 = 5
    expect([out.width, out.height]).toEqual([5, 6]);
  });

  test('no normalize/no rescale: raw uint8 values as float32', () => {
    const p = new CLIPImageProcessor({ doResize: false, doCenterCrop: false, doRescale: false, doNormalize: false });
    const out = p.preprocess({ width: 1, height: 1, data: new Uint8Array([1, 2, 255]) });
    expect(Array.from(out.pixelValues)).toEqual([1, 2, 255]);
  });
});
