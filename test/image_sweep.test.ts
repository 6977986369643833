import * as path from 'path';
import { AGREE, SweepCase, checkSweepCase, readSweep } from '../tools/sweep_pillow';
import { FIXTURES } from './helpers/images';

/**
 * The seeded subset of the Pillow sweep (tools/sweep_pillow.py --seed 21 --rounds 3): valid PNG,
 * APNG, TIFF, JPEG, WebP and GIF files and their structural and random mutants, with what Pillow
 * 9.4 does with each. Every one must give Pillow's pixels, or be refused where Pillow raises,
 * except the few below, of the classes docs/formats.md lists as left (with why).
 */
const KNOWN: Record<string, string> = {
  'tiff/pil_1_g4/1': 'corrupt CCITT G4 data: libvips (libtiff 4.7.2) refuses what Pillow (libtiff 4.5.0) decodes',
  'tiff/tiffcp_lzw_pred_tiles/1': 'moved tile offsets: libtiff 4.5.0 (Pillow) fails where libvips decodes',
  'tiff/tiffcp_jpeg_tiles/1':
    "JPEG tiles marked RGB instead of YCbCr: libtiff 4.5.0 (Pillow) fails, libvips' libtiff 4.7.2 decodes",
  'jpeg/progressive/1':
    'progressive JPEG with coefficients left unknown: refused (block smoothing differs between libjpeg versions)',
};

describe('the Pillow sweep, seeded subset (test/fixtures/pillow_sweep/cases.json)', () => {
  const cases = readSweep(path.join(FIXTURES, 'pillow_sweep', 'cases.json'));

  test('covers every format with hundreds of files, Pillow refusing a good share', () => {
    const formats = new Set(cases.map((c) => c.format));
    expect([...formats].sort()).toEqual(['gif', 'jpeg', 'png', 'tiff', 'webp']);
    expect(cases.length).toBeGreaterThan(300);
    expect(cases.filter((c) => c.error).length).toBeGreaterThan(100);
  });

  const byFormat = new Map<string, SweepCase[]>();
  for (const c of cases) byFormat.set(c.format, [...(byFormat.get(c.format) ?? []), c]);
  for (const [format, list] of byFormat) {
    test(`${format}: ${list.length} files give Pillow's pixels or are refused where Pillow raises`, async () => {
      const disagree: string[] = [];
      for (const c of list) {
        const r = await checkSweepCase(c);
        if (!AGREE.includes(r.outcome) && !(c.name in KNOWN))
          disagree.push(`${c.name} (${c.mutation}): ${r.outcome}: ${r.detail}`);
        if (c.name in KNOWN && AGREE.includes(r.outcome))
          disagree.push(`${c.name} now agrees: take it off the KNOWN list`);
      }
      expect(disagree).toEqual([]);
    });
  }
});
