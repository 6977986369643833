import * as fs from 'fs';
import * as path from 'path';
import { SafetensorsFile } from '../../src/io/safetensors';

export const FIXTURES = path.join(__dirname, '..', 'fixtures');
export const CASES = path.join(FIXTURES, 'cases');

/** The parity rule of the golden README: max|ours − truth| ≤ K·torch_fp32_max_abs_err + f32_storage_max_abs_err. */
export const PARITY_K = 4;

export interface ExpectedMeta {
  shape: number[];
  dtype: string;
  exact?: boolean;
  torch_fp32_max_abs_err?: number;
  f32_storage_max_abs_err?: number;
  ref_max_abs?: number;
}

export interface GoldenCase {
  name: string;
  dir: string;
  json: Record<string, any> & { expected: Record<string, ExpectedMeta> };
  expected: SafetensorsFile;
}

export function loadCase(name: string, expectedFile = 'expected.safetensors'): GoldenCase {
  const dir = path.join(CASES, name);
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'case.json'), 'utf8'));
  return { name, dir, json, expected: SafetensorsFile.open(path.join(dir, expectedFile)) };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = d; // NaN propagates as a failure
  }
  return m;
}

/** Per-case worst ratios, written for the README's parity table. */
const report = new Map<string, { worstRatio: number; tensor: string; tensors: number }>();

/**
 * Asserts the parity rule for one tensor and records err / torch_fp32_max_abs_err.
 * Returns that ratio.
 */
export function expectParity(gc: GoldenCase, key: string, ours: ArrayLike<number>, shape?: number[]): number {
  const meta = gc.json.expected[key];
  if (!meta) throw new Error(`${gc.name}: no expected tensor "${key}"`);
  if (shape) expect(shape).toEqual(meta.shape);
  const truth = gc.expected.readFloat32(key);
  const err = maxAbsDiff(ours, truth);
  const torchErr = meta.torch_fp32_max_abs_err ?? 0;
  const bound = PARITY_K * torchErr + (meta.f32_storage_max_abs_err ?? 0);
  if (!(err <= bound)) {
    throw new Error(`${gc.name} ${key}: max|ours - truth| = ${err.toExponential(3)} exceeds ${PARITY_K}×${torchErr.toExponential(3)} + storage = ${bound.toExponential(3)}`);
  }
  const ratio = torchErr > 0 ? err / torchErr : 0;
  const prev = report.get(gc.name);
  if (!prev || ratio > prev.worstRatio) report.set(gc.name, { worstRatio: ratio, tensor: key, tensors: (prev?.tensors ?? 0) + 1 });
  else prev.tensors++;
  return ratio;
}

/** Writes the collected ratios to test/.parity/<suite>.json (read by tools/parity_table.ts). */
export function writeParityReport(suite: string): void {
  const dir = path.join(__dirname, '..', '.parity');
  fs.mkdirSync(dir, { recursive: true });
  const rows = Object.fromEntries([...report.entries()].sort());
  fs.writeFileSync(path.join(dir, `${suite}.json`), JSON.stringify(rows, null, 1) + '\n');
}
