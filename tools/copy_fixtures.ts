/**
 * Dev tool: refreshes the trimmed expected files of the large golden cases in test/fixtures from a
 * checkout of the shared golden fixtures (default ../shared/golden). Tests never read that folder.
 *
 *   node dist/tools/copy_fixtures.js [--golden DIR]
 *
 * Values are never edited; large tensors are subset (documented per case in subset.json):
 *  - pixel_values of the s336 cases (exactly reproducible from their image files) are replaced by the
 *    sha256 of their float32 bytes, which the image-path tests compare bit-for-bit;
 *  - `projected` [576, 4096] of the full-size case keeps every 9th row (64 rows).
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { SafetensorsFile, TensorToWrite, writeSafetensors } from '../src/io/safetensors';
import { packageRoot } from '../src/version';

const TRIMMED_CASES = [
  's336_llava15_pad_mlp2x',
  's336_llava16_anyres_spatial_unpad',
  's336_llava_square_mlp2x',
  'vitl14_336_generated_sel-2_patch',
];
const ROW_STEP = 9;

export interface SubsetRule {
  /** The tensor is stored with only rows start, start+step, ... (first axis). */
  rows?: { start: number; step: number; count: number; originalShape: number[] };
  /** The tensor is not stored; its float32 little-endian bytes hash to this. */
  sha256?: string;
  shape?: number[];
}

export function trimCase(goldenCase: string, outCase: string): Record<string, SubsetRule> {
  const src = SafetensorsFile.open(path.join(goldenCase, 'expected.safetensors'));
  const tensors: Record<string, TensorToWrite> = {};
  const rules: Record<string, SubsetRule> = {};
  for (const key of src.keys()) {
    const raw = src.read(key);
    if (key.endsWith('.pixel_values') && !path.basename(goldenCase).startsWith('vitl14')) {
      rules[key] = { sha256: createHash('sha256').update(raw.data).digest('hex'), shape: raw.shape };
      continue;
    }
    if (key.endsWith('.projected') && raw.shape.length === 2 && raw.shape[0] > 128) {
      const [rows, cols] = raw.shape;
      const count = Math.ceil(rows / ROW_STEP);
      const all = src.readFloat32(key);
      const data = new Float32Array(count * cols);
      for (let r = 0; r < count; r++) data.set(all.subarray(r * ROW_STEP * cols, (r * ROW_STEP + 1) * cols), r * cols);
      tensors[key] = { dtype: 'F32', shape: [count, cols], data };
      rules[key] = { rows: { start: 0, step: ROW_STEP, count, originalShape: raw.shape } };
      continue;
    }
    tensors[key] = { dtype: raw.dtype, shape: raw.shape, data: raw.data };
  }
  writeSafetensors(path.join(outCase, 'expected.subset.safetensors'), tensors, {
    ...src.metadata,
    subset_of: 'expected.safetensors',
  });
  fs.writeFileSync(
    path.join(outCase, 'subset.json'),
    JSON.stringify({ note: 'see tools/copy_fixtures.ts', rules }, null, 1) + '\n',
  );
  src.close();
  return rules;
}

if (require.main === module) {
  const i = process.argv.indexOf('--golden');
  const root = packageRoot();
  const golden = i > 0 ? process.argv[i + 1] : path.join(root, '..', 'shared', 'golden');
  for (const name of TRIMMED_CASES) {
    const rules = trimCase(path.join(golden, 'cases', name), path.join(root, 'test', 'fixtures', 'cases', name));
    process.stdout.write(`${name}: ${Object.keys(rules).length} tensors subset\n`);
  }
}
