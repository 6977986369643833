/**
 * Entry of an encode worker thread (see worker_pool.ts): loads its own copy of the model on its own
 * tfjs engine and backend, then encodes the units it is sent, replying with the encoded tensors (their
 * buffers transferred, not copied).
 */
import { parentPort, workerData } from 'worker_threads';
import { TensorToWrite } from '../../io/safetensors';
import { EncodeUnit, encodeUnits } from '../../api/encode_job';
import { LlavaVision } from '../../api/llava_vision';
import type { WorkerJobOptions, WorkerModelSpec } from './worker_pool';

type Job = { type: 'encode'; id: number; units: EncodeUnit[]; options: WorkerJobOptions } | { type: 'close' };

async function main(): Promise<void> {
  const port = parentPort!;
  const spec = workerData as WorkerModelSpec;
  let model: LlavaVision;
  try {
    model = await LlavaVision.load(spec.modelDir, { ...spec.options, log: null });
  } catch (e) {
    port.postMessage({ type: 'error', message: (e as Error).message });
    return;
  }
  port.on('message', (job: Job) => {
    if (job.type === 'close') {
      model.dispose();
      port.close();
      return;
    }
    try {
      const tensors = encodeUnits(model, job.units, job.options as Parameters<typeof encodeUnits>[2]);
      const buffers = new Set<ArrayBuffer>();
      for (const t of Object.values(tensors) as TensorToWrite[]) {
        const buf = (t.data as ArrayBufferView).buffer;
        if (buf instanceof ArrayBuffer) buffers.add(buf);
      }
      port.postMessage({ type: 'done', id: job.id, tensors }, [...buffers]);
    } catch (e) {
      port.postMessage({ type: 'error', id: job.id, message: (e as Error).message });
    }
  });
  port.postMessage({ type: 'ready' });
}

void main();
