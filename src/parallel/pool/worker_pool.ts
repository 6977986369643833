/**
 * Opt-in multi-image parallelism: `workers: N` runs N model instances, the caller's (on the calling
 * thread) plus N − 1 `worker_threads`, each with its own tfjs engine, backend instance and copy of the
 * weights (so N times the model's memory). Units (an image's tiles) are handed out one at a time to
 * whichever instance is free; every unit is encoded alone by the same code on the same backend, so the
 * output is identical to a single-instance run, whatever N. See docs/performance.md ("Worker threads") for the scaling.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { ConfigError } from '../../errors';
import type { EncodedTensor, EncodeJobOptions, EncodeUnit } from '../../api/encode_job';
import type { LlavaVision, LoadOptions } from '../../api/llava_vision';

/** What a worker needs to load the same model: plain data only (no callbacks cross threads). */
export interface WorkerModelSpec {
  modelDir: string;
  options: Omit<LoadOptions, 'log' | 'download'>;
}

type Encoded = Record<string, EncodedTensor>;
type Reply =
  { type: 'ready' } | { type: 'done'; id: number; tensors: Encoded } | { type: 'error'; id?: number; message: string };

/** One worker thread holding a model; `encode` may be called again before the previous call resolved. */
class ModelWorker {
  private readonly pending = new Map<number, { resolve: (t: Encoded) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private failure: Error | null = null;

  private constructor(private readonly worker: Worker) {
    worker.on('message', (m: Reply) => {
      if (m.type === 'done') this.settle(m.id, null, m.tensors);
      else if (m.type === 'error' && m.id !== undefined) this.settle(m.id, new ConfigError(m.message));
    });
    worker.on('error', (e) => this.fail(e));
    worker.on('exit', (code) => this.fail(new ConfigError(`encode worker exited (code ${code})`)));
  }

  static start(spec: WorkerModelSpec): Promise<ModelWorker> {
    const worker = new Worker(workerScript(), { workerData: spec });
    return new Promise((resolve, reject) => {
      const onMessage = (m: Reply) => {
        if (m.type === 'ready') {
          worker.off('message', onMessage);
          worker.off('error', reject);
          resolve(new ModelWorker(worker));
        } else if (m.type === 'error') {
          reject(new ConfigError(`encode worker could not load the model: ${m.message}`));
          void worker.terminate();
        }
      };
      worker.on('message', onMessage);
      worker.on('error', reject);
      worker.once('exit', (code) =>
        reject(new ConfigError(`encode worker exited (code ${code}) before loading the model`)),
      );
    });
  }

  encode(units: EncodeUnit[], options: WorkerJobOptions): Promise<Encoded> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ type: 'encode', id, units, options });
    });
  }

  async close(): Promise<void> {
    this.failure ??= new ConfigError('encode worker closed');
    this.worker.postMessage({ type: 'close' });
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => void this.worker.terminate().then(() => resolve()), 10_000);
      this.worker.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private settle(id: number, error: Error | null, tensors?: Encoded): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (error) p.reject(error);
    else p.resolve(tensors!);
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const id of [...this.pending.keys()]) this.settle(id, this.failure);
  }
}

/** The job options a worker can receive (no progress callback). */
export type WorkerJobOptions = Omit<EncodeJobOptions, 'onProgress' | 'workers'> & { mergeType?: string };

/** The compiled worker entry (when running from TypeScript sources, e.g. under ts-jest: the built copy). */
function workerScript(): string {
  const here = path.join(__dirname, 'encode_worker.js');
  if (fs.existsSync(here)) return here;
  const built = path.resolve(__dirname, '..', '..', '..', 'dist', 'src', 'parallel', 'pool', 'encode_worker.js');
  if (fs.existsSync(built)) return built;
  throw new ConfigError(`workers: the worker script ${here} is missing (run npm run build)`);
}

/** The load options that rebuild `model` in another thread (vision tower as resolved, same backend). */
export function workerSpec(model: LlavaVision): WorkerModelSpec {
  const { log: _log, download: _download, ...options } = model.loadOptions;
  return {
    modelDir: model.modelDir,
    // The model's own thread count: a tensor-parallel forward's last bits depend on it, and every
    // instance must give the same bits (the CLI's --workers loads the model on one thread).
    options: {
      ...options,
      visionTower: model.layout === 'llava' ? model.tower.visionTowerName : options.visionTower,
      backend: model.backend as LoadOptions['backend'],
      threads: model.threads,
    },
  };
}

/**
 * Encodes `units` on `workers` model instances: `encodeHere` (the caller's model, on this thread) and
 * `workers − 1` threads (`workers` checked by the caller). Results are merged by unit; `onProgress`
 * counts finished units.
 */
export async function encodeInWorkers(
  units: EncodeUnit[],
  workers: number,
  spec: WorkerModelSpec,
  encodeHere: (unit: EncodeUnit) => Encoded,
  options: WorkerJobOptions,
  onProgress?: (done: number, total: number) => void,
): Promise<Encoded> {
  const pool = await EncoderPool.start(Math.min(workers, units.length) - 1, spec, encodeHere, options);
  const out: Encoded = {};
  const queue = [...units];
  let done = 0;
  try {
    await pool.run(
      async () => queue.shift() ?? null,
      (_unit, tensors) => {
        Object.assign(out, tensors);
        onProgress?.(++done, units.length);
      },
    );
  } finally {
    await pool.close();
  }
  return out;
}

/**
 * This thread's model plus `threads` worker threads, kept for as many `run`s as the caller likes (a
 * dataset encode runs the whole stream through one pool instead of reloading the model per shard).
 */
export class EncoderPool {
  private constructor(
    private readonly threads: ModelWorker[],
    private readonly encodeHere: (unit: EncodeUnit) => Encoded,
    private readonly options: WorkerJobOptions,
  ) {}

  /** Starts `threads` worker threads (each loads the model) and waits until all are ready. */
  static async start(
    threads: number,
    spec: WorkerModelSpec,
    encodeHere: (unit: EncodeUnit) => Encoded,
    options: WorkerJobOptions,
  ): Promise<EncoderPool> {
    const started = await Promise.allSettled(
      Array.from({ length: Math.max(0, threads) }, () => ModelWorker.start(spec)),
    );
    const ready = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) {
      await Promise.all(ready.map((w) => w.close()));
      throw failed.reason;
    }
    return new EncoderPool(ready, encodeHere, options);
  }

  /**
   * Encodes the units `next` hands out (null: no more) until it runs dry, each on whichever instance
   * is free; `onResult` gets every unit's tensors in completion order. Each thread keeps two units
   * queued, so it never waits while this thread is busy in a (synchronous) forward. The first error
   * stops every instance after its current unit and is thrown.
   */
  async run(
    next: () => Promise<EncodeUnit | null>,
    onResult: (unit: EncodeUnit, tensors: Encoded) => void,
  ): Promise<void> {
    let stopped = false;
    const pull = async () => (stopped ? null : next());
    const stopOnError = (loop: Promise<void>) =>
      loop.catch((e) => {
        stopped = true; // the other loops stop after their current unit
        throw e;
      });
    const threadLoop = async (w: ModelWorker) => {
      for (let unit = await pull(); unit; unit = await pull()) {
        const tensors = await w.encode([ownPixels(unit)], this.options);
        if (!stopped) onResult(unit, tensors);
      }
    };
    const hereLoop = async () => {
      for (let unit = await pull(); unit; unit = await pull()) {
        onResult(unit, this.encodeHere(unit));
        await new Promise((r) => setImmediate(r)); // let the threads' replies in
      }
    };
    const loops = [...this.threads, ...this.threads].map(threadLoop).concat(hereLoop()).map(stopOnError);
    const results = await Promise.allSettled(loops);
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) throw failure.reason;
  }

  async close(): Promise<void> {
    await Promise.all(this.threads.map((w) => w.close()));
  }
}

/** A unit whose pixels are a view into a bigger buffer is copied: a transfer to a thread would carry the whole buffer. */
function ownPixels(unit: EncodeUnit): EncodeUnit {
  const p = unit.pixels;
  return p.byteOffset === 0 && p.byteLength === p.buffer.byteLength ? unit : { ...unit, pixels: p.slice() };
}
