import * as fs from 'fs';
import * as path from 'path';
import { ConfigError } from '../src/errors';
import { decodeImage } from '../src/image/decode';
import {
  anyresImages,
  aspectModeFromConfig,
  divideToPatches,
  expand2square,
  getAnyresImageGridShape,
  meanBackground,
  parseGridPinpoints,
  processImages,
  selectBestResolution,
} from '../src/image/llava';
import { CLIPImageProcessor } from '../src/image/processor';
import { RgbImage } from '../src/image/types';
import { CASES, Expected, IMAGES, readJson } from './helpers/images';
import { CaseJson, JsonObject } from './helpers/json';

const llavaCases = fs
  .readdirSync(CASES)
  .filter((c) => readJson<CaseJson>(path.join(CASES, c, 'case.json')).kind === 'llava')
  .sort();

describe('LLaVA process_images vs the golden llava cases, bit for bit', () => {
  test('all llava cases carry expected tensors (s336_*: pixel_values as sha256)', () => {
    expect(llavaCases.length).toBeGreaterThanOrEqual(9);
    for (const c of llavaCases) expect(Expected.forCase(path.join(CASES, c))).not.toBeNull();
  });

  for (const c of llavaCases) {
    const dir = path.join(CASES, c);
    const meta = readJson<CaseJson>(path.join(dir, 'case.json'));
    const llavaCfg = readJson<JsonObject>(path.join(dir, 'llava', 'config.json'));
    const aspect = aspectModeFromConfig(llavaCfg.image_aspect_ratio);
    for (const im of meta.images) {
      test(`${c}/${im.id} (${aspect})`, async () => {
        const exp = Expected.forCase(dir)!;
        const proc = CLIPImageProcessor.fromFile(path.join(dir, 'clip_tower'));
        const img = await decodeImage(path.join(IMAGES, im.id));
        const pinpoints =
          aspect === 'anyres' ? parseGridPinpoints(llavaCfg.image_grid_pinpoints, `${c}/llava/config.json`) : undefined;

        if (exp.has(`${im.id}.pad_square_u8`)) {
          const got = expand2square(img, meanBackground(proc.config.imageMean));
          expect([got.height, got.width]).toEqual(exp.shape(`${im.id}.pad_square_u8`).slice(0, 2));
          expect(exp.compare(`${im.id}.pad_square_u8`, got.data)).toBeNull();
        }
        if (pinpoints) {
          expect(selectBestResolution([img.width, img.height], pinpoints)).toEqual(im.best_resolution_wh);
          const patch = meta.vision_config!.image_size;
          expect(getAnyresImageGridShape([img.width, img.height], pinpoints, patch)).toEqual(im.grid_wh);
          if (exp.has(`${im.id}.anyres_padded_u8`)) {
            const got = anyresImages(img, proc, pinpoints).padded;
            expect([got.height, got.width]).toEqual(exp.shape(`${im.id}.anyres_padded_u8`).slice(0, 2));
            expect(exp.compare(`${im.id}.anyres_padded_u8`, got.data)).toBeNull();
          }
        }

        const wantShape = exp.shape(`${im.id}.pixel_values`);
        const [out] = processImages([img], proc, { aspect, gridPinpoints: pinpoints });
        // LLaVA's per-image tensor is [3, H, W] for square/pad and [1 + tiles, 3, H, W] for anyres.
        expect(out.shape).toEqual(wantShape.length === 3 ? [1, ...wantShape] : wantShape);
        expect(exp.compare(`${im.id}.pixel_values`, new Uint8Array(out.pixelValues.buffer))).toBeNull();
      });
    }
  }
});

describe('LLaVA helpers', () => {
  const solid = (w: number, h: number, v: number): RgbImage => ({
    width: w,
    height: h,
    data: new Uint8Array(w * h * 3).fill(v),
  });

  test('mean background truncates: (122, 116, 104) for the OpenAI CLIP mean', () => {
    expect(meanBackground([0.48145466, 0.4578275, 0.40821073])).toEqual([122, 116, 104]);
  });

  test('expand2square pastes at (max - min) // 2', () => {
    const out = expand2square(solid(2, 5, 9), [1, 2, 3]);
    expect([out.width, out.height]).toEqual([5, 5]);
    const row = Array.from({ length: 5 }, (_, x) => out.data[x * 3]);
    expect(row).toEqual([1, 9, 9, 1, 1]); // offset (5 - 2) // 2 = 1
    const sq = solid(3, 3, 4);
    expect(expand2square(sq, [0, 0, 0])).toBe(sq);
  });

  test('selectBestResolution: (width, height) pinpoints, ties to least waste then first', () => {
    const pins: [number, number][] = [
      [336, 672],
      [672, 336],
      [672, 672],
      [1008, 336],
      [336, 1008],
    ];
    expect(selectBestResolution([451, 300], pins)).toEqual([672, 336]);
    expect(selectBestResolution([300, 451], pins)).toEqual([336, 672]);
    expect(selectBestResolution([1000, 1000], pins)).toEqual([672, 672]);
    expect(
      selectBestResolution(
        [10, 10],
        [
          [20, 20],
          [40, 20],
          [20, 20],
        ],
      ),
    ).toEqual([20, 20]);
  });

  test('divideToPatches: row-major, zero-padded edges', () => {
    const img: RgbImage = { width: 3, height: 2, data: new Uint8Array(18).map((_, i) => i + 1) };
    const p = divideToPatches(img, 2);
    expect(p.length).toBe(2);
    expect(Array.from(p[1].data)).toEqual([7, 8, 9, 0, 0, 0, 16, 17, 18, 0, 0, 0]);
  });

  test('parseGridPinpoints: lists and Python-literal strings', () => {
    expect(
      parseGridPinpoints([
        [336, 672],
        [672, 336],
      ]),
    ).toEqual([
      [336, 672],
      [672, 336],
    ]);
    expect(parseGridPinpoints('[(336, 672), (672, 336), (672, 672)]')).toEqual([
      [336, 672],
      [672, 336],
      [672, 672],
    ]);
    expect(parseGridPinpoints('[[56,112],[112,56],]')).toEqual([
      [56, 112],
      [112, 56],
    ]);
    for (const bad of ['[(336, 672), oops]', '(336, 672)', [], [[1, 2, 3]], [[0, 5]], 42]) {
      expect(() => parseGridPinpoints(bad, 'llava/config.json')).toThrow(ConfigError);
      expect(() => parseGridPinpoints(bad, 'llava/config.json')).toThrow(/llava\/config\.json: image_grid_pinpoints/);
    }
  });

  test('aspect modes: anything but pad/anyres is plain processing', () => {
    expect(aspectModeFromConfig(undefined)).toBe('square');
    expect(aspectModeFromConfig('square')).toBe('square');
    expect(aspectModeFromConfig('pad')).toBe('pad');
    expect(aspectModeFromConfig('anyres')).toBe('anyres');
  });

  test('anyres needs a shortest_edge size and pinpoints', () => {
    const proc = new CLIPImageProcessor({ size: { height: 28, width: 28 }, cropSize: { height: 28, width: 28 } });
    expect(() => processImages([solid(30, 20, 5)], proc, { aspect: 'anyres', gridPinpoints: [[28, 56]] })).toThrow(
      /shortest_edge/,
    );
    expect(() => processImages([solid(30, 20, 5)], new CLIPImageProcessor(), { aspect: 'anyres' })).toThrow(
      /image_grid_pinpoints/,
    );
  });
});
