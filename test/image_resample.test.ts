import * as fs from 'fs';
import * as path from 'path';
import { decodeImage } from '../src/image/decode';
import { resizeImage, Resample } from '../src/image/resample';
import { RgbImage } from '../src/image/types';
import { CASES, Expected, FIXTURES, IMAGES, casesWithExpected, firstDiff, readJson, sha256 } from './helpers/images';
import { CaseJson } from './helpers/json';

/** Every `*.resized_u8` tensor with the image file and the resample filter that produced it. */
function goldenResizes(): {
  label: string;
  image: string;
  resample: number;
  tensor: () => Uint8Array;
  shape: number[];
}[] {
  const out = [];
  for (const c of casesWithExpected()) {
    const dir = path.join(CASES, c);
    const meta = readJson<CaseJson>(path.join(dir, 'case.json'));
    const exp = Expected.forCase(dir)!;
    for (const name of exp.names().filter((n) => n.endsWith('.resized_u8'))) {
      let id = name.slice(0, -'.resized_u8'.length);
      let cfgFile = ['model', 'clip_tower']
        .map((d) => path.join(dir, d, 'preprocessor_config.json'))
        .find(fs.existsSync);
      if (meta.variants) {
        const v = meta.variants.find((v) => id.startsWith(v.name + '.'))!;
        id = id.slice(v.name.length + 1);
        cfgFile = path.join(dir, v.preprocessor_config);
      }
      const t = exp.read(name);
      out.push({
        label: `${c}/${name}`,
        image: path.join(IMAGES, id),
        resample: readJson<{ resample: number }>(cfgFile!).resample,
        tensor: () => t.data,
        shape: t.shape,
      });
    }
  }
  return out;
}

describe('resizeImage vs the golden *.resized_u8 (Pillow 9.4 via HF resize)', () => {
  const cases = goldenResizes();
  test('fixtures hold resized_u8 tensors, incl. a BILINEAR one', () => {
    expect(cases.length).toBeGreaterThanOrEqual(15);
    expect(cases.some((c) => c.resample === Number(Resample.BILINEAR))).toBe(true);
  });
  for (const c of cases) {
    test(`${c.label} (filter ${c.resample}, ${c.shape[1]}x${c.shape[0]})`, async () => {
      const img = await decodeImage(c.image);
      const out = resizeImage(img, c.shape[1], c.shape[0], c.resample);
      expect(firstDiff(out.data, c.tensor())).toBeNull();
    });
  }
});

/** Input pixels of tools/gen_pillow_resize_cases.py (weightgen-style integer hash). */
function makePixels(w: number, h: number, seed: number, kind: number): RgbImage {
  const imul = Math.imul; // global lookups are slow inside jest's vm context: hoist them
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < data.length; i++) {
    let x = (imul(i, 0x9e3779b9) + seed) >>> 0;
    x ^= x >>> 16;
    x = imul(x, 0x7feb352d) >>> 0;
    x ^= x >>> 15;
    x = imul(x, 0x846ca68b) >>> 0;
    x ^= x >>> 16;
    const noise = x >>> 24;
    if (kind === 0) data[i] = noise;
    else if (kind === 1) data[i] = noise >= 128 ? 255 : 0;
    else {
      const c = i % 3;
      const p = (i - c) / 3;
      const px = p % w;
      const py = (p - px) / w;
      const v = (px * 7 + py * 13 + c * 50) % 256;
      data[i] = (v * 3 + noise) >> 2;
    }
  }
  return { width: w, height: h, data };
}

describe('resizeImage vs Pillow 9.4 on random images (test/fixtures/pillow_resize_cases.json)', () => {
  const { cases } = readJson<{
    cases: {
      in: [number, number];
      seed: number;
      kind: number;
      out: [number, number];
      filter: number;
      sha256: string;
    }[];
  }>(path.join(FIXTURES, 'pillow_resize_cases.json'));

  test(`all ${cases.length} cases bit-exact`, () => {
    const bad: string[] = [];
    const perFilter = new Map<number, number>();
    for (const c of cases) {
      const img = makePixels(c.in[0], c.in[1], c.seed, c.kind);
      const out = resizeImage(img, c.out[0], c.out[1], c.filter);
      if (sha256(out.data) !== c.sha256)
        bad.push(`${c.in.join('x')} -> ${c.out.join('x')} filter ${c.filter} seed ${c.seed}`);
      perFilter.set(c.filter, (perFilter.get(c.filter) ?? 0) + 1);
    }
    expect(bad).toEqual([]);
    expect([...perFilter.keys()].sort()).toEqual([0, 1, 2, 3, 4, 5]);
    // A camera photo going to LLaVA's size is among them (hundreds of taps per output pixel).
    expect(cases.some((c) => c.in[0] * c.in[1] >= 4000 * 3000 && c.filter === Number(Resample.BICUBIC))).toBe(true);
  });
});

describe('resizeImage behaviour', () => {
  const img = makePixels(13, 7, 99, 0);

  test('same size is an exact copy (a new buffer)', () => {
    const out = resizeImage(img, 13, 7, Resample.LANCZOS);
    expect(out.data).toEqual(img.data);
    expect(out.data).not.toBe(img.data);
  });

  test('rejects bad sizes and unknown filters', () => {
    expect(() => resizeImage(img, 0, 5)).toThrow(/size/);
    expect(() => resizeImage(img, 2.5, 5)).toThrow(/size/);
    expect(() => resizeImage(img, 5, 5, 7)).toThrow(/filter 7/);
  });
});
