import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { decodeImage } from '../src/image/decode';
import { decodePng } from '../src/image/png';
import { FIXTURES, sha256 } from './helpers/images';
import { fuzz, readPillowCases, testPillowCases } from './helpers/pillow_cases';

const DIR = path.join(FIXTURES, 'pillow_decode_cases', 'png');
const cases = readPillowCases(DIR);

describe('PNG/APNG = PIL Image.open(f).convert("RGB") (tools/gen_pillow_png_cases.py, Pillow 9.4)', () => {
  testPillowCases(DIR, cases);

  test('the fixtures cover every class (the list above is not silently empty)', () => {
    const names = Object.keys(cases);
    expect(names.filter((f) => cases[f].rgb_u8_sha256).length).toBeGreaterThanOrEqual(15);
    expect(names.filter((f) => cases[f].pillow_error).length).toBeGreaterThanOrEqual(15);
  });

  test('palette indices past PLTE are the grey ramp (i, i, i), as Pillow gives; libvips gives black', async () => {
    const file = path.join(DIR, 'indices_past_plte.png');
    const img = await decodeImage(file);
    // The indices are (y * 17 + x) * 7 % 256; PLTE has 16 entries.
    let past = 0;
    for (let p = 0; p < img.width * img.height; p++) {
      const index = (p * 7) % 256;
      if (index < 16) continue;
      past++;
      expect([img.data[3 * p], img.data[3 * p + 1], img.data[3 * p + 2]]).toEqual([index, index, index]);
    }
    expect(past).toBeGreaterThan(100);
    const libvips = await sharp(file).removeAlpha().raw().toBuffer();
    expect(sha256(libvips)).not.toBe(cases['indices_past_plte.png'].rgb_u8_sha256);
  });

  test('what libpng refuses and Pillow opens is decoded (bad IDAT CRC, short data, no PLTE, odd PLTE, two IHDR, unknown critical chunk)', async () => {
    for (const file of [
      'bad_idat_crc.png',
      'short_data_row_boundary.png',
      'no_plte.png',
      'plte_49_bytes.png',
      'two_ihdr.png',
      'unknown_critical_chunk.png',
    ]) {
      expect(cases[file].rgb_u8_sha256).toBeDefined();
      await expect(sharp(path.join(DIR, file)).raw().toBuffer()).rejects.toThrow();
    }
  });

  test('what libpng opens and Pillow refuses is refused (text and ICC limits, bad tEXt CRC, bad zlib checksum)', async () => {
    for (const file of [
      'ztxt_over_1mib.png',
      'iccp_over_1mib.png',
      'text_over_64mib.png',
      'bad_text_crc.png',
      'bad_adler.png',
    ]) {
      expect(cases[file].pillow_error).toBeDefined();
      await expect(decodeImage(path.join(DIR, file))).rejects.toThrow(/Pillow 9\.4 refuses it too/);
    }
  });

  test("the stream's end counts only in the piece that completes a row (ZipDecode.c)", async () => {
    const ok = await decodeImage(path.join(DIR, 'short_data_row_boundary.png'));
    // Rows 4..8 are zero: black.
    expect(ok.data.subarray(4 * 17 * 3).every((v) => v === 0)).toBe(true);
    expect(ok.data.subarray(0, 4 * 17 * 3).some((v) => v !== 0)).toBe(true);
    await expect(decodeImage(path.join(DIR, 'short_data_end_in_next_chunk.png'))).rejects.toThrow(
      /image file is truncated/,
    );
  });

  test('a Uint8Array input decodes like the file', async () => {
    const bytes = new Uint8Array(fs.readFileSync(path.join(DIR, 'apng_first_frame_smaller.png')));
    const img = await decodeImage(bytes, { name: 'upload.png' });
    expect(sha256(img.data)).toBe(cases['apng_first_frame_smaller.png'].rgb_u8_sha256);
  });

  test('mutated files decode or throw ImageError, never anything else, never hang', () => {
    const seeds = ['indices_past_plte_interlaced.png', 'ztxt_1mib.png', 'apng_first_frame_smaller.png', 'two_ihdr.png'];
    const t0 = Date.now();
    const { decoded, refused } = fuzz(
      seeds.map((f) => fs.readFileSync(path.join(DIR, f))),
      150,
      (b) => decodePng(b, 'fuzz', { maxPixels: 1e8, grey16: 'pillow' }),
    );
    expect(decoded).toBeGreaterThan(5); // most mutants break a CRC Pillow checks
    expect(refused).toBeGreaterThan(100);
    expect(Date.now() - t0).toBeLessThan(30000);
  });
});
