/**
 * Downloads a model from the HuggingFace hub into the local HF cache, laid out as huggingface_hub does
 * (so Python and this library share one cache):
 *
 *   <cacheDir>/models--{org}--{name}/blobs/<etag>             file contents, named by the hub's etag
 *                                   /snapshots/<commit>/<file>  relative symlinks to ../../blobs/<etag>
 *                                                               (a copy where symlinks fail, or symlinks: false)
 *                                   /refs/<revision>            the commit hash the revision resolved to
 *
 *   <cacheDir>/.locks/models--{org}--{name}/<etag>.lock     who is downloading that blob (io/cache_lock.ts)
 *
 * Per file: a HEAD on `${endpoint}/${repo}/resolve/${revision}/${file}` gives the etag, size and commit
 * (the hub answers LFS files with a redirect to its CDN carrying `X-Linked-Etag` = sha256 of the content;
 * other files' ETag is their git blob id); a blob already in the cache is not downloaded again. Otherwise,
 * holding the blob's lock (another process or host downloading it is waited for, and its blob used), a GET
 * (following redirects) streams into `blobs/<etag>.incomplete-<pid>-<rand>`, bounded by the declared size,
 * the free space, a minimum rate and an optional deadline; checked against the size and the content hash
 * the etag is (sha256, git blob id); then renamed to `blobs/<etag>`: an interrupted download never leaves
 * a partial file under a final name. A broken transfer is resumed (Range) only when the continuation is
 * provably the same file (If-Range, or the content check), else it starts over; a part left by an
 * earlier holder of the lock is resumed the same way. Only the lock's holder removes such leftovers:
 * another host's in-flight file is never touched.
 *
 * So a `.incomplete-*` part is resumable state, not a temp file: Ctrl-C or SIGTERM (a preempted job)
 * keeps it, and releases the lock, so the next run resumes where this one stopped (a download that
 * ends in an error removes its part, which may hold what a misbehaving server sent). Temp files are atomic.ts's
 * (`<file>.llava-vision-tmp-…`: a snapshot entry being placed, a lock file being made): removed on
 * errors, Ctrl-C and SIGTERM alike.
 */
import * as fs from 'fs';
import * as http from 'http';
import * as https from 'https';
import * as os from 'os';
import * as path from 'path';
import { Hash, createHash, randomBytes } from 'crypto';
import { Writable } from 'stream';
import { pipeline } from 'stream/promises';
import { CheckpointError, ConfigError, LlavaVisionError, quote } from '../errors';
import { withTempPath, writeFileAtomic } from './atomic';
import { DEFAULT_LOCK_STALE_MS, acquireLock } from './cache_lock';
import { parseJsonWithLimits } from './json';
import { INDEX_MAX_DEPTH } from './shards';

export interface DownloadProgress {
  file: string;
  bytes: number;
  /** null when the server sent no size. */
  total: number | null;
}

export interface DownloadOptions {
  /** Branch, tag or commit hash (default `main`). */
  revision?: string;
  /** Default `$HF_ENDPOINT`, else https://huggingface.co. */
  endpoint?: string;
  /** Default `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. */
  cacheDir?: string;
  /** Bearer token for gated/private repos; default `$HF_TOKEN`; null: none. */
  token?: string | null;
  /** Exactly these files (an `*.index.json` among them brings its shards) instead of the default set. */
  files?: string[];
  /** Only files matching one of these globs (`*`, `?`), e.g. `['*.json']`. */
  allowPatterns?: string[];
  /** Also `mm_projector.bin` (LLaVA pretrain checkpoints); an error when the repo has none. */
  includeProjector?: boolean;
  /** A request that sends nothing for this long fails (default 30 s); also the window of `minBytesPerSecond`. */
  timeoutMs?: number;
  /**
   * A download slower than this, on average over any `timeoutMs`, fails (and is retried, resuming); default
   * 1024 bytes/s. A server trickling bytes would otherwise keep a download alive forever.
   */
  minBytesPerSecond?: number;
  /** The whole call fails when not done within this many ms (requests, retries, waiting for a lock); default none. */
  deadlineMs?: number;
  /**
   * A lock on a blob in the cache's `.locks/` (another process or host downloading it) is stale when its owner
   * is a process of this host that is gone, or, for another host or container, when it was not refreshed for this
   * long (default 10 minutes; the owner refreshes it every 10 s).
   */
  lockStaleMs?: number;
  /** Retries per request on 5xx / 429 / connection resets / timeouts (default 3), with doubling backoff. */
  maxRetries?: number;
  /** First backoff (default 1000 ms). */
  retryDelayMs?: number;
  /** Default 10. */
  maxRedirects?: number;
  /** Snapshot entries as symlinks to the blobs (default true; falls back to copies where that fails). */
  symlinks?: boolean;
  /**
   * Ask the hub even when the cache holds the revision (to pick up a moved branch); when the hub cannot be
   * reached, the cached snapshot is returned (with a note to `log`). Default false: a cached revision is used as it is.
   */
  refresh?: boolean;
  onProgress?: (p: DownloadProgress) => void;
  /** Notes (a fallback to the cache, waiting for another process's download); default stderr, null: none. */
  log?: ((line: string) => void) | null;
}

/** The default file set, in order: the weights are the first candidate the repo has. */
const OPTIONAL_CONFIGS = ['preprocessor_config.json'];
const WEIGHT_CANDIDATES = [
  'model.safetensors.index.json',
  'model.safetensors',
  'pytorch_model.bin.index.json',
  'pytorch_model.bin',
];
const PROJECTOR = 'mm_projector.bin';

export function hubCacheDir(): string {
  return (
    process.env.HF_HUB_CACHE ??
    path.join(process.env.HF_HOME ?? path.join(os.homedir(), '.cache', 'huggingface'), 'hub')
  );
}

/** HF_HUB_OFFLINE=1 (or true/yes/on, as huggingface_hub reads it): no request to the hub at all. */
export function hubOffline(): boolean {
  return /^(1|true|yes|on)$/i.test(process.env.HF_HUB_OFFLINE ?? '');
}

/**
 * The snapshot folder of a repo's revision in the local HF cache, as huggingface_hub resolves it
 * offline: a commit hash names its snapshot; a branch or tag is read from refs/<revision>. Null when
 * the cache has no such snapshot (nothing is checked inside it: see `snapshotHolds`).
 */
export function cachedSnapshot(repoId: string, options: { revision?: string; cacheDir?: string } = {}): string | null {
  if (!isRepoId(repoId)) return null;
  const revision = options.revision ?? 'main';
  checkRevision(revision);
  const repoDir = path.join(options.cacheDir ?? hubCacheDir(), repoFolderName(repoId));
  let commit = revision;
  if (!/^[0-9a-f]{40}$/.test(revision)) {
    try {
      commit = fs.readFileSync(path.join(repoDir, 'refs', revision), 'utf8').trim();
    } catch {
      // No ref: a hub (mirror) that sent no commit hash left snapshots/<revision> (see downloadModel).
    }
    if (commit !== revision && !/^[0-9a-f]{40}$/.test(commit)) return null;
  }
  const snapshot = path.join(repoDir, 'snapshots', commit);
  return fs.statSync(snapshot, { throwIfNoEntry: false })?.isDirectory() ? snapshot : null;
}

/**
 * What of a download request a snapshot folder is missing ([] when it holds it all): the requested
 * `files`, else config.json and weights (a safetensors or torch index with every shard, model.safetensors
 * or pytorch_model.bin; or, for LLaVA's pretrain releases, mm_projector.bin), plus mm_projector.bin when
 * `includeProjector`. Entries are followed (a dangling symlink is missing). `allowPatterns` requests are
 * never complete (what the hub holds is unknown).
 */
export function snapshotMissing(
  snapshot: string,
  request: Pick<DownloadOptions, 'files' | 'includeProjector' | 'allowPatterns'> = {},
): string[] {
  const has = (f: string) => fs.statSync(path.join(snapshot, f), { throwIfNoEntry: false })?.isFile() ?? false;
  const withShards = (f: string): string[] => {
    if (!f.endsWith('.index.json') || !has(f)) return [f];
    try {
      const map = weightMap(JSON.parse(fs.readFileSync(path.join(snapshot, f), 'utf8')));
      if (!map) throw new Error('no weight_map');
      return [f, ...new Set(Object.values(map).map((s) => checkFileName(s, f)))];
    } catch {
      return [f, `${f} (unreadable)`];
    }
  };
  if (request.allowPatterns) return ['(allowPatterns)'];
  if (request.files) return request.files.flatMap(withShards).filter((f) => !has(f));
  const missing = has('config.json') ? [] : ['config.json'];
  const weights = WEIGHT_CANDIDATES.find(has);
  if (request.includeProjector && !has(PROJECTOR)) missing.push(PROJECTOR);
  if (weights) {
    for (const f of withShards(weights)) if (!has(f)) missing.push(f);
  } else if (!has(PROJECTOR)) {
    missing.push('weights');
  }
  return missing;
}

/** `models--org--name`, the repo's folder in the cache. */
export function repoFolderName(repoId: string): string {
  return `models--${repoId.replace('/', '--')}`;
}

/** huggingface_hub's rule: `name` or `org/name`, word chars . - inside, no `--` or `..`, at most 96 chars. */
export function isRepoId(repoId: string): boolean {
  const part = '\\w(?:[\\w.-]*\\w)?';
  return (
    typeof repoId === 'string' &&
    repoId.length <= 96 &&
    new RegExp(`^(?:${part}/)?${part}$`).test(repoId) &&
    !repoId.includes('--') &&
    !repoId.includes('..')
  );
}

/** Index shards and requested files become paths in our folders: only plain names, as the sharded loader. */
/** A parsed index's `weight_map` (tensor -> shard file), or null when it has none. */
function weightMap(index: unknown): Record<string, unknown> | null {
  const map = (index as { weight_map?: unknown } | null)?.weight_map;
  return typeof map === 'object' && map !== null && !Array.isArray(map) ? (map as Record<string, unknown>) : null;
}

export function checkFileName(name: unknown, where: string): string {
  if (
    typeof name !== 'string' ||
    name === '' ||
    name === '.' ||
    name === '..' ||
    /[/\\\0]/.test(name) ||
    path.isAbsolute(name)
  ) {
    throw new CheckpointError(`${where}: file ${quote(name)} must be a plain file name (no folders, no "..")`);
  }
  return name;
}

/** Revisions can hold slashes (refs/pr/1) and become refs/<revision>: plain segments only. */
export function checkRevision(revision: string, what = 'revision'): void {
  if (!revision.split('/').every((s) => /^[\w-][\w.-]*$/.test(s)) || revision.includes('..')) {
    throw new ConfigError(`${what} ${JSON.stringify(revision)} is not a branch, tag or commit name`);
  }
}

/** A retryable failure; turned into an UnreachableError when the retries are used up. */
class TransientError extends Error {}

/** The hub did not answer (network error, timeout, 5xx after the retries): the cache may stand in for it. */
class UnreachableError extends CheckpointError {}

interface Context {
  repoId: string;
  revision: string;
  endpoint: URL;
  repoDir: string;
  token: string | null;
  timeoutMs: number;
  minBytesPerSecond: number;
  /** The whole call's deadline (ms since the epoch), or null. */
  deadline: number | null;
  maxRetries: number;
  retryDelayMs: number;
  maxRedirects: number;
  symlinks: boolean;
  lockStaleMs: number;
  log: ((line: string) => void) | null;
  onProgress?: (p: DownloadProgress) => void;
}

/**
 * Downloads config.json, preprocessor_config.json (when present) and the weights (the safetensors index
 * and its shards, else model.safetensors, else pytorch_model.bin(.index.json)), plus mm_projector.bin
 * when asked; returns the snapshot folder, ready for `LlavaVision.load`.
 */
export async function downloadModel(repoId: string, options: DownloadOptions = {}): Promise<string> {
  if (!isRepoId(repoId)) {
    throw new ConfigError(
      `${JSON.stringify(repoId)} is not a HuggingFace repo id (org/name: letters, digits, _ . -; no "..")`,
    );
  }
  const revision = options.revision ?? 'main';
  checkRevision(revision);
  const endpointText = (options.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  let endpoint: URL;
  try {
    endpoint = new URL(endpointText);
  } catch {
    throw new ConfigError(`hub endpoint ${JSON.stringify(endpointText)} is not a URL (HF_ENDPOINT / endpoint option)`);
  }
  if (!/^https?:$/.test(endpoint.protocol))
    throw new ConfigError(`hub endpoint ${endpointText} must be http(s) (HF_ENDPOINT / endpoint option)`);
  for (const f of options.files ?? []) checkFileName(f, 'files option');
  const cacheDir = options.cacheDir ?? hubCacheDir();
  const cached = cachedSnapshot(repoId, { revision, cacheDir });
  const missing = cached ? snapshotMissing(cached, options) : null;
  if (cached && missing!.length === 0 && !options.refresh) return cached;
  if (hubOffline()) {
    const inCache = cached
      ? `the HF cache holds only part of it (missing ${missing!.join(', ')})`
      : `it is not in the HF cache (${cacheDir})`;
    throw new CheckpointError(
      `${repoId} at revision ${revision}: ${inCache}, and HF_HUB_OFFLINE=1 forbids downloading; unset HF_HUB_OFFLINE to fetch it`,
    );
  }
  const positive = (v: number | undefined, name: string) => {
    if (v !== undefined && !(v > 0 && Number.isFinite(v)))
      throw new ConfigError(`${name} must be a positive number, got ${v}`);
    return v;
  };
  const nonNegative = (v: number | undefined, name: string) => {
    if (v !== undefined && !(v >= 0 && Number.isFinite(v)))
      throw new ConfigError(`${name} must be a number >= 0, got ${v}`);
    return v;
  };
  const log =
    options.log === undefined ? (line: string) => process.stderr.write(`llava-vision: ${line}\n`) : options.log;
  const deadlineMs = positive(options.deadlineMs, 'deadlineMs');
  const ctx: Context = {
    repoId,
    revision,
    endpoint,
    repoDir: path.join(cacheDir, repoFolderName(repoId)),
    token: options.token === undefined ? process.env.HF_TOKEN || null : options.token,
    timeoutMs: positive(options.timeoutMs, 'timeoutMs') ?? 30_000,
    minBytesPerSecond: nonNegative(options.minBytesPerSecond, 'minBytesPerSecond') ?? 1024,
    deadline: deadlineMs === undefined ? null : Date.now() + deadlineMs,
    maxRetries: options.maxRetries ?? 3,
    retryDelayMs: options.retryDelayMs ?? 1000,
    maxRedirects: options.maxRedirects ?? 10,
    symlinks: options.symlinks ?? true,
    lockStaleMs: positive(options.lockStaleMs, 'lockStaleMs') ?? DEFAULT_LOCK_STALE_MS,
    log,
    onProgress: options.onProgress,
  };
  try {
    return await fetchSnapshot(ctx, options);
  } catch (e) {
    // refresh: a hub that cannot be reached leaves the cached revision usable, as huggingface_hub does.
    if (!(e instanceof UnreachableError) || !cached || missing!.length > 0) throw e;
    log?.(`${repoId}: the hub could not be reached (${e.message}); using the cached snapshot ${cached}`);
    return cached;
  }
}

/** The requested files into the cache (asked at one commit), then the snapshot folder. */
async function fetchSnapshot(ctx: Context, options: DownloadOptions): Promise<string> {
  const { repoId, revision } = ctx;
  const patterns = options.allowPatterns?.map(globToRegExp);
  const selected = (f: string) => !patterns || patterns.some((p) => p.test(f));

  const blobs = new Map<string, string>(); // file -> blob path
  let commit: string | null = null;
  /** One file (and, for an index, its shards); false when an optional file is absent. */
  const get = async (file: string, optional: boolean): Promise<boolean> => {
    if (!selected(file) || blobs.has(file)) return true;
    // Once the revision resolved to a commit, later files are asked at that commit: a branch
    // moving during the download cannot mix two versions in one snapshot.
    const got = await fetchFile(ctx, file, commit ?? revision, optional);
    if (!got) return false;
    commit ??= got.commit;
    blobs.set(file, got.blob);
    if (file.endsWith('.index.json')) for (const shard of readShardNames(got.blob, file, ctx)) await get(shard, false);
    return true;
  };

  if (options.files) {
    for (const f of options.files) await get(f, false);
  } else {
    await get('config.json', false);
    for (const f of OPTIONAL_CONFIGS) await get(f, true);
    let weights = false;
    for (const f of WEIGHT_CANDIDATES) if (selected(f) && (weights = await get(f, true))) break;
    if (options.includeProjector) weights = (await get(PROJECTOR, false)) || weights;
    if (!weights && !patterns) {
      // with allowPatterns the caller chose what they want
      throw new CheckpointError(
        `${repoId} at revision ${revision}: no weights on the hub (looked for ${WEIGHT_CANDIDATES.join(', ')})`,
      );
    }
  }

  // The snapshot is assembled only once every blob is in place, config.json last: a folder with a
  // config.json (what local lookups test for) is never missing its weights.
  const snapshot = path.join(ctx.repoDir, 'snapshots', commit ?? revision);
  const order = [...blobs.keys()].sort((a, b) => Number(a === 'config.json') - Number(b === 'config.json'));
  for (const file of order) placeInSnapshot(blobs.get(file)!, path.join(snapshot, file), ctx.symlinks);
  if (commit && commit !== revision) {
    fs.mkdirSync(path.dirname(path.join(ctx.repoDir, 'refs', revision)), { recursive: true });
    writeFileAtomic(path.join(ctx.repoDir, 'refs', revision), Buffer.from(commit));
  }
  return snapshot;
}

interface Fetched {
  commit: string | null;
  blob: string;
}

async function fetchFile(ctx: Context, file: string, revision: string, optional: boolean): Promise<Fetched | null> {
  const url = `${ctx.endpoint.href.replace(/\/$/, '')}/${ctx.repoId}/resolve/${encodeURIComponent(revision)}/${encodeURIComponent(file)}`;
  const what = { url, file, revision };
  const meta = await withRetries(ctx, async () => {
    // HEAD follows redirects only while they carry no etag (repo renames); the CDN redirect of an LFS
    // file already says all we need, and following it would cost a request to the CDN.
    const { res } = await open(ctx, url, 'HEAD', {}, (r) => etagOf(r) !== null);
    res.resume();
    if (
      res.statusCode === 404 &&
      optional &&
      !/^(RepoNotFound|RevisionNotFound)$/.test(header(res, 'x-error-code') ?? '')
    )
      return null;
    if ((res.statusCode ?? 0) >= 400) throw statusError(res, ctx, what);
    return res;
  });
  if (!meta) return null;
  const commitHeader = header(meta, 'x-repo-commit');
  const commit = commitHeader && /^[0-9a-f]{40}$/.test(commitHeader) ? commitHeader : null;
  const etag = etagOf(meta);
  const size = byteCount(
    header(meta, 'x-linked-size') ?? (meta.statusCode === 200 ? header(meta, 'content-length') : undefined),
  );
  const blobsDir = path.join(ctx.repoDir, 'blobs');
  // The blob is named by its etag when that names one content: a hash (checked at the end) or a strong ETag
  // (which the download must answer with); a weak one does not, and the blob is named by its sha256 then.
  const weak = /^W\//.test((header(meta, 'x-linked-etag') ?? header(meta, 'etag') ?? '').trim());
  const blobName =
    etag !== null && !weak && /^[\w.-]+$/.test(etag) && !etag.startsWith('.') && etag.length <= 200 ? etag : null;
  const cached = () => {
    if (!blobName) return null;
    const existing = path.join(blobsDir, blobName);
    const st = fs.statSync(existing, { throwIfNoEntry: false });
    return st?.isFile() && (size === null || st.size === size) ? existing : null;
  };
  const existing = cached();
  if (existing) return { commit, blob: existing };
  fs.mkdirSync(blobsDir, { recursive: true });
  // One download of a blob at a time in a shared cache (huggingface_hub's .locks layout); a blob
  // without a usable etag is locked by its URL.
  const lockName = blobName ?? `url-${createHash('sha256').update(url).digest('hex').slice(0, 32)}`;
  const lock = await acquireLock(
    path.join(path.dirname(ctx.repoDir), '.locks', path.basename(ctx.repoDir), `${lockName}.lock`),
    {
      purpose: `downloading ${file} of ${ctx.repoId}`,
      staleMs: ctx.lockStaleMs,
      deadline: ctx.deadline,
      doneMeanwhile: () => cached() !== null,
      log: ctx.log,
    },
  );
  if (!lock) return { commit, blob: cached()! }; // another process downloaded it meanwhile
  try {
    const done = cached();
    if (done) return { commit, blob: done };
    const expected: Expected = {
      size,
      sha256: etag !== null && /^[0-9a-f]{64}$/.test(etag) ? etag : null,
      gitSha1: etag !== null && /^[0-9a-f]{40}$/.test(etag) ? etag : null,
      // The HEAD's own ETag (not an LFS file's X-Linked-Etag): a GET of the same URL must answer with it.
      etag: header(meta, 'x-linked-etag') === undefined ? strongEtag(meta) : null,
    };
    return { commit, blob: await downloadBlob(ctx, what, blobsDir, lockName, blobName, expected) };
  } finally {
    lock.release();
  }
}

/** What the hub's HEAD announced of a file: its size, and its content hash when the etag is one. */
interface Expected {
  size: number | null;
  /** An LFS file's etag: the sha256 of its content. */
  sha256: string | null;
  /** A git file's etag: its git blob id, sha1 of `blob <size>\0` + content. */
  gitSha1: string | null;
  /** The HEAD's strong ETag as sent, when the file is served from that URL (not an LFS redirect). */
  etag: string | null;
}

/** A header's byte count, or null when absent or not a plain non-negative integer. */
function byteCount(text: string | undefined): number | null {
  return text !== undefined && /^\d{1,16}$/.test(text) && Number.isSafeInteger(Number(text)) ? Number(text) : null;
}

/** The hashes of a download, advanced with the file, chunk by chunk. */
class Digests {
  private sha256 = createHash('sha256');
  private sha1: Hash | null;

  constructor(private readonly expected: Expected) {
    this.sha1 = this.gitHeader() ? createHash('sha1').update(this.gitHeader()!) : null;
  }

  private gitHeader(): string | null {
    return this.expected.gitSha1 !== null && this.expected.size !== null ? `blob ${this.expected.size}\0` : null;
  }

  update(chunk: Uint8Array): void {
    this.sha256.update(chunk);
    this.sha1?.update(chunk);
  }

  /** The content's sha256; and what is wrong with it against the announced hash (null when it matches or none is known). */
  finish(file: string, bytes: number): { sha256: string; mismatch: string | null } {
    const sha256 = this.sha256.digest('hex');
    const { expected } = this;
    if (expected.sha256 !== null && sha256 !== expected.sha256)
      return { sha256, mismatch: `has sha256 ${sha256}, the hub's etag says ${expected.sha256}` };
    if (expected.gitSha1 !== null) {
      // Known size: hashed on the way; else (no size announced) read back now that it is known.
      const sha1 = (this.sha1 ?? hashFile(file, createHash('sha1').update(`blob ${bytes}\0`))).digest('hex');
      if (sha1 !== expected.gitSha1)
        return { sha256, mismatch: `has git blob id ${sha1}, the hub's etag says ${expected.gitSha1}` };
    }
    return { sha256, mismatch: null };
  }
}

/** A file's bytes, a megabyte at a time, into `hash` (a Hash, or the Digests of a download). */
function hashFile<T extends { update(chunk: Uint8Array): unknown }>(file: string, hash: T): T {
  const fd = fs.openSync(file, 'r');
  try {
    const buffer = Buffer.alloc(1 << 20);
    for (let n; (n = fs.readSync(fd, buffer, 0, buffer.length, null)) > 0;) hash.update(buffer.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return hash;
}

/** Free bytes for this process on the file system of `dir`; null where Node cannot tell (statfs: Node >= 18.15). */
function freeBytes(dir: string): number | null {
  const statfs = (fs as { statfsSync?: (p: string) => { bavail: number; bsize: number } }).statfsSync;
  if (!statfs) return null;
  try {
    const st = statfs(dir);
    return st.bavail * st.bsize;
  } catch {
    return null;
  }
}

const MB = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
/** An undeclared size is checked against the free space every this many bytes, and stops this far from full. */
const SPACE_CHECK_BYTES = 16 << 20;

/** The download would not fit: said before anything is written (or as soon as an undeclared size runs out of room). */
function checkSpace(dir: string, file: string, needed: number): void {
  const free = freeBytes(dir);
  if (free !== null && needed > free)
    throw new CheckpointError(`${dir}: ${file} needs ${MB(needed)} more, and the disk has ${MB(free)} free`);
}

/**
 * The previous holders' leftovers of this blob (`<lockName>.incomplete-*`; with the lock held, nobody
 * is writing them): the largest is returned to be resumed when the file's content can be checked at
 * the end, the others are deleted. Nothing else in the folder is touched (another blob's temp file
 * belongs to whoever holds that blob's lock, on this host or another).
 */
function takeLeftovers(blobsDir: string, lockName: string, resumable: boolean): string | null {
  const prefix = `${lockName}.incomplete-`;
  const found = fs
    .readdirSync(blobsDir)
    .filter((n) => n.startsWith(prefix))
    .map((n) => path.join(blobsDir, n));
  let best: string | null = null;
  let bestSize = -1;
  for (const f of resumable ? found : []) {
    const size = fs.statSync(f, { throwIfNoEntry: false })?.size ?? -1;
    if (size > bestSize) [best, bestSize] = [f, size];
  }
  for (const f of found) if (f !== best) fs.rmSync(f, { force: true });
  return best;
}

/**
 * GET into a temp file; on a retryable failure the next attempt asks for the rest — a Range request
 * that must prove it continues the same file: `If-Range` with the strong ETag of the response it
 * continues (the server sends the whole file instead when it changed), or, where the etag is the
 * content's hash (sha256, git blob id), the check of the whole file at the end (a mismatch after a
 * resume starts over once). Without either, it starts over. A leftover of an earlier process is
 * resumed the same way. Returns the blob's final path.
 */
async function downloadBlob(
  ctx: Context,
  what: { url: string; file: string; revision: string },
  blobsDir: string,
  lockName: string,
  blobName: string | null,
  expected: Expected,
): Promise<string> {
  const checkable = expected.sha256 !== null || expected.gitSha1 !== null;
  const leftover = takeLeftovers(blobsDir, lockName, checkable);
  const part = path.join(blobsDir, `${lockName}.incomplete-${process.pid}-${randomBytes(6).toString('hex')}`);
  let fd: number;
  if (leftover) {
    fs.renameSync(leftover, part);
    fd = fs.openSync(part, 'r+');
  } else {
    fd = fs.openSync(part, 'wx');
  }
  let digests = new Digests(expected);
  let bytes = 0;
  /** The strong ETag of the response the bytes on disk came from; null when unknown. */
  let validator: string | null = null;
  /** Whether the bytes on disk came from more than one response (a resume). */
  let resumed = false;
  let restarts = 0;
  let closed = false;
  const restart = () => {
    fs.ftruncateSync(fd, 0);
    digests = new Digests(expected);
    bytes = 0;
    validator = null;
    resumed = false;
  };
  if (leftover) {
    // An earlier process's part: resumed like a broken transfer of our own, proved by the content check.
    bytes = fs.fstatSync(fd).size;
    if (expected.size !== null && bytes > expected.size) restart();
    else {
      digests = hashFile(part, new Digests(expected)); // as if its bytes had just been downloaded
      resumed = bytes > 0;
    }
  }
  try {
    if (expected.size !== null) checkSpace(blobsDir, what.file, expected.size - bytes);
    for (;;) {
      // (A leftover may hold the whole file already: then only the check remains.)
      if (expected.size === null || bytes < expected.size) await withRetries(ctx, () => transfer());
      if (expected.size !== null && bytes !== expected.size)
        throw new CheckpointError(`${what.url}: ${what.file} is ${bytes} bytes, the hub announced ${expected.size}`);
      const { sha256, mismatch } = digests.finish(part, bytes);
      if (mismatch === null) {
        fs.fsyncSync(fd);
        fs.closeSync(fd);
        closed = true;
        return place(part, path.join(blobsDir, blobName ?? sha256), what);
      }
      // Parts of two versions (a resume across a change): once more from the start, then it is the file itself.
      if (!resumed || restarts > 0) throw new CheckpointError(`${what.url}: ${what.file} ${mismatch}`);
      restarts++;
      restart();
    }
  } catch (e) {
    if (!closed) fs.closeSync(fd);
    fs.rmSync(part, { force: true });
    throw e;
  }

  /** One request: the rest of the file when it can be proved to continue it, else all of it. */
  async function transfer(): Promise<void> {
    if (bytes > 0 && validator === null && !checkable) restart();
    const range: Record<string, string> =
      bytes > 0 ? { range: `bytes=${bytes}-`, ...(validator ? { 'if-range': validator } : {}) } : {};
    const { res, url: finalUrl } = await open(ctx, what.url, 'GET', range);
    const url = capped(finalUrl, 300); // a redirect's, for messages
    const status = res.statusCode ?? 0;
    const answered = strongEtag(res);
    if (
      status >= 200 &&
      status < 300 &&
      finalUrl === what.url &&
      expected.etag !== null &&
      answered !== null &&
      answered !== expected.etag
    ) {
      // The version the HEAD announced is gone: whatever this is, it is not the file to cache under that etag.
      res.destroy();
      throw new CheckpointError(
        `${url}: ${what.file} changed on the server during the download (ETag ${capped(answered)}, announced ${capped(expected.etag)}); run again`,
      );
    }
    if (status === 206 && bytes > 0) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header(res, 'content-range') ?? '');
      const sameFile =
        m !== null &&
        Number(m[1]) === bytes &&
        (m[3] === '*' || expected.size === null || Number(m[3]) === expected.size) &&
        (validator === null ? checkable : answered === null || answered === validator);
      if (!sameFile) {
        // Not provably the rest of the same file: start over, asking for all of it.
        res.destroy();
        restart();
        return transfer();
      }
      resumed = true;
    } else if (status === 200) {
      if (bytes > 0) restart(); // the server sent the whole file (it changed, or it ignores Range)
      validator = answered;
    } else {
      res.resume();
      if (status >= 300) throw statusError(res, ctx, what);
      throw new CheckpointError(
        `${url}: unexpected HTTP ${status} for ${what.file}${status === 206 ? ' (a part, to a request for the whole file)' : ''}`,
      );
    }
    const length = byteCount(header(res, 'content-length'));
    if (status === 200 && length !== null && expected.size !== null && length !== expected.size) {
      res.destroy();
      throw new CheckpointError(
        `${url}: ${what.file} is ${length} bytes, the hub announced ${expected.size} (the download's Content-Length disagrees with the hub's size)`,
      );
    }
    const end = length !== null ? bytes + length : expected.size;
    if (end !== null && expected.size !== null && end > expected.size) {
      res.destroy();
      throw new CheckpointError(
        `${url}: ${what.file}: the server sends ${end - bytes} bytes from offset ${bytes} of a file of ${expected.size}`,
      );
    }
    const start = bytes;
    const rate = new RateCheck(ctx, what);
    let checkedSpaceAt = bytes;
    // Hash and file advance together, chunk by chunk, so a resume offset is always what is on disk.
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        try {
          if (end !== null && bytes + chunk.length > end)
            throw new CheckpointError(`${url}: ${what.file}: the server sent more than the ${end} bytes announced`);
          if (ctx.deadline !== null && Date.now() > ctx.deadline)
            throw new CheckpointError(
              `${url}: ${what.file} not downloaded within the deadline (${bytes} bytes so far; deadlineMs option)`,
            );
          rate.check(chunk.length);
          if (end === null && bytes + chunk.length - checkedSpaceAt >= SPACE_CHECK_BYTES) {
            checkSpace(blobsDir, what.file, SPACE_CHECK_BYTES);
            checkedSpaceAt = bytes;
          }
          for (let off = 0; off < chunk.length;) off += fs.writeSync(fd, chunk, off, chunk.length - off, bytes + off);
          digests.update(chunk);
          bytes += chunk.length;
          ctx.onProgress?.({ file: what.file, bytes, total: expected.size ?? end });
          done();
        } catch (e) {
          // Disk errors and a server's broken promises are not retried; a slow transfer is.
          done(
            e instanceof LlavaVisionError || e instanceof TransientError
              ? e
              : new CheckpointError(`${part}: cannot write the download (${(e as Error).message})`),
          );
        }
      },
    });
    try {
      await pipeline(res, sink);
    } catch (e) {
      if (e instanceof TransientError || e instanceof LlavaVisionError) throw e;
      throw new TransientError(
        `${url}: transfer of ${what.file} broke off after ${bytes} bytes (${(e as Error).message})`,
      );
    }
    if (end !== null && bytes !== end) {
      throw new TransientError(
        `${url}: ${what.file} ended after ${bytes - start} of ${end - start} bytes (connection closed early)`,
      );
    }
  }
}

/** The blob under its final name. A temp file removed meanwhile (our lock judged stale by someone) is only fine when that someone finished the blob. */
function place(part: string, blob: string, what: { url: string; file: string }): string {
  try {
    fs.renameSync(part, blob);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new CheckpointError(`${blob}: cannot place the download of ${what.file} (${(e as Error).message})`);
    if (fs.statSync(blob, { throwIfNoEntry: false })?.isFile()) return blob;
    throw new CheckpointError(
      `${part}: the download of ${what.file} was removed by another process meanwhile (it took this process's lock for stale); run again`,
    );
  }
  return blob;
}

/**
 * The minimum transfer rate: over each `timeoutMs` window, at least `minBytesPerSecond` on average
 * (a server sending a byte a second keeps a connection alive forever otherwise). Retried as a
 * transient failure; the retry resumes.
 */
class RateCheck {
  private windowStart = Date.now();
  private windowBytes = 0;

  constructor(
    private readonly ctx: Context,
    private readonly what: { url: string; file: string },
  ) {}

  check(n: number): void {
    this.windowBytes += n;
    const elapsed = Date.now() - this.windowStart;
    if (elapsed < this.ctx.timeoutMs) return;
    const rate = (this.windowBytes * 1000) / elapsed;
    if (rate < this.ctx.minBytesPerSecond) {
      throw new TransientError(
        `${this.what.url}: ${this.what.file} arrives at ${rate.toFixed(1)} bytes/s, under the minimum ${this.ctx.minBytesPerSecond} (minBytesPerSecond option)`,
      );
    }
    this.windowStart = Date.now();
    this.windowBytes = 0;
  }
}

/** snapshots/<commit>/<file>: relative symlink to the blob (as huggingface_hub), else a copy; swapped in by rename. */
function placeInSnapshot(blob: string, target: string, symlinks: boolean): void {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const rel = path.relative(path.dirname(target), blob);
  try {
    if (symlinks && fs.readlinkSync(target) === rel) return;
  } catch {
    // absent, or a copy: (re)place it
  }
  withTempPath(target, (tmp) => {
    try {
      if (!symlinks) throw new Error('copies asked for');
      fs.symlinkSync(rel, tmp);
    } catch {
      fs.copyFileSync(blob, tmp); // Windows without developer mode, some network/FAT file systems
    }
    fs.renameSync(tmp, target);
  });
}

/** The shard names of a downloaded index, validated: the index comes from the network. */
function readShardNames(blob: string, file: string, ctx: Context): string[] {
  const where = `${ctx.repoId}/${file}`;
  const json = parseJsonWithLimits(
    fs.readFileSync(blob, 'utf8'),
    { maxDepth: INDEX_MAX_DEPTH, rejectDuplicateKeys: true },
    (problem) => new CheckpointError(`${where}: index ${problem}`),
  );
  const map = weightMap(json);
  if (!map) throw new CheckpointError(`${where}: no "weight_map" object`);
  return [...new Set(Object.values(map).map((s) => checkFileName(s, `${where} weight_map`)))].sort();
}

async function withRetries<T>(ctx: Context, attempt: () => Promise<T>): Promise<T> {
  for (let n = 0; ; n++) {
    try {
      return await attempt();
    } catch (e) {
      if (!(e instanceof TransientError)) throw e;
      if (n >= ctx.maxRetries) throw new UnreachableError(e.message + (n > 0 ? ` (gave up after ${n} retries)` : ''));
      const wait = ctx.retryDelayMs * 2 ** n;
      if (ctx.deadline !== null && Date.now() + wait >= ctx.deadline)
        throw new CheckpointError(`${e.message} (no time left for a retry before the deadline; deadlineMs option)`);
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

/**
 * A request following redirects (to other hosts too: the hub sends LFS downloads to its CDN), until
 * `stop` accepts a redirect response. The token goes only to the endpoint's own origin.
 */
async function open(
  ctx: Context,
  url: string,
  method: 'HEAD' | 'GET',
  headers: Record<string, string>,
  stop: (res: http.IncomingMessage) => boolean = () => false,
): Promise<{ res: http.IncomingMessage; url: string }> {
  let current = new URL(url);
  for (let hops = 0; ; hops++) {
    const auth: Record<string, string> =
      ctx.token && current.origin === ctx.endpoint.origin ? { authorization: `Bearer ${ctx.token}` } : {};
    const res = await send(current, method, { ...headers, ...auth }, ctx);
    const location = header(res, 'location');
    if (![301, 302, 303, 307, 308].includes(res.statusCode ?? 0) || !location || stop(res))
      return { res, url: current.href };
    res.resume();
    if (hops >= ctx.maxRedirects)
      throw new CheckpointError(`${url}: more than ${ctx.maxRedirects} redirects (last to ${capped(location)})`);
    let next: URL;
    try {
      next = new URL(location, current);
    } catch {
      throw new CheckpointError(`${url}: redirected to an invalid location ${capped(location)}`);
    }
    if (!/^https?:$/.test(next.protocol))
      throw new CheckpointError(`${url}: redirected to unsupported ${capped(next.href)}`);
    current = next;
  }
}

/**
 * One request; resolves at the response headers. The timeout covers any pause (before the headers and in
 * the body), and the headers must be complete within it too (a server may send them a byte at a time);
 * a deadline shortens it.
 */
function send(url: URL, method: string, headers: Record<string, string>, ctx: Context): Promise<http.IncomingMessage> {
  const left = ctx.deadline === null ? Infinity : ctx.deadline - Date.now();
  const where = capped(url.href, 300);
  if (left <= 0)
    return Promise.reject(new CheckpointError(`${where}: not done within the deadline (deadlineMs option)`));
  const timeoutMs = Math.max(1, Math.min(ctx.timeoutMs, left));
  const timedOut = () =>
    timeoutMs < ctx.timeoutMs
      ? new CheckpointError(`${where}: not done within the deadline (deadlineMs option)`)
      : new TransientError(`${where}: timed out (nothing received for ${timeoutMs} ms; timeoutMs option)`);
  return new Promise((resolve, reject) => {
    let response: http.IncomingMessage | undefined;
    const request = url.protocol === 'https:' ? https.request : http.request;
    // Twice the idle timeout: silence trips the idle one first, with its own message.
    const headersMs = Math.min(2 * ctx.timeoutMs, left);
    const headersDue = setTimeout(
      () =>
        req.destroy(
          headersMs < 2 * ctx.timeoutMs
            ? timedOut()
            : new TransientError(
                `${where}: no complete answer within ${headersMs} ms (a server sending its headers a little at a time; timeoutMs option)`,
              ),
        ),
      headersMs,
    );
    const req = request(
      url,
      { method, headers: { 'user-agent': 'llava-vision-tfjs', 'accept-encoding': 'identity', ...headers } },
      (res) => {
        clearTimeout(headersDue);
        response = res;
        res.on('error', () => {}); // reported by whoever reads the body (pipeline)
        resolve(res);
      },
    );
    req.on('close', () => clearTimeout(headersDue));
    req.setTimeout(timeoutMs, () => {
      const err = timedOut();
      if (response) response.destroy(err);
      else req.destroy(err);
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e instanceof TransientError || e instanceof LlavaVisionError) return reject(e);
      const message = `${where}: network error ${e.code ?? ''} ${capped(e.message, 300)}`.replace(/\s+/g, ' ');
      const transient = ['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EAI_AGAIN'].includes(e.code ?? '');
      reject(
        transient
          ? new TransientError(message)
          : new UnreachableError(`${message} (check the endpoint / HF_ENDPOINT and the network)`),
      );
    });
    req.end();
  });
}

/** The error for an HTTP failure status, saying what to do about it; 429 and 5xx are retried. */
function statusError(
  res: http.IncomingMessage,
  ctx: Context,
  what: { url: string; file: string; revision: string },
): Error {
  const status = res.statusCode ?? 0;
  const code = header(res, 'x-error-code');
  const head = `${what.url}: HTTP ${status}`;
  if (status === 429 || status >= 500) return new TransientError(`${head} for ${what.file} of ${ctx.repoId}`);
  if (status === 401 || status === 403) {
    const hint = ctx.token
      ? "the token (HF_TOKEN) was refused or has no access: accept the repo's conditions on the hub with that account"
      : 'if it is gated or private, set HF_TOKEN to a token of an account with access (and accept its conditions on the hub)';
    return new CheckpointError(
      `${head}: cannot access ${ctx.repoId}${code === 'RepoNotFound' ? ' (not found)' : ''}; ${hint}`,
    );
  }
  if (status === 404) {
    if (code === 'RepoNotFound') return new CheckpointError(`${head}: repo ${ctx.repoId} not found`);
    if (code === 'RevisionNotFound')
      return new CheckpointError(`${head}: revision ${what.revision} not found in ${ctx.repoId}`);
    return new CheckpointError(`${head}: ${what.file} not found in ${ctx.repoId} at revision ${what.revision}`);
  }
  return new CheckpointError(`${head} for ${what.file} of ${ctx.repoId}`);
}

function header(res: http.IncomingMessage, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** A server's string in a message: at most `max` characters. */
function capped(text: string, max = 120): string {
  return text.length > max ? `${text.slice(0, max)}… (${text.length} chars)` : text;
}

/** The response's ETag as sent, when strong (what If-Range takes); null when absent or weak. */
function strongEtag(res: http.IncomingMessage): string | null {
  const raw = header(res, 'etag');
  return raw && /^"[^"]*"$/.test(raw.trim()) ? raw.trim() : null;
}

/** X-Linked-Etag (LFS: sha256) else ETag, without quotes and weak prefix. */
function etagOf(res: http.IncomingMessage): string | null {
  const raw = header(res, 'x-linked-etag') ?? header(res, 'etag');
  return raw ? raw.replace(/^W\//, '').replace(/^"|"$/g, '') : null;
}

function globToRegExp(glob: string): RegExp {
  return new RegExp(
    `^${glob
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
  );
}
