/** The projector-training example runs end to end on the tiny fixture, its loss falls, its file loads. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '../src/tf';
import { main } from '../examples/train_projector';
import { SafetensorsFile } from '../src/io/safetensors';
import { openEncodedDataset } from '../src/api/dataset_reader';

test('examples/train_projector: encodes once into a dataset folder, trains on streamed batches, loss decreases, saves LLaVA names', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'train-example-'));
  const lines: string[] = [];
  try {
    const before = tf.memory().numTensors;
    const result = await main(['--cache', path.join(dir, 'cache'), '--out', path.join(dir, 'mm_projector.safetensors'), '--steps', '60'], (l) => lines.push(l));
    const out = lines.join('\n');
    expect(out).toMatch(/TOY EXAMPLE/);
    expect(out).toMatch(/NOT LLaVA's pretraining objective/);
    expect(result.images.length).toBeGreaterThanOrEqual(5);
    expect(result.finalLoss).toBeLessThan(0.5 * result.firstLoss);
    // Decreasing at every printed point.
    result.losses.slice(1).forEach(([, loss], i) => expect(loss).toBeLessThan(result.losses[i][1]));

    const cache = openEncodedDataset(result.cacheDir);
    expect(cache.encodedCount).toBe(result.images.length);
    expect(cache.read(0).tensors.features.shape).toEqual([1, 16, 64]);
    expect(fs.readdirSync(result.cacheDir).filter((f) => f.startsWith('shard-')).length).toBe(Math.ceil(result.images.length / 4));
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
