/**
 * The largest batch that fits on the webgpu backend, and the per-image time on the way there: the
 * LLaVA path of `npm run bench`'s model (ViT-L/14-336 + mlp2x_gelu, generated weights; `--layers N`
 * for its first N layers) at batch 1, 2, 4, ... up to the adapter's limits, in one process.
 *
 *   node dist/tools/device/gpu_batches.js [--layers N] [--max-batch 256] [--reps 2]
 *       [--max-seconds 90] [--max-forward-seconds 20]
 *
 * The batch stops growing at the first of: a batch whose largest activation (the attention scores of
 * every head, or the MLP's hidden layer) would not fit one storage binding or buffer of the adapter;
 * an error (WebGPU reports out-of-memory and validation errors, src/webgpu.ts turns them into a
 * BackendError); a batch whose first image differs from batch 1's (relative max |diff| over 1e-3: a
 * silently wrong result); a forward over --max-forward-seconds; --max-seconds in all. Each batch size
 * runs once untimed (its shaders compile) and --reps times timed, each forward ending in a read of
 * the whole output, as bench does. Prints one JSON object on stdout, progress on stderr.
 */
import * as tf from '../../src/tf';
import { LlavaVision } from '../../src/api/llava_vision';
import { packageRoot } from '../../src/version';
import { webGpuAdapter, describeAdapter } from '../../src/webgpu';
import { fixtureImage, weightsFor } from '../bench';

interface Options {
  layers?: number;
  maxBatch: number;
  reps: number;
  maxSeconds: number;
  maxForwardSeconds: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { maxBatch: 256, reps: 2, maxSeconds: 90, maxForwardSeconds: 20 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
      const v = Number(argv[++i]);
      if (!(v > 0)) throw new Error(`${a} needs a positive number`);
      return v;
    };
    if (a === '--layers') o.layers = num();
    else if (a === '--max-batch') o.maxBatch = num();
    else if (a === '--reps') o.reps = num();
    else if (a === '--max-seconds') o.maxSeconds = num();
    else if (a === '--max-forward-seconds') o.maxForwardSeconds = num();
    else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

interface BatchRun {
  batch: number;
  firstS: number;
  runsS: number[];
  perImageS: number;
  imagesPerS: number;
  /** max |first image at this batch − batch 1| / max |batch 1|. */
  relDiffVsBatch1: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[(xs.length - 1) >> 1];

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  const elapsed = () => (performance.now() - t0) / 1000;
  const gen = weightsFor(packageRoot(), 'F32', o.layers);
  const model = await LlavaVision.load(gen.llavaDir, { visionTower: gen.towerDir, backend: 'webgpu', log: null });
  if (model.backend !== 'webgpu') throw new Error(`the model runs on ${model.backend}, not webgpu`);
  const adapter = webGpuAdapter();
  const limits = (tf.backend() as unknown as { device: { limits: Record<string, number> } }).device.limits;
  const c = model.tower.config;
  const tokens = model.tower.numPatches + 1;
  const projected = model.projector?.outFeatures ?? c.hiddenSize;
  // The largest single activation of one image, in float32 bytes.
  const perImageBytes =
    4 *
    Math.max(
      c.numAttentionHeads * tokens * tokens,
      tokens * c.intermediateSize,
      tokens * 3 * c.hiddenSize,
      model.tower.numPatches * projected,
    );
  const bindingLimit = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  const limitBatch = Math.max(1, Math.floor(bindingLimit / perImageBytes));
  const cap = Math.min(o.maxBatch, limitBatch);
  const sizes: number[] = [];
  for (let b = 1; b <= cap; b *= 2) sizes.push(b);
  if (sizes[sizes.length - 1] !== cap) sizes.push(cap);

  const image = fixtureImage(packageRoot());
  const s = c.imageSize;
  const forward = async (batch: number) => {
    const data = new Float32Array(batch * image.length);
    for (let i = 0; i < batch; i++) data.set(image, i * image.length);
    const px = tf.tensor4d(data, [batch, 3, s, s]);
    const t = performance.now();
    const out = model.encode(px, { outputs: ['projected'] });
    const values = (await out.projected!.data()) as Float32Array;
    const seconds = (performance.now() - t) / 1000;
    tf.dispose([px, out.projected!]);
    return { seconds, first: values.subarray(0, values.length / batch) };
  };

  const runs: BatchRun[] = [];
  let reference: Float32Array | null = null;
  let stoppedBecause = `reached the largest batch allowed (${cap}: --max-batch ${o.maxBatch}, adapter limits ${limitBatch})`;
  let error: string | null = null;
  for (const batch of sizes) {
    if (elapsed() > o.maxSeconds) {
      stoppedBecause = `--max-seconds ${o.maxSeconds} spent before batch ${batch}`;
      break;
    }
    process.stderr.write(`gpu_batches: batch ${batch} ...\n`);
    try {
      const first = await forward(batch);
      reference ??= first.first;
      let diff = 0;
      let scale = 0;
      for (let i = 0; i < reference.length; i++) {
        diff = Math.max(diff, Math.abs(first.first[i] - reference[i]));
        scale = Math.max(scale, Math.abs(reference[i]));
      }
      const timed: number[] = [];
      for (let r = 0; r < o.reps && first.seconds <= o.maxForwardSeconds; r++)
        timed.push((await forward(batch)).seconds);
      const runS = timed.length ? median(timed) : first.seconds;
      runs.push({
        batch,
        firstS: first.seconds,
        runsS: timed,
        perImageS: runS / batch,
        imagesPerS: batch / runS,
        relDiffVsBatch1: diff / (scale || 1),
      });
      if (diff / (scale || 1) > 1e-3) {
        stoppedBecause = `batch ${batch}: its first image differs from batch 1's (relative ${(diff / scale).toExponential(2)})`;
        break;
      }
      if (runS > o.maxForwardSeconds) {
        stoppedBecause = `batch ${batch}: a forward took ${runS.toFixed(1)} s (--max-forward-seconds ${o.maxForwardSeconds})`;
        break;
      }
    } catch (e) {
      error = (e as Error).message.split('\n')[0];
      stoppedBecause = `batch ${batch} failed: ${error}`;
      break;
    }
  }
  const good = runs.filter((r) => r.relDiffVsBatch1 <= 1e-3);
  const report = {
    adapter: adapter && describeAdapter(adapter),
    layers: c.numHiddenLayers,
    limits: {
      maxBufferSize: limits.maxBufferSize,
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
    },
    perImageLargestActivationBytes: perImageBytes,
    limitBatch,
    runs,
    largestBatch: good.length ? good[good.length - 1].batch : null,
    bestPerImageS: good.length ? Math.min(...good.map((r) => r.perImageS)) : null,
    stoppedBecause,
    error,
    seconds: elapsed(),
  };
  model.dispose();
  process.stdout.write(JSON.stringify(report, null, 1) + '\n');
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`gpu_batches: ${(e as Error).stack ?? String(e)}`);
    process.exit(1);
  },
);
