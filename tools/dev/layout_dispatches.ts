/**
 * One ViT-L encoder layer (T = 577, D = 1024, 16 heads) in each tower layout on the active backend:
 * GPU dispatches (webgpu), kernels and time per forward. On a software adapter (llvmpipe) the times
 * say nothing about a GPU; the dispatch counts are what carries over.
 *
 *   npm run build && LLAVA_VISION_BACKEND=webgpu node dist/tools/dev/layout_dispatches.js [reps]
 */
import * as tf from '../../src/tf';
import { initBackend } from '../../src/backend';
import { CLIP_VISION_DEFAULTS, CLIPVisionConfig } from '../../src/config/clip';
import { CLIPEncoderLayer } from '../../src/model/encoder_layer';
import { TOWER_LAYOUTS } from '../../src/model/layout';

const VIT_L: CLIPVisionConfig = {
  ...CLIP_VISION_DEFAULTS,
  hiddenSize: 1024,
  intermediateSize: 4096,
  numAttentionHeads: 16,
  numHiddenLayers: 1,
  imageSize: 336,
  patchSize: 14,
};

async function main(): Promise<void> {
  const reps = Number(process.argv[2] ?? 3);
  const backendName = await initBackend({});
  const backend = tf.backend() as unknown as {
    recordAndSubmit?: (program: { constructor: { name: string } }, ...rest: unknown[]) => unknown;
  };
  const dispatches = new Map<string, number>();
  if (backend.recordAndSubmit) {
    const original = backend.recordAndSubmit.bind(backend);
    backend.recordAndSubmit = (program, ...rest) => {
      dispatches.set(program.constructor.name, (dispatches.get(program.constructor.name) ?? 0) + 1);
      return original(program, ...rest);
    };
  }
  let kernels = 0;
  const engine = tf.engine() as unknown as { runKernel: (...a: unknown[]) => unknown };
  const runKernel = engine.runKernel.bind(engine);
  engine.runKernel = (...a: unknown[]) => (kernels++, runKernel(...a));
  const x = tf.randomNormal<tf.Rank.R3>([1, 577, 1024], 0, 1, 'float32', 1);
  for (const layout of TOWER_LAYOUTS) {
    const layer = new CLIPEncoderLayer(VIT_L, { layout, trainable: false });
    for (const w of layer.weights) w.write(tf.tidy(() => tf.randomNormal(w.shape as number[], 0, 0.02, 'float32', 2)));
    await layer.call(x).data(); // compiles every shader once
    const times: number[] = [];
    let perForward = '';
    for (let r = 0; r < reps; r++) {
      dispatches.clear();
      kernels = 0;
      const start = performance.now();
      const y = layer.call(x);
      await y.data();
      times.push(performance.now() - start);
      y.dispose();
      const total = [...dispatches.values()].reduce((a, b) => a + b, 0);
      perForward = `${kernels} kernels, ${total} dispatches (${[...dispatches.entries()]
        .sort((a, b) => b[1] - a[1])
        .map(([k, n]) => `${k} ${n}`)
        .join(', ')})`;
    }
    times.sort((a, b) => a - b);
    process.stdout.write(
      `${backendName}, layout ${layout}: ${perForward}; median ${times[Math.floor(times.length / 2)].toFixed(0)} ms per layer forward\n`,
    );
    for (const w of layer.weights) w.dispose();
  }
  x.dispose();
}

void main();
