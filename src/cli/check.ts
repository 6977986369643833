import { BACKEND_CHOICES, BackendChoice } from '../backend';
import { CheckReport, TensorCheck, checkAgainstReference } from '../api/check';
import { LlavaVision } from '../api/llava_vision';
import { cosineText, errorText, indexText, nonFiniteText, percentText, ratioText, valueText } from '../check/describe';
import { AspectMode, SelectFeature } from '../config/llava';
import { shapeText } from '../errors';
import { UsageError, choiceOption, gridPinpointsOption, intOption, parseOptions } from './args';
import { downloadProgress } from './download';
import { atLeastOne } from './encode_options';
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
  --grid-pinpoints, --interpolate-pos-encoding, --batch-size, --threads, --backend, --quiet: as for encode

The reference's pixel_values go through the model; a table gives per tensor the max abs error, PyTorch
fp32's own error, their ratio, the cosine similarity and pass/fail. Exit code 0: every tensor within
the bound; 1: a tensor is not (the first one, in the model's order, is named), or a file cannot be read.

Examples:
  llava-vision check --reference ref.safetensors --model llava-v1.5-7b --vision-tower clip-vit-large-patch14-336 a.jpg b.png
  llava-vision check --reference ref.safetensors --model clip-vit-large-patch14-336 --json > check.json`;

const SPEC = {
  reference: { type: 'string' },
  model: { type: 'string' },
  'vision-tower': { type: 'string' },
  download: { type: 'boolean' },
  projector: { type: 'string' },
  'projector-type': { type: 'string' },
  'select-layer': { type: 'string' },
  'select-feature': { type: 'string' },
  aspect: { type: 'string' },
  'grid-pinpoints': { type: 'string' },
  'interpolate-pos-encoding': { type: 'boolean' },
  bound: { type: 'string' },
  'batch-size': { type: 'string' },
  threads: { type: 'string' },
  backend: { type: 'string' },
  json: { type: 'boolean' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function runCheck(argv: string[], io: { out: (s: string) => void; err: (s: string) => void; demoModel: string }): Promise<number> {
  const { values: o, positionals: images } = parseOptions(argv, SPEC);
  if (o.help) {
    io.out(CHECK_HELP + '\n');
    return 0;
  }
  if (!o.reference) throw new UsageError('check needs --reference FILE.safetensors (written by python/llava_vision_reference.py)');
  const bound = o.bound === undefined ? undefined : Number(o.bound);
  if (bound !== undefined && (!/^\d+(\.\d+)?$/.test(o.bound!) || !Number.isFinite(bound))) throw new UsageError(`--bound must be a number >= 0, got "${o.bound}"`);
  const selectLayer = intOption(o['select-layer'], 'select-layer');
  const selectFeature = choiceOption<SelectFeature>(o['select-feature'], 'select-feature', ['patch', 'cls_patch']);
  const backend = choiceOption<BackendChoice>(o.backend, 'backend', BACKEND_CHOICES);
  const aspect = choiceOption<AspectMode>(o.aspect, 'aspect', ['square', 'pad', 'anyres']);
  const gridPinpoints = gridPinpointsOption(o['grid-pinpoints']);
  const batchSize = atLeastOne(o['batch-size'], 'batch-size', 1);
  const threads = o.threads === undefined ? undefined : atLeastOne(o.threads, 'threads', 1);
  checkInputFiles([o.reference, ...images, ...(o.projector ? [o.projector] : [])]);
  const modelDir = o.model ?? io.demoModel;
  if (!o.model) io.err(`llava-vision: no --model given: using the bundled demo checkpoint ${modelDir} (generated weights, not a trained model)\n`);

  const model = await LlavaVision.load(modelDir, {
    visionTower: o['vision-tower'],
    download: o.download ? { onProgress: o.quiet ? undefined : downloadProgress() } : undefined,
    projector: o.projector,
    projectorType: o['projector-type'],
    selectLayer,
    selectFeature,
    backend,
    threads,
    log: o.quiet ? null : (line) => io.err(line + '\n'),
  });
  try {
    const report = await checkAgainstReference(model, o.reference, {
      bound, images: images.length ? images : undefined, aspect, gridPinpoints, batchSize, interpolatePosEncoding: o['interpolate-pos-encoding'],
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
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd();
  lines.push(line(header), ...rows.map(line), '');
  const failed = r.tensors.filter((t) => !t.ok);
  const checked = r.tensors.filter((t) => t.comparison || t.problem);
  if (r.ok) lines.push(`llava-vision check: all ${checked.length} tensors within the bound`);
  else {
    const first = failed[0];
    const ratio = first.ratio !== null ? ` (${ratioText(first.ratio)} x PyTorch fp32's error, bound ${r.bound})` : '';
    lines.push(`llava-vision check: ${failed.length} of ${checked.length} tensors FAILED; the first: ${first.name}${ratio}`);
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
  if (c.worst) parts.push(`worst at ${indexText(c.worst.index)}: ours ${valueText(c.worst.actual)}, truth ${valueText(c.worst.expected)}`);
  const nf = nonFiniteText(c.nonFinite, 'ours', 'truth');
  if (nf) parts.push(nf);
  return parts.join('; ');
}
