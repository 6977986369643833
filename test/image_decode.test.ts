import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { decodeImage } from '../src/image/decode';
import { ImageError } from '../src/errors';
import { IMAGES, readJson, sha256 } from './image_helpers';

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
