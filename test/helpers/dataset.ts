/** Helpers for the dataset tests: small distinct images, and a dataset folder's shards read back raw. */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { SafetensorsFile } from '../../src/io/safetensors';

/** `count` small PNGs of different sizes and content, named img-000.png, ...; returns their paths. */
export async function makeImages(dir: string, count: number, prefix = 'img'): Promise<string[]> {
  fs.mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  for (let i = 0; i < count; i++) {
    const [w, h] = [24 + ((i * 7) % 23), 20 + ((i * 5) % 17)];
    const pixels = Buffer.alloc(w * h * 3);
    for (let j = 0; j < pixels.length; j++) pixels[j] = (j * (31 + i) + i * 57) & 255;
    const file = path.join(dir, `${prefix}-${String(i).padStart(3, '0')}.png`);
    await sharp(pixels, { raw: { width: w, height: h, channels: 3 } })
      .png()
      .toFile(file);
    files.push(file);
  }
  return files;
}

/** Every `images.<i>.<name>` tensor of every shard of a (part) folder: key -> { shard, bytes }. Duplicates throw. */
export function shardTensors(
  dir: string,
): Map<string, { shard: string; dtype: string; shape: number[]; bytes: Buffer }> {
  const out = new Map<string, { shard: string; dtype: string; shape: number[]; bytes: Buffer }>();
  for (const shard of fs
    .readdirSync(dir)
    .filter((f) => /^shard-\d+\.safetensors$/.test(f))
    .sort()) {
    const st = SafetensorsFile.open(path.join(dir, shard));
    for (const key of st.keys()) {
      if (out.has(key)) throw new Error(`${key} is in ${out.get(key)!.shard} and ${shard}`);
      const { dtype, shape } = st.info(key);
      out.set(key, { shard, dtype, shape, bytes: Buffer.from(st.readBytes(key)) });
    }
    st.close();
  }
  return out;
}

/**
 * The files of a folder, each as the sha256 of its bytes (temp files included: a test sees one left
 * behind). Hashes, because jest compares Buffers element by element: megabytes take it half a minute.
 */
export function folderHashes(dir: string): Record<string, string> {
  return Object.fromEntries(
    fs
      .readdirSync(dir)
      .sort()
      .filter((f) => fs.statSync(path.join(dir, f)).isFile())
      .map((f) => [
        f,
        createHash('sha256')
          .update(fs.readFileSync(path.join(dir, f)))
          .digest('hex'),
      ]),
  );
}
