/**
 * `encode --out-dir` (issue 11) through the CLI: errors before any model load, the compiled CLI
 * killed with SIGKILL mid-run and resumed, bad inputs from a stdin list, folder walking, progress
 * lines off a terminal. The compiled bin runs from dist/ (built by `npm test`).
 */
import { ChildProcess, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { jobProgress, formatDuration } from '../src/cli/progress';
import { expandInputs, parseInputList, readInputList, walkImages } from '../src/dataset/inputs';
import { openEncodedDataset } from '../src/dataset/reader';
import { folderHashes, makeImages, shardTensors } from './helpers/dataset';
import { isolatedTempDir } from './helpers/isolation';
import { runCli } from './helpers/cli';

const BIN = path.join(__dirname, '..', 'bin', 'llava-vision.js');
const tempDir = isolatedTempDir('llava-cli-dataset-');

describe('checked before any model is loaded (a model that does not exist is never reached)', () => {
  const nowhere = ['--model', '/nonexistent-model'];
  test.each([
    [['--inputs', '/nonexistent/list.txt', '--out-dir', 'D'], /--inputs \/nonexistent\/list\.txt: no such file/],
    [['a.png', '--out-dir', '@FILE'], /--out-dir .*a-file is a file, not a folder/],
    [['a.png', '--out-dir', 'D', '--part', '3/3'], /--part 3\/3: K must be 0\.\.2 \(counted from 0/],
    [['a.png', '--out-dir', 'D', '--part', '/4'], /--part must be K\/N, two whole numbers .*got "\/4"/],
    [['a.png', '--out-dir', 'D', '--part', '1/0'], /--part 1\/0: N must be at least 1/],
    [['a.png', '--out-dir', 'D', '--out', 'o.safetensors'], /either --out FILE or --out-dir DIR, not both/],
    [['a.png', '--out-dir', 'D', '--dtype', 'F8'], /--dtype must be one of F32, F16, BF16/],
    [['a.png', '--out-dir', 'D', '--shard-size', '0'], /--shard-size must be at least 1/],
    [['--out-dir', 'D'], /needs images: files, folders, or --inputs FILE/],
    [['@EMPTY', '--out-dir', 'D'], /empty-folder: no images in this folder/],
    [['a.png', '--dtype', 'F16', '--out', 'o.safetensors'], /--dtype works with --out-dir DIR/],
    [['a.png', '--out-dir', 'D', '--pixel-values', 'pv.safetensors'], /--pixel-values works with --out FILE/],
  ])('encode %j', async (args, message) => {
    const file = path.join(tempDir(), 'a-file');
    fs.writeFileSync(file, 'x');
    const empty = path.join(tempDir(), 'empty-folder');
    fs.mkdirSync(empty, { recursive: true });
    const resolved = args.map((a) =>
      a === '@FILE' ? file : a === '@EMPTY' ? empty : a === 'D' ? path.join(tempDir(), 'never-written') : a,
    );
    const r = await runCli(['encode', ...nowhere, '--quiet', ...resolved]);
    expect(r.code).toBeGreaterThan(0);
    expect(r.err).toMatch(message);
    expect(r.err).not.toMatch(/nonexistent-model/);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(fs.existsSync(path.join(tempDir(), 'never-written'))).toBe(false);
  });
});

describe('the compiled CLI', () => {
  let images: string;
  beforeAll(async () => {
    images = path.join(tempDir(), 'images');
    await makeImages(path.join(images, 'a'), 12, 'first');
    await makeImages(path.join(images, 'b'), 12, 'second');
  });

  const waitFor = (child: ChildProcess) =>
    new Promise<{ code: number | null; signal: string | null; err: string }>((resolve) => {
      let err = '';
      child.stderr!.on('data', (d) => (err += d));
      child.on('close', (code, signal) => resolve({ code, signal, err }));
    });

  test('killed with SIGKILL mid-run, then resumed: every image exactly once, equal to the uninterrupted run', async () => {
    const args = ['encode', images, '--shard-size', '3', '--save', 'merged,features', '--quiet'];
    const ref = path.join(tempDir(), 'uninterrupted');
    expect(spawnSync(process.execPath, [BIN, ...args, '--out-dir', ref], { encoding: 'utf8' }).status).toBe(0);

    const dir = path.join(tempDir(), 'killed');
    const child = spawn(process.execPath, [BIN, ...args, '--out-dir', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
    const exited = waitFor(child);
    // Kill as soon as two shards are in place: the run is then mid-way (8 shards in all).
    const manifest = path.join(dir, 'manifest.jsonl');
    const lineCount = () => (fs.existsSync(manifest) ? fs.readFileSync(manifest, 'utf8').split('\n').length - 1 : 0);
    while (lineCount() < 6 && child.exitCode === null) await new Promise((r) => setTimeout(r, 10));
    child.kill('SIGKILL');
    const killed = await exited;
    expect(killed.signal).toBe('SIGKILL');
    const survived = fs.readdirSync(dir).filter((f) => /^shard-\d+\.safetensors$/.test(f)).length;
    expect(survived).toBeGreaterThanOrEqual(2);
    expect(survived).toBeLessThan(8);

    const resumed = spawnSync(process.execPath, [BIN, ...args.filter((a) => a !== '--quiet'), '--out-dir', dir], {
      encoding: 'utf8',
    });
    expect(resumed.status).toBe(0);
    expect(resumed.stderr).toMatch(
      new RegExp(
        `encoded ${24 - 3 * survived} image\\(s\\) into ${8 - survived} new shard\\(s\\) \\(F32\\) in [\\d.]+ s \\([\\d.]+ images/min\\); ${3 * survived} were already there; 24 image\\(s\\) in all`,
      ),
    );

    // Each image's tensors are in exactly one shard (shardTensors throws on a duplicate) and equal the uninterrupted run's.
    const [a, b] = [shardTensors(dir), shardTensors(ref)];
    expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
    expect(a.size).toBe(48);
    for (const [key, t] of b)
      if (!a.get(key)!.bytes.equals(t.bytes)) throw new Error(`${key} differs from the uninterrupted run`);
    const ds = openEncodedDataset(dir);
    expect([ds.length, ds.encodedCount, ds.missing.length, ds.failures.length]).toEqual([24, 24, 0, 0]);
    ds.close();
    // In fact the whole folder is the same, byte for byte (temp files of the killed run removed).
    expect(folderHashes(dir)).toEqual(folderHashes(ref));
  }, 120_000);

  test('--inputs - (stdin): missing, folder, empty, undecodable and a pipe are recorded failures, the rest written, exit code 1', () => {
    const bad = path.join(tempDir(), 'bad-inputs');
    fs.mkdirSync(path.join(bad, 'folder'), { recursive: true });
    fs.writeFileSync(path.join(bad, 'empty.png'), '');
    fs.writeFileSync(path.join(bad, 'broken.jpg'), 'not a jpeg');
    spawnSync('mkfifo', [path.join(bad, 'pipe.png')]);
    const good = walkImages(images).slice(0, 2);
    const list = [
      good[0],
      path.join(bad, 'missing.png'),
      path.join(bad, 'folder'),
      path.join(bad, 'empty.png'),
      path.join(bad, 'broken.jpg'),
      path.join(bad, 'pipe.png'),
      good[1],
    ];
    const dir = path.join(tempDir(), 'from-stdin');
    const r = spawnSync(process.execPath, [BIN, 'encode', '--inputs', '-', '--out-dir', dir, '--quiet'], {
      input: list.join('\r\n') + '\n\n',
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status).toBe(1);
    const errLines = r.stderr.trim().split('\n');
    expect(errLines.slice(0, 5)).toEqual([
      `llava-vision: image 1: ${path.join(bad, 'missing.png')}: no such file`,
      `llava-vision: image 2: ${path.join(bad, 'folder')}: is a directory, not an image file`,
      `llava-vision: image 3: ${path.join(bad, 'empty.png')}: empty file`,
      expect.stringMatching(/^llava-vision: image 4: cannot decode image .*broken\.jpg/),
      `llava-vision: image 5: ${path.join(bad, 'pipe.png')}: is not a regular file`,
    ]);
    expect(errLines[5]).toMatch(/5 of 7 image\(s\) failed, recorded in .*manifest\.jsonl; the others were written/);
    const ds = openEncodedDataset(dir);
    expect(ds.failures.map((f) => f.index)).toEqual([1, 2, 3, 4, 5]);
    expect([ds.has(0), ds.has(6)]).toEqual([true, true]);
    ds.close();
    // Run again: nothing to do, and the exit code still says the dataset has failures.
    const again = spawnSync(process.execPath, [BIN, 'encode', '--inputs', '-', '--out-dir', dir], {
      input: list.join('\n'),
      encoding: 'utf8',
    });
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/encoded 0 image\(s\) into 0 new shard\(s\) \(F32\); 7 were already there/);
    expect(again.stderr).toMatch(/5 of 7 image\(s\) failed \(5 in earlier runs\)/);
  }, 60_000);

  test('--part K/N writes DIR/part-K-of-N, read back as one dataset; a part of another split is refused before loading', () => {
    const dir = path.join(tempDir(), 'split');
    const someImages = path.join(images, 'a');
    for (const k of [0, 1]) {
      const r = spawnSync(
        process.execPath,
        [BIN, 'encode', someImages, '--part', `${k}/2`, '--dtype', 'BF16', '--out-dir', dir],
        { encoding: 'utf8' },
      );
      expect(r.status).toBe(0);
      expect(r.stderr).toMatch(
        new RegExp(`part-${k}-of-2: encoded 6 image\\(s\\) into 1 new shard\\(s\\) \\(BF16\\) in`),
      );
    }
    expect(fs.readdirSync(dir).sort()).toEqual(['part-0-of-2', 'part-1-of-2']);
    const ds = openEncodedDataset(dir);
    expect([ds.length, ds.encodedCount]).toEqual([12, 12]);
    expect(ds.read(11).tensors.merged.dtype).toBe('BF16');
    ds.close();
    const wrong = spawnSync(
      process.execPath,
      [BIN, 'encode', someImages, '--part', '0/3', '--out-dir', dir, '--model', '/nonexistent-model'],
      { encoding: 'utf8' },
    );
    expect(wrong.status).toBeGreaterThan(0);
    expect(wrong.stderr.trim()).toMatch(
      /^llava-vision: --out-dir .*split is split into 2 parts \(part-0-of-2\), this run is part 0 of 3$/,
    );
  }, 60_000);
});

describe('inputs', () => {
  test('a folder is walked recursively in sorted order, images by extension or content; hidden files, other files and link loops skipped', async () => {
    const root = path.join(tempDir(), 'walk');
    const [png] = await makeImages(path.join(root, 'tmp'), 1);
    const place = (rel: string, from = png) => {
      fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
      fs.copyFileSync(from, path.join(root, rel));
    };
    place('b.png');
    place('a/z.JPG'); // by extension (its content is a PNG: the decoder sniffs, it does not trust names)
    place('a/no-extension'); // by content
    place('a/.hidden.png');
    place('.git/x.png');
    place('sub/deeper/c.webp');
    fs.writeFileSync(path.join(root, 'notes.txt'), 'not an image');
    fs.writeFileSync(path.join(root, 'a', 'data.bin'), Buffer.from([0, 1, 2, 3]));
    fs.symlinkSync(root, path.join(root, 'sub', 'loop'));
    fs.rmSync(path.join(root, 'tmp'), { recursive: true });
    expect(walkImages(root).map((f) => path.relative(root, f))).toEqual([
      'a/no-extension',
      'a/z.JPG',
      'b.png',
      'sub/deeper/c.webp',
    ]);
    expect(expandInputs([path.join(root, 'a'), 'rel/missing.png', path.join(root, 'b.png')], ['listed.png'])).toEqual([
      path.join(root, 'a', 'no-extension'),
      path.join(root, 'a', 'z.JPG'),
      path.resolve('rel/missing.png'),
      path.join(root, 'b.png'),
      path.resolve('listed.png'),
    ]);
  });

  test('lists: one path a line, CRLF and blank lines tolerated; a missing list or a folder is a one-line error', async () => {
    expect(parseInputList('a.png\r\n\nb c.png\n  \n')).toEqual(['a.png', 'b c.png']);
    await expect(readInputList(path.join(tempDir(), 'nope.txt'))).rejects.toThrow(/--inputs .*nope\.txt: no such file/);
    await expect(readInputList(tempDir())).rejects.toThrow(/is a folder: give a text file/);
  });
});

describe('progress', () => {
  test('off a terminal: one line per interval with done/total, rate, ETA and failures; on a terminal: the bar', () => {
    let t = 0;
    const out: string[] = [];
    const p = jobProgress({
      label: 'encoding',
      write: (s) => out.push(s),
      isTTY: false,
      intervalMs: 5000,
      now: () => t,
    });
    for (let done = 101; done <= 200; done++) {
      t += 100; // 10 images/s
      p.update({ done, total: 1100, failed: done >= 150 ? 2 : 0, skipped: 100 });
    }
    p.end();
    expect(out).toEqual([
      'encoding: 150/1100 images (13.6%), 10.00 images/s, ETA 1m35s, 2 failed\n',
      'encoding: 200/1100 images (18.2%), 10.00 images/s, ETA 1m30s, 2 failed\n',
    ]);
    const tty: string[] = [];
    t = 0;
    const bar = jobProgress({ label: 'encoding', write: (s) => tty.push(s), isTTY: true, now: () => t });
    t = 2000;
    bar.update({ done: 5, total: 10, failed: 0 });
    bar.end();
    expect(tty).toEqual(['\rencoding [############............] 5/10 2.50 images/s, ETA 2s  ', '\n']);
    expect([formatDuration(3725), formatDuration(65), formatDuration(4.2)]).toEqual(['1h02m05s', '1m05s', '4s']);
  });
});
