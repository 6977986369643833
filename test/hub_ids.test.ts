/**
 * Models by hub id (issue 12, item 8): `--model org/name` and `LlavaVision.load(repoId)` resolve from the
 * local HF cache first (laid out as huggingface_hub writes it), download only on opt-in, honour
 * HF_HUB_OFFLINE=1, and `download` of a cached repo needs no network. Requests go to a fake hub on
 * 127.0.0.1 only (any other host fails the test).
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { LlavaVision } from '../src/api/llava_vision';
import { ConfigError } from '../src/errors';
import { cachedSnapshot } from '../src/io/hub';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors';
import { COMMIT, FakeHub, gitBlobId, guardNetwork, httpModule, sha256 } from './helpers/fake_hub';
import { CASES } from './helpers/golden';
import { runCli } from './helpers/cli';

const CLIP_DIR = path.join(CASES, 'tiny_clip_full_layout_f32', 'model');
const REPO = 'openai/clip-tiny';
const OTHER_COMMIT = createHash('sha1').update('an older commit').digest('hex');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-hubids-'));
let count = 0;
const fresh = (name: string) => path.join(tmp, `${name}${count++}`);

guardNetwork();
const savedEnv = { ...process.env };
const hubs: FakeHub[] = [];
beforeEach(() => {
  for (const k of ['HF_TOKEN', 'HF_ENDPOINT', 'HF_HOME', 'HF_HUB_CACHE', 'HF_HUB_OFFLINE', 'LLAVA_VISION_DOWNLOAD'])
    delete process.env[k];
  process.env.HF_HUB_CACHE = fresh('empty-cache'); // never the user's real cache
});
afterAll(async () => {
  for (const hub of hubs) await hub.close();
  process.env = savedEnv;
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Requests made through http.request so far (the guard's spy sees every one, to any server). */
const requests = () => (httpModule.request as unknown as jest.Mock).mock.calls.length;

/**
 * A repo in an HF cache as huggingface_hub leaves it: blobs named by the hub's etag, snapshots/<commit>/
 * relative symlinks, refs/main = the commit. Also an older snapshot with a broken config.json, which
 * nothing may pick (refs/main names the current one).
 */
function cacheRepo(cacheDir: string, repo: string, files: string[] = fs.readdirSync(CLIP_DIR)): string {
  const repoDir = path.join(cacheDir, `models--${repo.replace('/', '--')}`);
  const snapshot = path.join(repoDir, 'snapshots', COMMIT);
  fs.mkdirSync(path.join(repoDir, 'blobs'), { recursive: true });
  fs.mkdirSync(snapshot, { recursive: true });
  for (const f of files) {
    const body = fs.readFileSync(path.join(CLIP_DIR, f));
    // As the hub names them (and so the fake one): LFS files by sha256, others by their git blob id.
    const blob = /\.(safetensors|bin)$/.test(f) ? sha256(body) : gitBlobId(body);
    fs.writeFileSync(path.join(repoDir, 'blobs', blob), body);
    fs.symlinkSync(path.join('..', '..', 'blobs', blob), path.join(snapshot, f));
  }
  const older = path.join(repoDir, 'snapshots', OTHER_COMMIT);
  fs.mkdirSync(older, { recursive: true });
  fs.writeFileSync(path.join(older, 'config.json'), '{ broken');
  fs.mkdirSync(path.join(repoDir, 'refs'), { recursive: true });
  fs.writeFileSync(path.join(repoDir, 'refs', 'main'), COMMIT);
  return snapshot;
}

async function startHub(): Promise<FakeHub> {
  const hub = await new FakeHub().addRepo(REPO, CLIP_DIR).start();
  hubs.push(hub);
  return hub;
}

function pixelValues(): string {
  const pv = fresh('pv') + '.safetensors';
  writeSafetensors(pv, {
    pixel_values: { dtype: 'F32', shape: [1, 3, 28, 28], data: new Float32Array(3 * 28 * 28).fill(0.5) },
  });
  return pv;
}

describe('from the cache, no request', () => {
  test("LlavaVision.load(repoId) finds refs/main's snapshot under HF_HUB_CACHE, and under HF_HOME/hub", async () => {
    const cache = fresh('cache');
    const snapshot = cacheRepo(cache, REPO);
    process.env.HF_HUB_CACHE = cache;
    const before = requests();
    const model = await LlavaVision.load(REPO, { log: null });
    try {
      expect(model.modelDir).toBe(snapshot);
      expect(model.checkpointKind).toBe('clip');
    } finally {
      model.dispose();
    }

    delete process.env.HF_HUB_CACHE;
    const home = fresh('hf-home');
    const inHome = cacheRepo(path.join(home, 'hub'), REPO);
    process.env.HF_HOME = home;
    const again = await LlavaVision.load(REPO, { log: null });
    try {
      expect(again.modelDir).toBe(inHome);
    } finally {
      again.dispose();
    }
    expect(requests()).toBe(before);
  });

  test('CLI: encode --model REPO_ID and preprocess --model REPO_ID; the output records the snapshot folder', async () => {
    const cache = fresh('cache');
    const snapshot = cacheRepo(cache, REPO);
    process.env.HF_HUB_CACHE = cache;
    const before = requests();
    const out = fresh('out') + '.safetensors';
    const r = await runCli(['encode', '--model', REPO, '--pixel-values', pixelValues(), '--quiet', '--out', out]);
    expect(r).toEqual({ code: 0, out: '', err: '' });
    const st = SafetensorsFile.open(out);
    expect(st.metadata.model_dir).toBe(snapshot);
    expect(st.keys()).toEqual(['images.0.features']);
    st.close();
    const pv = fresh('pre') + '.safetensors';
    expect(
      await runCli([
        'preprocess',
        '--model',
        REPO,
        '--quiet',
        path.join(CASES, '..', 'images', 'tiny_rgb_37x23.png'),
        '--out',
        pv,
      ]),
    ).toEqual({ code: 0, out: '', err: '' });
    const pre = SafetensorsFile.open(pv);
    expect(pre.metadata.preprocessor).toBe(path.join(snapshot, 'preprocessor_config.json'));
    expect(pre.info('images.0.pixel_values').shape).toEqual([1, 3, 28, 28]);
    pre.close();
    expect(requests()).toBe(before);
  });

  test('inspect REPO_ID reads the cached snapshot; one not cached says how to get it', async () => {
    const cache = fresh('cache');
    const snapshot = cacheRepo(cache, REPO);
    process.env.HF_HUB_CACHE = cache;
    const r = await runCli(['inspect', '--json', REPO]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ path: snapshot, layout: 'clip' });
    const missing = await runCli(['inspect', 'openai/not-cached']);
    expect(missing).toEqual({
      code: 1,
      out: '',
      err: `llava-vision: openai/not-cached: no such file or folder, nor in the HuggingFace cache (${cache}); get it with "llava-vision download openai/not-cached"\n`,
    });
  });

  test('a local folder of the same name wins over the cache (as from_pretrained)', async () => {
    const cache = fresh('cache');
    cacheRepo(cache, REPO);
    process.env.HF_HUB_CACHE = cache;
    const cwd = fresh('cwd');
    fs.cpSync(CLIP_DIR, path.join(cwd, REPO), { recursive: true });
    const saved = process.cwd();
    process.chdir(cwd);
    try {
      const model = await LlavaVision.load(REPO, { log: null });
      try {
        expect(model.modelDir).toBe(REPO);
      } finally {
        model.dispose();
      }
    } finally {
      process.chdir(saved);
    }
  });
});

describe('not in the cache', () => {
  test('without --download: one line saying how to get it; no request', async () => {
    const before = requests();
    const cache = process.env.HF_HUB_CACHE!;
    const r = await runCli([
      'encode',
      '--model',
      'openai/not-cached',
      '--pixel-values',
      pixelValues(),
      '--out',
      fresh('o') + '.safetensors',
    ]);
    expect(r.code).toBe(1);
    expect(r.err).toBe(
      `llava-vision: openai/not-cached: no such folder, and not in the HuggingFace cache (${cache}); ` +
        'get it with "llava-vision download openai/not-cached", or pass --download (download option, or LLAVA_VISION_DOWNLOAD=1)\n',
    );
    const e: unknown = await LlavaVision.load('openai/not-cached', { log: null }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as Error).message).toMatch(/llava-vision download openai\/not-cached/);
    expect(requests()).toBe(before);
  });

  test('a snapshot without weights is not taken for the model: the message says what it lacks', async () => {
    const cache = fresh('cache');
    cacheRepo(cache, REPO, ['config.json']);
    process.env.HF_HUB_CACHE = cache;
    const e: unknown = await LlavaVision.load(REPO, { log: null }).catch((x: unknown) => x);
    expect((e as Error).message).toMatch(
      /only partly in the HuggingFace cache \(.*snapshots\/[0-9a-f]{40} lacks weights\)/,
    );
  });

  test('--download / download: true fetches it into the cache; the next load makes no request', async () => {
    const hub = await startHub();
    process.env.HF_ENDPOINT = hub.endpoint;
    const out = fresh('o') + '.safetensors';
    const r = await runCli([
      'encode',
      '--model',
      REPO,
      '--download',
      '--pixel-values',
      pixelValues(),
      '--quiet',
      '--out',
      out,
    ]);
    expect(r).toEqual({ code: 0, out: '', err: '' });
    const snapshot = path.join(process.env.HF_HUB_CACHE!, 'models--openai--clip-tiny', 'snapshots', COMMIT);
    expect(
      fs
        .readFileSync(path.join(snapshot, 'model.safetensors'))
        .equals(fs.readFileSync(path.join(CLIP_DIR, 'model.safetensors'))),
    ).toBe(true);
    const hits = hub.hits.length;
    expect(hits).toBeGreaterThan(0);
    const model = await LlavaVision.load(REPO, { log: null, download: true });
    try {
      expect(model.modelDir).toBe(snapshot);
    } finally {
      model.dispose();
    }
    expect(hub.hits.length).toBe(hits);
  });

  test('HF_HUB_OFFLINE=1: --download makes no request and says why', async () => {
    const hub = await startHub();
    process.env.HF_ENDPOINT = hub.endpoint;
    process.env.HF_HUB_OFFLINE = '1';
    const r = await runCli([
      'encode',
      '--model',
      REPO,
      '--download',
      '--pixel-values',
      pixelValues(),
      '--out',
      fresh('o') + '.safetensors',
    ]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      /^llava-vision: openai\/clip-tiny: no such folder, and not in the HuggingFace cache .*; HF_HUB_OFFLINE=1 forbids downloading it/,
    );
    expect(r.err.trim().split('\n')).toHaveLength(1);
    const d = await runCli(['download', REPO]);
    expect(d.code).toBe(1);
    expect(d.err).toMatch(
      /openai\/clip-tiny at revision main: it is not in the HF cache .*HF_HUB_OFFLINE=1 forbids downloading/,
    );
    expect(hub.hits).toHaveLength(0);
  });
});

describe('download of a cached repo', () => {
  test('needs no network: no request to a running hub, none offline, none to a dead endpoint', async () => {
    const cache = fresh('cache');
    const snapshot = cacheRepo(cache, REPO);
    process.env.HF_HUB_CACHE = cache;
    const hub = await startHub();
    process.env.HF_ENDPOINT = hub.endpoint;
    expect(await runCli(['download', REPO])).toEqual({ code: 0, out: snapshot + '\n', err: '' });
    expect(hub.hits).toHaveLength(0);
    process.env.HF_HUB_OFFLINE = '1';
    expect(await runCli(['download', REPO])).toEqual({ code: 0, out: snapshot + '\n', err: '' });
    delete process.env.HF_HUB_OFFLINE;
    process.env.HF_ENDPOINT = 'http://127.0.0.1:9'; // nothing listens there
    const before = requests();
    expect(await runCli(['download', REPO])).toEqual({ code: 0, out: snapshot + '\n', err: '' });
    expect(requests()).toBe(before);
    expect(cachedSnapshot(REPO)).toBe(snapshot);
  });

  test('--refresh asks the hub, and falls back to the cache (with a note) when the hub cannot be reached', async () => {
    const cache = fresh('cache');
    const snapshot = cacheRepo(cache, REPO);
    process.env.HF_HUB_CACHE = cache;
    const hub = await startHub();
    process.env.HF_ENDPOINT = hub.endpoint;
    expect(await runCli(['download', REPO, '--refresh'])).toEqual({ code: 0, out: snapshot + '\n', err: '' });
    expect(hub.hits.filter((h) => h.method === 'HEAD').length).toBeGreaterThan(0);
    expect(hub.hits.filter((h) => h.method === 'GET')).toHaveLength(0); // blobs already there

    process.env.HF_ENDPOINT = 'http://127.0.0.1:9';
    const r = await runCli(['download', REPO, '--refresh']);
    expect(r.code).toBe(0);
    expect(r.out).toBe(snapshot + '\n');
    expect(r.err).toMatch(
      /^llava-vision: openai\/clip-tiny: the hub could not be reached \(.*ECONNREFUSED.*\); using the cached snapshot /,
    );
  });

  test('a partly cached repo is completed from the hub', async () => {
    const cache = fresh('cache');
    const snapshot = cacheRepo(cache, REPO, ['config.json', 'preprocessor_config.json']);
    process.env.HF_HUB_CACHE = cache;
    const hub = await startHub();
    process.env.HF_ENDPOINT = hub.endpoint;
    expect(await runCli(['download', REPO, '--quiet'])).toEqual({ code: 0, out: snapshot + '\n', err: '' });
    expect(hub.hits.filter((h) => h.server === 'cdn' && h.method === 'GET')).toHaveLength(1); // only the weights
    expect(fs.existsSync(path.join(snapshot, 'model.safetensors'))).toBe(true);
  });
});
