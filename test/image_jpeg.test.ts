import * as path from 'path';
import sharp from 'sharp';
import { decodeImage } from '../src/image/decode';
import { FIXTURES } from './helpers/images';
import { readPillowCases, testPillowCases } from './helpers/pillow_cases';

const DIR = path.join(FIXTURES, 'pillow_decode_cases', 'jpeg');
const cases = readPillowCases(DIR);

describe('JPEG: accepted and refused as PIL Image.open(f).convert("RGB") (tools/gen_pillow_jpeg_cases.py, Pillow 9.4)', () => {
  testPillowCases(DIR, cases);

  test('files libjpeg only warns about (or libvips never reads that far) but Pillow refuses are refused', async () => {
    const refused = ['tem_marker.jpg', 'unknown_marker_after_scan.jpg', 'second_sos_after_baseline.jpg'];
    for (const file of refused) {
      expect(cases[file].pillow_error).toBeDefined();
      // libvips decodes it: without the check these pixels would go to the model.
      const raw = await sharp(path.join(DIR, file), { failOn: 'error' }).raw().toBuffer({ resolveWithObject: true });
      expect(raw.info.width).toBe(23);
      await expect(decodeImage(path.join(DIR, file))).rejects.toThrow(/Pillow|libjpeg/);
    }
  });

  test('a progressive file cut before its last scan is refused with the reason (Pillow decodes it; libjpeg versions smooth it differently)', async () => {
    expect(cases['progressive_early_eoi.jpg'].rgb_u8_sha256).toBeDefined();
    await expect(decodeImage(path.join(DIR, 'progressive_early_eoi.jpg'))).rejects.toThrow(/smooth them differently/);
  });
});
