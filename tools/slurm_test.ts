/**
 * docs/datasets.md's cluster recipes run as printed (issue 20): its `<!-- docs-test: slurm-array -->`
 * script on a real Slurm, and its `<!-- docs-test: k8s-indexed-job -->` command once per index.
 *
 * A one-node cluster on localhost lives in a temp folder: munged with its own key and socket,
 * slurmctld and slurmd on free ports, a slurm.conf written here (no cgroups, no accounting, the
 * node CPUs=2). The recipes' `/models/...` folders are copies of the bundled demo model and
 * `/shared/...` is a folder of 30 images (one undecodable) and their list; the part count 16 becomes
 * 3 (in `--array=0-15` and `/16`, after checking the two agree). Then:
 * - one plain run (no --part) of the same command is the reference;
 * - `sbatch encode.sh` from an app folder where llava-vision-tfjs is installed, as the docs say:
 *   every array task ends as expected (the part holding the bad image fails with exit 1, the
 *   others complete), and the joined dataset equals the plain run, by openEncodedDataset (indices,
 *   sources, sizes, failures, tensors) and byte for byte (every stored tensor's bytes);
 * - the same array again (a retry of every part): each part resumes, nothing is encoded again and no
 *   file changes;
 * - the Indexed Job's `sh -c` command with JOB_COMPLETION_INDEX = 0 .. completions − 1, as the kubelet
 *   runs it: the same dataset again.
 * The daemons are stopped at the end (and on SIGINT / SIGTERM), the temp folder removed.
 *
 * Needs root (slurmd runs the jobs) and slurm-wlm + munge (`.ci/run` installs them with apt); without
 * them it says why and skips. Prints "slurm: N passed, M failed".
 *   npm run test:slurm [-- --keep]
 */
import { spawn } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { openEncodedDataset } from '../src/dataset/reader';
import { SafetensorsFile } from '../src/io/safetensors';
import { packageRoot } from '../src/version';
import { SnippetSource, readmeSnippets, snippetNamed } from './readme_snippets';
import { Checks } from './checks';

const ROOT = packageRoot();
const DOCS: SnippetSource = { file: 'docs/datasets.md', marker: 'docs-test' };
const PARTS = 3;
const IMAGES = 30;
/** Position of the undecodable input in the list: its part must fail, the others complete. */
const BAD_INDEX = 7;
const NODE_CPUS = 2;
const COMMANDS = ['munged', 'mungekey', 'slurmctld', 'slurmd', 'sbatch', 'scontrol', 'sinfo', 'squeue', 'scancel'];

const checks = new Checks(20);
const { check } = checks;

interface Result {
  status: number | null;
  out: string;
  err: string;
}

/** Runs a command to its end (asynchronously: a SIGTERM to this process still tears the cluster down). */
function run(
  command: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<Result> {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = options.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), options.timeoutMs) : undefined;
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ status: null, out, err: err + e.message });
    });
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, out, err });
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function onPath(name: string): boolean {
  return (
    (process.env.PATH ?? '').split(':').some((d) => d && fs.existsSync(path.join(d, name))) ||
    ['/usr/sbin', '/sbin'].some((d) => fs.existsSync(path.join(d, name)))
  );
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The environment of a user's shell: no npm-run variables or node_modules/.bin folders (npx in a job
 * must find the app's own install), no backend override, and npm offline (a job that reached for
 * the registry would fail here rather than pass by downloading).
 */
function userEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if (!/^npm_/i.test(k) && k !== 'INIT_CWD' && k !== 'LLAVA_VISION_BACKEND') env[k] = v;
  env.PATH = (process.env.PATH ?? '')
    .split(':')
    .filter((d) => d && !d.includes('node_modules'))
    .join(':');
  return { ...env, npm_config_offline: 'true', npm_config_update_notifier: 'false', ...extra };
}

/**
 * A recipe mapped onto this machine: its `/models/` and `/shared/` paths under `base`, its part count
 * (`parts`, as printed) replaced by PARTS; `problems`: what does not hold in the recipe as printed.
 */
interface Recipe {
  script: string;
  parts: number;
  problems: string[];
  threads: number;
}

function rootPaths(text: string, base: string, problems: string[]): string {
  for (const dir of ['/models/', '/shared/'])
    if (!text.includes(dir)) problems.push(`it no longer mentions ${dir}: update tools/slurm_test.ts`);
  return text.replace(/(?<=[\s"'=])\/(models|shared)\//g, `${base}/$1/`);
}

function slurmRecipe(code: string, base: string): Recipe {
  const problems: string[] = [];
  const array = /^#SBATCH\b.*--array=0-(\d+)(\s|$)/m.exec(code);
  const part = /--part "\$SLURM_ARRAY_TASK_ID\/(\d+)"/.exec(code);
  const cpus = /^#SBATCH\b.*--cpus-per-task=(\d+)/m.exec(code);
  if (!array) problems.push('no "#SBATCH --array=0-M" line: the first task must be 0, the first part');
  if (!part) problems.push('no --part "$SLURM_ARRAY_TASK_ID/N"');
  const parts = part ? Number(part[1]) : 0;
  if (array && part && Number(array[1]) + 1 !== parts)
    problems.push(`--array=0-${array[1]} runs ${Number(array[1]) + 1} tasks for ${parts} parts`);
  if (!cpus) problems.push('no "#SBATCH --cpus-per-task=C"');
  if (cpus && Number(cpus[1]) > NODE_CPUS)
    problems.push(`--cpus-per-task=${cpus[1]} does not fit the test node (CPUs=${NODE_CPUS})`);
  if (!code.includes('--threads "$SLURM_CPUS_PER_TASK"'))
    problems.push('no --threads "$SLURM_CPUS_PER_TASK": the outputs\' rounding would depend on the node\'s cores');
  let script = rootPaths(code, base, problems);
  if (array && part) {
    script = script
      .replace(`--array=0-${array[1]}`, `--array=0-${PARTS - 1}`)
      .replace(`$SLURM_ARRAY_TASK_ID/${parts}"`, `$SLURM_ARRAY_TASK_ID/${PARTS}"`);
  }
  return { script, parts, problems, threads: cpus ? Number(cpus[1]) : 0 };
}

/** The Indexed Job's container command (`command: ["sh", "-c", "..."]`), its paths and part count mapped. */
function k8sRecipe(yaml: string, base: string): Omit<Recipe, 'script'> & { command: string[] } {
  const problems: string[] = [];
  if (!/^\s*completionMode:\s*Indexed\b/m.test(yaml)) problems.push('no "completionMode: Indexed"');
  const completions = /^\s*completions:\s*(\d+)/m.exec(yaml);
  const cpu = /\brequests:.*\bcpu:\s*"?(\d+)"?/.exec(yaml);
  const line = /^\s*command:\s*(\[.*\])\s*$/m.exec(yaml);
  let command: string[] = [];
  try {
    command = line ? (JSON.parse(line[1]) as string[]) : [];
  } catch (e) {
    problems.push(`its command is not a flow sequence of strings: ${(e as Error).message}`);
  }
  const text = command.join(' ');
  const part = /--part \$\{?JOB_COMPLETION_INDEX\}?\/(\d+)/.exec(text);
  if (!completions) problems.push('no "completions: N"');
  if (!part) problems.push('no --part $JOB_COMPLETION_INDEX/N in its command');
  const parts = part ? Number(part[1]) : 0;
  if (completions && part && Number(completions[1]) !== parts)
    problems.push(`completions: ${completions[1]} for ${parts} parts`);
  const threads = /--threads (\d+)/.exec(text);
  if (!threads) problems.push("no --threads N in its command: the outputs' rounding would depend on the node's cores");
  if (threads && cpu && threads[1] !== cpu[1]) problems.push(`--threads ${threads[1]} for a request of ${cpu[1]} CPUs`);
  const mapped = command.map((arg) =>
    rootPaths(arg, base, []).replace(/(--part \$\{?JOB_COMPLETION_INDEX\}?)\/\d+/, `$1/${PARTS}`),
  );
  if (!text.includes('/models/') || !text.includes('/shared/'))
    problems.push('its command no longer mentions /models/ and /shared/: update tools/slurm_test.ts');
  return { command: mapped, parts, problems, threads: threads ? Number(threads[1]) : 0 };
}

/** 30 distinct images, PNG and JPEG, smaller and larger than the model's 336 px (so resized both ways), one of them undecodable. */
async function makeImages(dir: string): Promise<string[]> {
  fs.mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  for (let i = 0; i < IMAGES; i++) {
    if (i === BAD_INDEX) {
      const bad = path.join(dir, `img-${String(i).padStart(3, '0')}.jpg`);
      fs.writeFileSync(bad, 'not an image: this input is recorded as a failure\n');
      files.push(bad);
      continue;
    }
    const [w, h] = [40 + ((i * 53) % 420), 30 + ((i * 37) % 380)];
    const pixels = Buffer.alloc(w * h * 3);
    for (let j = 0; j < pixels.length; j++) pixels[j] = (j * (31 + i) + ((j / (3 * w)) | 0) * (5 + i) + i * 57) & 255;
    const image = sharp(pixels, { raw: { width: w, height: h, channels: 3 } });
    const file = path.join(dir, `img-${String(i).padStart(3, '0')}.${i % 3 === 2 ? 'jpg' : 'png'}`);
    await (i % 3 === 2 ? image.jpeg({ quality: 90 }) : image.png()).toFile(file);
    files.push(file);
  }
  return files;
}

/** Every stored `images.*` tensor of every safetensors file under `dir` (parts included): key -> dtype, shape, sha256 of its bytes. */
function storedTensors(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.safetensors')) {
        const file = SafetensorsFile.open(p);
        try {
          for (const key of file.keys()) {
            if (!key.startsWith('images.')) continue;
            if (out.has(key)) throw new Error(`${key} is stored twice under ${dir}`);
            const { dtype, shape } = file.info(key);
            out.set(
              key,
              `${dtype} [${shape.join(',')}] ${createHash('sha256').update(file.readBytes(key)).digest('hex')}`,
            );
          }
        } finally {
          file.close();
        }
      }
    }
  };
  walk(dir);
  return out;
}

/** Differences between two dataset folders read as datasets, then tensor by tensor on disk; [] when equal. */
function datasetDifferences(expected: string, actual: string): string[] {
  const diffs: string[] = [];
  const a = openEncodedDataset(expected);
  const b = openEncodedDataset(actual);
  try {
    if (a.length !== b.length) diffs.push(`length ${b.length}, expected ${a.length}`);
    if (b.missing.length) diffs.push(`missing images ${b.missing.slice(0, 10).join(', ')}`);
    if (a.encodedCount !== b.encodedCount) diffs.push(`encodedCount ${b.encodedCount}, expected ${a.encodedCount}`);
    if (JSON.stringify(a.failures) !== JSON.stringify(b.failures))
      diffs.push(`failures ${JSON.stringify(b.failures)}, expected ${JSON.stringify(a.failures)}`);
    for (let i = 0; i < Math.min(a.length, b.length) && diffs.length < 10; i++) {
      if (a.has(i) !== b.has(i)) diffs.push(`image ${i}: stored ${b.has(i)}, expected ${a.has(i)}`);
      if (!a.has(i) || !b.has(i)) continue;
      const x = a.read(i);
      const y = b.read(i);
      if (x.source !== y.source || x.imageSize.join() !== y.imageSize.join())
        diffs.push(`image ${i}: ${y.source} ${y.imageSize.join('x')}, expected ${x.source} ${x.imageSize.join('x')}`);
      for (const name of new Set([...Object.keys(x.tensors), ...Object.keys(y.tensors)])) {
        const [s, t] = [x.tensors[name], y.tensors[name]];
        if (!s || !t) diffs.push(`image ${i}: tensor ${name} only in ${s ? 'the plain run' : 'the parts'}`);
        else if (s.dtype !== t.dtype || s.shape.join() !== t.shape.join())
          diffs.push(
            `image ${i}.${name}: ${t.dtype} [${t.shape.join(',')}], expected ${s.dtype} [${s.shape.join(',')}]`,
          );
        else if (
          !Buffer.from(s.data.buffer, s.data.byteOffset, s.data.byteLength).equals(
            Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength),
          )
        )
          diffs.push(`image ${i}.${name}: values differ`);
      }
    }
  } finally {
    a.close();
    b.close();
  }
  const [x, y] = [storedTensors(expected), storedTensors(actual)];
  for (const key of new Set([...x.keys(), ...y.keys()])) {
    if (x.get(key) !== y.get(key)) diffs.push(`${key}: ${y.get(key) ?? 'absent'}, expected ${x.get(key) ?? 'absent'}`);
    if (diffs.length >= 20) break;
  }
  if (x.size === 0) diffs.push(`the plain run stored no tensors`);
  return diffs;
}

/** Files under `dir` (relative path -> sha256), to see that a retry changes nothing. */
function fileHashes(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((p, q) => p.name.localeCompare(q.name))) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

/** A one-node Slurm cluster with its own munged, in `dir`. */
class Cluster {
  readonly conf: string;
  readonly env: NodeJS.ProcessEnv;
  private readonly socket: string;
  private started = false;

  /** `dir`: the cluster's files; `scope`: the folder (above `dir`) its jobs run in, searched for leftovers at the end. */
  constructor(
    readonly dir: string,
    readonly node: string,
    private readonly scope: string,
  ) {
    this.conf = path.join(dir, 'slurm.conf');
    this.socket = path.join(dir, 'munge', 'munge.socket');
    this.env = userEnv({ SLURM_CONF: this.conf });
  }

  async start(memoryMB: number): Promise<string> {
    const munge = path.join(this.dir, 'munge');
    for (const d of ['state', 'spool', 'log']) fs.mkdirSync(path.join(this.dir, d), { recursive: true });
    fs.mkdirSync(munge, { recursive: true });
    // munged checks its folders: the socket's (and those above) searchable by all, the key's writable by its owner only.
    for (const d of [this.dir, munge]) fs.chmodSync(d, 0o755);
    this.started = true;
    const key = await run('mungekey', ['--create', '--keyfile', path.join(munge, 'munge.key')]);
    if (key.status !== 0) return `mungekey: ${key.err}`;
    const munged = await run('munged', [
      `--socket=${this.socket}`,
      `--key-file=${path.join(munge, 'munge.key')}`,
      `--pid-file=${path.join(munge, 'munged.pid')}`,
      `--log-file=${path.join(munge, 'munged.log')}`,
      `--seed-file=${path.join(munge, 'munged.seed')}`,
    ]);
    if (munged.status !== 0) return `munged: ${munged.err}${this.log(path.join(munge, 'munged.log'))}`;
    const ctldPort = await freePort();
    let slurmdPort = await freePort();
    while (slurmdPort === ctldPort) slurmdPort = await freePort();
    const d = this.dir;
    fs.writeFileSync(
      this.conf,
      [
        'ClusterName=llava-test',
        `SlurmctldHost=${this.node}(127.0.0.1)`,
        `SlurmctldPort=${ctldPort}`,
        `SlurmdPort=${slurmdPort}`,
        'AuthType=auth/munge',
        'CredType=cred/munge',
        `AuthInfo=socket=${this.socket}`,
        'SlurmUser=root',
        'SlurmdUser=root',
        `StateSaveLocation=${d}/state`,
        `SlurmdSpoolDir=${d}/spool`,
        `SlurmctldPidFile=${d}/slurmctld.pid`,
        `SlurmdPidFile=${d}/slurmd.pid`,
        `SlurmctldLogFile=${d}/log/slurmctld.log`,
        `SlurmdLogFile=${d}/log/slurmd.log`,
        // No cgroups: processes tracked through /proc, no CPU binding, no accounting daemon.
        'ProctrackType=proctrack/linuxproc',
        'TaskPlugin=task/none',
        'JobAcctGatherType=jobacct_gather/none',
        'AccountingStorageType=accounting_storage/none',
        'SchedulerType=sched/backfill',
        'SelectType=select/cons_tres',
        'SelectTypeParameters=CR_Core_Memory',
        // The node is what this file says (CPUs, memory), whatever the machine has: the same test everywhere.
        'SlurmdParameters=config_overrides',
        'ReturnToService=2',
        'MpiDefault=none',
        `NodeName=${this.node} NodeAddr=127.0.0.1 CPUs=${NODE_CPUS} RealMemory=${memoryMB} State=UNKNOWN`,
        `PartitionName=test Nodes=${this.node} Default=YES MaxTime=INFINITE State=UP`,
        '',
      ].join('\n'),
    );
    const ctld = await run('slurmctld', ['-f', this.conf], { env: this.env });
    if (ctld.status !== 0) return `slurmctld: ${ctld.err}${this.log(path.join(d, 'log', 'slurmctld.log'))}`;
    const slurmd = await run('slurmd', ['-f', this.conf, '-N', this.node], { env: this.env });
    if (slurmd.status !== 0) return `slurmd: ${slurmd.err}${this.log(path.join(d, 'log', 'slurmd.log'))}`;
    for (let t = 0; t < 60; t++) {
      const state = await run('sinfo', ['-h', '-N', '-o', '%T %c %m'], { env: this.env });
      if (state.status === 0 && /^idle\b/.test(state.out.trim())) return '';
      await sleep(500);
    }
    return `the node never became idle: ${(await run('sinfo', ['-N', '-l'], { env: this.env })).out}${this.logs()}`;
  }

  log(file: string, lines = 15): string {
    if (!fs.existsSync(file)) return '';
    return `\n--- ${path.basename(file)}\n${fs.readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n')}`;
  }

  logs(): string {
    return this.log(path.join(this.dir, 'log', 'slurmctld.log')) + this.log(path.join(this.dir, 'log', 'slurmd.log'));
  }

  /**
   * Stops every daemon this cluster started (slurmctld, slurmd and munged, known by their pid files);
   * returns those still running then (killed), or undefined when nothing was started.
   */
  async stop(): Promise<string[] | undefined> {
    if (!this.started) return undefined;
    this.started = false;
    const pids = (files: string[]) =>
      files.map((f) => readPid(path.join(this.dir, f))).filter((p): p is number => p !== undefined);
    const slurm = pids(['slurmctld.pid', 'slurmd.pid']);
    if (slurm.length) {
      // Jobs first, while slurmd is there to end their steps.
      await run('scancel', ['--full', `--user=${os.userInfo().username}`], { env: this.env, timeoutMs: 10_000 });
      for (let t = 0; t < 60; t++) {
        const queue = await run('squeue', ['-h'], { env: this.env, timeoutMs: 10_000 });
        if (queue.status !== 0 || queue.out.trim() === '') break;
        await sleep(250);
      }
      await run('scontrol', ['shutdown'], { env: this.env, timeoutMs: 10_000 });
    }
    const munged = pids(['munge/munged.pid']);
    const all = [...slurm, ...munged];
    for (let t = 0; t < 40 && slurm.some(pidAlive); t++) await sleep(250);
    if (munged.length) await run('munged', [`--socket=${this.socket}`, '--stop'], { timeoutMs: 10_000 });
    for (let t = 0; t < 40 && all.some(pidAlive); t++) await sleep(250);
    // What outlived its daemon (a slurmstepd whose slurmd went first, a job's processes): found by
    // working folder, since none of them names this cluster.
    const left = [...new Set([...all.filter(pidAlive), ...processesIn(this.scope)])];
    for (const pid of left) process.kill(pid, 'SIGKILL');
    return left.map(String);
  }
}

/** Processes (other than this one) whose working folder is in `dir`, deleted or not. */
function processesIn(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const cwd = fs.readlinkSync(`/proc/${pid}/cwd`).replace(/ \(deleted\)$/, '');
      if (cwd === dir || cwd.startsWith(dir + path.sep)) pids.push(pid);
    } catch {
      // gone meanwhile, or a kernel thread
    }
  }
  return pids;
}

interface TaskState {
  task: number;
  state: string;
  exit: string;
}

/** The array's tasks, from `scontrol show job` (completed jobs stay there for MinJobAge, 300 s); a pending range is one line. */
async function taskStates(cluster: Cluster, jobId: string): Promise<TaskState[]> {
  const r = await run('scontrol', ['show', 'job', '-o', jobId], { env: cluster.env });
  return r.out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => ({
      task: Number(/\bArrayTaskId=(\S+)/.exec(line)?.[1] ?? NaN),
      state: /\bJobState=(\S+)/.exec(line)?.[1] ?? '?',
      exit: /\bExitCode=(\S+)/.exec(line)?.[1] ?? '?',
    }))
    .sort((a, b) => a.task - b.task);
}

const ENDED = new Set([
  'COMPLETED',
  'FAILED',
  'CANCELLED',
  'TIMEOUT',
  'NODE_FAIL',
  'OUT_OF_MEMORY',
  'BOOT_FAIL',
  'DEADLINE',
  'PREEMPTED',
]);

/** What each part's task must end as: the part holding the undecodable image fails with exit 1 (docs: failures are final). */
const expectedTask = (k: number): TaskState =>
  k === BAD_INDEX % PARTS ? { task: k, state: 'FAILED', exit: '1:0' } : { task: k, state: 'COMPLETED', exit: '0:0' };

/**
 * `sbatch encode.sh` in `app`, then waits for every array task to end (polling scontrol: `sbatch
 * --wait` polls with growing sleeps, up to half a minute late).
 */
async function submit(
  cluster: Cluster,
  app: string,
  script: string,
): Promise<{ jobId: string; tasks: TaskState[]; detail: string }> {
  const r = await run('sbatch', [script], { cwd: app, env: cluster.env, timeoutMs: 60_000 });
  const jobId = /^Submitted batch job (\d+)$/m.exec(r.out)?.[1];
  if (!jobId) return { jobId: '', tasks: [], detail: `sbatch: exit ${r.status} ${r.out}${r.err}${cluster.logs()}` };
  let tasks: TaskState[] = [];
  for (const deadline = Date.now() + 8 * 60_000; Date.now() < deadline; await sleep(500)) {
    tasks = await taskStates(cluster, jobId);
    if (tasks.length === PARTS && tasks.every((t) => Number.isInteger(t.task) && ENDED.has(t.state))) break;
  }
  const outputs = fs
    .readdirSync(app)
    .filter((f) => f.startsWith(`slurm-${jobId}_`))
    .sort()
    .map((f) => `--- ${f}\n${fs.readFileSync(path.join(app, f), 'utf8').trim()}`)
    .join('\n');
  return { jobId, tasks, detail: `tasks ${JSON.stringify(tasks)}\n${outputs}` };
}

async function main(): Promise<number | string> {
  const keep = process.argv.includes('--keep');
  const missing = COMMANDS.filter((d) => !onPath(d));
  if (missing.length) {
    return `${missing.join(', ')} not installed (Debian: apt-get install slurm-wlm munge; .ci/run installs them)`;
  }
  if (process.getuid?.() !== 0) {
    return 'needs root (slurmd starts the jobs; the test cluster runs them as root)';
  }
  const markdown = fs.readFileSync(path.join(ROOT, DOCS.file), 'utf8');
  const snippets = readmeSnippets(markdown, DOCS);
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-slurm-test-'));
  fs.chmodSync(base, 0o755); // munged wants every folder above its socket searchable by all
  const cluster = new Cluster(path.join(base, 'cluster'), os.hostname().split('.')[0], base);
  const stop = async (signal: NodeJS.Signals) => {
    console.log(`slurm: ${signal}: stopping the test cluster`);
    await cluster.stop();
    fs.rmSync(base, { recursive: true, force: true });
    process.exit(1);
  };
  process.once('SIGINT', (s) => void stop(s));
  process.once('SIGTERM', (s) => void stop(s));
  try {
    // --- the recipes, as printed, mapped onto this machine
    const slurm = slurmRecipe(snippetNamed(snippets, 'slurm-array', DOCS).code, base);
    check(
      `recipe: the Slurm script's tasks 0..${slurm.parts - 1} are the parts 0..${slurm.parts - 1} of --part K/${slurm.parts}`,
      slurm.problems.length === 0,
      slurm.problems.join('\n'),
    );
    const k8s = k8sRecipe(snippetNamed(snippets, 'k8s-indexed-job', DOCS).code, base);
    check(
      `recipe: the Indexed Job's indices 0..${k8s.parts - 1} are the parts 0..${k8s.parts - 1} of --part K/${k8s.parts}; --threads is its CPU request`,
      k8s.problems.length === 0,
      k8s.problems.join('\n'),
    );
    if (slurm.problems.length || k8s.problems.length) return 1;
    // The thread count sets the order of the sums, so the outputs' rounding: one count for every run compared.
    if (
      !check(
        `recipe: both run on the same thread count (${slurm.threads}), as the plain run will`,
        slurm.threads === k8s.threads,
        `Slurm ${slurm.threads}, Kubernetes ${k8s.threads}`,
      )
    )
      return 1;

    // --- the models at the recipes' paths, the images and their list, an app with the package installed
    const demo = path.join(ROOT, 'weights', 'demo');
    const models = path.join(base, 'models');
    fs.cpSync(demo, path.join(models, 'llava-v1.5-7b'), {
      recursive: true,
      filter: (src) => !src.startsWith(path.join(demo, 'images')),
    });
    fs.cpSync(path.join(demo, 'clip_tower'), path.join(models, 'clip-vit-large-patch14-336'), { recursive: true });
    const shared = path.join(base, 'shared');
    const images = await makeImages(path.join(shared, 'coco', 'images'));
    fs.writeFileSync(path.join(shared, 'coco', 'images.txt'), images.join('\n') + '\n');
    const app = path.join(base, 'app');
    fs.mkdirSync(path.join(app, 'node_modules', '.bin'), { recursive: true });
    fs.writeFileSync(
      path.join(app, 'package.json'),
      JSON.stringify({ name: 'cluster-app', version: '1.0.0', private: true }),
    );
    fs.symlinkSync(ROOT, path.join(app, 'node_modules', 'llava-vision-tfjs'), 'dir');
    const bins = (
      JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> }
    ).bin;
    for (const [name, file] of Object.entries(bins))
      fs.symlinkSync(path.join(ROOT, file), path.join(app, 'node_modules', '.bin', name));
    const script = path.join(app, 'encode.sh');
    fs.writeFileSync(script, slurm.script, { mode: 0o755 });
    const tokens = path.join(shared, 'coco.tokens');

    // --- the reference: one plain run of the same command, no --part
    const cli = path.join(app, 'node_modules', '.bin', 'llava-vision');
    const plain = path.join(base, 'plain.tokens');
    const reference = await run(
      cli,
      [
        'encode',
        '--model',
        path.join(models, 'llava-v1.5-7b'),
        '--vision-tower',
        path.join(models, 'clip-vit-large-patch14-336'),
        '--inputs',
        path.join(shared, 'coco', 'images.txt'),
        '--dtype',
        'F16',
        '--threads',
        String(slurm.threads),
        '--out-dir',
        plain,
      ],
      { cwd: app, env: userEnv({}) },
    );
    const plainOk = reference.status === 1 && reference.err.includes(`1 of ${IMAGES} image(s) failed`);
    check(
      `plain run: ${IMAGES - 1} images encoded, the undecodable one recorded (exit 1)`,
      plainOk,
      `exit ${reference.status}\n${reference.err}`,
    );
    if (!plainOk) return 1;

    // --- the cluster
    const memory = /--mem=(\d+)G\b/.exec(slurm.script);
    const problem = await cluster.start(Math.max(16384, memory ? Number(memory[1]) * 1024 : 0));
    if (
      !check(
        `cluster: munged, slurmctld and slurmd up on localhost, node ${cluster.node} idle (CPUs=${NODE_CPUS})`,
        problem === '',
        problem,
      )
    )
      return 1;

    // --- sbatch encode.sh, as the docs say, from the app folder
    const first = await submit(cluster, app, 'encode.sh');
    const want = Array.from({ length: PARTS }, (_, k) => expectedTask(k));
    check(
      `sbatch encode.sh: ${PARTS} array tasks, part ${BAD_INDEX % PARTS} FAILED (exit 1: its undecodable image), the others COMPLETED`,
      JSON.stringify(first.tasks) === JSON.stringify(want),
      first.detail,
    );
    const parts = fs.existsSync(tokens) ? fs.readdirSync(tokens).sort() : [];
    const wantParts = Array.from({ length: PARTS }, (_, k) => `part-${k}-of-${PARTS}`);
    check(
      `sbatch encode.sh: ${wantParts.join(', ')} in the out dir`,
      JSON.stringify(parts) === JSON.stringify(wantParts),
      `found ${parts.join(', ')}`,
    );
    let diffs = parts.length ? datasetDifferences(plain, tokens) : ['no parts'];
    check(
      `sbatch encode.sh: the joined dataset equals the plain run (openEncodedDataset, and every stored tensor byte for byte)`,
      diffs.length === 0,
      diffs.join('\n'),
    );

    // --- a retry of every part resumes: nothing encoded again, no file changed
    const before = fileHashes(tokens);
    const again = await submit(cluster, app, 'encode.sh');
    const resumed =
      again.tasks.length === PARTS &&
      fs
        .readdirSync(app)
        .filter((f) => f.startsWith(`slurm-${again.jobId}_`))
        .every((f) => /encoded 0 image\(s\)/.test(fs.readFileSync(path.join(app, f), 'utf8')));
    const unchanged = JSON.stringify(fileHashes(tokens)) === JSON.stringify(before);
    check(
      `sbatch encode.sh again: every part resumes, encodes nothing, changes no file, and ends as before`,
      resumed && unchanged && JSON.stringify(again.tasks) === JSON.stringify(want),
      `${unchanged ? '' : 'files changed\n'}${again.detail}`,
    );

    // --- the Indexed Job's command, as the kubelet runs it: once per index, llava-vision on PATH
    const k8sOut = path.join(base, 'k8s');
    const volumes = (arg: string) => arg.split(tokens).join(k8sOut);
    const exits: string[] = [];
    let k8sLog = '';
    for (let index = 0; index < PARTS; index++) {
      const env = userEnv({
        JOB_COMPLETION_INDEX: String(index),
        PATH: `${path.join(app, 'node_modules', '.bin')}:${userEnv({}).PATH ?? ''}`,
      });
      const r = await run(k8s.command[0], k8s.command.slice(1).map(volumes), { cwd: base, env });
      exits.push(`${index}:${r.status}`);
      k8sLog += `--- index ${index}: exit ${r.status}\n${r.err.trim()}\n`;
    }
    const wantExits = Array.from({ length: PARTS }, (_, k) => `${k}:${k === BAD_INDEX % PARTS ? 1 : 0}`);
    check(
      `Indexed Job command for JOB_COMPLETION_INDEX 0..${PARTS - 1}: exits ${wantExits.join(' ')}`,
      exits.join(' ') === wantExits.join(' '),
      `exits ${exits.join(' ')}\n${k8sLog}`,
    );
    diffs = fs.existsSync(k8sOut) ? datasetDifferences(plain, k8sOut) : ['no output folder'];
    check(
      `Indexed Job command: the joined dataset equals the plain run, byte for byte`,
      diffs.length === 0,
      diffs.join('\n'),
    );
  } finally {
    const left = await cluster.stop();
    if (left)
      check(
        'cluster stopped: slurmctld, slurmd and munged gone',
        left.length === 0,
        `still running (killed): ${left.join(', ')}`,
      );
    if (keep) console.log(`kept ${base}`);
    else fs.rmSync(base, { recursive: true, force: true });
  }
  return checks.failed ? 1 : 0;
}

const t0 = Date.now();
main().then(
  (code) => {
    if (typeof code === 'string') return console.log(`slurm: skipped: ${code}`);
    console.log(`slurm: ${checks.passed} passed, ${checks.failed} failed (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
    process.exitCode = code || (checks.failed ? 1 : 0);
  },
  (e: Error) => {
    console.log(`slurm: ${checks.passed} passed, ${checks.failed + 1} failed: ${e.stack ?? e.message}`);
    process.exitCode = 1;
  },
);
