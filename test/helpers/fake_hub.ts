/**
 * A fake HuggingFace hub on 127.0.0.1: a "hub" server answering /{repo}/resolve/{revision}/{file} like
 * huggingface.co (LFS files redirect to a "CDN" server on another port, with X-Linked-Etag = sha256; other
 * files answer with their git blob id as ETag), and
 * the CDN serving /cdn/<sha256> with Range support. `guardNetwork()` makes any request to another host
 * (and any https request) fail the test.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import type { IncomingMessage, Server, ServerResponse } from 'http';

import http = require('http');
import https = require('https');

// The real module objects (the code under test reads http.request through them at call time).
export const httpModule = http;
export const httpsModule = https;

/** The commit every fake repo is at. */
export const COMMIT = createHash('sha1').update('fake commit').digest('hex');
export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** A git file's id, the hub's ETag for files not in LFS (huggingface_hub's `git_hash`). */
export const gitBlobId = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const isLfs = (f: string) => /\.(safetensors|bin)$/.test(f);

export interface Hit {
  server: 'hub' | 'cdn';
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
}
export type Hook = (req: IncomingMessage, res: ServerResponse, file: string) => boolean;

/** Two servers (hub + CDN) over a set of repos, recording every request; hooks can replace any answer. */
export class FakeHub {
  readonly repos = new Map<string, Map<string, Buffer>>();
  readonly hits: Hit[] = [];
  requireToken: string | null = null;
  hubHook: Hook | null = null;
  cdnHook: Hook | null = null;
  private servers: Server[] = [];
  private ports: number[] = [];

  addRepo(repo: string, dir: string, edit: (files: Map<string, Buffer>) => void = () => {}): this {
    const files = new Map(fs.readdirSync(dir).map((f) => [f, fs.readFileSync(path.join(dir, f))] as [string, Buffer]));
    edit(files);
    this.repos.set(repo, files);
    return this;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.ports[0]}`;
  }

  count(server: 'hub' | 'cdn', method?: string): number {
    return this.hits.filter((h) => h.server === server && (!method || h.method === method)).length;
  }

  async start(): Promise<this> {
    for (const handler of [this.hub.bind(this), this.cdn.bind(this)]) {
      const server = httpModule.createServer(handler);
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      this.servers.push(server);
      this.ports.push((server.address() as { port: number }).port);
    }
    return this;
  }

  async close(): Promise<void> {
    for (const s of this.servers) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
  }

  private hub(req: IncomingMessage, res: ServerResponse): void {
    this.hits.push({ server: 'hub', method: req.method!, path: req.url!, headers: req.headers });
    const m = /^\/(.+)\/resolve\/([^/]+)\/([^/]+)$/.exec(req.url!);
    const file = m ? decodeURIComponent(m[3]) : '';
    if (this.hubHook?.(req, res, file)) return;
    const files = m ? this.repos.get(m[1]) : undefined;
    const fail = (status: number, code: string) =>
      void res.writeHead(status, { 'x-error-code': code, 'content-length': 0 }).end();
    if (!files) return fail(401, 'RepoNotFound'); // as the hub: unknown and private repos look the same
    if (this.requireToken && req.headers.authorization !== `Bearer ${this.requireToken}`) return fail(401, 'GatedRepo');
    const revision = decodeURIComponent(m![2]);
    if (revision !== 'main' && revision !== COMMIT) return fail(404, 'RevisionNotFound');
    const body = files.get(file);
    if (!body) return fail(404, 'EntryNotFound');
    if (isLfs(file)) {
      const sha = sha256(body);
      res.writeHead(302, {
        location: `http://127.0.0.1:${this.ports[1]}/cdn/${sha}`,
        'x-linked-etag': `"${sha}"`,
        'x-linked-size': body.length,
        etag: `"${sha}"`,
        'x-repo-commit': COMMIT,
        'content-length': 0,
      });
      return void res.end();
    }
    res.writeHead(200, { etag: `"${gitBlobId(body)}"`, 'x-repo-commit': COMMIT, 'content-length': body.length });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  private cdn(req: IncomingMessage, res: ServerResponse): void {
    this.hits.push({ server: 'cdn', method: req.method!, path: req.url!, headers: req.headers });
    const sha = req.url!.replace('/cdn/', '');
    const body = [...this.repos.values()].flatMap((f) => [...f.values()]).find((b) => sha256(b) === sha);
    if (this.cdnHook?.(req, res, sha)) return;
    if (!body) return void res.writeHead(404, { 'content-length': 0 }).end();
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range) {
      const from = Number(range[1]);
      res.writeHead(206, {
        'content-range': `bytes ${from}-${body.length - 1}/${body.length}`,
        'content-length': body.length - from,
      });
      return void res.end(body.subarray(from));
    }
    res.writeHead(200, { 'content-length': body.length });
    res.end(body);
  }
}

/** In a suite: requests to any host but 127.0.0.1, and https requests, throw (installed in beforeAll). */
export function guardNetwork(): void {
  beforeAll(() => {
    const realRequest = httpModule.request.bind(httpModule) as (...args: unknown[]) => http.ClientRequest;
    jest.spyOn(httpModule, 'request').mockImplementation((url: URL | string, ...rest: unknown[]) => {
      const host = new URL(String(url)).hostname;
      if (host !== '127.0.0.1') throw new Error(`test tried to contact ${host}`);
      return realRequest(url, ...rest);
    });
    jest.spyOn(httpsModule, 'request').mockImplementation(() => {
      throw new Error('test tried an https request');
    });
  });
  afterAll(() => jest.restoreAllMocks());
}
