/**
 * Decode speed of the common path, before and after the Pillow-exact checks, in one process:
 * "libvips" is decodeWithLibvips alone (what decodeImage did for PNG and JPEG before PNG got its own
 * chunk rules and JPEG its marker checks); "decodeImage" is the path used now. Runs alternate
 * (before, after, after, before, ...) and the median of each is reported, with the CPU time of
 * the process (sharp's threads included) next to the wall time.
 *
 *   npm run build && node dist/tools/bench_decode.js [--reps N] [files...]
 *
 * N defaults to 201 runs for images up to a megapixel, 21 above (decode times of a few ms on a
 * shared machine need that many to settle within a few %).
 *
 * Without files: the demo images (weights/demo/images), the test images astronaut.png and
 * camera.png, and a 12-megapixel JPEG and PNG made from astronaut.png in a temporary folder.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { decodeImage, decodeWithLibvips } from '../src/image/decode';
import { maxImagePixels } from '../src/image/limits';
import { sniffImageFormat } from '../src/image/format';
import { packageRoot } from '../src/version';

interface Timing {
  wall: number;
  cpu: number;
}

async function time(fn: () => Promise<unknown>): Promise<Timing> {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await fn();
  const cpu = process.cpuUsage(c0);
  return { wall: Number(process.hrtime.bigint() - t0) / 1e6, cpu: (cpu.user + cpu.system) / 1e3 };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const repsAt = args.indexOf('--reps');
  const fixedReps = repsAt >= 0 ? Number(args.splice(repsAt, 2)[1]) : 0;
  let files = args;
  let tmp: string | null = null;
  if (!files.length) {
    const root = packageRoot();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-decode-'));
    const astronaut = path.join(root, 'test', 'fixtures', 'images', 'astronaut.png');
    const big = sharp(astronaut).resize(4000, 3000);
    await big.clone().jpeg({ quality: 90 }).toFile(path.join(tmp, 'photo_12mp.jpg'));
    await big.clone().png().toFile(path.join(tmp, 'photo_12mp.png'));
    files = [
      path.join(root, 'weights', 'demo', 'images', 'chelsea.png'),
      path.join(root, 'weights', 'demo', 'images', 'rocket.jpg'),
      astronaut,
      path.join(root, 'test', 'fixtures', 'images', 'camera.png'),
      path.join(tmp, 'photo_12mp.jpg'),
      path.join(tmp, 'photo_12mp.png'),
    ];
  }
  console.log("decode time, median of alternating runs (ms; CPU = the process's user + system time)");
  console.log(
    '| image | size | runs | libvips wall | decodeImage wall | ratio | libvips CPU | decodeImage CPU | ratio |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const file of files) {
    const head = fs.readFileSync(file).subarray(0, 512);
    const sniffed = sniffImageFormat(head);
    if ('refused' in sniffed) throw new Error(`${file}: ${sniffed.refused}`);
    const before = () => decodeWithLibvips(file, file, sniffed.format, maxImagePixels(), {}, 'error');
    const after = () => decodeImage(file);
    const b: Timing[] = [];
    const a: Timing[] = [];
    await before();
    const img = await after();
    const reps = fixedReps || (img.width * img.height > 1e6 ? 21 : 201);
    for (let i = 0; i < reps; i++) {
      if (i % 2) {
        a.push(await time(after));
        b.push(await time(before));
      } else {
        b.push(await time(before));
        a.push(await time(after));
      }
    }
    const [bw, aw, bc, ac] = [
      median(b.map((t) => t.wall)),
      median(a.map((t) => t.wall)),
      median(b.map((t) => t.cpu)),
      median(a.map((t) => t.cpu)),
    ];
    console.log(
      `| ${path.basename(file)} | ${img.width}x${img.height} | ${reps} | ${bw.toFixed(2)} | ${aw.toFixed(2)} | ×${(aw / bw).toFixed(3)} | ${bc.toFixed(2)} | ${ac.toFixed(2)} | ×${(ac / bc).toFixed(3)} |`,
    );
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
}

void main();
