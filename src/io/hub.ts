/**
 * Downloads a model from the HuggingFace hub into the local HF cache, laid out as huggingface_hub does
 * (so Python and this library share one cache):
 *
 *   <cacheDir>/models--{org}--{name}/blobs/<etag>             file contents, named by the hub's etag
 *                                   /snapshots/<commit>/<file>  relative symlinks to ../../blobs/<etag>
 *                                                               (a copy where symlinks fail, or symlinks: false)
 *                                   /refs/<revision>            the commit hash the revision resolved to
 *
 * Per file: a HEAD on `${endpoint}/${repo}/resolve/${revision}/${file}` gives the etag, size and commit
 * (the hub answers LFS files with a redirect to its CDN carrying `X-Linked-Etag` = sha256 of the content);
 * a blob already in the cache is not downloaded again. Otherwise a GET (following redirects) streams into
 * `blobs/<etag>.incomplete-<pid>-<rand>`, checked against Content-Length / X-Linked-Size and, for a
 * 64-hex etag, its sha256, then renamed to `blobs/<etag>`: an interrupted download never leaves a
 * partial file under a final name. Within one call a broken transfer is resumed with a Range request;
 * a temp file left by a killed process is deleted (not resumed) by the next download into that folder.
 */
import * as fs from 'fs';
import * as http from 'http';
import * as https from 'https';
import * as os from 'os';
import * as path from 'path';
import { Hash, createHash, randomBytes } from 'crypto';
import { Writable } from 'stream';
import { pipeline } from 'stream/promises';
import { CheckpointError, ConfigError, quote } from '../errors';
import { writeFileAtomic } from './atomic';
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
  /** A request that sends nothing for this long fails (default 30 s). */
  timeoutMs?: number;
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
  /** Notes (a fallback to the cache); default stderr, null: none. */
  log?: ((line: string) => void) | null;
}

/** The default file set, in order: the weights are the first candidate the repo has. */
const OPTIONAL_CONFIGS = ['preprocessor_config.json'];
const WEIGHT_CANDIDATES = ['model.safetensors.index.json', 'model.safetensors', 'pytorch_model.bin.index.json', 'pytorch_model.bin'];
const PROJECTOR = 'mm_projector.bin';

export function hubCacheDir(): string {
  return process.env.HF_HUB_CACHE ?? path.join(process.env.HF_HOME ?? path.join(os.homedir(), '.cache', 'huggingface'), 'hub');
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
export function snapshotMissing(snapshot: string, request: Pick<DownloadOptions, 'files' | 'includeProjector' | 'allowPatterns'> = {}): string[] {
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
  return typeof repoId === 'string' && repoId.length <= 96 && new RegExp(`^(?:${part}/)?${part}$`).test(repoId) &&
    !repoId.includes('--') && !repoId.includes('..');
}

/** Index shards and requested files become paths in our folders: only plain names, as the sharded loader. */
/** A parsed index's `weight_map` (tensor -> shard file), or null when it has none. */
function weightMap(index: unknown): Record<string, unknown> | null {
  const map = (index as { weight_map?: unknown } | null)?.weight_map;
  return typeof map === 'object' && map !== null && !Array.isArray(map) ? (map as Record<string, unknown>) : null;
}

export function checkFileName(name: unknown, where: string): string {
  if (typeof name !== 'string' || name === '' || name === '.' || name === '..' || /[/\\\0]/.test(name) || path.isAbsolute(name)) {
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
  maxRetries: number;
  retryDelayMs: number;
  maxRedirects: number;
  symlinks: boolean;
  onProgress?: (p: DownloadProgress) => void;
}

/**
 * Downloads config.json, preprocessor_config.json (when present) and the weights (the safetensors index
 * and its shards, else model.safetensors, else pytorch_model.bin(.index.json)), plus mm_projector.bin
 * when asked; returns the snapshot folder, ready for `LlavaVision.load`.
 */
export async function downloadModel(repoId: string, options: DownloadOptions = {}): Promise<string> {
  if (!isRepoId(repoId)) {
    throw new ConfigError(`${JSON.stringify(repoId)} is not a HuggingFace repo id (org/name: letters, digits, _ . -; no "..")`);
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
  if (!/^https?:$/.test(endpoint.protocol)) throw new ConfigError(`hub endpoint ${endpointText} must be http(s) (HF_ENDPOINT / endpoint option)`);
  for (const f of options.files ?? []) checkFileName(f, 'files option');
  const cacheDir = options.cacheDir ?? hubCacheDir();
  const cached = cachedSnapshot(repoId, { revision, cacheDir });
  const missing = cached ? snapshotMissing(cached, options) : null;
  if (cached && missing!.length === 0 && !options.refresh) return cached;
  if (hubOffline()) {
    const inCache = cached ? `the HF cache holds only part of it (missing ${missing!.join(', ')})` : `it is not in the HF cache (${cacheDir})`;
    throw new CheckpointError(`${repoId} at revision ${revision}: ${inCache}, and HF_HUB_OFFLINE=1 forbids downloading; unset HF_HUB_OFFLINE to fetch it`);
  }
  const ctx: Context = {
    repoId,
    revision,
    endpoint,
    repoDir: path.join(cacheDir, repoFolderName(repoId)),
    token: options.token === undefined ? process.env.HF_TOKEN || null : options.token,
    timeoutMs: options.timeoutMs ?? 30_000,
    maxRetries: options.maxRetries ?? 3,
    retryDelayMs: options.retryDelayMs ?? 1000,
    maxRedirects: options.maxRedirects ?? 10,
    symlinks: options.symlinks ?? true,
    onProgress: options.onProgress,
  };
  try {
    return await fetchSnapshot(ctx, options);
  } catch (e) {
    // refresh: a hub that cannot be reached leaves the cached revision usable, as huggingface_hub does.
    if (!(e instanceof UnreachableError) || !cached || missing!.length > 0) throw e;
    const log = options.log === undefined ? (line: string) => process.stderr.write(`llava-vision: ${line}\n`) : options.log;
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
    if (!weights && !patterns) { // with allowPatterns the caller chose what they want
      throw new CheckpointError(`${repoId} at revision ${revision}: no weights on the hub (looked for ${WEIGHT_CANDIDATES.join(', ')})`);
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
    if (res.statusCode === 404 && optional && !/^(RepoNotFound|RevisionNotFound)$/.test(header(res, 'x-error-code') ?? '')) return null;
    if ((res.statusCode ?? 0) >= 400) throw statusError(res, ctx, what);
    return res;
  });
  if (!meta) return null;
  const commitHeader = header(meta, 'x-repo-commit');
  const commit = commitHeader && /^[0-9a-f]{40}$/.test(commitHeader) ? commitHeader : null;
  const etag = etagOf(meta);
  const sizeText = header(meta, 'x-linked-size') ?? (meta.statusCode === 200 ? header(meta, 'content-length') : undefined);
  const size = sizeText !== undefined && /^\d+$/.test(sizeText) ? Number(sizeText) : null;
  const blobsDir = path.join(ctx.repoDir, 'blobs');
  const blobName = etag !== null && /^[\w.-]+$/.test(etag) && !etag.startsWith('.') ? etag : null;
  if (blobName) {
    const existing = path.join(blobsDir, blobName);
    const st = fs.statSync(existing, { throwIfNoEntry: false });
    if (st?.isFile() && (size === null || st.size === size)) return { commit, blob: existing };
  }
  fs.mkdirSync(blobsDir, { recursive: true });
  const sha256 = etag !== null && /^[0-9a-f]{64}$/.test(etag) ? etag : null;
  return { commit, blob: await downloadBlob(ctx, what, blobsDir, blobName, size, sha256) };
}

/**
 * GET into a temp file; on a retryable failure the next attempt asks for the rest (Range) and keeps
 * hashing where it stopped (a 200 instead of 206 starts over). Returns the blob's final path.
 */
async function downloadBlob(
  ctx: Context,
  what: { url: string; file: string; revision: string },
  blobsDir: string,
  blobName: string | null,
  size: number | null,
  sha256: string | null,
): Promise<string> {
  removeStaleTemps(blobsDir);
  const tmp = path.join(blobsDir, `${blobName ?? 'download'}.incomplete-${process.pid}-${randomBytes(6).toString('hex')}`);
  const fd = fs.openSync(tmp, 'wx');
  let hash: Hash = createHash('sha256');
  let bytes = 0;
  let closed = false;
  try {
    await withRetries(ctx, async () => {
      const { res, url } = await open(ctx, what.url, 'GET', bytes > 0 ? { range: `bytes=${bytes}-` } : {});
      const status = res.statusCode ?? 0;
      if (status === 206 && bytes > 0 && (header(res, 'content-range') ?? '').startsWith(`bytes ${bytes}-`)) {
        // resuming: keep what we have
      } else if (status === 200) {
        hash = createHash('sha256');
        bytes = 0;
        fs.ftruncateSync(fd, 0);
      } else {
        res.resume();
        throw status >= 300 ? statusError(res, ctx, what) : new CheckpointError(`${url}: unexpected HTTP ${status} for ${what.file}`);
      }
      const lengthText = header(res, 'content-length');
      const expected = lengthText !== undefined && /^\d+$/.test(lengthText) ? bytes + Number(lengthText) : size;
      const start = bytes;
      // Hash and file advance together, chunk by chunk, so a resume offset is always what is on disk.
      const sink = new Writable({
        write(chunk: Buffer, _enc, done) {
          try {
            for (let off = 0; off < chunk.length; ) off += fs.writeSync(fd, chunk, off, chunk.length - off, bytes + off);
            hash.update(chunk);
            bytes += chunk.length;
            ctx.onProgress?.({ file: what.file, bytes, total: expected });
            done();
          } catch (e) {
            done(new CheckpointError(`${tmp}: cannot write the download (${(e as Error).message})`)); // disk errors are not retried
          }
        },
      });
      try {
        await pipeline(res, sink);
      } catch (e) {
        if (e instanceof TransientError || e instanceof CheckpointError) throw e;
        throw new TransientError(`${url}: transfer of ${what.file} broke off after ${bytes} bytes (${(e as Error).message})`);
      }
      if (expected !== null && bytes !== expected) {
        throw new TransientError(`${url}: ${what.file} ended after ${bytes - start} of ${expected - start} bytes (connection closed early)`);
      }
    });
    if (size !== null && bytes !== size) throw new CheckpointError(`${what.url}: ${what.file} is ${bytes} bytes, the hub announced ${size}`);
    const digest = hash.digest('hex');
    if (sha256 !== null && digest !== sha256) throw new CheckpointError(`${what.url}: ${what.file} has sha256 ${digest}, the hub's etag says ${sha256}`);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    closed = true;
    const blob = path.join(blobsDir, blobName ?? digest);
    fs.renameSync(tmp, blob);
    return blob;
  } catch (e) {
    if (!closed) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** `*.incomplete-<pid>-*` of processes that no longer run: nobody will finish or remove them. */
function removeStaleTemps(blobsDir: string): void {
  for (const name of fs.readdirSync(blobsDir)) {
    const m = /\.incomplete-(\d+)-[0-9a-f]+$/.exec(name);
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') fs.rmSync(path.join(blobsDir, name), { force: true });
    }
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
  const tmp = `${target}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  try {
    try {
      if (!symlinks) throw new Error('copies asked for');
      fs.symlinkSync(rel, tmp);
    } catch {
      fs.copyFileSync(blob, tmp); // Windows without developer mode, some network/FAT file systems
    }
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** The shard names of a downloaded index, validated: the index comes from the network. */
function readShardNames(blob: string, file: string, ctx: Context): string[] {
  const where = `${ctx.repoId}/${file}`;
  const json = parseJsonWithLimits(fs.readFileSync(blob, 'utf8'), { maxDepth: INDEX_MAX_DEPTH, rejectDuplicateKeys: true },
    (problem) => new CheckpointError(`${where}: index ${problem}`));
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
      await new Promise((r) => setTimeout(r, ctx.retryDelayMs * 2 ** n));
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
    const auth: Record<string, string> = ctx.token && current.origin === ctx.endpoint.origin ? { authorization: `Bearer ${ctx.token}` } : {};
    const res = await send(current, method, { ...headers, ...auth }, ctx.timeoutMs);
    const location = header(res, 'location');
    if (![301, 302, 303, 307, 308].includes(res.statusCode ?? 0) || !location || stop(res)) return { res, url: current.href };
    res.resume();
    if (hops >= ctx.maxRedirects) throw new CheckpointError(`${url}: more than ${ctx.maxRedirects} redirects (last to ${location})`);
    const next = new URL(location, current);
    if (!/^https?:$/.test(next.protocol)) throw new CheckpointError(`${url}: redirected to unsupported ${next.href}`);
    current = next;
  }
}

/** One request; resolves at the response headers. The timeout covers waiting for them and any pause in the body. */
function send(url: URL, method: string, headers: Record<string, string>, timeoutMs: number): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    let response: http.IncomingMessage | undefined;
    const request = url.protocol === 'https:' ? https.request : http.request;
    const req = request(url, { method, headers: { 'user-agent': 'llava-vision-tfjs', 'accept-encoding': 'identity', ...headers } }, (res) => {
      response = res;
      res.on('error', () => {}); // reported by whoever reads the body (pipeline)
      resolve(res);
    });
    req.setTimeout(timeoutMs, () => {
      const err = new TransientError(`${url.href}: timed out (nothing received for ${timeoutMs} ms; timeoutMs option)`);
      if (response) response.destroy(err);
      else req.destroy(err);
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e instanceof TransientError) return reject(e);
      const message = `${url.href}: network error ${e.code ?? ''} ${e.message}`.replace(/\s+/g, ' ');
      const transient = ['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EAI_AGAIN'].includes(e.code ?? '');
      reject(transient ? new TransientError(message) : new UnreachableError(`${message} (check the endpoint / HF_ENDPOINT and the network)`));
    });
    req.end();
  });
}

/** The error for an HTTP failure status, saying what to do about it; 429 and 5xx are retried. */
function statusError(res: http.IncomingMessage, ctx: Context, what: { url: string; file: string; revision: string }): Error {
  const status = res.statusCode ?? 0;
  const code = header(res, 'x-error-code');
  const head = `${what.url}: HTTP ${status}`;
  if (status === 429 || status >= 500) return new TransientError(`${head} for ${what.file} of ${ctx.repoId}`);
  if (status === 401 || status === 403) {
    const hint = ctx.token
      ? 'the token (HF_TOKEN) was refused or has no access: accept the repo\'s conditions on the hub with that account'
      : 'if it is gated or private, set HF_TOKEN to a token of an account with access (and accept its conditions on the hub)';
    return new CheckpointError(`${head}: cannot access ${ctx.repoId}${code === 'RepoNotFound' ? ' (not found)' : ''}; ${hint}`);
  }
  if (status === 404) {
    if (code === 'RepoNotFound') return new CheckpointError(`${head}: repo ${ctx.repoId} not found`);
    if (code === 'RevisionNotFound') return new CheckpointError(`${head}: revision ${what.revision} not found in ${ctx.repoId}`);
    return new CheckpointError(`${head}: ${what.file} not found in ${ctx.repoId} at revision ${what.revision}`);
  }
  return new CheckpointError(`${head} for ${what.file} of ${ctx.repoId}`);
}

function header(res: http.IncomingMessage, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** X-Linked-Etag (LFS: sha256) else ETag, without quotes and weak prefix. */
function etagOf(res: http.IncomingMessage): string | null {
  const raw = header(res, 'x-linked-etag') ?? header(res, 'etag');
  return raw ? raw.replace(/^W\//, '').replace(/^"|"$/g, '') : null;
}

function globToRegExp(glob: string): RegExp {
  return new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
}
