/** Runs the cases of a generated Pillow fixture folder (manifest.json from tools/gen_pillow_*_cases.py) against decodeImage. */
import * as path from 'path';
import { decodeImage } from '../../src/image/decode';
import { ImageError } from '../../src/errors';
import { readJson, sha256 } from './images';

export interface PillowCase {
  note: string;
  mode?: string;
  size_wh?: [number, number];
  rgb_u8_sha256?: string;
  pillow_error?: string;
  /** Pillow's result from io.BytesIO, where it differs from Image.open(path). */
  from_bytes?: { error?: string; rgb_u8_sha256?: string };
  /** Pillow decodes it, decode.ts refuses it on purpose (the note says why). */
  refused_here?: boolean;
}

export function readPillowCases(dir: string): Record<string, PillowCase> {
  const all = readJson<Record<string, PillowCase>>(path.join(dir, 'manifest.json'));
  return Object.fromEntries(Object.entries(all).filter(([f]) => !f.startsWith('_')));
}

/**
 * One test per file: Pillow's RGB bytes, size and mode; or, where Pillow raises (or decodes the
 * file differently from a path and from bytes, or the file is marked refused_here), an ImageError
 * naming the file.
 */
export function testPillowCases(dir: string, cases: Record<string, PillowCase>): void {
  for (const [file, m] of Object.entries(cases)) {
    const p = path.join(dir, file);
    if (m.pillow_error || m.from_bytes || m.refused_here) {
      test(`${file}: ${m.note} -> ImageError naming the file`, async () => {
        await expect(decodeImage(p)).rejects.toThrow(ImageError);
        await expect(decodeImage(p)).rejects.toThrow(
          new RegExp(`^cannot decode image .*${file.replace('.', '\\.')}: `),
        );
      });
    } else {
      test(`${file}: ${m.note}`, async () => {
        const img = await decodeImage(p);
        expect([img.width, img.height]).toEqual(m.size_wh);
        expect(sha256(img.data)).toBe(m.rgb_u8_sha256);
        expect(img.sourceMode).toBe(m.mode);
      });
    }
  }
}

/** A small deterministic generator for mutation tests. */
export function lcg(seed: number): (n: number) => number {
  let state = seed >>> 0;
  return (n: number) => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return (state >>> 8) % n;
  };
}

/**
 * Mutates each seed file `rounds` times (a few random bytes, every 5th also cut short) and checks
 * that `decode` either returns a consistent image or throws ImageError naming 'fuzz'.
 */
export function fuzz(
  seeds: Uint8Array[],
  rounds: number,
  decode: (bytes: Uint8Array) => { width: number; height: number; data: Uint8Array },
): { decoded: number; refused: number } {
  const rand = lcg(7);
  let decoded = 0;
  let refused = 0;
  for (const original of seeds) {
    for (let k = 0; k < rounds; k++) {
      const bytes = new Uint8Array(original);
      for (let j = 0, n = 1 + rand(4); j < n; j++) bytes[rand(bytes.length)] = rand(256);
      const cut = k % 5 === 0 ? bytes.subarray(0, rand(bytes.length)) : bytes;
      try {
        const img = decode(cut);
        if (img.data.length !== img.width * img.height * 3) throw new Error('inconsistent image');
        decoded++;
      } catch (e) {
        if (!(e instanceof ImageError) || !/^cannot decode image fuzz: /.test(e.message)) throw e;
        refused++;
      }
    }
  }
  return { decoded, refused };
}
