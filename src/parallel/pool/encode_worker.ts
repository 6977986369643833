/**
 * Entry of an encode worker thread (see worker_pool.ts): loads its own copy of the model on its own
 * tfjs engine and backend, then encodes the units it is sent, replying with the encoded tensors (their
 * buffers transferred, not copied).
 */
import { parentPort, workerData } from 'worker_threads';
import { TensorToWrite } from '../../io/safetensors';
import { EncodeUnit, encodeUnits } from '../../api/encode_job';
import { LlavaVision } from '../../api/llava_vision';
import { toThreadError } from '../worker_thread';
import type { WorkerJob, WorkerModelSpec, WorkerReply } from './worker_pool';

type Job = WorkerJob<EncodeUnit, Parameters<typeof encodeUnits>[2]>;
const port = parentPort!;
const reply = (m: WorkerReply, transfer?: ArrayBuffer[]) => port.postMessage(m, transfer);

async function main(): Promise<void> {
  const spec = workerData as WorkerModelSpec;
  let model: LlavaVision;
  try {
    model = await LlavaVision.load(spec.modelDir, { ...spec.options, log: null });
  } catch (e) {
    reply({ type: 'error', ...toThreadError(e) });
    return;
  }
  port.on('message', (job: Job) => {
    if (job.type === 'close') {
      model.dispose();
      port.close();
      return;
    }
    try {
      const tensors = encodeUnits(model, job.units, job.options);
      const buffers = new Set<ArrayBuffer>();
      for (const t of Object.values(tensors) as TensorToWrite[]) {
        const buf = (t.data as ArrayBufferView).buffer;
        if (buf instanceof ArrayBuffer) buffers.add(buf);
      }
      reply({ type: 'done', id: job.id, tensors }, [...buffers]);
    } catch (e) {
      reply({ type: 'error', id: job.id, ...toThreadError(e) });
    }
  });
  reply({ type: 'ready' });
}

void main();
