import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { main } from '../src/cli/main';
import { SafetensorsFile } from '../src/io/safetensors';
import { decodeImage } from '../src/image/decode';
import { decodeBmp } from '../src/image/bmp';
import { FIXTURES, sha256 } from './helpers/images';
import { fuzz, readPillowCases, testPillowCases } from './helpers/pillow_cases';

const DIR = path.join(FIXTURES, 'pillow_decode_cases', 'bmp');
const cases = readPillowCases(DIR);

describe('BMP = PIL Image.open(f).convert("RGB") (tools/gen_pillow_bmp_cases.py, Pillow 9.4)', () => {
  testPillowCases(DIR, cases);

  test('the fixtures cover every variant (the list above is not silently empty)', () => {
    const names = Object.keys(cases);
    expect(names.filter((f) => cases[f].rgb_u8_sha256 && !cases[f].from_bytes).length).toBeGreaterThanOrEqual(45);
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

  test('the pixel limit is the one decodeImage uses (maxImagePixels option)', async () => {
    const file = path.join(DIR, 'rle8_delta_wrap.bmp');
    const { width, height } = await decodeImage(file);
    await expect(decodeImage(file, { maxImagePixels: width * height - 1 })).rejects.toThrow(/over the limit of/);
    await expect(decodeImage(file, { maxImagePixels: width * height })).resolves.toMatchObject({ width, height });
  });

  test('mutated files decode or throw ImageError, never anything else, never hang', () => {
    const seeds = ['rle8_delta_wrap.bmp', 'rle4.bmp', 'p4.bmp', 'rgb16_565_v4.bmp', 'os2_p8.bmp', 'rgb32_bgra_v4.bmp'];
    const t0 = Date.now();
    const { decoded, refused } = fuzz(
      seeds.map((f) => fs.readFileSync(path.join(DIR, f))),
      150,
      (b) => decodeBmp(b, 'fuzz'),
    );
    expect(decoded).toBeGreaterThan(50);
    expect(refused).toBeGreaterThan(50);
    expect(Date.now() - t0).toBeLessThan(20000);
  });
});

test('the CLI preprocesses a BMP (it used to say "unsupported image format") like the same pixels as PNG', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bmp-cli-'));
  try {
    const bmp = path.join(DIR, 'rgb24_top_down.bmp');
    const img = await decodeImage(bmp);
    const png = path.join(tmp, 'same.png');
    await sharp(Buffer.from(img.data), { raw: { width: img.width, height: img.height, channels: 3 } })
      .png()
      .toFile(png);
    const demo = path.join(__dirname, '..', 'weights', 'demo', 'clip_tower');
    const tensors: Record<string, Uint8Array>[] = [];
    for (const [input, out] of [
      [bmp, 'bmp.safetensors'],
      [png, 'png.safetensors'],
    ]) {
      let err = '';
      const code = await main(['preprocess', '--preprocessor', demo, input, '--out', path.join(tmp, out)], {
        out: () => {},
        err: (e) => (err += e),
      });
      expect({ code, err }).toEqual({ code: 0, err: '' });
      const f = SafetensorsFile.open(path.join(tmp, out));
      tensors.push(Object.fromEntries(f.keys().map((k) => [k, f.read(k).data])));
      f.close();
    }
    expect(Object.keys(tensors[0]).length).toBeGreaterThan(0);
    expect(tensors[0]).toEqual(tensors[1]);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
