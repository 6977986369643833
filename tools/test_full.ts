/**
 * Full-size parity: ViT-L/14-336 + mlp2x_gelu 1024→4096→4096 with generator weights (written once to
 * weights/generated/, git-ignored) on the golden case `vitl14_336_generated_sel-2_patch`.
 *
 *   npm run test:full [-- --backend wasm|cpu|tensorflow] [--digests]
 *
 * Runs the LLaVA path (select layer −2, `patch`, projector; the last layer is skipped) and the full
 * forward (all hidden states, pooler), checks every expected tensor with the golden rule, prints
 * errors, timings and peak RSS, and exits non-zero on any failure.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '../src/tf';
import { LlavaVision } from '../src/api/llava_vision';
import { BackendChoice } from '../src/backend';
import { SafetensorsFile } from '../src/io/safetensors';
import { DEFAULT_PARITY_K, ParityMeta, checkParity } from '../src/parity';
import { writeFullSizeCase } from './make_checkpoint';
import { packageRoot } from '../src/version';

const CASE = 'vitl14_336_generated_sel-2_patch';
const ID = 'astronaut.png';

const rssMB = () => Math.round(process.memoryUsage().rss / 2 ** 20);
const peakRssMB = () => Math.round(process.resourceUsage().maxRSS / 1024);
const seconds = (t0: number) => ((performance.now() - t0) / 1000).toFixed(1);

async function main(): Promise<number> {
  const root = packageRoot();
  const backendArg = process.argv.indexOf('--backend');
  const backend = (backendArg > 0 ? process.argv[backendArg + 1] : undefined) as BackendChoice | undefined;
  const caseDir = path.join(root, 'test', 'fixtures', 'cases', CASE);
  const meta = (
    JSON.parse(fs.readFileSync(path.join(caseDir, 'case.json'), 'utf8')) as {
      expected: Record<string, ParityMeta & { shape: number[] }>;
    }
  ).expected;
  const subset = (
    JSON.parse(fs.readFileSync(path.join(caseDir, 'subset.json'), 'utf8')) as {
      rules: Record<string, { rows?: { start: number; step: number; count: number } }>;
    }
  ).rules;
  const expected = SafetensorsFile.open(path.join(caseDir, 'expected.subset.safetensors'));

  let t0 = performance.now();
  const gen = writeFullSizeCase(
    path.join(caseDir, 'model'),
    path.join(root, 'weights', 'generated', 'vitl14_336'),
    'F32',
  );
  console.log(`weights: ${gen.towerDir} + ${gen.llavaDir} (${seconds(t0)} s${gen.tower.cached ? ', cached' : ''})`);

  t0 = performance.now();
  const model = await LlavaVision.load(gen.llavaDir, { visionTower: gen.towerDir, backend });
  console.log(`load: ${seconds(t0)} s, RSS ${rssMB()} MB, backend ${model.backend}`);

  const pvShape = meta[`${ID}.pixel_values`].shape;
  const pixels = tf.tensor4d(expected.readFloat32(`${ID}.pixel_values`), [1, ...pvShape] as [
    number,
    number,
    number,
    number,
  ]);
  const rows: string[] = [];
  let failed = 0;
  const check = (key: string, ours: Float32Array) => {
    const rule = subset[key]?.rows;
    const picked = rule ? pickRows(ours, meta[key].shape, rule) : ours;
    const r = checkParity(picked, expected.readFloat32(key), meta[key]);
    if (!r.ok) failed++;
    rows.push(
      `${r.ok ? 'ok  ' : 'FAIL'} ${key.padEnd(36)} max|err| ${r.maxAbsErr.toExponential(2)}  bound ${r.bound.toExponential(2)}  ratio ${r.ratio.toFixed(2)}${rule ? `  (rows ${rule.start}::${rule.step})` : ''}`,
    );
  };

  t0 = performance.now();
  const llava = model.encode(pixels, { outputs: ['features', 'projected'] });
  const llavaSeconds = seconds(t0);
  check(`${ID}.projected`, tf.reshape(llava.projected!, [-1]).dataSync() as Float32Array);

  t0 = performance.now();
  const full = model.encode(pixels, { outputs: ['hidden_states', 'pooler_output', 'features'] });
  const fullSeconds = seconds(t0);
  const [, t, d] = full.hiddenStates![23].shape;
  check(`${ID}.hidden_states.23`, tf.reshape(full.hiddenStates![23], [t, d]).dataSync() as Float32Array);
  check(
    `${ID}.hidden_states.24.cls`,
    tf.reshape(tf.slice(full.hiddenStates![24], [0, 0, 0], [1, 1, d]), [d]).dataSync() as Float32Array,
  );
  check(`${ID}.pooler_output`, tf.reshape(full.poolerOutput!, [d]).dataSync() as Float32Array);
  const identical =
    Buffer.compare(Buffer.from(llava.features!.dataSync().buffer), Buffer.from(full.features!.dataSync().buffer)) === 0;
  if (!identical) failed++;

  console.log(rows.join('\n'));
  // Each output's bytes, hashed: a refactor that must not change a bit is checked by comparing these lines.
  const outputs: [string, tf.Tensor][] = [
    ['projected', llava.projected!],
    ['features', full.features!],
    ...full.hiddenStates!.map((h, i): [string, tf.Tensor] => [`hidden_states.${i}`, h]),
    ['pooler_output', full.poolerOutput!],
  ];
  const all = createHash('sha256');
  for (const [name, tensor] of outputs) {
    const bytes = Buffer.from((tensor.dataSync() as Float32Array).buffer);
    all.update(bytes);
    if (process.argv.includes('--digests'))
      console.log(`sha256 ${name}: ${createHash('sha256').update(bytes).digest('hex')}`);
  }
  console.log(`sha256 of every output (threads ${model.threads}, gemm ${model.gemm}): ${all.digest('hex')}`);
  console.log(`skipping layer 24 for the LLaVA path gives bit-identical features: ${identical ? 'yes' : 'NO'}`);
  console.log(
    `LLaVA path (23 layers + projector): ${llavaSeconds} s; full forward (24 layers, all hidden states): ${fullSeconds} s`,
  );
  console.log(
    `peak RSS ${peakRssMB()} MB; parity rule: max|err| <= ${DEFAULT_PARITY_K} x torch_fp32_max_abs_err + f32_storage_max_abs_err`,
  );
  tf.dispose([pixels, llava.features!, llava.projected!, ...full.hiddenStates!, full.poolerOutput!, full.features!]);
  model.dispose();
  expected.close();
  // The plain closing line CI reads: five checks (4 tensors + the skipped-layer identity).
  console.log(`full-size: ${5 - failed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

function pickRows(
  data: Float32Array,
  shape: number[],
  rule: { start: number; step: number; count: number },
): Float32Array {
  const cols = shape.slice(1).reduce((a, b) => a * b, 1);
  const out = new Float32Array(rule.count * cols);
  for (let r = 0; r < rule.count; r++) {
    const src = (rule.start + r * rule.step) * cols;
    out.set(data.subarray(src, src + cols), r * cols);
  }
  return out;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
