/**
 * Hub downloads against a fake HuggingFace hub on 127.0.0.1 (test/helpers/fake_hub.ts).
 * http.request is guarded: any host other than 127.0.0.1 (and any https) fails the test.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { LlavaVision } from '../src/api/llava_vision';
import { resolveVisionTower } from '../src/loading/sources';
import { main } from '../src/cli/main';
import { CheckpointError, ConfigError } from '../src/errors';
import { DownloadOptions, downloadModel } from '../src/io/hub';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors';
import { CASES } from './helpers/golden';
import { COMMIT, FakeHub, guardNetwork, httpModule, sha256 } from './helpers/fake_hub';
import { JsonObject, readJson } from './helpers/json';

const CLIP_DIR = path.join(CASES, 'tiny_clip_full_layout_f32', 'model');
const LLAVA_CASE = path.join(CASES, 'tiny_llava_anyres_spatial_unpad');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-hub-'));
let cacheCount = 0;
const newCache = () => path.join(tmp, `cache${cacheCount++}`);

const hubs: FakeHub[] = [];
async function startHub(): Promise<FakeHub> {
  const hub = await new FakeHub().addRepo('openai/clip-tiny', CLIP_DIR).start();
  hubs.push(hub);
  return hub;
}
const quick = (hub: FakeHub, extra: DownloadOptions = {}): DownloadOptions => ({
  endpoint: hub.endpoint,
  cacheDir: newCache(),
  token: null,
  retryDelayMs: 5,
  timeoutMs: 5000,
  ...extra,
});

/** Every file under a folder, relative, sorted (to assert nothing is left behind). */
function listTree(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((f) => !fs.statSync(path.join(dir, f)).isDirectory())
    .sort();
}

const savedEnv = { ...process.env };
guardNetwork();
beforeAll(() => {
  for (const k of ['HF_TOKEN', 'HF_ENDPOINT', 'HF_HOME', 'HF_HUB_OFFLINE', 'LLAVA_VISION_DOWNLOAD'])
    delete process.env[k];
  process.env.HF_HUB_CACHE = path.join(tmp, 'env-cache'); // never the user's real cache
});
afterAll(async () => {
  for (const hub of hubs) await hub.close();
  process.env = savedEnv;
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('downloads into the HF cache layout; the snapshot loads; a second call fetches no weights', async () => {
  const hub = await startHub();
  const options = quick(hub, { token: 'hf_secret' });
  const snapshot = await downloadModel('openai/clip-tiny', options);
  const repoDir = path.join(options.cacheDir!, 'models--openai--clip-tiny');
  expect(snapshot).toBe(path.join(repoDir, 'snapshots', COMMIT));
  expect(fs.readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8')).toBe(COMMIT);
  const weights = fs.readFileSync(path.join(CLIP_DIR, 'model.safetensors'));
  expect(fs.readlinkSync(path.join(snapshot, 'model.safetensors'))).toBe(
    path.join('..', '..', 'blobs', sha256(weights)),
  );
  for (const f of ['config.json', 'preprocessor_config.json', 'model.safetensors']) {
    expect(fs.lstatSync(path.join(snapshot, f)).isSymbolicLink()).toBe(true);
    expect(fs.readFileSync(path.join(snapshot, f)).equals(fs.readFileSync(path.join(CLIP_DIR, f)))).toBe(true);
  }
  expect(listTree(path.join(repoDir, 'blobs'))).toHaveLength(3); // no temp files left
  // The token goes to the hub, never to the CDN on another origin.
  expect(hub.hits.filter((h) => h.server === 'hub').every((h) => h.headers.authorization === 'Bearer hf_secret')).toBe(
    true,
  );
  expect(hub.hits.filter((h) => h.server === 'cdn').map((h) => [h.method, h.headers.authorization])).toEqual([
    ['GET', undefined],
  ]);
  // Weights: the index is probed (404), then model.safetensors; later files are asked at the commit.
  expect(hub.hits.some((h) => h.path.endsWith(`/resolve/${COMMIT}/model.safetensors`))).toBe(true);

  expect((httpModule.request as unknown as jest.Mock).mock.calls.length).toBeGreaterThan(0); // the loopback guard is in the path
  const model = await LlavaVision.load(snapshot, { log: null });
  try {
    expect(model.checkpointKind).toBe('clip');
  } finally {
    model.dispose();
  }

  const before = hub.hits.length;
  expect(await downloadModel('openai/clip-tiny', options)).toBe(snapshot);
  const again = hub.hits.slice(before);
  expect(again.every((h) => h.server === 'hub' && h.method === 'HEAD')).toBe(true);
  expect(again.length).toBeLessThanOrEqual(4);
});

test('symlinks: false copies the blobs; allowPatterns and files select what is fetched', async () => {
  const hub = await startHub();
  const snapshot = await downloadModel('openai/clip-tiny', quick(hub, { symlinks: false }));
  expect(fs.lstatSync(path.join(snapshot, 'model.safetensors')).isFile()).toBe(true);
  const configsOnly = await downloadModel('openai/clip-tiny', quick(hub, { allowPatterns: ['*.json'] }));
  expect(fs.readdirSync(configsOnly).sort()).toEqual(['config.json', 'preprocessor_config.json']);
  const one = await downloadModel('openai/clip-tiny', quick(hub, { files: ['config.json'] }));
  expect(fs.readdirSync(one)).toEqual(['config.json']);
});

test('a sharded checkpoint: the index and its shards; mm_projector.bin on request', async () => {
  const hub = await startHub();
  hub.addRepo('liuhaotian/llava-tiny', path.join(LLAVA_CASE, 'llava'), (f) =>
    f.set('mm_projector.bin', Buffer.from('projector bytes')),
  );
  const snapshot = await downloadModel('liuhaotian/llava-tiny', quick(hub, { includeProjector: true }));
  expect(fs.readdirSync(snapshot).sort()).toEqual([
    'config.json',
    'mm_projector.bin',
    'model-00001-of-00002.safetensors',
    'model-00002-of-00002.safetensors',
    'model.safetensors.index.json',
  ]);
  expect(
    fs
      .readFileSync(path.join(snapshot, 'model-00002-of-00002.safetensors'))
      .equals(fs.readFileSync(path.join(LLAVA_CASE, 'llava', 'model-00002-of-00002.safetensors'))),
  ).toBe(true);
});

test('404 names the repo, file and revision; 401 tells to set HF_TOKEN', async () => {
  const hub = await startHub();
  await expect(downloadModel('openai/clip-tiny', quick(hub, { files: ['nope.json'] }))).rejects.toThrow(
    /nope\.json not found in openai\/clip-tiny at revision main/,
  );
  await expect(downloadModel('openai/clip-tiny', quick(hub, { revision: 'v9' }))).rejects.toThrow(
    /revision v9 not found in openai\/clip-tiny/,
  );
  const noWeights = await startHub();
  noWeights.addRepo('org/configs-only', CLIP_DIR, (f) => f.delete('model.safetensors'));
  await expect(downloadModel('org/configs-only', quick(noWeights))).rejects.toThrow(
    /org\/configs-only at revision main: no weights/,
  );
  hub.requireToken = 'hf_good';
  const err = await downloadModel('openai/clip-tiny', quick(hub)).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(CheckpointError);
  expect((err as Error).message).toMatch(/HTTP 401.*openai\/clip-tiny.*set HF_TOKEN/);
  await expect(downloadModel('openai/clip-tiny', quick(hub, { token: 'hf_bad' }))).rejects.toThrow(
    /token \(HF_TOKEN\) was refused/,
  );
  process.env.HF_TOKEN = 'hf_good'; // the default token comes from the environment
  try {
    await expect(downloadModel('openai/clip-tiny', quick(hub, { token: undefined }))).resolves.toContain(COMMIT);
  } finally {
    delete process.env.HF_TOKEN;
  }
});

test('a body cut short: resumed with a Range request, or an error and no file under its final name', async () => {
  const hub = await startHub();
  const weights = fs.readFileSync(path.join(CLIP_DIR, 'model.safetensors'));
  let cuts = 1;
  hub.cdnHook = (req, res) => {
    if (cuts === 0 || req.headers.range) return false;
    cuts--;
    res.writeHead(200, { 'content-length': weights.length });
    res.write(weights.subarray(0, 50_000), () => res.destroy());
    return true;
  };
  const snapshot = await downloadModel('openai/clip-tiny', quick(hub));
  expect(fs.readFileSync(path.join(snapshot, 'model.safetensors')).equals(weights)).toBe(true);
  const cdn = hub.hits.filter((h) => h.server === 'cdn');
  expect(cdn.map((h) => h.headers.range)).toEqual([undefined, expect.stringMatching(/^bytes=\d+-$/)]);

  cuts = Infinity; // always cut, Range or not
  hub.cdnHook = (req, res) => {
    res.writeHead(200, { 'content-length': weights.length });
    res.write(weights.subarray(0, 50_000), () => res.destroy());
    return true;
  };
  const options = quick(hub, { maxRetries: 2 });
  // A temp file of a process that died is swept; one of a live process (ours) is left alone.
  const blobsDir = path.join(options.cacheDir!, 'models--openai--clip-tiny', 'blobs');
  fs.mkdirSync(blobsDir, { recursive: true });
  const deadPid = spawnSync(process.execPath, ['-e', '']).pid;
  fs.writeFileSync(path.join(blobsDir, `${sha256(weights)}.incomplete-${deadPid}-abcdef`), 'stale');
  const before = hub.count('cdn');
  await expect(downloadModel('openai/clip-tiny', options)).rejects.toThrow(
    /model\.safetensors.*(broke off|ended after).*gave up after 2 retries/,
  );
  expect(hub.count('cdn') - before).toBe(3);
  const repoDir = path.join(options.cacheDir!, 'models--openai--clip-tiny');
  expect(listTree(blobsDir)).toHaveLength(2); // the two configs: no weights, no temp file (ours or the stale one)
  expect(fs.existsSync(path.join(repoDir, 'snapshots'))).toBe(false);
});

test('a sha256 that does not match the etag is an error; so is a size different from X-Linked-Size', async () => {
  const hub = await startHub();
  const weights = fs.readFileSync(path.join(CLIP_DIR, 'model.safetensors'));
  const corrupt = Buffer.from(weights);
  corrupt[1000] ^= 1;
  hub.cdnHook = (_req, res) => (res.writeHead(200, { 'content-length': corrupt.length }).end(corrupt), true);
  const options = quick(hub);
  await expect(downloadModel('openai/clip-tiny', options)).rejects.toThrow(
    /model\.safetensors has sha256 [0-9a-f]{64}, the hub's etag says/,
  );
  expect(
    listTree(path.join(options.cacheDir!, 'models--openai--clip-tiny', 'blobs')).some((f) => f === sha256(weights)),
  ).toBe(false);
  hub.cdnHook = (_req, res) => (res.writeHead(200, { 'content-length': 10 }).end(weights.subarray(0, 10)), true);
  await expect(downloadModel('openai/clip-tiny', quick(hub))).rejects.toThrow(
    /model\.safetensors is 10 bytes, the hub announced 197588/,
  );
});

test('no answer: a timeout error, retried a bounded number of times; 5xx retried with backoff, then an error', async () => {
  const hub = await startHub();
  hub.hubHook = () => true; // never answers
  const t0 = Date.now();
  await expect(downloadModel('openai/clip-tiny', quick(hub, { timeoutMs: 200, maxRetries: 1 }))).rejects.toThrow(
    /timed out \(nothing received for 200 ms/,
  );
  expect(Date.now() - t0).toBeLessThan(3000);
  expect(hub.count('hub')).toBe(2);

  let failures = 2;
  hub.hubHook = (_req, res) => (failures-- > 0 ? (res.writeHead(503, { 'content-length': 0 }).end(), true) : false);
  await expect(downloadModel('openai/clip-tiny', quick(hub))).resolves.toContain(COMMIT);
  hub.hubHook = (_req, res) => (res.writeHead(502, { 'content-length': 0 }).end(), true);
  const before = hub.count('hub');
  await expect(downloadModel('openai/clip-tiny', quick(hub, { maxRetries: 3 }))).rejects.toThrow(
    /HTTP 502 for config\.json.*gave up after 3 retries/,
  );
  expect(hub.count('hub') - before).toBe(4);
});

test('redirect loops stop at the limit; a connection refused is a plain error', async () => {
  const hub = await startHub();
  hub.hubHook = (req, res) => (res.writeHead(302, { location: req.url!, 'content-length': 0 }).end(), true);
  await expect(downloadModel('openai/clip-tiny', quick(hub, { maxRedirects: 3 }))).rejects.toThrow(
    /more than 3 redirects/,
  );
  expect(hub.count('hub')).toBe(4);
  const closed = await startHub();
  const endpoint = closed.endpoint;
  await closed.close();
  await expect(downloadModel('openai/clip-tiny', { ...quick(closed), endpoint })).rejects.toThrow(
    /network error ECONNREFUSED/,
  );
});

test('an index naming ../evil is rejected before anything is fetched for it; bad repo ids and revisions are rejected offline', async () => {
  const hub = await startHub();
  hub.addRepo('org/evil', path.join(LLAVA_CASE, 'llava'), (f) =>
    f.set(
      'model.safetensors.index.json',
      Buffer.from(JSON.stringify({ weight_map: { a: '../evil', b: 'model-00001-of-00002.safetensors' } })),
    ),
  );
  await expect(downloadModel('org/evil', quick(hub))).rejects.toThrow(
    /org\/evil\/model\.safetensors\.index\.json weight_map: file "\.\.\/evil" must be a plain file name/,
  );
  expect(hub.hits.some((h) => h.path.includes('evil/resolve/main/..') || h.path.includes('%2F'))).toBe(false);
  expect(hub.hits.some((h) => h.path.includes('model-00001'))).toBe(false);

  const before = hub.hits.length;
  for (const bad of ['a/b/c', '../x', 'org/..', 'org/a..b', 'a b/c', '', 'org/-x', 'org--a/b', '/abs']) {
    await expect(downloadModel(bad, quick(hub))).rejects.toThrow(ConfigError);
  }
  await expect(downloadModel('openai/clip-tiny', quick(hub, { revision: '../main' }))).rejects.toThrow(
    /revision "\.\.\/main"/,
  );
  await expect(downloadModel('openai/clip-tiny', quick(hub, { files: ['sub/x.json'] }))).rejects.toThrow(
    /plain file name/,
  );
  expect(hub.hits.length).toBe(before);
});

test('LLaVA mm_vision_tower from the hub: resolveVisionTower / LlavaVision.load with download, and the message without', async () => {
  const hub = await startHub();
  hub.addRepo('openai/clip-tower-tiny', path.join(LLAVA_CASE, 'clip_tower'));
  const llavaDir = path.join(tmp, 'llava');
  fs.cpSync(path.join(LLAVA_CASE, 'llava'), llavaDir, { recursive: true });
  const config = readJson<JsonObject>(path.join(llavaDir, 'config.json'));
  fs.writeFileSync(
    path.join(llavaDir, 'config.json'),
    JSON.stringify({ ...config, mm_vision_tower: 'openai/clip-tower-tiny' }),
  );

  const err: unknown = await LlavaVision.load(llavaDir, { log: null }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as Error).message).toMatch(
    /mm_vision_tower "openai\/clip-tower-tiny" is not a local CLIP folder.*--download.*--vision-tower DIR/,
  );
  expect(hub.hits).toHaveLength(0);

  const options = quick(hub);
  const tower = await resolveVisionTower('openai/clip-tower-tiny', llavaDir, { download: options });
  expect(tower).toBe(path.join(options.cacheDir!, 'models--openai--clip-tower-tiny', 'snapshots', COMMIT));
  const model = await LlavaVision.load(llavaDir, { log: null, download: options });
  try {
    expect(model.tower.visionTowerName).toBe(tower);
    expect(model.projector?.type).toBe('mlp2x_gelu');
  } finally {
    model.dispose();
  }
  // Found in the cache now: no request at all.
  const before = hub.hits.length;
  expect(await resolveVisionTower('openai/clip-tower-tiny', llavaDir, { download: options })).toBe(tower);
  expect(hub.hits.length).toBe(before);
});

test('encode records the tower it used in the output metadata, also when mm_vision_tower came from the HF cache', async () => {
  const hub = await startHub();
  hub.addRepo('openai/clip-tower-tiny', path.join(LLAVA_CASE, 'clip_tower'));
  const cacheDir = newCache();
  const snapshot = await downloadModel('openai/clip-tower-tiny', quick(hub, { cacheDir }));
  const llavaDir = path.join(tmp, 'llava-metadata');
  fs.cpSync(path.join(LLAVA_CASE, 'llava'), llavaDir, { recursive: true });
  const config = readJson<JsonObject>(path.join(llavaDir, 'config.json'));
  fs.writeFileSync(
    path.join(llavaDir, 'config.json'),
    JSON.stringify({ ...config, mm_vision_tower: 'openai/clip-tower-tiny' }),
  );
  const pv = path.join(tmp, 'pv-metadata.safetensors');
  writeSafetensors(pv, {
    pixel_values: { dtype: 'F32', shape: [1, 3, 56, 56], data: new Float32Array(3 * 56 * 56).fill(0.25) },
  });
  const options = async (...extra: string[]) => {
    const outFile = path.join(tmp, 'metadata-out.safetensors');
    let err = '';
    const code = await main(
      [
        'encode',
        '--model',
        llavaDir,
        '--pixel-values',
        pv,
        '--save',
        'features',
        '--quiet',
        '--out',
        outFile,
        ...extra,
      ],
      { out: () => {}, err: (s) => (err += s) },
    );
    expect({ code, err }).toEqual({ code: 0, err: '' });
    const st = SafetensorsFile.open(outFile);
    try {
      return JSON.parse(st.metadata.options) as Record<string, unknown>;
    } finally {
      st.close();
    }
  };
  process.env.HF_HUB_CACHE = cacheDir;
  try {
    // From the cache: the snapshot folder (its commit in the path), and the name it was found by.
    expect(await options()).toMatchObject({ vision_tower: snapshot, vision_tower_name: 'openai/clip-tower-tiny' });
    // Given as a folder: that folder, absolute.
    const tower = path.relative(process.cwd(), path.join(LLAVA_CASE, 'clip_tower'));
    expect(await options('--vision-tower', tower)).toMatchObject({
      vision_tower: path.resolve(tower),
      vision_tower_name: tower,
    });
  } finally {
    process.env.HF_HUB_CACHE = path.join(tmp, 'env-cache');
  }
  // A CLIP folder is its own tower.
  const clipPv = path.join(tmp, 'pv-clip.safetensors');
  writeSafetensors(clipPv, {
    pixel_values: { dtype: 'F32', shape: [1, 3, 28, 28], data: new Float32Array(3 * 28 * 28).fill(0.25) },
  });
  const clipOut = path.join(tmp, 'clip-metadata.safetensors');
  expect(
    await main(['encode', '--model', CLIP_DIR, '--pixel-values', clipPv, '--quiet', '--out', clipOut], {
      out: () => {},
      err: () => {},
    }),
  ).toBe(0);
  const st = SafetensorsFile.open(clipOut);
  expect(JSON.parse(st.metadata.options)).toMatchObject({ vision_tower: null, vision_tower_name: null });
  st.close();
});

test('CLI: download prints the snapshot folder; encode --download fetches the tower', async () => {
  const hub = await startHub();
  hub.addRepo('openai/clip-tower-tiny', path.join(LLAVA_CASE, 'clip_tower'));
  process.env.HF_ENDPOINT = hub.endpoint;
  process.env.HF_HUB_CACHE = newCache();
  try {
    let out = '';
    let err = '';
    const io = { out: (s: string) => (out += s), err: (s: string) => (err += s) };
    const cacheDir = newCache();
    expect(await main(['download', 'openai/clip-tiny', '--cache-dir', cacheDir], io)).toBe(0);
    expect(out).toBe(path.join(cacheDir, 'models--openai--clip-tiny', 'snapshots', COMMIT) + '\n');
    expect(await main(['download', 'no/such-repo', '--cache-dir', cacheDir], io)).toBe(1);
    expect(err).toMatch(/^llava-vision: .*no\/such-repo.*HF_TOKEN/);
    out = '';
    expect(await main(['download', '--help'], io)).toBe(0);
    expect(out).toMatch(/--include-projector/);

    const llavaDir = path.join(tmp, 'llava-cli');
    fs.cpSync(path.join(LLAVA_CASE, 'llava'), llavaDir, { recursive: true });
    const config = readJson<JsonObject>(path.join(llavaDir, 'config.json'));
    fs.writeFileSync(
      path.join(llavaDir, 'config.json'),
      JSON.stringify({ ...config, mm_vision_tower: 'openai/clip-tower-tiny' }),
    );
    const pv = path.join(tmp, 'pv.safetensors');
    writeSafetensors(pv, {
      pixel_values: { dtype: 'F32', shape: [1, 3, 56, 56], data: new Float32Array(3 * 56 * 56).fill(0.25) },
    });
    const outFile = path.join(tmp, 'out.safetensors');
    const args = [
      'encode',
      '--model',
      llavaDir,
      '--pixel-values',
      pv,
      '--save',
      'features',
      '--quiet',
      '--out',
      outFile,
    ];
    err = '';
    expect(await main(args, io)).toBe(1);
    expect(err).toMatch(/--download/);
    expect(await main([...args, '--download'], io)).toBe(0);
    const st = SafetensorsFile.open(outFile);
    expect(st.info('images.0.features').shape).toEqual([1, 16, 64]);
    st.close();
  } finally {
    delete process.env.HF_ENDPOINT;
    process.env.HF_HUB_CACHE = path.join(tmp, 'env-cache');
  }
});
