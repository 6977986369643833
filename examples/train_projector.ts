/**
 * Example: train a LLaVA `mlp2x_gelu` projector on a FROZEN CLIP tower, from a feature cache.
 *
 *   1. encode a folder of images once (tower forward only) into a feature cache: a dataset folder of
 *      shards of `images.<i>.features`, what `llava-vision encode --save features --out-dir` writes,
 *      streamed (memory does not grow with the number of images; a rerun resumes). An image that
 *      cannot be read is recorded in the cache's manifest and skipped; training uses the others;
 *   2. train a fresh projector on streamed, shuffled mini-batches of the cache with a torch-exact
 *      Adam — the tower is disposed before training and never runs again;
 *   3. save the projector under LLaVA's names (`model.mm_projector.{0,2}.{weight,bias}`).
 *
 * THE TARGET IS A TOY: a fixed random "teacher" (tanh of a random linear map of the features).
 * This is NOT LLaVA's stage-1 objective (next-token loss through the LLM on image-caption pairs);
 * it only shows the mechanics (cache -> steps -> checkpoint). Runs in seconds on the tiny fixture.
 * Without --cache and --out, both go to a temp folder that is removed at the end.
 *
 * It uses the package as an app would (`llava-vision-tfjs`, nothing from its sources):
 *
 *   npm run build && node dist/examples/train_projector.js \
 *     [--model DIR] [--images DIR] [--cache DIR] [--out FILE] [--steps N] [--batch-size N] [--lr X] [--hidden N]
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseArgs } from 'util';
import {
  EncodedDataset,
  LlavaVision,
  Projector,
  demoModelDir,
  openEncodedDataset,
  tf,
  train,
  writeEncodedDataset,
} from 'llava-vision-tfjs';

export interface ExampleResult {
  /** [step, loss on the whole cache before that step]; the last entry is the loss after the final step. */
  losses: [number, number][];
  firstLoss: number;
  finalLoss: number;
  /** Where the cache and the projector were written (removed at the end unless --cache / --out named them). */
  cacheDir: string;
  projectorFile: string;
  /** The image files found (trained on, or skipped). */
  images: string[];
  /** The images that could not be read or encoded: recorded in the cache, left out of training. */
  skipped: { source: string; error: string }[];
}

const FIXTURE_MODEL = path.join('test', 'fixtures', 'cases', 'tiny_projector_train_step', 'model');
const FIXTURE_IMAGES = path.join('test', 'fixtures', 'images');

/**
 * The tiny test fixture in a repository checkout (from src or dist alike); in the installed package,
 * which has no fixtures, the bundled demo checkpoint and its two images.
 */
function defaultInputs(): { modelDir: string; imageDir: string } {
  for (let dir = __dirname; path.dirname(dir) !== dir; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, FIXTURE_MODEL)))
      return { modelDir: path.join(dir, FIXTURE_MODEL), imageDir: path.join(dir, FIXTURE_IMAGES) };
  }
  return { modelDir: demoModelDir(), imageDir: path.join(demoModelDir(), 'images') };
}

export const USAGE = `usage: node dist/examples/train_projector.js [--model DIR] [--images DIR] [--cache DIR] [--out FILE] [--steps N] [--batch-size N] [--lr X] [--hidden N] [--quiet]`;

export async function main(
  argv: string[],
  log: (line: string) => void = (l) => console.log(l),
): Promise<ExampleResult> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      model: { type: 'string' },
      images: { type: 'string' },
      cache: { type: 'string' },
      out: { type: 'string' },
      steps: { type: 'string' },
      'batch-size': { type: 'string' },
      lr: { type: 'string' },
      hidden: { type: 'string' },
      quiet: { type: 'boolean' },
    },
  });
  const say = values.quiet ? () => undefined : log;
  const defaults = defaultInputs();
  const modelDir = values.model ?? defaults.modelDir;
  const imageDir = values.images ?? defaults.imageDir;
  const steps = Number(values.steps ?? 100);
  const lr = Number(values.lr ?? 1e-2);
  const hidden = Number(values.hidden ?? 32);
  const batchSize = Number(values['batch-size'] ?? 4);
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps must be a positive integer, got ${values.steps}`);
  if (!(lr > 0)) throw new Error(`--lr must be positive, got ${values.lr}`);
  if (!Number.isInteger(hidden) || hidden < 1)
    throw new Error(`--hidden must be a positive integer, got ${values.hidden}`);
  if (!Number.isInteger(batchSize) || batchSize < 1)
    throw new Error(`--batch-size must be a positive integer, got ${values['batch-size']}`);
  // What --cache and --out do not name goes to a temp folder, removed however the run ends.
  const workDir = values.cache && values.out ? null : fs.mkdtempSync(path.join(os.tmpdir(), 'llava-train-example-'));
  try {
    const cacheDir = values.cache ?? path.join(workDir!, 'features');
    const projectorFile = values.out ?? path.join(workDir!, 'mm_projector.safetensors');
    return await run({
      say,
      quiet: values.quiet ?? false,
      modelDir,
      imageDir,
      cacheDir,
      projectorFile,
      steps,
      lr,
      hidden,
      batchSize,
      temporary: workDir,
    });
  } finally {
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  }
}

interface RunOptions {
  say: (line: string) => void;
  quiet: boolean;
  modelDir: string;
  imageDir: string;
  cacheDir: string;
  projectorFile: string;
  steps: number;
  lr: number;
  hidden: number;
  batchSize: number;
  /** The temp folder removed after the run, if any. */
  temporary: string | null;
}

async function run(o: RunOptions): Promise<ExampleResult> {
  const { say, cacheDir, projectorFile, steps, lr, hidden, batchSize } = o;
  say('======================================================================');
  say(' TOY EXAMPLE: the regression target is a fixed random "teacher" map of');
  say(" the features, NOT LLaVA's pretraining objective (next-token loss via");
  say(' the LLM). It demonstrates the mechanics only: cache -> train -> save.');
  say('======================================================================');

  // 1. Encode once: tower forward only, features streamed into the cache folder's shards. An image that
  //    fails is recorded in the cache's manifest, not fatal: a dataset of real images has a few.
  const images = fs
    .readdirSync(o.imageDir)
    .filter((f) => /\.(png|jpe?g)$/i.test(f))
    .sort();
  if (images.length === 0) throw new Error(`${o.imageDir}: no .png/.jpg images`);
  {
    const model = await LlavaVision.load(o.modelDir, { log: o.quiet ? null : say });
    try {
      const t0 = Date.now();
      const files = images.map((name) => path.join(o.imageDir, name));
      const summary = await writeEncodedDataset(model, files, cacheDir, { outputs: ['features'], shardSize: 4 });
      say(`encoded ${summary.encoded} images once -> ${cacheDir} (${Date.now() - t0} ms)`);
    } finally {
      model.dispose(); // the tower is not needed any more
    }
  }

  // 2. Train from the cache only: shuffled mini-batches streamed from its shards, a new shuffle per epoch.
  const cache = openEncodedDataset(cacheDir);
  const skipped = cache.failures.map((f) => ({ source: f.source, error: f.error }));
  for (const f of skipped) say(`skipped ${f.source}: ${f.error}`);
  const first = [...Array(images.length).keys()].find((i) => cache.has(i));
  if (first === undefined) {
    cache.close();
    throw new Error(`none of the ${images.length} images in ${o.imageDir} could be encoded`);
  }
  const inFeatures = cache.shapes(first).features[2];
  const teacher = toyTeacher(inFeatures, hidden, 1234);
  const projector = new Projector({ type: 'mlp2x_gelu', inFeatures, outFeatures: hidden });
  train.initProjector(projector, 42);
  const optimizer = new train.TorchAdam({ learningRate: lr });
  say(
    `training a fresh mlp2x_gelu projector ${inFeatures} -> ${hidden} -> ${hidden} on ${cache.encodedCount} images: TorchAdam(lr=${lr}), ${steps} steps on shuffled mini-batches of ${batchSize}, MSE to the toy target`,
  );
  const losses: [number, number][] = [];
  const every = Math.max(1, Math.round(steps / 10));
  const t1 = Date.now();
  for (let step = 0, epoch = 0; step < steps; epoch++) {
    for await (const batch of cache.batches({ name: 'features', batchSize, seed: epoch })) {
      if (step < steps) {
        if (step % every === 0) {
          losses.push([step, await cacheLoss(projector, cache, teacher)]);
          say(`  step ${String(step).padStart(4)}  loss ${losses[losses.length - 1][1].toFixed(6)}`);
        }
        const target = teacher(batch.tensor);
        train.trainStep(projector, batch.tensor, target, optimizer);
        target.dispose();
        step++;
      }
      batch.tensor.dispose();
    }
  }
  const finalLoss = await cacheLoss(projector, cache, teacher);
  losses.push([steps, finalLoss]);
  say(`  step ${String(steps).padStart(4)}  loss ${finalLoss.toFixed(6)}  (${Date.now() - t1} ms)`);

  // 3. Save in LLaVA names, then prove the file reloads to the same loss.
  const keys = train.saveProjector(projector, projectorFile, {
    names: 'llava',
    metadata: { note: 'toy regression example, not a LLaVA pretraining result' },
  });
  const reloaded = new Projector({ type: 'mlp2x_gelu', inFeatures, outFeatures: hidden });
  train.loadProjectorWeights(reloaded, projectorFile);
  const reloadedLoss = await cacheLoss(reloaded, cache, teacher);
  if (reloadedLoss !== finalLoss)
    throw new Error(`reloaded projector gives loss ${reloadedLoss}, expected ${finalLoss}`);
  say(
    `saved ${projectorFile}: ${keys.join(', ')}${o.temporary ? ` (in a temp folder, removed now: --out FILE keeps it, --cache DIR the features)` : ''}`,
  );
  say('PyTorch LLaVA: w = safetensors.torch.load_file(FILE); model.get_model().mm_projector.load_state_dict(');
  say("  {k.split('mm_projector.')[1]: v for k, v in w.items()})   # (only meaningful for a real, non-toy target)");
  say(`loss ${losses[0][1].toFixed(6)} -> ${finalLoss.toFixed(6)} on the TOY target.`);

  cache.close();
  teacher.dispose();
  optimizer.dispose();
  for (const p of [projector, reloaded]) p.weights.forEach((w) => w.dispose());
  return { losses, firstLoss: losses[0][1], finalLoss, cacheDir, projectorFile, images, skipped };
}

/** The toy target map: features -> tanh(features · W), W uniform ±sqrt(3/D) from a fixed seed. */
function toyTeacher(
  d: number,
  width: number,
  seed: number,
): ((features: tf.Tensor) => tf.Tensor) & { dispose(): void } {
  const rand = train.seededRandom(seed);
  const bound = Math.sqrt(3 / d);
  const w = tf.tensor2d(
    Float32Array.from({ length: d * width }, () => (2 * rand() - 1) * bound),
    [d, width],
  );
  const teacher = (features: tf.Tensor) =>
    tf.tidy(() =>
      tf.reshape(tf.tanh(tf.matMul(tf.reshape(features, [-1, d]), w)), [...features.shape.slice(0, -1), width]),
    );
  return Object.assign(teacher, { dispose: () => w.dispose() });
}

/** MSE over the whole cache, streamed in index order (a sum over batches, so no batch size enters it). */
async function cacheLoss(
  projector: Projector,
  cache: EncodedDataset,
  teacher: (f: tf.Tensor) => tf.Tensor,
): Promise<number> {
  let sum = 0;
  let count = 0;
  for await (const batch of cache.batches({ name: 'features', batchSize: 64, shuffle: false })) {
    const target = teacher(batch.tensor);
    sum += tf.tidy(() => train.mseLoss(projector.call(batch.tensor), target, 'sum').dataSync()[0]);
    count += target.size;
    tf.dispose([target, batch.tensor]);
  }
  return sum / count;
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) console.log(USAGE);
  else
    main(argv).catch((err: Error) => {
      console.error(`train_projector: ${err.message}`);
      process.exitCode = 1;
    });
}
