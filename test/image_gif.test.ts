import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { decodeImage } from '../src/image/decode';
import { decodeGif } from '../src/image/gif';
import { FIXTURES, sha256 } from './helpers/images';
import { fuzz, readPillowCases, testPillowCases } from './helpers/pillow_cases';

const DIR = path.join(FIXTURES, 'pillow_decode_cases', 'gif');
const cases = readPillowCases(DIR);

describe('GIF = PIL Image.open(f).convert("RGB"), first frame (tools/gen_pillow_gif_cases.py, Pillow 9.4)', () => {
  testPillowCases(DIR, cases);

  test('the fixtures cover every variant (the list above is not silently empty)', () => {
    const names = Object.keys(cases);
    expect(names.filter((f) => cases[f].rgb_u8_sha256 && !cases[f].from_bytes).length).toBeGreaterThanOrEqual(25);
    expect(names.filter((f) => cases[f].pillow_error).length).toBeGreaterThanOrEqual(7);
  });

  test('libvips would differ on these files (why GIF has its own decoder)', async () => {
    let differ = 0;
    for (const file of ['transparency.gif', 'frame_inside_screen.gif', 'indices_past_palette.gif', 'no_palette.gif']) {
      const raw = await sharp(path.join(DIR, file)).removeAlpha().raw().toBuffer();
      if (sha256(raw) !== cases[file].rgb_u8_sha256) differ++;
    }
    expect(differ).toBe(4);
  });

  test('a Uint8Array input decodes like the file', async () => {
    const bytes = new Uint8Array(fs.readFileSync(path.join(DIR, 'local_palette.gif')));
    const img = await decodeImage(bytes, { name: 'upload.gif' });
    expect(sha256(img.data)).toBe(cases['local_palette.gif'].rgb_u8_sha256);
  });

  test('a huge screen is refused before allocating', () => {
    const t0 = Date.now();
    expect(() => decodeGif(fs.readFileSync(path.join(DIR, 'bomb.gif')), 'bomb.gif')).toThrow(
      /over the limit of 178956970/,
    );
    expect(Date.now() - t0).toBeLessThan(500);
  });

  test('mutated files decode or throw ImageError, never anything else, never hang', () => {
    const seeds = ['pillow_interlaced_256.gif', 'extensions_and_junk.gif', 'local_palette.gif', 'deferred_clear.gif'];
    const t0 = Date.now();
    const { decoded, refused } = fuzz(
      seeds.map((f) => fs.readFileSync(path.join(DIR, f))),
      150,
      (b) => decodeGif(b, 'fuzz'),
    );
    expect(decoded).toBeGreaterThan(50);
    expect(refused).toBeGreaterThan(50);
    expect(Date.now() - t0).toBeLessThan(20000);
  });
});
