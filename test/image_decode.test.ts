import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import * as zlib from 'zlib';
import { decodeImage } from '../src/image/decode';
import { ImageError } from '../src/errors';
import { FIXTURES, IMAGES, readJson, sha256 } from './helpers/images';

const manifest = readJson<Record<string, { size_wh: [number, number]; mode: string; rgb_u8_sha256: string }>>(
  path.join(IMAGES, 'manifest.json'),
);

describe('decodeImage = PIL Image.open(f).convert("RGB") (Pillow 9.4)', () => {
  for (const [file, m] of Object.entries(manifest)) {
    test(`${file} (${m.mode}) decodes to Pillow's RGB bytes`, async () => {
      const img = await decodeImage(path.join(IMAGES, file));
      expect([img.width, img.height]).toEqual(m.size_wh);
      expect(img.data.length).toBe(img.width * img.height * 3);
      expect(sha256(img.data)).toBe(m.rgb_u8_sha256);
      expect(img.sourceMode).toBe(m.mode);
    });
  }

  test('a Uint8Array input decodes like the file', async () => {
    const bytes = new Uint8Array(fs.readFileSync(path.join(IMAGES, 'rocket.jpg')));
    const img = await decodeImage(bytes);
    expect(sha256(img.data)).toBe(manifest['rocket.jpg'].rgb_u8_sha256);
  });
});

describe('decodeImage on modes the golden fixtures lack (tools/gen_pillow_decode_cases.py, Pillow 9.4)', () => {
  const dir = path.join(FIXTURES, 'pillow_decode_cases');
  interface DecodeCase {
    note: string;
    pillow_error?: string;
    refused_here?: boolean;
    size_wh: [number, number];
    rgb_u8_sha256: string;
    high_byte_rgb_u8_sha256?: string;
  }
  const cases = readJson<Record<string, DecodeCase>>(path.join(dir, 'manifest.json'));
  for (const [file, m] of Object.entries(cases)) {
    if (file.startsWith('_')) continue;
    if (m.pillow_error || m.refused_here) {
      test(`${file}: ${m.note} -> ImageError naming the file`, async () => {
        await expect(decodeImage(path.join(dir, file))).rejects.toThrow(ImageError);
        await expect(decodeImage(path.join(dir, file))).rejects.toThrow(new RegExp(`cannot decode image .*${file}: `));
      });
      continue;
    }
    test(`${file}: ${m.note}`, async () => {
      const img = await decodeImage(path.join(dir, file));
      expect([img.width, img.height]).toEqual(m.size_wh);
      expect(sha256(img.data)).toBe(m.rgb_u8_sha256);
    });
  }

  test('16-bit grey clips at 255 like Pillow (not v >> 8), reported as mode I / I;16', async () => {
    const png = await decodeImage(path.join(dir, 'gray16_ramp.png'));
    const tif = await decodeImage(path.join(dir, 'gray16_ramp.tif'));
    expect([png.sourceMode, tif.sourceMode]).toEqual(['I', 'I;16']);
    // The ramp holds values on both sides of 255: clip and high byte disagree on it.
    expect(cases['gray16_ramp.png'].rgb_u8_sha256).not.toBe(cases['gray16_ramp.png'].high_byte_rgb_u8_sha256);
    const values = new Set(png.data);
    expect(values.has(255) && [...values].some((v) => v > 4 && v < 255)).toBe(true);
  });

  test('CIELab TIFF: 8-bit converted as Pillow (LittleCMS), 16-bit refused as Pillow refuses it', async () => {
    const lab = await decodeImage(path.join(dir, 'lab.tif'));
    expect(sha256(lab.data)).toBe(cases['lab.tif'].rgb_u8_sha256);
    expect(lab.sourceMode).toBe('LAB');
    await expect(decodeImage(path.join(dir, 'lab16.tif'))).rejects.toThrow(
      /lab16\.tif: TIFF unknown pixel mode .*Pillow 9\.4 refuses it too$/,
    );
  });

  test("grey16: 'high-byte' keeps v >> 8 instead (the image as a viewer shows it)", async () => {
    for (const file of ['gray16.png', 'gray16_ramp.png', 'gray16_ramp.tif']) {
      const img = await decodeImage(path.join(dir, file), { grey16: 'high-byte' });
      expect(sha256(img.data)).toBe(cases[file].high_byte_rgb_u8_sha256);
    }
    // Only grey: 16-bit RGB keeps the high byte either way.
    const rgb = await decodeImage(path.join(dir, 'rgb16.png'), { grey16: 'high-byte' });
    expect(sha256(rgb.data)).toBe(cases['rgb16.png'].rgb_u8_sha256);
  });

  test('16-bit RGB: Pillow keeps the high byte, as we do', () => {
    expect(cases['rgb16.png'].rgb_u8_sha256).toBe(cases['rgb16.png'].high_byte_rgb_u8_sha256);
  });

  test('autoOrient applies the EXIF orientation only when asked', async () => {
    const file = path.join(dir, 'exif_orientation6.jpg');
    const plain = await decodeImage(file);
    const turned = await decodeImage(file, { autoOrient: true });
    expect([turned.width, turned.height]).toEqual([plain.height, plain.width]);
    // Orientation 6 = rotate 90 degrees clockwise: output (x, y) = input (y, H - 1 - x).
    const { width: W, height: H } = plain;
    let same = 0;
    for (let y = 0; y < W; y++) {
      for (let x = 0; x < H; x++) {
        const a = (y * H + x) * 3;
        const b = ((H - 1 - x) * W + y) * 3;
        if ([0, 1, 2].every((c) => turned.data[a + c] === plain.data[b + c])) same++;
      }
    }
    expect(same).toBe(W * H);
  });
});

describe('decodeImage errors name the file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'image-decode-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('truncated PNG', async () => {
    const bytes = fs.readFileSync(path.join(IMAGES, 'chelsea.png'));
    const file = path.join(dir, 'truncated.png');
    fs.writeFileSync(file, bytes.subarray(0, bytes.length >> 1));
    await expect(decodeImage(file)).rejects.toThrow(ImageError);
    await expect(decodeImage(file)).rejects.toThrow(/truncated\.png/);
  });

  test('truncated JPEG', async () => {
    const bytes = fs.readFileSync(path.join(IMAGES, 'rocket.jpg'));
    const file = path.join(dir, 'truncated.jpg');
    fs.writeFileSync(file, bytes.subarray(0, bytes.length >> 1));
    await expect(decodeImage(file)).rejects.toThrow(ImageError);
    await expect(decodeImage(file)).rejects.toThrow(/truncated\.jpg/);
  });

  test('random bytes', async () => {
    const file = path.join(dir, 'noise.jpg');
    let x = 12345;
    const bytes = new Uint8Array(4096).map(() => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 24);
    fs.writeFileSync(file, bytes);
    await expect(decodeImage(file)).rejects.toThrow(ImageError);
    await expect(decodeImage(file)).rejects.toThrow(/noise\.jpg/);
  });

  test('missing file', async () => {
    await expect(decodeImage(path.join(dir, 'nope.png'))).rejects.toThrow(/nope\.png/);
  });

  test('buffer input uses the given name', async () => {
    await expect(decodeImage(new Uint8Array(100), { name: 'upload-7' })).rejects.toThrow(/upload-7/);
  });

  test('empty file and directory', async () => {
    const empty = path.join(dir, 'empty.png');
    fs.writeFileSync(empty, '');
    await expect(decodeImage(empty)).rejects.toThrow(/^cannot decode image .*empty\.png: empty file$/);
    await expect(decodeImage(dir)).rejects.toThrow(/: is a directory$/);
  });
});

describe('formats Pillow 9.4 cannot open are refused, although sharp decodes them', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'image-refuse-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const red = () => sharp({ create: { width: 8, height: 6, channels: 3, background: { r: 200, g: 10, b: 10 } } });

  const made: Array<[string, () => Promise<Buffer>, RegExp]> = [
    [
      'drawing.svg',
      async () =>
        Buffer.from(
          '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="8" height="6"><rect width="8" height="6" fill="red"/></svg>',
        ),
      /SVG is a vector format Pillow 9\.4 does not open/,
    ],
    ['photo.avif', () => red().avif().toBuffer(), /AVIF needs a plugin Pillow 9\.4 does not ship/],
    ['photo.heic', () => red().heif({ compression: 'av1' }).toBuffer(), /(AVIF|HEIF\/HEIC) needs a plugin/],
    [
      'image.v',
      async () => (await red().toFile(path.join(dir, 'made.v')), fs.readFileSync(path.join(dir, 'made.v'))),
      /unsupported image format \(llava-vision-tfjs decodes PNG, JPEG, GIF, WebP, TIFF and BMP\)/,
    ],
    [
      'drawing.svgz',
      async () => zlib.gzipSync('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="6"/>'),
      /gzip-compressed/,
    ],
  ];
  for (const [file, make, why] of made) {
    test(`${file}`, async () => {
      const bytes = await make();
      const p = path.join(dir, file);
      fs.writeFileSync(p, bytes);
      // sharp itself decodes it: without the check these pixels would go to the model.
      if (!file.endsWith('.svgz'))
        expect((await sharp(p).raw().toBuffer({ resolveWithObject: true })).info.width).toBe(8);
      await expect(decodeImage(p)).rejects.toThrow(ImageError);
      await expect(decodeImage(p)).rejects.toThrow(new RegExp(`^cannot decode image .*${file.replace('.', '\\.')}: `));
      await expect(decodeImage(p)).rejects.toThrow(why);
      await expect(decodeImage(new Uint8Array(bytes), { name: 'upload' })).rejects.toThrow(why);
    });
  }
});
