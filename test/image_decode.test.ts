import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
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
  const cases = readJson<Record<string, any>>(path.join(dir, 'manifest.json')); // eslint-disable-line @typescript-eslint/no-explicit-any
  for (const [file, m] of Object.entries(cases)) {
    if (file.startsWith('_')) continue;
    // 16-bit grey: Pillow 9.4 opens it as mode I and convert('RGB') clamps to 255; we keep v >> 8
    // (what Pillow does for 16-bit RGB, see rgb16.png where both hashes agree).
    const want = m.high_byte_rgb_u8_sha256 ?? m.rgb_u8_sha256;
    test(`${file}: ${m.note}`, async () => {
      const img = await decodeImage(path.join(dir, file));
      expect([img.width, img.height]).toEqual(m.size_wh);
      expect(sha256(img.data)).toBe(want);
    });
  }

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
    const bytes = new Uint8Array(4096).map(() => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 24));
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
});
