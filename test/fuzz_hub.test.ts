/**
 * Hostile hub servers (issue 20): a seeded server on 127.0.0.1 speaking raw HTTP, whose every answer may be
 * wrong in one of the ways a broken or malicious hub, mirror or CDN can be wrong — cut bodies, lying sizes
 * and etags, partial answers that continue another version, bytes trickled or sent past the end, headers a
 * byte at a time, garbage, redirect loops, error codes — against `downloadModel` on a fresh cache per case.
 *
 * Every case must end quickly in a snapshot whose every file is the true file, or in one of the package's
 * errors (one line); and leave no temp file, no lock, and no blob whose content is not its name's. After
 * each case the same cache must still give the true snapshot from an honest server. `FUZZ_CASES` (default
 * 30 here; `npm run fuzz` runs a quarter of its count) and `FUZZ_SEED` pick the run; `FUZZ_TRACE=1` lists them.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { LlavaVisionError } from '../src/errors';
import { downloadModel } from '../src/io/hub';
import { guardNetwork } from './helpers/fake_hub';
import { Rng, rng } from './helpers/rng';

const N = process.env.FUZZ_CASES ? Math.max(1, Math.round(Number(process.env.FUZZ_CASES) / 4)) : 30;
const SEED = Number(process.env.FUZZ_SEED ?? 20);
const TRACE = process.env.FUZZ_TRACE === '1';
/** `FUZZ_CASE=k`: only case k (to reproduce a failure). */
const ONLY = process.env.FUZZ_CASE ? Number(process.env.FUZZ_CASE) : null;
/** Per case, generous for a loaded 2-core VM: a hang is minutes, not seconds. */
const CASE_MS = 10_000;
const COMMIT = 'c0ffee'.padEnd(40, '0');
const REPO = 'org/hostile';

jest.setTimeout(Math.max(120_000, N * 4 * CASE_MS));
guardNetwork();

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const gitBlobId = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const isLfs = (f: string) => f.endsWith('.safetensors');

/** The repo: two git files and one LFS file, each with a second version the server may switch to. */
function makeRepo(r: Rng): Map<string, { v1: Buffer; v2: Buffer }> {
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => r.int(256)));
  const weights = bytes(20_000 + r.int(60_000));
  const other = Buffer.from(weights);
  other[r.int(other.length)] ^= 0xff;
  const config = Buffer.from(
    JSON.stringify({ model_type: 'clip_vision_model', hidden_size: 64, note: 'x'.repeat(r.int(500)) }),
  );
  return new Map([
    ['config.json', { v1: config, v2: Buffer.from(config.toString().replace('64', '65')) }],
    ['preprocessor_config.json', { v1: Buffer.from('{"crop_size": 56}'), v2: Buffer.from('{"crop_size": 57}') }],
    [
      'model.safetensors',
      { v1: weights, v2: r.chance(0.5) ? other : weights.subarray(0, weights.length - 1 - r.int(100)) },
    ],
  ]);
}

/** How one case's server lies: per request, an honest answer or one of these. */
const HEAD_FAULTS = ['status', 'size', 'etag', 'redirect', 'close', 'garbage', 'slowHeaders', 'commit'] as const;
const GET_FAULTS = [
  'status',
  'cut',
  'longer',
  'shorter',
  'noLength',
  'extra',
  'corrupt',
  'v2',
  'range',
  'trickle',
  'partialUnasked',
  'slowHeaders',
  'close',
  'garbage',
] as const;

interface Request {
  method: string;
  path: string;
  headers: Record<string, string>;
}

class HostileHub {
  private server = net.createServer((socket) => this.connection(socket));
  private sockets = new Set<net.Socket>();
  private timers = new Set<NodeJS.Timeout>();
  port = 0;
  honest = false;
  /** Opaque etags ("v1", "v2") instead of content hashes: a mirror's. */
  opaque = false;
  faultRate = 0.4;
  log: string[] = [];
  /**
   * Files whose HEAD once came without a usable etag (or with an opaque one): with nothing announced to
   * check against, the version the server sends whole is the file (never a mix of two).
   */
  unannounced = new Set<string>();

  constructor(
    private r: Rng,
    private repo: Map<string, { v1: Buffer; v2: Buffer }>,
  ) {}

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  private connection(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => {});
    let buffered = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => {
      buffered = Buffer.concat([buffered, d]);
      const end = buffered.indexOf('\r\n\r\n');
      if (end < 0) return;
      const [line, ...rest] = buffered.subarray(0, end).toString('latin1').split('\r\n');
      buffered = Buffer.alloc(0);
      const [method, target] = line.split(' ');
      const headers = Object.fromEntries(
        rest.map((h) => [h.slice(0, h.indexOf(':')).toLowerCase(), h.slice(h.indexOf(':') + 1).trim()]),
      );
      this.answer(socket, { method, path: target, headers });
    });
  }

  private etagOf(file: string, body: Buffer, version: 'v1' | 'v2'): string {
    if (this.opaque) return `"${file}-${version}"`;
    return `"${isLfs(file) ? sha256(body) : gitBlobId(body)}"`;
  }

  private send(
    socket: net.Socket,
    status: number,
    headers: Record<string, string | number>,
    body: Buffer | null,
    fault: string | null,
  ): void {
    const head = Buffer.from(
      `HTTP/1.1 ${status} X\r\n${Object.entries({ connection: 'close', ...headers })
        .map(([k, v]) => `${k}: ${v}`)
        .join('\r\n')}\r\n\r\n`,
      'latin1',
    );
    if (fault === 'slowHeaders') {
      let i = 0;
      const drip = () => {
        if (socket.destroyed) return;
        if (i >= head.length) return void (body ? socket.end(body) : socket.end());
        socket.write(head.subarray(i, ++i));
        this.later(40, drip);
      };
      return drip();
    }
    if (fault === 'trickle' && body) {
      socket.write(head);
      let i = 0;
      const drip = () => {
        if (socket.destroyed) return;
        if (i >= body.length) return void socket.end();
        socket.write(body.subarray(i, (i += 1)));
        this.later(30, drip);
      };
      return drip();
    }
    socket.end(body ? Buffer.concat([head, body]) : head);
  }

  private answer(socket: net.Socket, req: Request): void {
    const r = this.r;
    const m = /^\/(.+)\/resolve\/([^/]+)\/([^/]+)$/.exec(req.path);
    const cdn = /^\/cdn\/([^/]+)\/(v1|v2)$/.exec(req.path);
    const file = m ? decodeURIComponent(m[3]) : cdn ? decodeURIComponent(cdn[1]) : '';
    const entry = this.repo.get(file);
    // With opaque etags, a byte flipped in place, or another version sent whole from another host (an LFS
    // redirect: its ETag is that host's), is undetectable by anyone (no hash to check): not faults then.
    const undetectable = (f: string) =>
      (f === 'corrupt' && (this.opaque || this.unannounced.has(file))) ||
      (this.opaque && f === 'v2' && cdn !== null && !req.headers.range);
    const faults = req.method === 'HEAD' ? HEAD_FAULTS : GET_FAULTS.filter((f) => !undetectable(f));
    const fault = this.honest || !r.chance(this.faultRate) ? null : r.pick(faults);
    if (TRACE)
      this.log.push(
        `${req.method} ${req.path} ${req.headers.range ?? ''} ${req.headers['if-range'] ?? ''} -> ${fault ?? 'ok'}`,
      );
    if (fault === 'close') return void socket.destroy();
    if (fault === 'garbage')
      return void socket.end(
        r.pick([
          'HTTP/1.1 abc\r\n\r\n',
          'HTTP/9 200\r\nx\r\n\r\n',
          '\0\0\0\0',
          'HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n',
        ]),
      );
    if (fault === 'status') {
      const status = r.pick([400, 401, 403, 404, 416, 429, 500, 502, 503]);
      return this.send(
        socket,
        status,
        {
          'content-length': 0,
          ...(r.chance(0.3) ? { 'x-error-code': r.pick(['RepoNotFound', 'EntryNotFound', 'GatedRepo']) } : {}),
        },
        null,
        null,
      );
    }
    if (!entry || (!m && !cdn))
      return this.send(socket, 404, { 'content-length': 0, 'x-error-code': 'EntryNotFound' }, null, null);

    // 'range': a partial answer (to a Range request) continuing another version, ignoring If-Range.
    const version = fault === 'v2' || (fault === 'range' && req.headers.range) ? 'v2' : 'v1';
    const body = entry[version];
    const etag = this.etagOf(file, entry.v1, 'v1');
    const headers: Record<string, string | number> = {
      'x-repo-commit': fault === 'commit' ? r.pick(['../x', 'zz', '']) : COMMIT,
    };
    if (req.method === 'HEAD') {
      if (fault === 'etag') this.unannounced.add(file);
      if (fault === 'redirect')
        return this.send(
          socket,
          302,
          {
            location: r.pick([req.path, 'ftp://127.0.0.1/x', `http://127.0.0.1:${this.port}/cdn/nowhere/v1`]),
            'content-length': 0,
          },
          null,
          null,
        );
      let size: string | number = entry.v1.length;
      let tag: string | null = etag;
      if (fault === 'size') size = r.pick([0, size - 1, size + 1, 2 ** 52, '12abc', -5, '']);
      if (fault === 'etag')
        tag = r.pick([
          null,
          `W/${etag}`,
          `"${'0'.repeat(64)}"`,
          '"../../x"',
          `"${'a'.repeat(10_000)}"`,
          '""',
          `"${gitBlobId(Buffer.from('other'))}"`,
        ]);
      if (isLfs(file)) {
        return this.send(
          socket,
          302,
          {
            ...headers,
            location: `http://127.0.0.1:${this.port}/cdn/${file}/v1`,
            'content-length': 0,
            ...(tag === null ? {} : { 'x-linked-etag': tag, etag: tag }),
            'x-linked-size': size,
          },
          null,
          fault,
        );
      }
      return this.send(
        socket,
        200,
        { ...headers, ...(tag === null ? {} : { etag: tag }), 'content-length': size },
        null,
        fault,
      );
    }
    if (m && isLfs(file)) {
      return this.send(
        socket,
        302,
        { ...headers, location: `http://127.0.0.1:${this.port}/cdn/${file}/v1`, 'content-length': 0 },
        null,
        null,
      );
    }
    // GET of a file: a git file from the hub, an LFS file from the "CDN". A CDN's ETag is its own (opaque).
    const served = cdn ? `"cdn-${version}-${sha256(body).slice(0, 8)}"` : this.etagOf(file, body, version);
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const ifRange = req.headers['if-range'];
    let from = range && (ifRange === undefined || ifRange === served) ? Number(range[1]) : 0;
    if (fault === 'range' && range) from = Number(range[1]); // continues v2, ignoring If-Range
    let status = from > 0 ? 206 : 200;
    let payload = body.subarray(Math.min(from, body.length));
    const h: Record<string, string | number> = { ...headers, etag: served };
    if (status === 206) h['content-range'] = `bytes ${from}-${body.length - 1}/${body.length}`;
    if (fault === 'range' && r.chance(0.5))
      h['content-range'] = r.pick([`bytes ${from + 7}-${body.length - 1}/${body.length}`, 'bytes */5', 'nonsense']);
    if (fault === 'partialUnasked') {
      status = 206;
      payload = body.subarray(10);
      h['content-range'] = `bytes 10-${body.length - 1}/${body.length}`;
    }
    if (fault === 'corrupt' && payload.length) {
      payload = Buffer.from(payload);
      payload[r.int(payload.length)] ^= 1 << r.int(8);
    }
    if (fault === 'extra') payload = Buffer.concat([payload, Buffer.alloc(1000 + r.int(100_000), 7)]);
    if (fault === 'cut') {
      const head = `HTTP/1.1 ${status} X\r\nconnection: close\r\n${Object.entries({
        ...h,
        'content-length': payload.length,
      })
        .map(([k, v]) => `${k}: ${v}`)
        .join('\r\n')}\r\n\r\n`;
      return void socket.write(
        Buffer.concat([Buffer.from(head, 'latin1'), payload.subarray(0, r.int(payload.length + 1))]),
        () => socket.destroy(),
      );
    }
    if (fault !== 'noLength' && fault !== 'extra') {
      h['content-length'] =
        fault === 'longer'
          ? payload.length + 1 + r.int(1000)
          : fault === 'shorter'
            ? Math.max(0, payload.length - 1 - r.int(10))
            : payload.length;
    }
    if (fault === 'shorter') payload = payload.subarray(0, Number(h['content-length']));
    this.send(socket, status, h, payload, fault);
  }
}

/** Every file under a folder, relative, sorted. */
function listTree(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((f) => !fs.lstatSync(path.join(dir, f)).isDirectory())
    .sort();
}

/** What must hold after any case: no temp file, no lock, and every blob named by a hash holds that content. */
function checkCache(cacheDir: string): void {
  const blobs = path.join(cacheDir, 'models--org--hostile', 'blobs');
  for (const name of listTree(blobs)) {
    expect(name).not.toMatch(/\.incomplete/);
    const data = fs.readFileSync(path.join(blobs, name));
    if (/^[0-9a-f]{64}$/.test(name)) expect(sha256(data)).toBe(name);
    if (/^[0-9a-f]{40}$/.test(name)) expect(gitBlobId(data)).toBe(name);
  }
  expect(listTree(path.join(cacheDir, '.locks'))).toEqual([]);
}

/**
 * A snapshot the call returned: every file is the true (first) version, or, where nothing checkable was
 * announced for it, one version whole — never a mix of two, never a corrupted one.
 */
function checkSnapshot(
  snapshot: string,
  repo: Map<string, { v1: Buffer; v2: Buffer }>,
  unannounced: Set<string> = new Set(),
): void {
  for (const f of fs.readdirSync(snapshot)) {
    const data = fs.readFileSync(path.join(snapshot, f));
    const ok = data.equals(repo.get(f)!.v1) || (unannounced.has(f) && data.equals(repo.get(f)!.v2));
    expect({ f, ok }).toEqual({ f, ok: true });
  }
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-fuzz-hub-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

test(`hostile hub servers: ${N} seeded cases (seed ${SEED}) end in the true snapshot or one line of ours, quickly, leaving the cache sound`, async () => {
  const outcomes: Record<string, number> = {};
  for (let c = ONLY ?? 0; c < (ONLY === null ? N : ONLY + 1); c++) {
    const r = rng(SEED * 100_003 + c);
    const repo = makeRepo(r);
    const hub = await new HostileHub(r, repo).start();
    hub.opaque = r.chance(0.3);
    hub.faultRate = r.pick([0.15, 0.3, 0.5]);
    const cacheDir = path.join(tmp, `case-${c}`);
    const options = {
      endpoint: `http://127.0.0.1:${hub.port}`,
      cacheDir,
      token: null,
      log: null,
      retryDelayMs: 1,
      maxRetries: 2,
      timeoutMs: 150,
      minBytesPerSecond: 2000,
      maxRedirects: 3,
    };
    const where = `case ${c} (seed ${SEED}, opaque ${hub.opaque}, fault rate ${hub.faultRate})`;
    try {
      const t0 = Date.now();
      let outcome: string;
      let snapshot: string | null = null;
      try {
        snapshot = await downloadModel(REPO, options);
        outcome = 'snapshot';
      } catch (e) {
        if (!(e instanceof LlavaVisionError))
          throw new Error(`${where}: not one of ours: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
        expect(e.message).not.toContain('\n');
        expect(e.message.length).toBeLessThan(2000);
        if (TRACE) console.log(`${where}: ${e.message}`);
        outcome =
          (/(timed out|minimum|deadline|no complete answer|network error|HTTP \d+|sha256|git blob id|changed on the server|announced|more than|redirect|JSON|plain file name|not found|weights|partial|unexpected|ended after|broke off)/.exec(
            e.message,
          ) ?? ['other'])[0];
      }
      if (hub.opaque) for (const f of repo.keys()) hub.unannounced.add(f);
      if (snapshot) checkSnapshot(snapshot, repo, hub.unannounced);
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      expect({ where, ms: Date.now() - t0 < CASE_MS }).toEqual({ where, ms: true });
      checkCache(cacheDir);
      // The cache is not poisoned: an honest server now gives the true snapshot into it (or the one already
      // there, when a version was sent whole with nothing announced to check it against).
      hub.honest = true;
      checkSnapshot(await downloadModel(REPO, options), repo, hub.unannounced);
      checkCache(cacheDir);
    } catch (e) {
      if (TRACE || !(e instanceof Error) || !e.message.startsWith(where))
        console.error(`${where}\n  ${hub.log.join('\n  ')}`);
      throw e;
    } finally {
      await hub.close();
      fs.rmSync(cacheDir, { recursive: true, force: true });
    }
    if (TRACE) console.log(`${where}: ${hub.log.length} requests`);
  }
  if (TRACE) console.log(outcomes);
  // Both ends happen: the server's faults are not all fatal, nor all harmless.
  expect(outcomes.snapshot ?? 0).toBeGreaterThan(0);
  expect(N - (outcomes.snapshot ?? 0)).toBeGreaterThan(0);
});
