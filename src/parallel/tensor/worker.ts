/**
 * Entry of a shard thread (see team.ts): its own tfjs engine on its own wasm instance, holding only its
 * shard of every layer, loaded straight from the checkpoint (only its slices are read). Once serving, it
 * sleeps in Atomics.wait between steps and never returns to its event loop until told to exit.
 */
import * as fs from 'fs';
import { MessagePort, parentPort, receiveMessageOnPort, workerData } from 'worker_threads';
import * as tf from '../../tf';
import { initBackend } from '../../backend';
import { setGemmChoice } from '../../model/kernels/gemm';
import { wasmHeapView } from '../../model/wasm_heap';
import { RankCompute, TowerShard, projectorShard } from '../../model/parallel/shards';
import { disposeWeights, loadWeights, prefaultWeights } from '../../model/weights';
import { Module } from '../../model/module';
import { openTensorSource } from '../../loading/sources';
import {
  CTL,
  LoadReply,
  LoadRequest,
  OP_CODES,
  STATS,
  STATS_SLOTS,
  STEP_BY_CODE,
  SyncReply,
  SyncRequest,
  ExtensionRequest,
  ThreadMemory,
  WorkerInit,
} from './protocol';
import { toThreadError } from '../worker_thread';

const init = workerData as WorkerInit;
const port = parentPort!;
const compute = new RankCompute();
const reply = (m: LoadReply) => port.postMessage(m);

/** This thread's id in /proc (Linux), so the coordinator can tell while it waits that the thread is gone. */
function osThreadId(): number | null {
  try {
    return Number(fs.readlinkSync('/proc/thread-self').split('/').pop());
  } catch {
    return null;
  }
}

/** Builds a shard (its weights `uninitialised`) and fills it from `entry`, reading only its slices; a failure frees it. */
async function loadShard<T extends Module>(
  build: () => T,
  entry: string,
  keys: Record<string, string>,
  free: (m: T) => void,
): Promise<T> {
  const source = openTensorSource(entry);
  let shard: T | null = null;
  try {
    shard = build();
    await prefaultWeights(shard);
    loadWeights(shard, source, (p) => {
      const key = keys[p];
      if (key === undefined) throw new Error(`no checkpoint key for ${p}`);
      return key;
    });
    return shard;
  } catch (e) {
    if (shard) free(shard);
    throw e;
  } finally {
    source.close();
  }
}

async function onLoadMessage(m: LoadRequest): Promise<void> {
  if (m.type === 'serve') {
    port.removeAllListeners('message');
    serve(m.port, m.generation);
    return;
  }
  try {
    if (m.type === 'loadTower') {
      compute.tower = await loadShard(
        () => new TowerShard(m.config, m.plan),
        m.entry,
        m.keys,
        (s) => s.dispose(),
      );
    } else {
      compute.projector = await loadShard(() => projectorShard(m.config, m.hidden), m.entry, m.keys, disposeWeights);
    }
    reply({ type: 'loaded', id: m.id });
  } catch (e) {
    reply({ type: 'error', id: m.id, ...toThreadError(e) });
  }
}

/** The step loop: sleeps until the coordinator bumps GEN, runs the step, bumps DONE. Returns on exit. */
function serve(requests: MessagePort, servedFrom: number): void {
  const ctl = new Int32Array(init.control);
  const stats = new Float64Array(init.stats, init.rank * STATS_SLOTS * 8, STATS_SLOTS);
  let input: Float32Array = new Float32Array(0);
  let output: Float32Array = new Float32Array(0);
  let seen = servedFrom;
  for (;;) {
    // A wait can return with the generation unchanged (a wake-up not for a new step): running the
    // last step again would count it done twice and let rank 0 read a partial not yet written.
    let generation: number;
    while ((generation = Atomics.load(ctl, CTL.GEN)) === seen) Atomics.wait(ctl, CTL.GEN, seen);
    seen = generation;
    const op = Atomics.load(ctl, CTL.OP);
    if (op === OP_CODES.exit) {
      compute.dispose();
      done(ctl);
      requests.close();
      return;
    }
    try {
      if (op === OP_CODES.request) {
        // Typed as the shipped requests; any other kind goes to the extension (handle).
        const request = receiveMessageOnPort(requests)?.message as SyncRequest | undefined;
        if (!request) throw new Error('request step without a request');
        if (request.kind === 'buffers') {
          input = new Float32Array(request.input);
          output = new Float32Array(request.output);
        }
        requests.postMessage({ ok: true, value: handle(request) } satisfies SyncReply);
      } else {
        const step = STEP_BY_CODE[op];
        const [layer, rows, cols] = [
          Atomics.load(ctl, CTL.LAYER),
          Atomics.load(ctl, CTL.ROWS),
          Atomics.load(ctl, CTL.COLS),
        ];
        const t = performance.now();
        const copyIn = compute.copyInMs;
        const y = compute.partial(step, layer, input, rows, cols);
        const t1 = performance.now();
        try {
          const view = wasmHeapView(y) ?? (y.dataSync() as Float32Array);
          if (view.length > output.length)
            throw new RangeError(
              `a ${view.length}-float partial does not fit the ${output.length}-float output buffer`,
            );
          output.set(view);
        } finally {
          y.dispose();
        }
        const t2 = performance.now();
        const copiedIn = compute.copyInMs - copyIn;
        stats[STATS.STEPS]++;
        stats[STATS.COPY_IN] += copiedIn;
        stats[STATS.COMPUTE] += t1 - t - copiedIn;
        stats[STATS.COPY_OUT] += t2 - t1;
      }
    } catch (e) {
      Atomics.add(ctl, CTL.FAILED, 1);
      requests.postMessage({ ok: false, ...toThreadError(e) } satisfies SyncReply);
    }
    done(ctl);
  }
}

function done(ctl: Int32Array): void {
  Atomics.add(ctl, CTL.DONE, 1);
  Atomics.notify(ctl, CTL.DONE);
}

/** What an extension of the requests can reach on this thread. */
export interface ShardThreadContext {
  tf: typeof tf;
  rank: number;
  compute: RankCompute;
}

type RequestExtension = (request: ExtensionRequest, context: ShardThreadContext) => unknown;
let extension: RequestExtension | null = null;

/**
 * For a thread entry that wraps this one (tools/ bench tracing, test/ fault injection): answers the
 * requests this entry does not know. The shipped entry installs none.
 */
export function extendShardRequests(handler: RequestExtension): void {
  extension = handler;
}

function handle(request: SyncRequest | ExtensionRequest): unknown {
  switch (request.kind) {
    case 'buffers':
      return null;
    case 'memory':
      return memory();
    case 'dropProjector':
      if (compute.projector) disposeWeights(compute.projector);
      compute.projector = null;
      return null;
    default:
      if (!extension) throw new Error(`unknown request ${request.kind}`);
      return extension(request, { tf, rank: init.rank, compute });
  }
}

function memory(): ThreadMemory {
  const heap = (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } }).wasm?.HEAPU8;
  return {
    numTensors: tf.memory().numTensors,
    wasmHeapBytes: heap?.length ?? 0,
    weightBytes: compute.weights().reduce((s, w) => s + w.size * 4, 0),
  };
}

async function main(): Promise<void> {
  try {
    setGemmChoice(init.gemm); // before the backend starts (it may enable relaxed SIMD)
    await initBackend({ backend: 'wasm', log: null });
  } catch (e) {
    reply({ type: 'error', ...toThreadError(e) });
    return;
  }
  port.on('message', (m: LoadRequest) => void onLoadMessage(m));
  reply({ type: 'ready', tid: osThreadId() });
}

void main();
