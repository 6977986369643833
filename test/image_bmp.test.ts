import * as fs from 'fs';
import * as path from 'path';
import { decodeImage } from '../src/image/decode';
import { decodeBmp } from '../src/image/bmp';
import { ImageError } from '../src/errors';
import { FIXTURES, readJson, sha256 } from './helpers/images';

interface BmpCase {
  note: string;
  mode?: string;
  size_wh?: [number, number];
  rgb_u8_sha256?: string;
  pillow_error?: string;
  from_bytes?: { error?: string; rgb_u8_sha256?: string };
}

const DIR = path.join(FIXTURES, 'pillow_decode_cases', 'bmp');
const cases = readJson<Record<string, BmpCase>>(path.join(DIR, 'manifest.json'));
const names = Object.keys(cases).filter((f) => !f.startsWith('_'));

describe('BMP = PIL Image.open(f).convert("RGB") (tools/gen_pillow_bmp_cases.py, Pillow 9.4)', () => {
  for (const file of names.filter((f) => !cases[f].pillow_error && !cases[f].from_bytes)) {
    const m = cases[file];
    test(`${file}: ${m.note}`, async () => {
      const img = await decodeImage(path.join(DIR, file));
      expect([img.width, img.height]).toEqual(m.size_wh);
      expect(sha256(img.data)).toBe(m.rgb_u8_sha256);
      expect(img.sourceMode).toBe(m.mode);
    });
  }

  // Pillow raises, or decodes the file differently from a path and from bytes: we refuse.
  for (const file of names.filter((f) => cases[f].pillow_error || cases[f].from_bytes)) {
    const m = cases[file];
    test(`${file}: ${m.note} -> ImageError naming the file`, async () => {
      const p = path.join(DIR, file);
      await expect(decodeImage(p)).rejects.toThrow(ImageError);
      await expect(decodeImage(p)).rejects.toThrow(new RegExp(`^cannot decode image .*${file.replace('.', '\\.')}: `));
    });
  }

  test('the fixtures cover every variant (the list above is not silently empty)', () => {
    expect(names.filter((f) => cases[f].rgb_u8_sha256 && !cases[f].from_bytes).length).toBeGreaterThanOrEqual(40);
    expect(names.filter((f) => cases[f].pillow_error).length).toBeGreaterThanOrEqual(15);
  });

  test('a Uint8Array input decodes like the file', async () => {
    const bytes = new Uint8Array(fs.readFileSync(path.join(DIR, 'rle8_delta_wrap.bmp')));
    const img = await decodeImage(bytes, { name: 'upload.bmp' });
    expect(sha256(img.data)).toBe(cases['rle8_delta_wrap.bmp'].rgb_u8_sha256);
    await expect(decodeImage(bytes.subarray(0, 100), { name: 'upload.bmp' })).rejects.toThrow(/upload\.bmp/);
  });

  test('huge declared sizes are refused before allocating (file size, RLE dry run, Pillow bomb limit)', () => {
    for (const [file, why] of [
      ['huge.bmp', /truncated/],
      ['bomb.bmp', /over the limit of 178956970/],
      ['rle8_huge_delta.bmp', /ends before the image is complete/],
    ] as const) {
      const t0 = Date.now();
      expect(() => decodeBmp(fs.readFileSync(path.join(DIR, file)), file)).toThrow(why);
      expect(Date.now() - t0).toBeLessThan(500);
    }
  });

  test('mutated files decode or throw ImageError, never anything else, never hang', () => {
    const seeds = ['rle8_delta_wrap.bmp', 'rle4.bmp', 'p4.bmp', 'rgb16_565_v4.bmp', 'os2_p8.bmp', 'rgb32_bgra_v4.bmp'];
    let state = 7;
    const rand = (n: number) => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return (state >>> 8) % n;
    };
    let decoded = 0;
    let refused = 0;
    const t0 = Date.now();
    for (const seed of seeds) {
      const original = fs.readFileSync(path.join(DIR, seed));
      for (let k = 0; k < 150; k++) {
        const bytes = new Uint8Array(original);
        for (let j = 0, n = 1 + rand(4); j < n; j++) bytes[rand(bytes.length)] = rand(256);
        const cut = k % 5 === 0 ? bytes.subarray(0, rand(bytes.length)) : bytes;
        try {
          const img = decodeBmp(cut, 'fuzz.bmp');
          expect(img.data.length).toBe(img.width * img.height * 3);
          decoded++;
        } catch (e) {
          expect(e).toBeInstanceOf(ImageError);
          expect((e as Error).message).toMatch(/^cannot decode image fuzz\.bmp: /);
          refused++;
        }
      }
    }
    expect(decoded).toBeGreaterThan(50);
    expect(refused).toBeGreaterThan(50);
    expect(Date.now() - t0).toBeLessThan(20000);
  });
});
