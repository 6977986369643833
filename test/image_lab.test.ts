import * as crypto from 'crypto';
import { labToRgb } from '../src/image/lab';
import { LAB_TABLE_SHA256 } from '../src/image/lab_clut';

describe("CIELab -> RGB as Pillow 9.4's convert('RGB') (ImageCms, LittleCMS 2.14)", () => {
  test("all 2^24 Lab values give the RGB of Pillow's table (sha256 from tools/gen_lab_clut.py)", () => {
    const n = 1 << 24;
    const lab = new Uint8Array(4 * n);
    for (let v = 0; v < n; v++) {
      lab[4 * v] = v >> 16;
      lab[4 * v + 1] = (v >> 8) & 255;
      lab[4 * v + 2] = v & 255;
    }
    const rgb = labToRgb(lab, n);
    expect(crypto.createHash('sha256').update(rgb).digest('hex')).toBe(LAB_TABLE_SHA256);
  });

  test('white, black and grey land where they should', () => {
    // Stored bytes: L, a + 128, b + 128.
    const rgb = labToRgb(new Uint8Array([255, 128, 128, 0, 0, 128, 128, 0, 128, 128, 128, 0]), 3);
    expect([...rgb.subarray(0, 3)].every((v) => v >= 254)).toBe(true);
    expect([...rgb.subarray(3, 6)].every((v) => v <= 1)).toBe(true);
    expect(rgb[6]).toBe(rgb[7]);
  });
});
