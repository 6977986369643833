/**
 * Dataset folders at LLaVA-pretraining scale (docs/datasets.md, issue 20): time and peak RSS to open
 * and iterate a 600k-image dataset, to resume `encode --out-dir` over it with a 600k-line list, to walk
 * a folder of 600k files, and to record a million missing inputs. Each measurement is a fresh process
 * under /usr/bin/time (maxrss is the kernel's); a baseline process that only loads the package gives
 * the fixed cost. The dataset is synthetic (tools/synthetic_dataset.ts: `features` [1, 4] per image,
 * 64 per shard) with the demo model's identity, so `encode` with the demo model resumes it.
 *
 *   npm run bench:dataset-scale -- [--images 600000] [--missing 1000000] [--no-folder] [--dir DIR]
 *
 * Heavy (minutes, ~1 GB of disk): run it under the shared lock (flock /work/notes/heavy.lock ...).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { datasetInfoFor } from '../src/dataset/writer';
import { identityOf } from '../src/dataset/format';
import { LlavaVision } from '../src/api/llava_vision';
import { packageRoot } from '../src/version';
import { writeSyntheticDataset } from './synthetic_dataset';

const MB = 1024 * 1024;
const root = packageRoot();
const index = path.join(root, 'dist', 'src', 'index.js');
const bin = path.join(root, 'bin', 'llava-vision.js');
const source = (i: number) => `/data/images/img-${String(i).padStart(7, '0')}.jpg`;

interface Measured {
  seconds: number;
  peakMB: number;
  out: string;
  err: string;
  status: number | null;
}

/** `node args` under /usr/bin/time. */
function measure(args: string[], input?: string): Measured {
  const r = spawnSync('/usr/bin/time', ['-f', 'TIME %M %e', process.execPath, ...args], {
    encoding: 'utf8',
    input,
    maxBuffer: 256 * MB,
  });
  if (r.error) throw new Error(`/usr/bin/time: ${r.error.message} (install GNU time)`);
  const m = /TIME (\d+) ([\d.]+)\s*$/.exec(r.stderr);
  if (!m) throw new Error(`no /usr/bin/time line in: ${r.stderr.slice(-2000)}`);
  const err = r.stderr.slice(0, m.index).replace(/Command exited with non-zero status \d+\n$/, '');
  return { peakMB: Number(m[1]) / 1024, seconds: Number(m[2]), out: r.stdout, err, status: r.status };
}

const script = (body: string) => [
  '-e',
  `const lv = require(${JSON.stringify(index)}); const t0 = performance.now(); const rss = () => (process.memoryUsage().rss / ${MB}).toFixed(0);\n${body}`,
];

/** Open, then iterate every stored image; the child prints its own figures. */
function openAndIterate(dir: string): Measured {
  return measure(
    script(`
    const ds = lv.openEncodedDataset(${JSON.stringify(dir)});
    const opened = performance.now();
    console.log('open ' + ((opened - t0) / 1000).toFixed(2) + ' s, RSS after open ' + rss() + ' MB (' + ds.length + ' inputs, ' + ds.encodedCount + ' stored, ' + ds.failures.length + ' failed)');
    (async () => {
      let n = 0, bad = 0;
      for await (const img of ds) { n++; if (img.tensors.features.data[0] !== img.index) bad++; }
      console.log('iterate ' + n + ' images ' + ((performance.now() - opened) / 1000).toFixed(1) + ' s, RSS ' + rss() + ' MB' + (bad ? ', ' + bad + ' WRONG' : ''));
      ds.close();
    })();`),
  );
}

async function main(argv: string[]): Promise<void> {
  const arg = (name: string, fallback: number) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? Number(argv[i + 1]) : fallback;
  };
  const images = arg('images', 600_000);
  const missing = arg('missing', 1_000_000);
  const dirArg = argv.indexOf('--dir');
  const work = dirArg >= 0 ? argv[dirArg + 1] : path.join(os.tmpdir(), 'llava-dataset-scale');
  fs.mkdirSync(work, { recursive: true });
  const report = (line: string) => console.log(line);
  report(
    `# dataset scale: ${images} images (node ${process.version}, ${os.cpus().length} cores, load ${os.loadavg()[0].toFixed(1)})`,
  );

  const model = await LlavaVision.load(path.join(root, 'weights', 'demo'), { log: null });
  const info = await datasetInfoFor(model, images, { outputs: ['features'], shardSize: 64 });
  model.dispose();
  const identity = identityOf(info);
  const datasets: Record<string, string> = {};
  for (const n of [images / 10, images]) {
    const dir = path.join(work, `ds-${n}`);
    fs.rmSync(dir, { recursive: true, force: true });
    const t0 = performance.now();
    writeSyntheticDataset(dir, { images: n, shardSize: 64, failEvery: 1000, identity, source });
    report(
      `generated ${n} images in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${fs.readdirSync(dir).length - 2} shards`,
    );
    datasets[n] = dir;
  }

  const base = measure(script(`console.log('loaded ' + rss() + ' MB');`));
  report(`baseline (load the package only): peak ${base.peakMB.toFixed(0)} MB`);
  for (const n of [images / 10, images]) {
    const m = openAndIterate(datasets[n]);
    report(
      `${n} images: ${m.out.trim().split('\n').join('; ')}; peak RSS ${m.peakMB.toFixed(0)} MB; ${m.seconds.toFixed(1)} s in all`,
    );
  }

  // Resume over the big one with a list of all its images and 1000 new (missing) ones.
  const list = path.join(work, 'list.txt');
  const extra = 1000;
  fs.writeFileSync(
    list,
    Array.from({ length: images + extra }, (_, i) =>
      i < images ? source(i) : path.join(work, 'absent', `${i}.png`),
    ).join('\n') + '\n',
  );
  const resumed = measure([bin, 'encode', '--inputs', list, '--save', 'features', '--out-dir', datasets[images]]);
  const summary = resumed.err
    .split('\n')
    .filter((l) => / encoded | failed/.test(l))
    .map((l) => l.replace(/^llava-vision: /, ''))
    .join(' / ');
  report(
    `encode --out-dir, resuming ${images} images + ${extra} new (missing) ones from a list: ${resumed.seconds.toFixed(1)} s, peak ${resumed.peakMB.toFixed(0)} MB, exit ${resumed.status}: ${summary}`,
  );

  if (!argv.includes('--no-folder')) {
    const folder = path.join(work, 'files');
    fs.rmSync(folder, { recursive: true, force: true });
    fs.mkdirSync(folder);
    const t0 = performance.now();
    for (let i = 0; i < images; i++)
      fs.closeSync(fs.openSync(path.join(folder, `img-${String(i).padStart(7, '0')}.png`), 'w'));
    report(`made a folder of ${images} files in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const walked = measure(
      script(
        `const inputs = require(${JSON.stringify(path.join(root, 'dist', 'src', 'api', 'inputs.js'))}).expandInputs([${JSON.stringify(folder)}]); console.log(inputs.length + ' inputs in ' + ((performance.now() - t0) / 1000).toFixed(1) + ' s');`,
      ),
    );
    report(`expandInputs(folder of ${images} files): ${walked.out.trim()}; peak ${walked.peakMB.toFixed(0)} MB`);
    fs.rmSync(folder, { recursive: true, force: true });
  }

  if (missing > 0) {
    const missingList = path.join(work, 'missing.txt');
    fs.writeFileSync(
      missingList,
      Array.from({ length: missing }, (_, i) => path.join(work, 'absent', `${i}.png`)).join('\n') + '\n',
    );
    const out = path.join(work, 'missing-out');
    fs.rmSync(out, { recursive: true, force: true });
    const m = measure([bin, 'encode', '--inputs', missingList, '--save', 'features', '--quiet', '--out-dir', out]);
    const lines = m.err.trim().split('\n');
    report(
      `encode --out-dir over ${missing} missing inputs: ${m.seconds.toFixed(1)} s, peak ${m.peakMB.toFixed(0)} MB, ${lines.length} stderr lines, exit ${m.status}; last: ${lines[lines.length - 1].replace(/^llava-vision: /, '')}`,
    );
    fs.rmSync(out, { recursive: true, force: true });
  }
}

main(process.argv.slice(2)).catch((e: Error) => {
  console.error(e.stack ?? e.message);
  process.exit(1);
});
