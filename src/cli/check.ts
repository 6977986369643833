import { CheckReport, TensorCheck, checkAgainstReference } from '../api/check';
import { LlavaVision } from '../api/llava_vision';
import { cosineText, errorText, indexText, nonFiniteText, percentText, ratioText, valueText } from '../check/describe';
import { shapeText } from '../errors';
import { UsageError, parseOptions } from './args';
import { DATASET_SPEC, ENCODE_SPEC, encodeSettings, loadOptions } from './encode_options';
import { checkInputFiles } from './files';

export const CHECK_HELP = `check: your checkpoint in TensorFlow.js against a PyTorch reference of your own modules
  llava-vision check --reference REF.safetensors [--model DIR|REPO_ID] [options] [IMAGE...]

  --reference FILE             written by python/llava_vision_reference.py (shipped in this package) from your
                               PyTorch modules: pixel_values, every hidden state, pooler_output, features,
                               projected, each the float64 truth, with PyTorch float32's own error
  --model DIR|REPO_ID          the model to check, as for encode (default: the bundled demo checkpoint)
  IMAGE...                     the images the reference was made from, in order: this model's preprocessing must
                               give the reference's pixel_values bit for bit
  --bound K                    each tensor: max|ours - truth| <= K x PyTorch fp32's error + float32 storage error
                               (default 4, the bound of this project's own parity tests)
  --json                       the report as one JSON object
  --vision-tower, --download, --projector, --projector-type, --select-layer, --select-feature, --aspect,
  --grid-pinpoints, --auto-orient, --interpolate-pos-encoding, --batch-size, --threads, --backend, --quiet:
                               as for encode

The reference's pixel_values go through the model; a table gives per tensor the max abs error, PyTorch
fp32's own error, their ratio, the cosine similarity and pass/fail. Exit code 0: every tensor within
the bound; 1: a tensor is not (the first one, in the model's order, is named), or a file cannot be read.

Examples:
  llava-vision check --reference ref.safetensors --model llava-v1.5-7b --vision-tower clip-vit-large-patch14-336 a.jpg b.png
  llava-vision check --reference ref.safetensors --model clip-vit-large-patch14-336 --json > check.json`;

/** encode's options (the model, its settings, how it runs) and check's own; the options only encode has are refused. */
const SPEC = {
  ...ENCODE_SPEC,
  reference: { type: 'string' },
  bound: { type: 'string' },
  json: { type: 'boolean' },
} as const;
const ENCODE_ONLY = [
  'out',
  'out-dir',
  'pixel-values',
  'save',
  'merge',
  'workers',
  'force',
  ...Object.keys(DATASET_SPEC),
] as const;

export async function runCheck(
  argv: string[],
  io: { out: (s: string) => void; err: (s: string) => void; demoModel: string },
): Promise<number> {
  const { values: o, positionals: images } = parseOptions(argv, SPEC);
  if (o.help) {
    io.out(CHECK_HELP + '\n');
    return 0;
  }
  const encodeOnly = ENCODE_ONLY.find((name) => o[name as keyof typeof o] !== undefined);
  if (encodeOnly) throw new UsageError(`--${encodeOnly} is an option of encode, not of check (see check --help)`);
  if (!o.reference)
    throw new UsageError('check needs --reference FILE.safetensors (written by python/llava_vision_reference.py)');
  if (o.bound !== undefined && !/^\d+(\.\d+)?$/.test(o.bound))
    throw new UsageError(`--bound must be a number >= 0, got "${o.bound}"`);
  const settings = encodeSettings(o);
  checkInputFiles([o.reference, ...images, ...(o.projector ? [o.projector] : [])]);
  const modelDir = o.model ?? io.demoModel;
  if (!o.model)
    io.err(
      `llava-vision: no --model given: using the bundled demo checkpoint ${modelDir} (generated weights, not a trained model)\n`,
    );

  const model = await LlavaVision.load(modelDir, loadOptions(o, settings, io.err));
  try {
    const report = await checkAgainstReference(model, o.reference, {
      bound: o.bound === undefined ? undefined : Number(o.bound),
      images: images.length ? images : undefined,
      aspect: settings.aspect,
      gridPinpoints: settings.gridPinpoints,
      autoOrient: o['auto-orient'],
      batchSize: settings.batchSize,
      interpolatePosEncoding: o['interpolate-pos-encoding'],
    });
    io.out(o.json ? JSON.stringify(report, jsonNumbers, 1) + '\n' : formatCheck(report));
    return report.ok ? 0 : 1;
  } finally {
    model.dispose();
  }
}

/** JSON has no NaN or Infinity: they are written as the strings "NaN", "Infinity", "-Infinity" (never a silent null). */
function jsonNumbers(_key: string, value: unknown): unknown {
  return typeof value === 'number' && !Number.isFinite(value) ? String(value) : value;
}

export function formatCheck(r: CheckReport): string {
  const images = r.run.images?.length ? `, made from ${r.run.images.join(', ')}` : '';
  const lines = [
    `reference ${r.reference} (${r.producer ?? 'unknown producer'}; ${r.tiles} tile${r.tiles === 1 ? '' : 's'}${images})`,
    `model ${r.model} on ${r.backend}; bound per tensor: max|ours - truth| <= ${r.bound} x PyTorch fp32's error + float32 storage error`,
    ...r.notes.map((n) => `note: ${n}`),
    '',
  ];
  const header = ['tensor', 'shape', 'max|err|', 'PyTorch err', 'ratio', 'cosine', 'result'];
  const rows = r.tensors.map((t) => [
    t.name,
    shapeText(t.shape),
    t.comparison ? errorText(t.comparison.maxAbsErr) : '-',
    t.exact ? 'exact' : t.torchErr === null ? '-' : errorText(t.torchErr),
    t.ratio === null ? '-' : ratioText(t.ratio),
    t.comparison ? cosineText(t.comparison.cosine) : '-',
    resultText(t),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  lines.push(line(header), ...rows.map(line), '');
  const failed = r.tensors.filter((t) => !t.ok);
  const checked = r.tensors.filter((t) => t.comparison || t.problem);
  if (r.ok) lines.push(`llava-vision check: all ${checked.length} tensors within the bound`);
  else {
    const first = failed[0];
    const ratio = first.ratio !== null ? ` (${ratioText(first.ratio)} x PyTorch fp32's error, bound ${r.bound})` : '';
    lines.push(
      `llava-vision check: ${failed.length} of ${checked.length} tensors FAILED; the first: ${first.name}${ratio}`,
    );
  }
  return lines.join('\n') + '\n';
}

function resultText(t: TensorCheck): string {
  if (t.problem) return `FAIL: ${t.problem}`;
  const c = t.comparison;
  if (!c) return 'input (give the image files to check preprocessing too)';
  if (t.ok) return t.exact ? 'ok (bit-identical)' : 'ok';
  const what = t.exact ? 'differ' : `over ${errorText(t.limit!)}`;
  const parts = [`FAIL: ${c.outOfTolerance} of ${c.count} (${percentText(c.outOfTolerance, c.count)}) ${what}`];
  if (c.worst)
    parts.push(
      `worst at ${indexText(c.worst.index)}: ours ${valueText(c.worst.actual)}, truth ${valueText(c.worst.expected)}`,
    );
  const nf = nonFiniteText(c.nonFinite, 'ours', 'truth');
  if (nf) parts.push(nf);
  return parts.join('; ');
}
