/**
 * Dataset-scale encode: peak memory and throughput of `llava-vision encode --out-dir`
 * (docs/datasets.md). Each run is the compiled CLI in a fresh process under /usr/bin/time (its peak
 * RSS is the kernel's maxrss, nothing sampled).
 *
 *   npm run build && node dist/tools/dataset_bench.js [--counts 200,2000] [--vitl K] [--dtype F16]
 *
 * Demo model: the same small generated images (distinct, 24-46 px) encoded N at a time into fresh
 * folders; the memory rule of issue 11 is peak(2000) ≤ peak(200) + 100 MB. Steady throughput is
 * taken between the two runs ((N2 − N1) / (t2 − t1): load and start-up cancel out).
 * --vitl K: K fixture images through ViT-L/14-336 + mlp2x_gelu with the generated weights
 * (weights/generated/vitl14_336, written on first use like `npm run bench`), ~20 s an image here.
 * Heavy: run it under the shared lock (flock /tmp/llava-heavy.lock ...).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { writeFullSizeCase } from './make_checkpoint';
import { packageRoot } from '../src/version';

const MB = 1024 * 1024;

interface Run {
  images: number;
  peakMB: number;
  seconds: number;
  summary: string;
}

async function makeImages(dir: string, count: number): Promise<string[]> {
  fs.mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  for (let i = 0; i < count; i++) {
    const file = path.join(dir, `img-${String(i).padStart(5, '0')}.png`);
    if (!fs.existsSync(file)) {
      const [w, h] = [24 + ((i * 7) % 23), 20 + ((i * 5) % 17)];
      const pixels = Buffer.alloc(w * h * 3);
      for (let j = 0; j < pixels.length; j++) pixels[j] = (j * (31 + (i % 97)) + i * 57) & 255;
      await sharp(pixels, { raw: { width: w, height: h, channels: 3 } })
        .png()
        .toFile(file);
    }
    files.push(file);
  }
  return files;
}

/** The compiled CLI on `files` into a fresh folder, under /usr/bin/time: peak RSS and wall time. */
function encode(files: string[], outDir: string, extra: string[]): Run {
  fs.rmSync(outDir, { recursive: true, force: true });
  const list = `${outDir}.list`;
  fs.writeFileSync(list, files.join('\n') + '\n');
  const bin = path.join(packageRoot(), 'bin', 'llava-vision.js');
  const r = spawnSync(
    '/usr/bin/time',
    ['-f', 'TIME %M %e', process.execPath, bin, 'encode', '--inputs', list, '--out-dir', outDir, ...extra],
    { encoding: 'utf8', maxBuffer: 64 * MB },
  );
  if (r.error) throw new Error(`/usr/bin/time: ${r.error.message} (install GNU time)`);
  const m = /TIME (\d+) ([\d.]+)/.exec(r.stderr);
  if (r.status !== 0 || !m) throw new Error(`encode failed (exit ${r.status}):\n${r.stderr}`);
  const summary = r.stderr.split('\n').find((l) => l.includes(': encoded ')) ?? '';
  return {
    images: files.length,
    peakMB: Number(m[1]) / 1024,
    seconds: Number(m[2]),
    summary: summary.replace(/^llava-vision: /, ''),
  };
}

async function main(argv: string[]): Promise<void> {
  const arg = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const counts = (arg('counts') ?? '200,2000')
    .split(',')
    .map(Number)
    .filter((n) => n > 0); // --counts 0: no demo runs
  const vitl = Number(arg('vitl') ?? 0);
  const dtype = arg('dtype') ?? 'F32';
  const work = path.join(os.tmpdir(), 'llava-dataset-bench');
  const log = (s: string) => process.stderr.write(s + '\n');
  log(
    `dataset_bench: ${new Date().toISOString().slice(0, 10)}, ${os.cpus()[0]?.model ?? 'cpu'} (${os.cpus().length} cores), Node ${process.version}; work folder ${work}`,
  );

  const images = await makeImages(path.join(work, 'images'), Math.max(0, ...counts));
  const runs: Run[] = [];
  for (const n of counts) {
    const run = encode(images.slice(0, n), path.join(work, `demo-${n}`), ['--quiet', '--dtype', dtype]);
    runs.push(run);
    log(
      `demo model, ${n} images (${dtype}, default shard size): peak RSS ${run.peakMB.toFixed(0)} MB, ${run.seconds.toFixed(1)} s wall (${((60 * n) / run.seconds).toFixed(0)} images/min with the load)`,
    );
  }
  if (runs.length >= 2) {
    const [a, b] = [runs[0], runs[runs.length - 1]];
    const steady = (60 * (b.images - a.images)) / (b.seconds - a.seconds);
    log(
      `demo model steady throughput: ${steady.toFixed(0)} images/min ((${b.images} − ${a.images}) / (${b.seconds.toFixed(1)} − ${a.seconds.toFixed(1)}) s)`,
    );
    const growth = b.peakMB - a.peakMB;
    log(
      `peak RSS ${b.images} vs ${a.images} images: +${growth.toFixed(1)} MB (rule: ≤ 100 MB) ${growth <= 100 ? 'PASS' : 'FAIL'}`,
    );
    if (growth > 100) process.exitCode = 1;
  }

  if (vitl > 0) {
    const root = packageRoot();
    const weights = writeFullSizeCase(
      path.join(root, 'test', 'fixtures', 'cases', 'vitl14_336_generated_sel-2_patch', 'model'),
      path.join(root, 'weights', 'generated', 'vitl14_336'),
      'F32',
    );
    const fixtures = path.join(root, 'test', 'fixtures', 'images');
    const pool = ['astronaut.png', 'chelsea.png', 'rocket.jpg', 'camera.png'].map((f) => path.join(fixtures, f));
    const files = Array.from({ length: vitl }, (_, i) => pool[i % pool.length]);
    const run = encode(files, path.join(work, 'vitl'), [
      '--model',
      weights.llavaDir,
      '--vision-tower',
      weights.towerDir,
      '--aspect',
      'pad',
      '--dtype',
      'F16',
      '--shard-size',
      '2',
    ]);
    log(
      `ViT-L/14-336 + mlp2x_gelu (generated F32 weights), ${vitl} images, merged stored F16: peak RSS ${run.peakMB.toFixed(0)} MB, ${run.seconds.toFixed(1)} s wall with the load`,
    );
    log(`  ${run.summary}`);
  }
}

main(process.argv.slice(2)).catch((e: Error) => {
  process.stderr.write(`dataset_bench: ${e.message}\n`);
  process.exitCode = 1;
});
