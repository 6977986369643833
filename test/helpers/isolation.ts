import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

/**
 * For a suite that writes files and loads LLaVA folders: a fresh temp folder, and HF_HUB_CACHE pointed
 * at an empty folder inside it, so `mm_vision_tower` never resolves through this machine's real cache.
 * Both are undone after the suite. Returns the folder's path (valid from the suite's beforeAll on).
 */
export function isolatedTempDir(prefix: string): () => string {
  let dir: string | undefined;
  let savedHubCache: string | undefined;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    savedHubCache = process.env.HF_HUB_CACHE;
    process.env.HF_HUB_CACHE = path.join(dir, 'empty-hub');
  });
  afterAll(() => {
    if (savedHubCache === undefined) delete process.env.HF_HUB_CACHE;
    else process.env.HF_HUB_CACHE = savedHubCache;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });
  return () => {
    if (!dir) throw new Error('isolatedTempDir: used before beforeAll');
    return dir;
  };
}
