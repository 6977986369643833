/** The projector-training example runs end to end on the tiny fixture, its loss falls, its file loads. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '../src/tf';
import { main } from '../examples/train_projector';
import { SafetensorsFile } from '../src/io/safetensors';

test('examples/train_projector: encodes once, trains on the cache, loss decreases, saves LLaVA names', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'train-example-'));
  const lines: string[] = [];
  try {
    const before = tf.memory().numTensors;
    const result = await main(['--cache', path.join(dir, 'cache.safetensors'), '--out', path.join(dir, 'mm_projector.safetensors'), '--steps', '60'], (l) => lines.push(l));
    const out = lines.join('\n');
    expect(out).toMatch(/TOY EXAMPLE/);
    expect(out).toMatch(/NOT LLaVA's pretraining objective/);
    expect(result.images.length).toBeGreaterThanOrEqual(5);
    expect(result.finalLoss).toBeLessThan(0.5 * result.firstLoss);
    // Decreasing at every printed point.
    result.losses.slice(1).forEach(([, loss], i) => expect(loss).toBeLessThan(result.losses[i][1]));

    expect(fs.existsSync(result.cacheFile)).toBe(true);
    const cache = SafetensorsFile.open(result.cacheFile);
    expect(cache.keys()).toContain('images.0.features');
    expect(cache.info('images.0.features').shape).toEqual([1, 16, 64]);
    cache.close();

    const st = SafetensorsFile.open(result.projectorFile);
    expect(st.keys()).toEqual(['model.mm_projector.0.bias', 'model.mm_projector.0.weight', 'model.mm_projector.2.bias', 'model.mm_projector.2.weight']);
    expect(st.info('model.mm_projector.0.weight').shape).toEqual([32, 64]);
    st.close();
    expect(tf.memory().numTensors).toBe(before);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
