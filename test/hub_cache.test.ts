/**
 * Downloads that cannot corrupt the HF cache (issue 20), against the fake hub on 127.0.0.1: a resume
 * proves it continues the same file or starts over; a slow server, a deadline, the declared size and the
 * free space bound a download; one cache shared by processes and hosts, with huggingface_hub's `.locks/`.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CheckpointError, LlavaVisionError } from '../src/errors';
import { acquireLock } from '../src/io/cache_lock';
import { DownloadOptions, downloadModel } from '../src/io/hub';
import { CASES } from './helpers/golden';
import { COMMIT, FakeHub, gitBlobId, guardNetwork, sha256 } from './helpers/fake_hub';

const CLIP_DIR = path.join(CASES, 'tiny_clip_full_layout_f32', 'model');
const REPO = 'openai/clip-tiny';
const REPO_DIR = 'models--openai--clip-tiny';
const CONFIG = fs.readFileSync(path.join(CLIP_DIR, 'config.json'));
const WEIGHTS = fs.readFileSync(path.join(CLIP_DIR, 'model.safetensors'));
const ROOT = path.join(__dirname, '..');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-hub-cache-'));
let cacheCount = 0;
const newCache = () => path.join(tmp, `cache${cacheCount++}`);
const hubs: FakeHub[] = [];
async function startHub(): Promise<FakeHub> {
  const hub = await new FakeHub().addRepo(REPO, CLIP_DIR).start();
  hubs.push(hub);
  return hub;
}
const quick = (hub: FakeHub, extra: DownloadOptions = {}): DownloadOptions => ({
  endpoint: hub.endpoint,
  cacheDir: newCache(),
  token: null,
  retryDelayMs: 5,
  timeoutMs: 5000,
  log: null,
  ...extra,
});

/** Every file under a folder, relative, sorted. */
function listTree(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((f) => !fs.statSync(path.join(dir, f)).isDirectory())
    .sort();
}
/** What a download leaves besides blobs and snapshots: temp files of ours, lock files. */
function leftovers(cacheDir: string): string[] {
  return [
    ...listTree(path.join(cacheDir, REPO_DIR, 'blobs')).filter((f) => f.includes('.incomplete')),
    ...listTree(path.join(cacheDir, '.locks')),
  ];
}
/** A pid that is not running (a process that just ended). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((r) => child.on('exit', r));
  return child.pid!;
}
/** A lock file as another process of this library leaves it. */
function writeLock(cacheDir: string, blob: string, owner: Record<string, unknown>, ageMs = 0): string {
  const file = path.join(cacheDir, '.locks', REPO_DIR, `${blob}.lock`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(
    file,
    JSON.stringify({
      start_time: null,
      token: 'theirs',
      since: new Date().toISOString(),
      purpose: `downloading model.safetensors of ${REPO}`,
      ...owner,
    }),
  );
  if (ageMs) {
    const then = new Date(Date.now() - ageMs);
    fs.utimesSync(file, then, then);
  }
  return file;
}
/** The CDN sends the weights (asked whole) 20,000 bytes every `ms`. */
function slowWeights(hub: FakeHub, ms: number): void {
  const blob = sha256(WEIGHTS);
  hub.cdnHook = (req, res, sha) => {
    if (sha !== blob || req.headers.range) return false;
    res.writeHead(200, { 'content-length': WEIGHTS.length });
    let off = 0;
    const next = () =>
      off >= WEIGHTS.length ? res.end() : setTimeout(() => res.write(WEIGHTS.subarray(off, (off += 20_000)), next), ms);
    next();
    return true;
  };
}
/** downloadModel in a process of its own (the compiled library): the snapshot on stdout, notes and errors on stderr. */
function downloadInChild(hub: FakeHub, cacheDir: string) {
  const script =
    `require(${JSON.stringify(path.join(ROOT, 'dist', 'src', 'io', 'hub.js'))}).downloadModel(${JSON.stringify(REPO)}, ` +
    `{ endpoint: ${JSON.stringify(hub.endpoint)}, cacheDir: ${JSON.stringify(cacheDir)}, token: null, log: (l) => console.error(l) })` +
    '.then((s) => console.log(s), (e) => { console.error(e.message); process.exitCode = 1; })';
  return spawn(process.execPath, ['-e', script], { env: { ...process.env, HF_HUB_OFFLINE: '' } });
}
const thisHost = () => ({
  host: os.hostname(),
  pid_ns: fs.readlinkSync('/proc/self/ns/pid'),
  boot_id: fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
});
const otherHost = {
  host: 'node-17.cluster',
  pid: 4242,
  pid_ns: 'pid:[4026531836]',
  boot_id: '00000000-0000-0000-0000-000000000000',
};

guardNetwork();
afterAll(async () => {
  for (const hub of hubs) await hub.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('a resumed download proves it continues the same file, or starts over', () => {
  const changed = Buffer.from(CONFIG);
  changed[10] ^= 0x20; // same size, other bytes: only the content can tell

  test.each([
    ['honours If-Range', true],
    ['ignores If-Range', false],
  ])(
    'a git file that changed between the cut and the retry (server %s): never cached half old, half new',
    async (_name, honoursIfRange) => {
      const hub = await startHub();
      let gets = 0;
      const asked: (string | undefined)[] = [];
      hub.hubHook = (req, res, file) => {
        if (file !== 'config.json' || req.method !== 'GET') return false;
        asked.push(req.headers['if-range'] as string | undefined);
        const body = gets++ === 0 ? CONFIG : changed; // the repo changes right after the first GET
        const etag = `"${gitBlobId(body)}"`;
        if (gets === 1) {
          res.writeHead(200, { etag, 'content-length': body.length, 'x-repo-commit': COMMIT });
          res.write(body.subarray(0, 100), () => res.destroy());
          return true;
        }
        const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
        if (range && (!honoursIfRange || req.headers['if-range'] === etag)) {
          const from = Number(range[1]);
          res.writeHead(206, {
            etag,
            'content-range': `bytes ${from}-${body.length - 1}/${body.length}`,
            'content-length': body.length - from,
          });
          res.end(body.subarray(from));
        } else {
          res.writeHead(200, { etag, 'content-length': body.length });
          res.end(body);
        }
        return true;
      };
      const options = quick(hub, { files: ['config.json'] });
      const err: unknown = await downloadModel(REPO, options).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CheckpointError);
      expect((err as Error).message).toMatch(
        /config\.json (changed on the server during the download|has git blob id [0-9a-f]{40}, the hub's etag says)/,
      );
      expect(asked[1]).toBe(`"${gitBlobId(CONFIG)}"`); // the retry asked for the rest of that version only
      expect(listTree(path.join(options.cacheDir!, REPO_DIR, 'blobs'))).toEqual([]); // nothing cached, no temp file
      expect(leftovers(options.cacheDir!)).toEqual([]);
    },
  );

  test('an unchanged file is resumed with Range and If-Range, and checked whole (git blob id)', async () => {
    const hub = await startHub();
    let gets = 0;
    const ranges: (string | undefined)[] = [];
    hub.hubHook = (req, res, file) => {
      if (file !== 'config.json' || req.method !== 'GET') return false;
      ranges.push(req.headers.range);
      const etag = `"${gitBlobId(CONFIG)}"`;
      if (gets++ === 0) {
        res.writeHead(200, { etag, 'content-length': CONFIG.length });
        res.write(CONFIG.subarray(0, 100), () => res.destroy());
        return true;
      }
      const from = Number(/^bytes=(\d+)-$/.exec(req.headers.range!)![1]);
      res.writeHead(206, {
        etag,
        'content-range': `bytes ${from}-${CONFIG.length - 1}/${CONFIG.length}`,
        'content-length': CONFIG.length - from,
      });
      res.end(CONFIG.subarray(from));
      return true;
    };
    const snapshot = await downloadModel(REPO, quick(hub, { files: ['config.json'] }));
    expect(fs.readFileSync(path.join(snapshot, 'config.json')).equals(CONFIG)).toBe(true);
    expect(ranges).toEqual([undefined, expect.stringMatching(/^bytes=\d+-$/)]);
  });

  test("a server whose ETags are no hash (a mirror): a changed file is refused, not cached under the old one's name", async () => {
    const hub = await startHub();
    let gets = 0;
    hub.hubHook = (req, res, file) => {
      if (file !== 'config.json') return false;
      const etag = req.method === 'HEAD' || gets === 0 ? '"rev-1"' : '"rev-2"';
      const body = etag === '"rev-1"' ? CONFIG : changed;
      if (req.method === 'HEAD')
        return (void res.writeHead(200, { etag, 'content-length': body.length, 'x-repo-commit': COMMIT }).end(), true);
      if (gets++ === 0) {
        res.writeHead(200, { etag, 'content-length': body.length });
        res.write(body.subarray(0, 100), () => res.destroy());
        return true;
      }
      const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      const from = range && req.headers['if-range'] === etag ? Number(range[1]) : 0;
      res.writeHead(from ? 206 : 200, {
        etag,
        'content-length': body.length - from,
        ...(from ? { 'content-range': `bytes ${from}-${body.length - 1}/${body.length}` } : {}),
      });
      res.end(body.subarray(from));
      return true;
    };
    const options = quick(hub, { files: ['config.json'] });
    await expect(downloadModel(REPO, options)).rejects.toThrow(
      /config\.json changed on the server during the download \(ETag "rev-2", announced "rev-1"\)/,
    );
    expect(listTree(path.join(options.cacheDir!, REPO_DIR, 'blobs'))).toEqual([]);
  });
});

describe('a download is bounded: minimum rate, deadline, declared size, free space', () => {
  /** The promise, or a rejection naming what should have stopped it, after `ms`. */
  const within = <T>(p: Promise<T>, ms: number, what: string) =>
    Promise.race([
      p,
      new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} did not stop it within ${ms} ms`)), ms)),
    ]);

  test('a server sending 1 byte per 50 ms trips the minimum rate, retried a bounded number of times', async () => {
    const hub = await startHub();
    const timers: NodeJS.Timeout[] = [];
    hub.cdnHook = (_req, res) => {
      res.writeHead(200, { 'content-length': WEIGHTS.length });
      let i = 0;
      const t = setInterval(() => (res.destroyed ? clearInterval(t) : res.write(WEIGHTS.subarray(i, ++i))), 50);
      timers.push(t);
      return true;
    };
    const t0 = Date.now();
    try {
      await expect(
        within(
          downloadModel(REPO, quick(hub, { timeoutMs: 400, minBytesPerSecond: 1000, maxRetries: 1 })),
          8000,
          'the minimum rate',
        ),
      ).rejects.toThrow(
        /model\.safetensors arrives at [\d.]+ bytes\/s, under the minimum 1000 \(minBytesPerSecond option\) \(gave up after 1 retries\)/,
      );
    } finally {
      timers.forEach(clearInterval);
    }
    expect(Date.now() - t0).toBeLessThan(4000);
    expect(hub.count('cdn', 'GET')).toBe(2);
  });

  test('deadlineMs bounds the whole call, retries included', async () => {
    const hub = await startHub();
    hub.cdnHook = (_req, res) => (res.writeHead(503, { 'content-length': 0 }).end(), true);
    const t0 = Date.now();
    await expect(
      within(
        downloadModel(REPO, quick(hub, { deadlineMs: 600, retryDelayMs: 200, maxRetries: 10 })),
        5000,
        'the deadline',
      ),
    ).rejects.toThrow(/deadline/);
    expect(Date.now() - t0).toBeLessThan(1500);
  });

  test('a file larger than the free space is refused before its body is asked for', async () => {
    const hub = await startHub();
    hub.hubHook = (req, res, file) => {
      if (file !== 'model.safetensors') return false;
      res.writeHead(302, {
        location: `${hub.endpoint.replace(/:\d+$/, '')}:1/never`,
        'x-linked-etag': `"${sha256(WEIGHTS)}"`,
        'x-linked-size': 2 ** 52,
        'x-repo-commit': COMMIT,
        'content-length': 0,
      });
      res.end();
      return true;
    };
    const options = quick(hub);
    await expect(downloadModel(REPO, options)).rejects.toThrow(
      /model\.safetensors needs 4503599627\.\d MB more, and the disk has [\d.]+ MB free/,
    );
    expect(hub.count('cdn')).toBe(0);
    expect(leftovers(options.cacheDir!)).toEqual([]);
  });

  test('a body longer than announced is cut off at the announced size, not written on', async () => {
    const hub = await startHub();
    let written = 0;
    hub.cdnHook = (_req, res) => {
      res.writeHead(200, {}); // no Content-Length: the body runs until the server closes
      const more = () => {
        if (res.destroyed || written > 64 * WEIGHTS.length) return res.end();
        written += WEIGHTS.length;
        res.write(WEIGHTS, more);
      };
      more();
      return true;
    };
    const options = quick(hub);
    await expect(downloadModel(REPO, options)).rejects.toThrow(
      new RegExp(`model\\.safetensors: the server sent more than the ${WEIGHTS.length} bytes announced`),
    );
    expect(written).toBeLessThan(64 * WEIGHTS.length);
    expect(leftovers(options.cacheDir!)).toEqual([]);
  });
});

describe("one cache shared by processes and hosts (huggingface_hub's .locks layout)", () => {
  const blob = sha256(WEIGHTS);

  test("another host's in-flight download is never deleted: this one waits for its lock, then takes its blob", async () => {
    const hub = await startHub();
    const options = quick(hub);
    const cacheDir = options.cacheDir!;
    const blobs = path.join(cacheDir, REPO_DIR, 'blobs');
    fs.mkdirSync(blobs, { recursive: true });
    // The other host's temp file carries a pid that, here, is no process: it must not matter.
    const theirs = path.join(blobs, `${blob}.incomplete-${await deadPid()}-0a1b2c`);
    fs.writeFileSync(theirs, WEIGHTS.subarray(0, 1000));
    const lock = writeLock(cacheDir, blob, otherHost);
    const lines: string[] = [];
    const download = downloadModel(REPO, { ...options, log: (l) => lines.push(l) });
    // The other host finishes a moment later, and renames its temp file into place.
    await new Promise((r) => setTimeout(r, 800));
    expect(fs.existsSync(theirs)).toBe(true);
    fs.writeFileSync(theirs, WEIGHTS);
    fs.renameSync(theirs, path.join(blobs, blob)); // ENOENT here was the old bug
    fs.unlinkSync(lock);
    const snapshot = await download;
    expect(fs.readFileSync(path.join(snapshot, 'model.safetensors')).equals(WEIGHTS)).toBe(true);
    expect(hub.count('cdn')).toBe(0); // its blob was used, not downloaded again
    expect(lines.join('\n')).toMatch(
      /waiting for downloading model\.safetensors of openai\/clip-tiny \(pid 4242 on host node-17\.cluster, since [-\d:.TZ]+; heartbeat \d+ s ago\)/,
    );
    expect(leftovers(cacheDir)).toEqual([]);
  });

  test('a lock left by a dead process of this host is taken over at once, and its part of the file resumed', async () => {
    const hub = await startHub();
    const options = quick(hub);
    const cacheDir = options.cacheDir!;
    const blobs = path.join(cacheDir, REPO_DIR, 'blobs');
    fs.mkdirSync(blobs, { recursive: true });
    const pid = await deadPid();
    writeLock(cacheDir, blob, { ...thisHost(), pid });
    fs.writeFileSync(path.join(blobs, `${blob}.incomplete-${pid}-aaaaaa`), WEIGHTS.subarray(0, 60_000));
    fs.writeFileSync(path.join(blobs, `${blob}.incomplete-${pid}-bbbbbb`), WEIGHTS.subarray(0, 10)); // an older, shorter one
    const lines: string[] = [];
    const t0 = Date.now();
    const snapshot = await downloadModel(REPO, { ...options, log: (l) => lines.push(l) });
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(fs.readFileSync(path.join(snapshot, 'model.safetensors')).equals(WEIGHTS)).toBe(true);
    expect(hub.hits.filter((h) => h.server === 'cdn').map((h) => h.headers.range)).toEqual(['bytes=60000-']);
    expect(lines.join('\n')).toMatch(
      new RegExp(
        `taking over a stale lock \\(downloading model\\.safetensors of openai/clip-tiny \\(pid ${pid} on host [^,]+, since [-\\d:.TZ]+; its process ${pid} on this host is gone\\)\\)`,
      ),
    );
    expect(leftovers(cacheDir)).toEqual([]);
  });

  test("another host's lock that was not refreshed for lockStaleMs is taken over; a fresh one is waited for until the deadline", async () => {
    const hub = await startHub();
    const stale = quick(hub, { lockStaleMs: 60_000 });
    writeLock(stale.cacheDir!, blob, otherHost, 120_000);
    await expect(downloadModel(REPO, stale)).resolves.toContain(COMMIT);
    expect(leftovers(stale.cacheDir!)).toEqual([]);
    // An empty lock file (huggingface_hub's, which it holds with flock) is judged by its age alike.
    const fresh = quick(hub, { lockStaleMs: 60_000, deadlineMs: 700 });
    const file = writeLock(fresh.cacheDir!, blob, otherHost);
    fs.writeFileSync(file, '');
    await expect(downloadModel(REPO, fresh)).rejects.toThrow(
      new RegExp(
        `${blob}\\.lock: still held by an unknown process \\(a lock file llava-vision cannot read \\(another program's, or damaged\\), touched \\d+ s ago\\) at the deadline`,
      ),
    );
    expect(fs.existsSync(file)).toBe(true);
  });

  test('two processes downloading into one cache: each blob is fetched once, both get the snapshot', async () => {
    const hub = await startHub();
    slowWeights(hub, 60); // so that the two overlap
    const cacheDir = newCache();
    const run = () =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const child = downloadInChild(hub, cacheDir);
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.on('exit', (code) => resolve({ code, out, err }));
      });
    const [a, b] = await Promise.all([run(), run()]);
    expect([a.code, b.code]).toEqual([0, 0]);
    expect(a.out).toBe(b.out);
    expect(hub.hits.filter((h) => h.server === 'cdn' && h.method === 'GET')).toHaveLength(1);
    expect(`${a.err}${b.err}`).toMatch(
      /waiting for downloading model\.safetensors of openai\/clip-tiny \(pid \d+ on host /,
    );
    expect(fs.readFileSync(path.join(a.out.trim(), 'model.safetensors')).equals(WEIGHTS)).toBe(true);
    expect(leftovers(cacheDir)).toEqual([]);
  });
});

describe('Ctrl-C / SIGTERM during a download', () => {
  test.each(['SIGINT', 'SIGTERM'] as const)(
    '%s: the process ends by it, its lock and temp files are gone, its part is kept and the next run resumes it',
    async (signal) => {
      const hub = await startHub();
      slowWeights(hub, 40); // a resume (a Range request) is served as usual
      const cacheDir = newCache();
      const blobs = path.join(cacheDir, REPO_DIR, 'blobs');
      const child = downloadInChild(hub, cacheDir);
      const ended = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
        child.on('exit', (code, sig) => resolve({ code, signal: sig })),
      );
      const part = () => listTree(blobs).find((f) => f.includes('.incomplete-'));
      while (!(part() && fs.statSync(path.join(blobs, part()!)).size >= 40_000))
        await new Promise((r) => setTimeout(r, 5));
      child.kill(signal);
      expect(await ended).toEqual({ code: null, signal });
      const kept = part()!;
      const size = fs.statSync(path.join(blobs, kept)).size;
      expect(listTree(path.join(cacheDir, '.locks'))).toEqual([]);
      expect(listTree(cacheDir).filter((f) => f.includes('.llava-vision-tmp-'))).toEqual([]);

      const snapshot = await downloadModel(REPO, quick(hub, { cacheDir }));
      expect(fs.readFileSync(path.join(snapshot, 'model.safetensors')).equals(WEIGHTS)).toBe(true);
      expect(hub.hits.filter((h) => h.server === 'cdn' && h.headers.range).map((h) => h.headers.range)).toEqual([
        `bytes=${size}-`,
      ]);
      expect(leftovers(cacheDir)).toEqual([]);
    },
  );
});

describe('cache locks', () => {
  test('the holder refreshes its lock (a heartbeat); release removes it; a second holder waits for the first', async () => {
    const file = path.join(tmp, 'locks', 'a.lock');
    const first = (await acquireLock(file, { purpose: 'testing', staleMs: 200 }))!;
    const owner = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    expect(owner).toMatchObject({ pid: process.pid, host: os.hostname(), purpose: 'testing' });
    await new Promise((r) => setTimeout(r, 400));
    expect(Date.now() - fs.statSync(file).mtimeMs).toBeLessThan(150); // refreshed every staleMs / 4
    let second: Awaited<ReturnType<typeof acquireLock>> = null;
    const waiting = acquireLock(file, { purpose: 'second', staleMs: 200, pollMs: 20 }).then((l) => (second = l));
    await new Promise((r) => setTimeout(r, 300));
    expect(second).toBeNull(); // a live holder of this process is never stale, whatever its age
    first.release();
    await waiting;
    expect(second!.stillOurs()).toBe(true);
    second!.release();
    expect(fs.readdirSync(path.dirname(file))).toEqual([]);
  });

  test('a lock that cannot be created is a one-line error naming it', async () => {
    const file = path.join(tmp, 'not-a-folder');
    fs.writeFileSync(file, '');
    const err: unknown = await acquireLock(path.join(file, 'x.lock'), { purpose: 'testing' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LlavaVisionError);
    expect((err as Error).message).toMatch(/^.*not-a-folder\/x\.lock: cannot create the lock file \(.*\)$/);
  });
});
