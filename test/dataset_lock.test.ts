/**
 * One writer per dataset folder (issue 20): the lock across processes and across hosts of a shared
 * filesystem, its stale rule and race-free take-over, a run that lost its lock, the repair of a folder
 * two runs wrote at once; and Ctrl-C / SIGTERM during `encode --out` and `--out-dir`, which must leave
 * no temp file (nor lock) behind. The compiled CLI and library run from dist/ (built by `npm test`).
 */
import { ChildProcess, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { LlavaVision } from '../src/api/llava_vision';
import { openEncodedDataset } from '../src/dataset/reader';
import { writeEncodedDataset } from '../src/dataset/writer';
import { processStartTime, thisHost } from '../src/io/host';
import { SafetensorsFile } from '../src/io/safetensors';
import { folderHashes, makeImages } from './helpers/dataset';
import { isolatedTempDir } from './helpers/isolation';
import { runCli } from './helpers/cli';

const ROOT = path.join(__dirname, '..');
const BIN = path.join(ROOT, 'bin', 'llava-vision.js');
const HOLDER = path.join(__dirname, 'helpers', 'lock_holder.js');
const DEMO = path.join(ROOT, 'weights', 'demo');
const tempDir = isolatedTempDir('llava-dataset-lock-');
const DEAD_PID = 2 ** 22 + 12345; // above Linux's largest pid_max: no such process
/** io/folder_lock.ts's LOCK_LEASE_MS, as the docs state it. */
const LOCK_LEASE_MS = 120_000;

let model: LlavaVision;
let images: string[];
beforeAll(async () => {
  model = await LlavaVision.load(DEMO, { log: null });
  images = await makeImages(path.join(tempDir(), 'images'), 12);
}, 60_000);
afterAll(() => model.dispose());

const lockFiles = (dir: string) => fs.readdirSync(dir).filter((f) => /^\.llava-vision-lock-\d+$/.test(f));
const tempFiles = (dir: string) =>
  fs.readdirSync(dir).filter((f) => f.includes('.llava-vision-tmp-') || /\.tmp-\d+-/.test(f));
const ago = (file: string, ms: number) => {
  const t = new Date(Date.now() - ms);
  fs.utimesSync(file, t, t);
};
/** A lock file as another run would have left it. */
function plantLock(dir: string, record: Record<string, unknown>, generation = 1): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `.llava-vision-lock-${generation}`);
  fs.writeFileSync(
    file,
    JSON.stringify({
      token: 'theirs',
      since: '2024-01-01T00:00:00.000Z',
      purpose: 'llava-vision encode',
      start_time: null,
      ...record,
    }) + '\n',
  );
  return file;
}
const otherHost = { host: 'node-b', boot_id: 'another-boot', pid_ns: 'pid:[4026531836]', pid: 4242 };
const thisHostDead = () => ({
  host: thisHost().hostname,
  boot_id: thisHost().bootId,
  pid_ns: thisHost().pidNamespace,
  pid: DEAD_PID,
});

describe('one writer per dataset folder', () => {
  test('two runs of the compiled CLI on one folder: the second is refused at once, in one line naming the first; the first completes a whole dataset', async () => {
    const dir = path.join(tempDir(), 'two-runs');
    const args = ['encode', ...images, '--shard-size', '2', '--quiet', '--out-dir', dir];
    const first = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let firstErr = '';
    first.stderr.on('data', (d) => (firstErr += d));
    const firstDone = new Promise<number | null>((resolve) => first.on('close', resolve));
    while (!(fs.existsSync(dir) && lockFiles(dir).length) && first.exitCode === null)
      await new Promise((r) => setTimeout(r, 5));
    const t0 = Date.now();
    const second = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
    const secondMs = Date.now() - t0;
    expect(second.status).toBe(1);
    expect(second.stderr.trim().split('\n')).toHaveLength(1);
    expect(second.stderr).toMatch(
      new RegExp(
        `^llava-vision: ${dir} is being written by an encode into this dataset folder \\(pid ${first.pid} on host ${thisHost().hostname}, since [-\\d:.TZ]+; running on this host\\): one writer per folder`,
      ),
    );
    expect(secondMs).toBeLessThan(20_000); // refused before loading any model, not after encoding
    expect(await firstDone).toBe(0);
    expect(firstErr).toBe('');
    const lines = fs
      .readFileSync(path.join(dir, 'manifest.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { index: number }).index);
    expect(lines).toEqual(images.map((_, i) => i));
    const ds = openEncodedDataset(dir);
    expect(ds.encodedCount).toBe(12);
    ds.close();
    expect(lockFiles(dir)).toEqual([]);
  }, 120_000);

  test('refused before the model is loaded: a held folder is named, the model never reached', async () => {
    const dir = path.join(tempDir(), 'held-cli');
    fs.mkdirSync(dir);
    const holder = spawn(process.execPath, [HOLDER, dir, '30000'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
    try {
      const r = await runCli(['encode', '--model', '/nonexistent-model', images[0], '--out-dir', dir]);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(
        /is being written by a test holder \(pid \d+ on host .*running on this host\): one writer per folder, so this run stops here; it is free again when that process ends \(lock file \.llava-vision-lock-1\)/,
      );
      expect(r.err).not.toMatch(/nonexistent-model/);
      expect(r.err.trim().split('\n')).toHaveLength(1);
    } finally {
      holder.kill('SIGTERM');
      await new Promise((resolve) => holder.on('close', resolve));
    }
    expect(lockFiles(dir)).toEqual([]); // SIGTERM released it
  }, 60_000);

  test('two API writes at once in one process: the second is refused, the first completes', async () => {
    const dir = path.join(tempDir(), 'two-api');
    const a = writeEncodedDataset(model, images, dir, { outputs: ['features'], shardSize: 4 });
    await new Promise((r) => setTimeout(r, 0));
    await expect(
      writeEncodedDataset(model, images, dir, { outputs: ['features'], shardSize: 4 }),
    ).rejects.toMatchObject({ name: 'FolderLockedError' });
    await expect(a).resolves.toMatchObject({ encoded: 12, shards: 3 });
  });

  test('a lock left by a dead process of this host is taken over at once; one of a live process is not', async () => {
    const dir = path.join(tempDir(), 'dead-local');
    plantLock(dir, thisHostDead());
    await expect(writeEncodedDataset(model, images.slice(0, 2), dir, { outputs: ['features'] })).resolves.toMatchObject(
      { encoded: 2 },
    );
    expect(lockFiles(dir)).toEqual([]);

    const live = path.join(tempDir(), 'live-local');
    plantLock(live, { ...thisHostDead(), pid: process.ppid, start_time: processStartTime(process.ppid) });
    await expect(writeEncodedDataset(model, images.slice(0, 2), live, { outputs: ['features'] })).rejects.toThrow(
      new RegExp(`pid ${process.ppid} on host .*running on this host`),
    );
    // The same pid, started at another time: a reused pid, not the holder.
    plantLock(live, { ...thisHostDead(), pid: process.ppid, start_time: '1' });
    await expect(
      writeEncodedDataset(model, images.slice(0, 2), live, { outputs: ['features'] }),
    ).resolves.toMatchObject({ encoded: 2 });
  });

  test('a lock of another host: refused while its heartbeat is fresh, naming that host; taken over once the heartbeat is older than the lease', async () => {
    const dir = path.join(tempDir(), 'other-host');
    const file = plantLock(dir, otherHost);
    const refused = writeEncodedDataset(model, images.slice(0, 2), dir, { outputs: ['features'] });
    await expect(refused).rejects.toMatchObject({ name: 'FolderLockedError' });
    await expect(refused).rejects.toThrow(
      /is being written by llava-vision encode \(pid 4242 on host node-b, since 2024-01-01T00:00:00\.000Z; heartbeat \d+ s ago\): .*if that run is dead \(its host crashed\), the lock is taken over once its heartbeat is 120 s old/,
    );
    ago(file, LOCK_LEASE_MS - 30_000);
    await expect(writeEncodedDataset(model, images.slice(0, 2), dir, { outputs: ['features'] })).rejects.toThrow(
      /heartbeat 90 s ago/,
    );
    ago(file, LOCK_LEASE_MS + 1000);
    await expect(writeEncodedDataset(model, images.slice(0, 2), dir, { outputs: ['features'] })).resolves.toMatchObject(
      { encoded: 2 },
    );
    expect(lockFiles(dir)).toEqual([]);
  });

  test('the take-over is race-free: of 6 processes taking over one stale lock at once, exactly one gets it', async () => {
    const dir = path.join(tempDir(), 'race');
    plantLock(dir, thisHostDead(), 7);
    const children = Array.from({ length: 6 }, () =>
      spawn(process.execPath, [HOLDER, dir, '4000'], { stdio: ['ignore', 'pipe', 'inherit'] }),
    );
    const said = await Promise.all(
      children.map(
        (c) =>
          new Promise<string>((resolve) => {
            let out = '';
            c.stdout.on('data', (d) => (out += d));
            c.on('close', () => resolve(out.trim()));
          }),
      ),
    );
    expect(said.filter((s) => s === 'held')).toHaveLength(1);
    for (const s of said.filter((x) => x !== 'held'))
      expect(s).toMatch(/^refused FolderLockedError: .* is being written by a test holder \(pid \d+/);
    expect(lockFiles(dir)).toEqual([]);
  }, 60_000);

  test('the heartbeat: the holder keeps its lock file fresh from a worker thread, even while its main thread is busy; release removes it', async () => {
    const dir = path.join(tempDir(), 'heartbeat');
    fs.mkdirSync(dir);
    // The holder beats every 50 ms here (10 s in real runs) and blocks its main thread for 3 s.
    const holder = spawn(process.execPath, [HOLDER, dir, '3000', '50', 'busy'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
    const file = path.join(dir, '.llava-vision-lock-1');
    ago(file, 3_600_000);
    const deadline = Date.now() + 2500;
    while (Date.now() - fs.statSync(file).mtimeMs > 60_000 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    expect(Date.now() - fs.statSync(file).mtimeMs).toBeLessThan(60_000);
    await new Promise((resolve) => holder.on('close', resolve));
    expect(lockFiles(dir)).toEqual([]);
  });

  test('a run that lost its lock (suspended past the lease and taken over) stops before writing its next shard', async () => {
    const dir = path.join(tempDir(), 'lost');
    let taken = false;
    const run = writeEncodedDataset(model, images.slice(0, 3), dir, {
      outputs: ['features'],
      shardSize: 1,
      onProgress: () => {
        if (taken) return;
        taken = true;
        plantLock(dir, otherHost, 2); // another host judged our heartbeat stale and took generation 2
      },
    });
    await expect(run).rejects.toThrow(
      /this run lost its writer lock \(taken over by pid 4242 on host node-b .*\); stopping without writing more/,
    );
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('shard-'))).toEqual([]);
    expect(lockFiles(dir)).toEqual(['.llava-vision-lock-2']); // the new holder's, untouched
  });

  test('a folder two runs wrote at once (before the lock): resumed, each image keeps its first copy; no message asks to delete a shard', async () => {
    const ref = path.join(tempDir(), 'dup-ref');
    await writeEncodedDataset(model, images.slice(0, 6), ref, { outputs: ['features'], shardSize: 2 });
    const manifest = (dir: string) => path.join(dir, 'manifest.jsonl');

    // Both runs wrote the same shards (the second rename replaced the first, same bytes) and appended the same lines.
    const doubled = path.join(tempDir(), 'dup-lines');
    fs.cpSync(ref, doubled, { recursive: true });
    fs.appendFileSync(manifest(doubled), fs.readFileSync(manifest(ref)));
    expect(() => openEncodedDataset(doubled)).toThrow(
      /image 0 is listed twice in manifest\.jsonl \(run the encode command that made it again: it rebuilds the manifest from the shards\)/,
    );
    await expect(
      writeEncodedDataset(model, images.slice(0, 6), doubled, { outputs: ['features'], shardSize: 2 }),
    ).resolves.toMatchObject({ skipped: 6, encoded: 0 });
    expect(folderHashes(doubled)).toEqual(folderHashes(ref));

    // A second run that started later wrote shard 3 with images the first run put in shard 1.
    const twice = path.join(tempDir(), 'dup-shards');
    fs.cpSync(ref, twice, { recursive: true });
    const st = SafetensorsFile.open(path.join(twice, 'shard-00001.safetensors'));
    const metadata = { ...st.metadata, entries: st.metadata.entries.replace(/shard-00001/g, 'shard-00003') };
    const tensors = Object.fromEntries(st.keys().map((k) => [k, { ...st.info(k), data: st.readBytes(k) }]));
    st.close();
    const { writeSafetensors } = await import('../src/io/safetensors');
    writeSafetensors(path.join(twice, 'shard-00003.safetensors'), tensors, metadata);
    fs.appendFileSync(
      manifest(twice),
      (JSON.parse(metadata.entries) as unknown[]).map((e) => JSON.stringify(e) + '\n').join(''),
    );
    let message = '';
    try {
      openEncodedDataset(twice);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/image 2 is listed twice/);
    expect(message).not.toMatch(/delete/);
    await expect(
      writeEncodedDataset(model, images.slice(0, 6), twice, { outputs: ['features'], shardSize: 2 }),
    ).resolves.toMatchObject({ skipped: 6, encoded: 0 });
    expect(fs.readFileSync(manifest(twice), 'utf8')).toBe(fs.readFileSync(manifest(ref), 'utf8'));
    const ds = openEncodedDataset(twice);
    expect(ds.encodedCount).toBe(6);
    ds.close();
  });
});

describe('interrupts leave no temp file (nor lock) behind', () => {
  /** Runs the compiled CLI and sends `signal` the moment a temp file appears in `dir`. */
  async function interruptMidWrite(
    args: string[],
    dir: string,
    signal: NodeJS.Signals,
  ): Promise<{ code: number | null; signal: string | null; sawTemp: boolean; err: string }> {
    fs.mkdirSync(dir, { recursive: true });
    const child: ChildProcess = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const closed = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
      child.on('close', (code, sig) => resolve({ code, signal: sig })),
    );
    let sawTemp = false;
    const hit = (name: string | null) => {
      // This version's temp names, or earlier ones; not the lock's (made from a temp file too), which comes first.
      if (sawTemp || !name || !/\.llava-vision-tmp-|\.tmp-\d/.test(name) || /(^|\/)\.llava-vision-lock-/.test(name))
        return;
      sawTemp = true;
      child.kill(signal);
    };
    const watcher = fs.watch(dir, { recursive: true }, (_event, name) => hit(name));
    const poll = setInterval(() => {
      for (const f of fs.readdirSync(dir, { recursive: true }) as string[]) hit(f);
    }, 2);
    const result = await closed;
    watcher.close();
    clearInterval(poll);
    return { ...result, sawTemp, err };
  }

  const ended = (r: { code: number | null; signal: string | null }, signal: string) =>
    r.signal === signal || r.code === 128 + (signal === 'SIGINT' ? 2 : 15);
  const allFiles = (dir: string) => fs.readdirSync(dir, { recursive: true }) as string[];

  test.each(['SIGINT', 'SIGTERM'] as const)(
    '%s during the write of encode --out: the process ends by that signal, no temp file is left',
    async (signal) => {
      const dir = path.join(tempDir(), `out-${signal}`);
      const out = path.join(dir, 'hidden.safetensors');
      const many = Array.from({ length: 60 }, (_, i) => images[i % images.length]);
      const r = await interruptMidWrite(
        ['encode', ...many, '--save', 'hidden_states', '--quiet', '--out', out],
        dir,
        signal,
      );
      expect(r.sawTemp).toBe(true);
      expect(ended(r, signal)).toBe(true);
      expect(allFiles(dir).filter((f) => f.includes('tmp'))).toEqual([]);
      // The write was let finish before the signal was acted on: the output is there, whole.
      if (fs.existsSync(out)) SafetensorsFile.open(out).close();
    },
    120_000,
  );

  test.each(['SIGINT', 'SIGTERM'] as const)(
    '%s during a shard write of encode --out-dir: no temp file, no lock left; the next run completes the dataset',
    async (signal) => {
      const dir = path.join(tempDir(), `outdir-${signal}`);
      const args = ['encode', ...images, '--save', 'hidden_states', '--shard-size', '4', '--quiet', '--out-dir', dir];
      const r = await interruptMidWrite(args, dir, signal);
      expect(r.sawTemp).toBe(true);
      expect(ended(r, signal)).toBe(true);
      expect(tempFiles(dir)).toEqual([]);
      expect(lockFiles(dir)).toEqual([]);
      const again = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
      expect(again.status).toBe(0);
      const ds = openEncodedDataset(dir);
      expect(ds.encodedCount).toBe(12);
      ds.close();
    },
    120_000,
  );

  test('a signal that arrives mid-write waits for the write: the file is renamed whole, then the process ends by that signal', () => {
    const dir = path.join(tempDir(), 'atomic-signal');
    fs.mkdirSync(dir);
    const target = path.join(dir, 'big.bin');
    const script = `
      const { writeFileAtomic } = require(${JSON.stringify(path.join(ROOT, 'dist', 'src', 'io', 'atomic.js'))});
      writeFileAtomic(${JSON.stringify(target)}, (fd) => {
        process.kill(process.pid, 'SIGTERM');
        const fs = require('fs');
        const chunk = Buffer.alloc(1 << 20, 7);
        for (let i = 0; i < 32; i++) fs.writeSync(fd, chunk);
      });
      setTimeout(() => process.exit(0), 5000);`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(r.signal).toBe('SIGTERM');
    expect(fs.readdirSync(dir)).toEqual(['big.bin']);
    expect(fs.statSync(target).size).toBe(32 << 20);
  });
});
