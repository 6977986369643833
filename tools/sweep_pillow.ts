/**
 * The Pillow sweep's checker: every file tools/sweep_pillow.py made (valid files and their
 * mutants, with what Pillow 9.4 does with each) through decodeImage, which must give Pillow's
 * pixels, or refuse (an ImageError naming the file) where Pillow raises.
 *
 *   npm run sweep:pillow                        # generate (Python, Pillow 9.4) and check
 *   node dist/tools/sweep_pillow.js cases.json  # check a generated file
 *
 * Prints the files tried, how many agree (same pixels, or refused where Pillow raises), and each
 * disagreement class (format, mutation, outcome) with a count and an example. Exits 1 on any
 * disagreement. test/image_sweep.test.ts checks the committed seeded subset the same way.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import { decodeImage } from '../src/image/decode';
import { ImageError } from '../src/errors';

export interface SweepCase {
  name: string;
  format: string;
  mutation: string;
  bytes_b64: string;
  mode?: string;
  size_wh?: [number, number];
  rgb_u8_sha256?: string;
  error?: string;
  pillow_format?: string;
  /** Image.open(path)'s result where it differs from Image.open(BytesIO(...)). */
  from_path?: { error?: string; rgb_u8_sha256?: string };
}

export type SweepOutcome =
  | 'same pixels'
  | 'refused where Pillow raises'
  | 'refused where Pillow decodes differently from a path'
  | 'refused where Pillow decodes'
  | 'decoded where Pillow raises'
  | 'different pixels'
  | 'different size'
  | 'crashed';

export interface SweepResult {
  outcome: SweepOutcome;
  /** Ours: the error message, or the size and hash. */
  detail: string;
}

export const AGREE: readonly SweepOutcome[] = [
  'same pixels',
  'refused where Pillow raises',
  'refused where Pillow decodes differently from a path',
];

export async function checkSweepCase(c: SweepCase): Promise<SweepResult> {
  const bytes = Buffer.from(c.bytes_b64, 'base64');
  const name = `sweep:${c.name}`;
  const pillowRaises = c.error !== undefined;
  const pathDiffers = c.from_path !== undefined;
  try {
    const img = await decodeImage(new Uint8Array(bytes), { name });
    const hash = crypto.createHash('sha256').update(img.data).digest('hex');
    const detail = `${img.width}x${img.height} ${hash.slice(0, 12)}`;
    if (pillowRaises) return { outcome: 'decoded where Pillow raises', detail: `${detail} (Pillow: ${c.error})` };
    if (pathDiffers)
      return {
        outcome: 'decoded where Pillow raises',
        detail: `${detail} (Pillow from a path: ${JSON.stringify(c.from_path)})`,
      };
    if (img.width !== c.size_wh![0] || img.height !== c.size_wh![1])
      return { outcome: 'different size', detail: `${detail} vs ${c.size_wh!.join('x')}` };
    if (hash !== c.rgb_u8_sha256) return { outcome: 'different pixels', detail };
    return { outcome: 'same pixels', detail };
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    // Ours name the file: 'cannot decode image NAME: why', or the size limit's 'image NAME is WxH = ...'.
    const named = message.startsWith(`cannot decode image ${name}: `) || message.startsWith(`image ${name} is `);
    if (!(e instanceof ImageError) || !named || message.includes('\n')) {
      return { outcome: 'crashed', detail: `${e instanceof Error ? e.name : typeof e}: ${message.slice(0, 300)}` };
    }
    if (pillowRaises) return { outcome: 'refused where Pillow raises', detail: message };
    if (pathDiffers) return { outcome: 'refused where Pillow decodes differently from a path', detail: message };
    return {
      outcome: 'refused where Pillow decodes',
      detail: `${message} (Pillow: ${c.mode} ${c.size_wh?.join('x')})`,
    };
  }
}

export function readSweep(file: string): SweepCase[] {
  const parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as { cases: SweepCase[] };
  return parsed.cases;
}

async function main(): Promise<void> {
  const files = process.argv.slice(2);
  if (!files.length) {
    console.error('usage: node dist/tools/sweep_pillow.js cases.json...  (made by tools/sweep_pillow.py)');
    process.exit(2);
  }
  const cases = files.flatMap(readSweep);
  const byOutcome = new Map<SweepOutcome, number>();
  const classes = new Map<string, { count: number; example: string }>();
  const formats = new Map<string, { tried: number; agreed: number; refused: number }>();
  for (const c of cases) {
    const r = await checkSweepCase(c);
    byOutcome.set(r.outcome, (byOutcome.get(r.outcome) ?? 0) + 1);
    const f = formats.get(c.format) ?? { tried: 0, agreed: 0, refused: 0 };
    f.tried++;
    if (AGREE.includes(r.outcome)) f.agreed++;
    if (r.outcome === 'refused where Pillow raises') f.refused++;
    formats.set(c.format, f);
    if (!AGREE.includes(r.outcome)) {
      const key = `${c.format} ${c.mutation}: ${r.outcome}`;
      const k = classes.get(key) ?? { count: 0, example: `${c.name}: ${r.detail}` };
      k.count++;
      classes.set(key, k);
    }
  }
  const agreed = AGREE.reduce((n, o) => n + (byOutcome.get(o) ?? 0), 0);
  console.log(
    `files tried: ${cases.length}; agreed with Pillow: ${agreed} (${((100 * agreed) / cases.length).toFixed(2)}%); ` +
      `refused where Pillow raises: ${byOutcome.get('refused where Pillow raises') ?? 0}; disagreements: ${cases.length - agreed}`,
  );
  for (const [fmt, f] of [...formats].sort())
    console.log(`  ${fmt}: ${f.tried} tried, ${f.agreed} agreed, ${f.refused} refused where Pillow raises`);
  for (const [o, n] of [...byOutcome].sort((a, b) => b[1] - a[1])) console.log(`  ${o}: ${n}`);
  if (classes.size) {
    console.log('disagreements by class:');
    for (const [key, k] of [...classes].sort((a, b) => b[1].count - a[1].count))
      console.log(`  ${k.count} x ${key}\n      e.g. ${k.example}`);
  }
  process.exit(classes.size ? 1 : 0);
}

if (require.main === module) void main();
