import * as fs from 'fs';
import * as path from 'path';
import * as tf from '../../src/tf';
import { SafetensorsFile } from '../../src/io/safetensors';
import { DEFAULT_PARITY_K, checkParity } from '../../src/parity';
import { GEMM_ENV_VAR, activeGemm } from '../../src/model/kernels/gemm';
import { CaseJson, readJson } from './json';

export { maxAbsDiff } from '../../src/parity';

export const FIXTURES = path.join(__dirname, '..', 'fixtures');
export const CASES = path.join(FIXTURES, 'cases');

/** The parity rule of the golden README: max|ours − truth| ≤ K·torch_fp32_max_abs_err + f32_storage_max_abs_err. */
export const PARITY_K = DEFAULT_PARITY_K;

export type { ExpectedMeta } from './json';

export interface GoldenCase {
  name: string;
  dir: string;
  json: CaseJson;
  expected: SafetensorsFile;
}

/** A golden case; its expected tensors from expected.safetensors, or the trimmed expected.subset.safetensors. */
export function loadCase(name: string, expectedFile?: string): GoldenCase {
  const dir = path.join(CASES, name);
  expectedFile ??= fs.existsSync(path.join(dir, 'expected.safetensors'))
    ? 'expected.safetensors'
    : 'expected.subset.safetensors';
  const json = readJson<CaseJson>(path.join(dir, 'case.json'));
  return { name, dir, json, expected: SafetensorsFile.open(path.join(dir, expectedFile)) };
}

/**
 * A golden case's pixel_values of image `id` as a batch, ready to feed the tower: LLaVA's and HF's
 * [3,H,W] become [1,3,H,W]; anyres's [1 + tiles,3,H,W] stay as they are.
 */
export function goldenPixelValues(gc: GoldenCase, id: string): { data: Float32Array; shape: Shape4 } {
  const key = `${id}.pixel_values`;
  const meta = gc.json.expected[key];
  if (!meta) throw new Error(`${gc.name}: no expected tensor "${key}"`);
  const shape = (meta.shape.length === 3 ? [1, ...meta.shape] : meta.shape) as Shape4;
  return { data: gc.expected.readFloat32(key), shape };
}

/** `goldenPixelValues` as a tensor (the caller disposes it). */
export function goldenPixelTensor(gc: GoldenCase, id: string): tf.Tensor4D {
  const { data, shape } = goldenPixelValues(gc, id);
  return tf.tensor4d(data, shape);
}

type Shape4 = [number, number, number, number];

/** Per-case worst ratios, written for the README's parity table. */
const report = new Map<
  string,
  { worstRatio: number; tensor: string; tensors: number; ratioSum?: number; exactPixelValues?: number }
>();

/** Records that `count` pixel_values tensors of a case were asserted bit-identical. */
export function recordExactPixels(caseName: string, count: number): void {
  const entry = report.get(caseName) ?? { worstRatio: 0, tensor: '', tensors: 0 };
  entry.exactPixelValues = (entry.exactPixelValues ?? 0) + count;
  report.set(caseName, entry);
}

/**
 * Asserts the parity rule for one tensor and records err / torch_fp32_max_abs_err.
 * Returns that ratio.
 */
export function expectParity(gc: GoldenCase, key: string, ours: ArrayLike<number>, shape?: number[]): number {
  const meta = gc.json.expected[key];
  if (!meta) throw new Error(`${gc.name}: no expected tensor "${key}"`);
  if (shape) expect(shape).toEqual(meta.shape);
  const { maxAbsErr, bound, ratio, ok } = checkParity(ours, gc.expected.readFloat32(key), meta, PARITY_K);
  if (!ok) {
    throw new Error(
      `${gc.name} ${key}: max|ours - truth| = ${maxAbsErr.toExponential(3)} exceeds ${PARITY_K}×torch_fp32_max_abs_err + storage = ${bound.toExponential(3)}`,
    );
  }
  const entry = report.get(gc.name) ?? { worstRatio: -1, tensor: '', tensors: 0 };
  if (ratio > entry.worstRatio) Object.assign(entry, { worstRatio: ratio, tensor: key });
  entry.tensors++;
  entry.ratioSum = (entry.ratioSum ?? 0) + ratio;
  report.set(gc.name, entry);
  return ratio;
}

/** The parity rule for a tower's whole output of one image: all L+1 hidden states and the pooled output. */
export async function expectTowerParity(
  gc: GoldenCase,
  id: string,
  out: { hiddenStates?: tf.Tensor[]; poolerOutput?: tf.Tensor },
): Promise<void> {
  expect(out.hiddenStates).toHaveLength(gc.json.vision_config!.num_hidden_layers + 1);
  for (const [k, h] of out.hiddenStates!.entries())
    expectParity(gc, `${id}.hidden_states.${String(k).padStart(2, '0')}`, await h.data(), h.shape.slice(1));
  expectParity(gc, `${id}.pooler_output`, await out.poolerOutput!.data(), out.poolerOutput!.shape.slice(1));
}

/** Every golden image of the case through `model.encode`: all hidden states and the pooled output within the rule. */
export async function expectTowerParityOnImages(
  gc: GoldenCase,
  model: { encode(x: tf.Tensor4D, options: object): { hiddenStates?: tf.Tensor[]; poolerOutput?: tf.Tensor } },
): Promise<void> {
  for (const img of gc.json.images) {
    const x = goldenPixelTensor(gc, img.id);
    const out = model.encode(x, {
      outputs: ['hidden_states', 'pooler_output'],
      interpolatePosEncoding: gc.json.run.interpolate_pos_encoding,
    });
    try {
      await expectTowerParity(gc, img.id, out);
    } finally {
      tf.dispose([x, ...(out.hiddenStates ?? []), ...(out.poolerOutput ? [out.poolerOutput] : [])]);
    }
  }
}

/**
 * Writes the collected ratios to test/.parity/<suite>.<backend>.json (read by tools/parity_table.ts);
 * on wasm with the GEMM forced by LLAVA_VISION_GEMM, <backend> names it too (e.g. `wasm-xnnpack`).
 */
export function writeParityReport(suite: string): void {
  if (report.size === 0) return;
  const dir = path.join(__dirname, '..', '.parity');
  fs.mkdirSync(dir, { recursive: true });
  const rows = Object.fromEntries([...report.entries()].sort());
  const gemm = activeGemm();
  const forced = gemm !== null && (process.env[GEMM_ENV_VAR] ?? 'auto') !== 'auto';
  const backend = `${tf.engine().backendName ?? 'none'}${forced ? `-${gemm}` : ''}`;
  fs.writeFileSync(path.join(dir, `${suite}.${backend}.json`), JSON.stringify(rows, null, 1) + '\n');
}
