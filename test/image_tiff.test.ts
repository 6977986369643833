import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { decodeImage } from '../src/image/decode';
import { decodeTiff } from '../src/image/tiff';
import { ImageError } from '../src/errors';
import { FIXTURES, sha256 } from './helpers/images';
import { fuzz, readPillowCases, testPillowCases } from './helpers/pillow_cases';

const DIR = path.join(FIXTURES, 'pillow_decode_cases', 'tiff');
const cases = readPillowCases(DIR);

describe('TIFF = PIL Image.open(f).convert("RGB") (tools/gen_pillow_tiff_cases.py, Pillow 9.4)', () => {
  testPillowCases(DIR, cases);

  test('the fixtures cover every class (the list above is not silently empty)', () => {
    const names = Object.keys(cases);
    expect(names.filter((f) => f.startsWith('orientation') && cases[f].rgb_u8_sha256).length).toBeGreaterThanOrEqual(
      40,
    );
    expect(names.filter((f) => cases[f].pillow_error).length).toBeGreaterThanOrEqual(3);
  });

  test('Orientation turns the image as Pillow does, every value, every compression (5..8 swap width and height)', async () => {
    const upright = await decodeImage(path.join(DIR, 'orientation1_raw.tif'));
    expect([upright.width, upright.height]).toEqual([13, 7]);
    for (const file of Object.keys(cases).filter((f) => /^orientation[5-8]_/.test(f))) {
      const img = await decodeImage(path.join(DIR, file));
      expect([file, img.width, img.height]).toEqual([file, 7, 13]);
    }
    // Orientation 6 = ROTATE_270: output (x, y) = input (y, H - 1 - x), on the uncompressed file.
    const turned = await decodeImage(path.join(DIR, 'orientation6_raw.tif'));
    const { width: W, height: H } = upright;
    for (let y = 0; y < W; y++) {
      for (let x = 0; x < H; x++) {
        const a = (y * H + x) * 3;
        const b = ((H - 1 - x) * W + y) * 3;
        expect([turned.data[a], turned.data[a + 1], turned.data[a + 2]]).toEqual([
          upright.data[b],
          upright.data[b + 1],
          upright.data[b + 2],
        ]);
      }
    }
    // libvips leaves it as stored (the old behaviour): what Pillow shows is not that.
    const stored = await sharp(path.join(DIR, 'orientation6_lzw.tif')).raw().toBuffer({ resolveWithObject: true });
    expect([stored.info.width, stored.info.height]).toEqual([13, 7]);
  });

  test('autoOrient does not turn a TIFF twice (Image.open already applied its Orientation)', async () => {
    const plain = await decodeImage(path.join(DIR, 'orientation6_lzw.tif'));
    const auto = await decodeImage(path.join(DIR, 'orientation6_lzw.tif'), { autoOrient: true });
    expect(sha256(auto.data)).toBe(sha256(plain.data));
  });

  test('a repeated tag takes its last value, as Pillow reads it (libtiff keeps the first)', async () => {
    const img = await decodeImage(path.join(DIR, 'two_strip_offsets.tif'));
    expect([img.data[0], img.data[1], img.data[2]]).toEqual([0, 0, 200]); // blue, the second strip offset
    const libvips = await sharp(path.join(DIR, 'two_strip_offsets.tif'), { failOn: 'none' }).raw().toBuffer();
    expect([libvips[0], libvips[1], libvips[2]]).toEqual([200, 0, 0]); // red
    expect((await decodeImage(path.join(DIR, 'two_widths_raw.tif'))).width).toBe(11);
  });

  test("CIELab is converted as Pillow's LittleCMS transform; Pillow's own YCbCr file is refused as Pillow refuses it", async () => {
    for (const file of ['lab.tif', 'lab_lzw.tif']) {
      const img = await decodeImage(path.join(DIR, file));
      expect(img.sourceMode).toBe('LAB');
      expect(sha256(img.data)).toBe(cases[file].rgb_u8_sha256);
    }
    await expect(decodeImage(path.join(DIR, 'ycbcr_pillow.tif'))).rejects.toThrow(
      /image file is truncated; Pillow 9\.4 refuses it too$/,
    );
  });

  test('a Uint8Array input decodes like the file', async () => {
    const bytes = new Uint8Array(fs.readFileSync(path.join(DIR, 'orientation8_jpeg.tif')));
    const img = await decodeImage(bytes, { name: 'upload.tif' });
    expect(sha256(img.data)).toBe(cases['orientation8_jpeg.tif'].rgb_u8_sha256);
  });

  test('mutated uncompressed files decode or throw ImageError, never anything else, never hang', () => {
    const seeds = ['orientation6_raw_strips.tif', 'two_strip_offsets.tif', 'lab.tif', 'orientation5_raw.tif'];
    const t0 = Date.now();
    const { decoded, refused } = fuzz(
      seeds.map((f) => fs.readFileSync(path.join(DIR, f))),
      150,
      (b) => {
        let r;
        try {
          r = decodeTiff(b, 'fuzz', 1e8, 'pillow');
        } catch (e) {
          // The size limit names the image its own way ('image fuzz is WxH = ...').
          if (e instanceof ImageError && e.message.startsWith('image fuzz is '))
            throw new ImageError(`cannot decode image fuzz: ${e.message}`);
          throw e;
        }
        if (!('data' in r)) throw new ImageError('cannot decode image fuzz: compressed (decoded by libvips)');
        return r;
      },
    );
    expect(decoded).toBeGreaterThan(100);
    expect(refused).toBeGreaterThan(30);
    expect(Date.now() - t0).toBeLessThan(30000);
  });
});
