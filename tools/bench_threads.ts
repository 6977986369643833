/**
 * `npm run bench -- --threads 1,2 [--gemm xnnpack,fma] [--vs-torch]`: the tensor-parallel forward
 * (LoadOptions.threads) at each thread count (and under each GEMM, kernels/gemm.ts), on ViT-L/14-336 +
 * mlp2x_gelu, batch 1, the LLaVA path.
 *
 * - load time and peak RSS (load, then one forward), each thread count in a fresh process;
 * - per-image time, every thread count loaded in this process and run interleaved (round-robin), so
 *   that drift of a shared VM hits them alike; outputs checked bit-identical from run to run;
 * - the N-thread GEMM ceiling: each thread's own GEMM calls of a forward (its shard's products, as the
 *   forward shards them), recorded on that thread and replayed on all threads at once (the slowest
 *   thread's kernel time); the forward's fraction of it;
 * - where the coordinating thread's time goes per encoder layer (LayerNorms and reductions in JS, copies
 *   in and out of shared memory, waiting at the barrier), and from it and the ceiling a projection to
 *   4, 8 and 16 cores (labelled as one);
 * - the coordinating thread's GEMM rate in the forward per product shape, for each GEMM, and the core's
 *   clock and 128-bit FMA peak (tools/cpu_clock.ts);
 * - with --vs-torch, PyTorch at the same thread counts in the same run (between two sets of our rounds).
 * Every (GEMM, threads) model is loaded in this process and the rounds interleave them all.
 */
import * as os from 'os';
import * as path from 'path';
import { ChildProcess, fork, spawnSync } from 'child_process';
import { createHash } from 'crypto';
import * as tf from '../src/tf';
import { LlavaVision } from '../src/api/llava_vision';
import { hiddenStateIndex } from '../src/config/clip';
import { BackendChoice } from '../src/backend';
import { CoordinatorStats } from '../src/model/parallel/coordinator';
import { ShardTeam, ThreadStats } from '../src/parallel/tensor/team';
import { GemmMeter, GemmCall, GemmTotals, replayGemms } from './gemm_ceiling';
import type { RecordedGemms } from './shard_hooks';
import { GemmChoice, GemmName, activeGemm } from '../src/model/kernels/gemm';
import { fmaPeakGflops, measureClockGHz } from './cpu_clock';

const MB = 2 ** 20;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[(xs.length - 1) >> 1];
// The shard threads this bench spawns run its own entry: the shipped one plus GEMM recording.
ShardTeam.entry = path.join(__dirname, 'shard_hooks.js');

export interface ThreadsBenchOptions {
  threads: number[];
  /** The GEMMs to compare (each thread count runs under each); empty: the one chosen as usual. */
  gemms: GemmChoice[];
  reps: number;
  vsTorch: boolean;
  backend?: BackendChoice;
  json: boolean;
  llavaDir: string;
  towerDir: string;
  image: Float32Array;
  /** `bench.js --child threads-load --threads N`: the load measurement of one thread count in a fresh process. */
  childArgs: (threads: number) => string[];
  /** `bench.js --child threads-serve --threads 1,2`: a process serving one GEMM's models (childThreadsServe). */
  serveArgs: (threads: number[]) => string[];
  torch: ((threads: number) => { threads: number; gemm: string; llava: { median_s: number } }) | null;
  peakRssMB: () => number;
  resetPeakRss: () => void;
  /** Reads the checkpoint files once: every load measurement starts from the same page cache. */
  warmCache: () => void;
}

export interface ThreadsLoadResult {
  threads: number;
  gemm: GemmName | null;
  loadS: number;
  peakRssLoadMB: number;
  peakRssForwardMB: number;
  rssMB: number;
}

/** Child process: load with `threads`, one LLaVA forward; prints load time and peak RSS as JSON. */
export async function childThreadsLoad(
  o: Pick<ThreadsBenchOptions, 'llavaDir' | 'towerDir' | 'backend' | 'image' | 'peakRssMB' | 'resetPeakRss'>,
  threads: number,
): Promise<void> {
  const { initBackend } = await import('../src/backend');
  await initBackend({ backend: o.backend, log: null });
  o.resetPeakRss();
  const t0 = performance.now();
  const model = await LlavaVision.load(o.llavaDir, { visionTower: o.towerDir, backend: o.backend, log: null, threads });
  const loadS = (performance.now() - t0) / 1000;
  const peakRssLoadMB = o.peakRssMB();
  const s = model.tower.config.imageSize;
  const px = tf.tensor4d(o.image, [1, 3, s, s]);
  const out = model.encode(px, { outputs: ['projected'] });
  out.projected!.dataSync();
  tf.dispose([px, out.projected!]);
  const r: ThreadsLoadResult = {
    threads: model.threads,
    gemm: activeGemm(),
    loadS,
    peakRssLoadMB,
    peakRssForwardMB: o.peakRssMB(),
    rssMB: process.memoryUsage().rss / MB,
  };
  model.dispose();
  process.stdout.write(JSON.stringify(r) + '\n');
}

interface Breakdown {
  /** Per LLaVA forward, ms, on the coordinating thread. */
  embedMs: number;
  layerNormMs: number;
  reduceMs: number;
  computeMs: number;
  waitMs: number;
  copyInMs: number;
  /** The other threads (mean over them), ms per forward. */
  threadCopyInMs: number;
  threadCopyOutMs: number;
  threadComputeMs: number;
  steps: number;
}

interface PerThreadCount {
  threads: number;
  gemm: GemmName | null;
  /** The coordinating thread's GEMM calls over the timed forwards, per product shape. */
  gemmByShape: GemmTotals['byShape'];
  runsS: number[];
  identical: boolean;
  ceilingMs: number[];
  gemmFlops: number;
  breakdown: Breakdown | null;
  tensors: { before: number; after: number; threads: number[] | null };
}

/** Records each thread's GEMM calls during `run`, returning the coordinating thread's calls. */
async function recordGemms(
  model: LlavaVision,
  run: () => Promise<void>,
): Promise<{ local: GemmCall[]; flops: number }> {
  const runtime = model.shardRuntime;
  if (!runtime) {
    const weights = [...model.tower.visionModel.visionModel.weights, ...(model.projector?.weights ?? [])].map((w) =>
      w.read(),
    );
    const meter = new GemmMeter(weights);
    try {
      const { calls } = await meter.record(run);
      return { local: calls, flops: calls.reduce((s, c) => s + c.flops, 0) };
    } finally {
      meter.dispose();
    }
  }
  const hook = (kind: string) => () => ({ kind });
  const meter = new GemmMeter(model.tower.shardedModel!.weights());
  try {
    meter.startRecording();
    runtime.team.request(hook('recordStart'));
    await run();
    const others = runtime.team.request<RecordedGemms>(hook('recordStop'));
    const local = meter.stopRecording();
    return { local, flops: local.reduce((s, c) => s + c.flops, 0) + others.reduce((s, r) => s + r.flops, 0) };
  } finally {
    meter.dispose();
  }
}

/** All threads replay their recorded GEMM calls at once: the slowest thread's kernel time (ms). */
function replayCeiling(model: LlavaVision, local: GemmCall[]): number {
  const runtime = model.shardRuntime;
  if (!runtime) return replayGemms(local);
  let mine = 0;
  const others = runtime.team.request<number>(
    () => ({ kind: 'replay' }),
    () => (mine = replayGemms(local)),
  );
  return Math.max(mine, ...others);
}

function breakdownOf(model: LlavaVision, forwards: number): Breakdown | null {
  const runtime = model.shardRuntime;
  if (!runtime) return null;
  const stats = model.takeShardStats()!;
  const add = (k: keyof CoordinatorStats) => stats[k] / forwards;
  const threads: ThreadStats[] = runtime.team.takeStats();
  const mean = (k: keyof ThreadStats) => threads.reduce((s, t) => s + t[k], 0) / threads.length / forwards;
  return {
    embedMs: add('embedMs'),
    layerNormMs: add('layerNormMs'),
    reduceMs: add('reduceMs'),
    computeMs: add('computeMs'),
    waitMs: add('waitMs'),
    copyInMs: stats.copyInMs / forwards,
    threadCopyInMs: mean('copyInMs'),
    threadCopyOutMs: mean('copyOutMs'),
    threadComputeMs: mean('computeMs'),
    steps: add('steps'),
  };
}

/** What a serving child (one GEMM, every thread count) says once its models are loaded and warm. */
interface ServeReady {
  op: 'ready';
  layersRun: number;
  models: { threads: number; gemm: GemmName | null; gemmFlops: number; tensorsBefore: number }[];
}
type ServeRequest = { op: 'forward'; i: number } | { op: 'ceiling'; i: number } | { op: 'summary' };
type ServeReply =
  | { op: 'forward'; seconds: number; byShape: GemmTotals['byShape'] }
  | { op: 'ceiling'; ms: number }
  | {
      op: 'summary';
      models: {
        breakdown: Breakdown | null;
        identical: boolean;
        digest: string;
        tensorsAfter: number;
        threadTensors: number[] | null;
      }[];
    }
  | { op: 'error'; message: string };

/**
 * Child process (`bench.js --child threads-serve`): the models of one GEMM (LLAVA_VISION_GEMM of its
 * environment) at every thread count, loaded and warmed up, then forwards, GEMM replays and a summary
 * as the parent asks over IPC. One process per GEMM: a wasm heap holds at most 4 GiB, less than every
 * model of both GEMMs, and the parent interleaves the processes' forwards (one runs at a time).
 */
export async function childThreadsServe(
  o: Pick<ThreadsBenchOptions, 'llavaDir' | 'towerDir' | 'backend' | 'image'>,
  threadCounts: number[],
): Promise<void> {
  const { initBackend } = await import('../src/backend');
  await initBackend({ backend: o.backend, log: null });
  const models: LlavaVision[] = [];
  for (const n of threadCounts)
    models.push(
      await LlavaVision.load(o.llavaDir, { visionTower: o.towerDir, backend: o.backend, log: null, threads: n }),
    );
  const s = models[0].tower.config.imageSize;
  const px = tf.tensor4d(o.image, [1, 3, s, s]);
  const digests = models.map(() => new Set<string>());
  const forward = async (i: number) => {
    const out = models[i].encode(px, { outputs: ['projected'] });
    const data = await out.projected!.data();
    out.projected!.dispose();
    digests[i].add(
      createHash('sha256')
        .update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
        .digest('hex'),
    );
  };
  const localCalls: GemmCall[][] = [];
  const layersRun = Math.max(
    ...models[0].tower.selectLayers.map((l) => hiddenStateIndex(l, models[0].tower.config.numHiddenLayers)),
  );
  const ready: ServeReady = { op: 'ready', layersRun, models: [] };
  const forwards = models.map(() => 0);
  for (const [i, m] of models.entries()) {
    await forward(i); // warm-up
    const tensorsBefore = tf.memory().numTensors;
    const { local, flops } = await recordGemms(m, () => forward(i));
    if (m.shardRuntime) breakdownOf(m, 1); // reset the statistics
    localCalls.push(local);
    ready.models.push({ threads: m.threads, gemm: activeGemm(), gemmFlops: flops, tensorsBefore });
  }
  const send = (m: ServeReady | ServeReply) => process.send!(m);
  send(ready);
  process.on('message', (req: ServeRequest) => {
    void (async () => {
      try {
        if (req.op === 'forward') {
          // The coordinating thread's GEMM calls, per shape (the meter's cost is ~µs per call).
          const m = models[req.i];
          const meter = new GemmMeter(m.tower.shardedModel ? m.tower.shardedModel.weights() : []);
          try {
            const t0 = performance.now();
            const { gemm } = await meter.measure(() => forward(req.i));
            forwards[req.i]++;
            send({ op: 'forward', seconds: (performance.now() - t0) / 1000, byShape: gemm.byShape });
          } finally {
            meter.dispose();
          }
        } else if (req.op === 'ceiling') {
          send({ op: 'ceiling', ms: replayCeiling(models[req.i], localCalls[req.i]) });
        } else {
          const summary = models.map((m, i) => ({
            breakdown: breakdownOf(m, forwards[i]),
            identical: digests[i].size === 1,
            digest: [...digests[i]][0],
            tensorsAfter: tf.memory().numTensors,
            threadTensors: m.shardRuntime
              ? m.shardRuntime.team.request<{ numTensors: number }>(() => ({ kind: 'memory' })).map((x) => x.numTensors)
              : null,
          }));
          px.dispose();
          for (const m of models) m.dispose();
          send({ op: 'summary', models: summary });
          process.disconnect();
        }
      } catch (e) {
        send({ op: 'error', message: (e as Error).stack ?? String(e) });
      }
    })();
  });
}

/** A serving child and a way to ask it one thing at a time. */
class ServingChild {
  private readonly child: ChildProcess;
  private waiting: ((m: ServeReady | ServeReply) => void) | null = null;
  private readonly exited: Promise<void>;
  stderr = '';

  constructor(args: string[], env: NodeJS.ProcessEnv) {
    this.child = fork(args[0], args.slice(1), { env, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.child.on('message', (m: ServeReady | ServeReply) => {
      const w = this.waiting;
      this.waiting = null;
      w?.(m);
    });
    this.exited = new Promise((resolve) => this.child.on('exit', () => resolve()));
  }

  /** The next message (after sending `req`, if given); an error reply or an exit is thrown. */
  async next<T extends ServeReady | ServeReply>(req?: ServeRequest): Promise<T> {
    const reply = new Promise<ServeReady | ServeReply>((resolve, reject) => {
      this.waiting = resolve;
      void this.exited.then(() => reject(new Error(`a bench child exited:\n${this.stderr}`)));
    });
    if (req) this.child.send(req);
    const m = await reply;
    if (m.op === 'error') throw new Error(`a bench child failed: ${m.message}`);
    return m as T;
  }

  async close(): Promise<void> {
    await this.exited;
  }
}

export async function benchThreads(o: ThreadsBenchOptions): Promise<void> {
  const log = (line: string) => (o.json ? process.stderr : process.stdout).write(line + '\n');
  // Every (GEMM, threads) pair; a GEMM of null is the one chosen as usual (LLAVA_VISION_GEMM, else the engine's).
  const gemmList: (GemmChoice | null)[] = o.gemms.length ? o.gemms : [null];
  const configs = gemmList.flatMap((gemm) => o.threads.map((threads) => ({ gemm, threads })));
  const label = (c: { gemm: GemmChoice | null; threads: number }) => `${c.gemm ? `${c.gemm} ` : ''}${c.threads}t`;
  const envOf = (gemm: GemmChoice | null) => (gemm ? { ...process.env, LLAVA_VISION_GEMM: gemm } : process.env);
  const loads: ThreadsLoadResult[] = configs.map((c) => {
    log(`bench: load with ${label(c)} and one forward, fresh process ...`);
    o.warmCache();
    const r = spawnSync(process.execPath, o.childArgs(c.threads), {
      encoding: 'utf8',
      maxBuffer: 16 * MB,
      env: envOf(c.gemm),
    });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    if (r.status !== 0 || !line.startsWith('{')) throw new Error(`load measurement (${label(c)}) failed:\n${r.stderr}`);
    return JSON.parse(line) as ThreadsLoadResult;
  });

  // One serving process per GEMM, loaded one after the other; models are (child, index) in `configs` order.
  const children: ServingChild[] = [];
  const results: PerThreadCount[] = [];
  const where: { child: ServingChild; i: number }[] = [];
  let layersRun = 0;
  for (const gemm of gemmList) {
    log(
      `bench: loading ${o.threads.map((n) => label({ gemm, threads: n })).join(', ')} in a serving process, warm-up, GEMM recording ...`,
    );
    const child = new ServingChild(o.serveArgs(o.threads), envOf(gemm));
    children.push(child);
    const ready = await child.next<ServeReady>();
    layersRun = ready.layersRun;
    for (const [i, m] of ready.models.entries()) {
      where.push({ child, i });
      results.push({
        threads: m.threads,
        gemm: m.gemm,
        gemmByShape: {},
        runsS: [],
        identical: true,
        ceilingMs: [],
        gemmFlops: m.gemmFlops,
        breakdown: null,
        tensors: { before: m.tensorsBefore, after: 0, threads: null },
      });
    }
  }
  const rounds = async (what: string) => {
    for (let r = 0; r < o.reps; r++) {
      log(
        `bench: ${what} round ${r + 1}/${o.reps}: ${configs.map(label).join(', ')} interleaved, then their GEMM ceilings ...`,
      );
      for (const [k, { child, i }] of where.entries()) {
        const f = await child.next<Extract<ServeReply, { op: 'forward' }>>({ op: 'forward', i });
        results[k].runsS.push(f.seconds);
        for (const [key, v] of Object.entries(f.byShape)) {
          const acc = (results[k].gemmByShape[key] ??= { calls: 0, ms: 0, flops: 0 });
          acc.calls += v.calls;
          acc.ms += v.ms;
          acc.flops += v.flops;
        }
      }
      for (const [k, { child, i }] of where.entries())
        results[k].ceilingMs.push((await child.next<Extract<ServeReply, { op: 'ceiling' }>>({ op: 'ceiling', i })).ms);
    }
  };
  await rounds('ours');
  const torch: { threads: number; gemm: string; llavaS: number }[] = [];
  if (o.vsTorch && o.torch) {
    for (const n of o.threads) {
      log(`bench: PyTorch peer, ${n} thread(s) ...`);
      const t = o.torch(n);
      torch.push({ threads: t.threads, gemm: t.gemm, llavaS: t.llava.median_s });
    }
    await rounds('ours again (after torch)');
  } else if (o.vsTorch)
    log(`bench: ${process.env.LLAVA_VISION_PYTHON || '/usr/bin/python3'} has no torch: --vs-torch skipped`);
  const digests: string[] = [];
  for (const child of children) {
    const summary = await child.next<Extract<ServeReply, { op: 'summary' }>>({ op: 'summary' });
    await child.close();
    for (const m of summary.models) {
      const k = digests.length;
      Object.assign(results[k], { breakdown: m.breakdown, identical: m.identical });
      results[k].tensors.after = m.tensorsAfter;
      results[k].tensors.threads = m.threadTensors;
      digests.push(m.digest);
    }
  }
  // Per GEMM: do its thread counts give the same bits?
  const crossIdentical = gemmList.every((g) => new Set(digests.filter((_, k) => configs[k].gemm === g)).size === 1);
  const clockGHz = await measureClockGHz();

  const report = {
    date: new Date().toISOString(),
    machine: {
      cpu: os.cpus()[0]?.model,
      cores: os.cpus().length,
      availableParallelism:
        (os as { availableParallelism?: () => number }).availableParallelism?.() ?? os.cpus().length,
      node: process.version,
      clockGHz,
    },
    backend: o.backend ?? 'wasm',
    tfjs: tf.version_core,
    reps: o.reps,
    layersRun,
    loads,
    results,
    torch,
    crossIdentical,
  };
  if (o.json) {
    process.stdout.write(JSON.stringify(report, null, 1) + '\n');
    return;
  }
  printThreads(report);
}

/** The --json report of the tensor-parallel bench (and what `--from-json` reads back). */
export type ThreadsReport = {
  date: string;
  machine: { cpu?: string; cores: number; availableParallelism: number; node: string; clockGHz?: number };
  backend: string;
  tfjs: string;
  reps: number;
  layersRun: number;
  loads: ThreadsLoadResult[];
  results: PerThreadCount[];
  torch: { threads: number; gemm: string; llavaS: number }[];
  crossIdentical: boolean;
};

export function printThreads(r: ThreadsReport): void {
  const f = (x: number, d = 2) => x.toFixed(d);
  const lines: string[] = [];
  const row = (...cells: string[]) => lines.push(`| ${cells.join(' | ')} |`);
  const gemms = [...new Set(r.results.map((x) => x.gemm ?? '—'))];
  lines.push(
    `npm run bench -- --threads ${[...new Set(r.results.map((x) => x.threads))].join(',')}${gemms.length > 1 ? ` --gemm ${gemms.join(',')}` : ''} — ${r.date.slice(0, 10)}, ${r.machine.cpu} (${r.machine.cores} cores), Node ${r.machine.node}, tfjs ${r.tfjs} ${r.backend}`,
  );
  lines.push(
    `ViT-L/14-336 + mlp2x_gelu (generated F32 weights), LLaVA path (${r.layersRun} encoder layers, patch, projector), batch 1; medians of ${r.results[0].runsS.length} interleaved runs`,
  );
  lines.push('');
  row(
    'GEMM',
    'threads',
    'load',
    'peak RSS (load, +1 forward)',
    's/image',
    'speed-up',
    'GEMM ceiling',
    'forward / ceiling',
    'vs PyTorch same threads',
    'run-to-run',
  );
  row('---', '---', '---', '---', '---', '---', '---', '---', '---', '---');
  for (const [i, x] of r.results.entries()) {
    // Speed-up and memory against the same GEMM's fewest threads.
    const base = r.results.find((y) => y.gemm === x.gemm)!;
    const bi = r.results.indexOf(base);
    const sec = median(x.runsS);
    const ceil = median(x.ceilingMs) / 1000;
    const l = r.loads[i];
    const torch = r.torch.find((t) => t.threads === x.threads);
    row(
      x.gemm ?? '—',
      String(x.threads),
      `${f(l.loadS)} s`,
      `${f(l.peakRssLoadMB, 0)} / ${f(l.peakRssForwardMB, 0)} MB${i !== bi ? ` (×${f(l.peakRssForwardMB / r.loads[bi].peakRssForwardMB)})` : ''}`,
      `**${f(sec)}**`,
      i !== bi ? `×${f(median(base.runsS) / sec)}` : '—',
      `${f(ceil)} s${i !== bi ? ` (×${f(median(base.ceilingMs) / median(x.ceilingMs))})` : ''}`,
      `${f((100 * ceil) / sec, 1)}%`,
      torch ? `${f(torch.llavaS)} s → ×${f(sec / torch.llavaS)}` : '—',
      x.identical ? 'identical' : 'DIFFERS',
    );
  }
  lines.push('');
  if (gemms.length > 1) {
    // Same thread count, other GEMM: the ratios within this run.
    const [a, b] = gemms;
    for (const n of new Set(r.results.map((x) => x.threads))) {
      const [ra, rb] = [a, b].map((g) => r.results.find((x) => x.threads === n && x.gemm === g));
      if (ra && rb)
        lines.push(
          `${n} thread(s): ${a} ÷ ${b} = ×${f(median(ra.runsS) / median(rb.runsS))} per image; load ×${f(r.loads[r.results.indexOf(rb)].loadS / r.loads[r.results.indexOf(ra)].loadS)} (${b} ÷ ${a}); peak RSS ${f(r.loads[r.results.indexOf(rb)].peakRssForwardMB, 0)} vs ${f(r.loads[r.results.indexOf(ra)].peakRssForwardMB, 0)} MB.`,
        );
    }
    lines.push('');
  }
  const clock = r.machine.clockGHz;
  lines.push(
    `GEMM rates in the forward, coordinating thread, per product shape (GFLOP/s${clock ? `; % of the core's 128-bit FMA peak, ${f(fmaPeakGflops(clock), 1)} GFLOP/s at the ${f(clock)} GHz measured by tools/cpu_clock.ts` : ''}):`,
  );
  lines.push('');
  const shapes = [...new Set(r.results.flatMap((x) => Object.keys(x.gemmByShape)))].sort((p, q) => {
    const flops = (k: string) => Math.max(...r.results.map((x) => x.gemmByShape[k]?.flops ?? 0));
    return flops(q) - flops(p);
  });
  row(
    'product (MxKxN, M ≥ N)',
    ...r.results.map((x) => `${x.gemm ?? ''} ${x.threads}t`),
    ...(gemms.length > 1
      ? [...new Set(r.results.map((x) => x.threads))].map((n) => `${gemms[1]} ÷ ${gemms[0]}, ${n}t`)
      : []),
  );
  row(
    '---',
    ...r.results.map(() => '---'),
    ...(gemms.length > 1 ? [...new Set(r.results.map((x) => x.threads))].map(() => '---') : []),
  );
  const rate = (x: PerThreadCount, k: string) => {
    const v = x.gemmByShape[k];
    return v ? v.flops / v.ms / 1e6 : null;
  };
  const cell = (g: number | null) =>
    g === null ? '' : `${f(g, 1)}${clock ? ` (${f((100 * g) / fmaPeakGflops(clock), 0)}%)` : ''}`;
  const total = (x: PerThreadCount) => {
    const v = Object.values(x.gemmByShape).reduce((acc, y) => ({ flops: acc.flops + y.flops, ms: acc.ms + y.ms }), {
      flops: 0,
      ms: 0,
    });
    return v.flops / v.ms / 1e6;
  };
  for (const k of shapes.slice(0, 12)) {
    const ratios =
      gemms.length > 1
        ? [...new Set(r.results.map((x) => x.threads))].map((n) => {
            const [ra, rb] = gemms.map((g) => r.results.find((x) => x.threads === n && (x.gemm ?? '—') === g));
            const [ga, gb] = [ra && rate(ra, k), rb && rate(rb, k)];
            return ga && gb ? `×${f(gb / ga)}` : '';
          })
        : [];
    row(k, ...r.results.map((x) => cell(rate(x, k))), ...ratios);
  }
  const totalRatios =
    gemms.length > 1
      ? [...new Set(r.results.map((x) => x.threads))].map((n) => {
          const [ra, rb] = gemms.map((g) => r.results.find((x) => x.threads === n && (x.gemm ?? '—') === g));
          return ra && rb ? `×${f(total(rb) / total(ra))}` : '';
        })
      : [];
  row('all GEMM calls', ...r.results.map((x) => cell(total(x))), ...totalRatios);
  lines.push('');
  lines.push(
    `Outputs of different thread counts ${r.crossIdentical ? 'are identical (per GEMM)' : 'differ in the last bits (partial sums in another order), each within the parity bound'}. tf.memory().numTensors before/after: ${r.results.map((x) => `${x.gemm ? `${x.gemm} ` : ''}${x.threads}t ${x.tensors.before}/${x.tensors.after}${x.tensors.threads ? ` (threads ${x.tensors.threads.join(', ')})` : ''}`).join('; ')}.`,
  );
  for (const x of r.results) {
    const b = x.breakdown;
    if (!b) continue;
    const base = r.results.find((y) => y.gemm === x.gemm)!;
    const baseS = median(base.runsS);
    const layers = r.layersRun;
    const sec = median(x.runsS) * 1000;
    const layerMs = (sec - b.embedMs) / (layers + 1); // the projector step weighs about a layer's MLP; counted as one more "layer"
    const overhead = b.layerNormMs + b.reduceMs + b.copyInMs + b.threadCopyInMs + b.threadCopyOutMs;
    const perLayer = overhead / (layers + 1);
    lines.push('');
    lines.push(
      `${x.gemm ? `${x.gemm}, ` : ''}${x.threads} threads, per forward (ms, coordinating thread): embeddings ${f(b.embedMs, 0)}, LayerNorms ${f(b.layerNormMs, 0)}, reductions ${f(b.reduceMs, 0)}, copy into tfjs ${f(b.copyInMs, 0)}, own shard ${f(b.computeMs - b.copyInMs, 0)}, waiting at the barrier ${f(b.waitMs, 0)}; other threads (mean): copy in ${f(b.threadCopyInMs, 0)}, compute ${f(b.threadComputeMs, 0)}, copy out ${f(b.threadCopyOutMs, 0)}.`,
    );
    lines.push(
      `Synchronisation and copy overhead: **${f(perLayer, 1)} ms per layer, ${f((100 * perLayer) / layerMs, 1)}% of a layer** (${f(layerMs, 0)} ms; LayerNorms + reductions + copies in and out of shared memory; waiting is load imbalance and wake-up latency, ${f(b.waitMs / (layers + 1), 1)} ms per layer).`,
    );
    if (x.threads === 2 && base.threads === 1) {
      // Projection: compute scales with the ceiling's per-thread efficiency; the serial part stays, its reduction grows with N.
      const c1 = median(base.ceilingMs);
      const eff = c1 / (2 * median(x.ceilingMs));
      const compute1 = baseS * 1000 - b.embedMs - overhead; // time on one thread that the threads share
      const serial = (n: number) =>
        b.embedMs + b.layerNormMs + b.copyInMs + b.threadCopyInMs + b.threadCopyOutMs + (b.reduceMs * n) / 2;
      const project = (n: number, e: number) => (baseS * 1000) / (compute1 / (n * e) + serial(n));
      const cells = [4, 8, 16].map(
        (n) => `${n} cores ×${f(project(n, eff ** Math.log2(n)), 1)}–×${f(project(n, eff), 1)}`,
      );
      lines.push(
        `**Projection** (not a measurement): per-thread GEMM efficiency at 2 threads ${f(100 * eff, 0)}% of one; compute split over N threads at that efficiency (optimistic: it holds; pessimistic: lost again at each doubling), the serial part as measured, reductions ∝ N: ${cells.join(', ')} over 1 thread.`,
      );
    }
  }
  console.log(lines.join('\n'));
}

export function parseGemmList(v: string): GemmChoice[] {
  const list = v.split(',').map((x) => x.trim());
  const known = ['auto', 'fma', 'mul-add', 'xnnpack'];
  if (!list.length || list.some((g) => !known.includes(g)))
    throw new Error(`--gemm takes a list of ${known.join(', ')} (got ${v})`);
  return list as GemmChoice[];
}

export function parseThreadList(v: string): number[] {
  const list = v.split(',').map((x) => Number(x.trim()));
  if (!list.length || list.some((n) => !Number.isInteger(n) || n < 1))
    throw new Error(`--threads takes a list of positive integers, e.g. 1,2 (got ${v})`);
  return list;
}
