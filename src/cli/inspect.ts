import * as path from 'path';
import {
  InspectKind,
  InspectReport,
  InspectedTensor,
  RoleTotals,
  TensorRole,
  inspectCheckpoint,
} from '../loading/inspect';
import { CHECKPOINT_KINDS, CheckpointKind } from '../loading/checkpoint_kinds';
import { UsageError, parseOptions } from './args';

export const INSPECT_HELP = `inspect: what a checkpoint folder or weights file holds, and what encode would load from it
  llava-vision inspect [--json] [--all] [--vision-tower DIR] DIR_OR_FILE

  DIR_OR_FILE          a CLIP / original LLaVA / llava-hf folder, or one safetensors / torch .bin file, or a
                       hub id (org/name) the HuggingFace cache holds
  --vision-tower DIR   CLIP folder of an original LLaVA checkpoint (default: its mm_vision_tower, if local;
                       never downloaded)
  --all                list every tensor (default: encoder layers after the first are summarised when alike)
  --json               the whole report as JSON (every tensor, sizes in bytes)

Prints the detected checkpoint kind, the vision config and LLaVA settings, the tensors (name, dtype, shape), and
which of them would be loaded (vision tower, projector, image_newline) or ignored (e.g. the language model).
Only headers and config files are read.

Examples:
  llava-vision inspect llava-v1.5-7b
  llava-vision inspect --json llava-v1.6-vicuna-7b > report.json
  llava-vision inspect mm_projector.bin`;

const SPEC = {
  json: { type: 'boolean' },
  all: { type: 'boolean' },
  'vision-tower': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function runInspect(
  argv: string[],
  io: { out: (s: string) => void; err: (s: string) => void },
): Promise<number> {
  const { values: o, positionals } = parseOptions(argv, SPEC);
  if (o.help) {
    io.out(INSPECT_HELP + '\n');
    return 0;
  }
  if (positionals.length !== 1)
    throw new UsageError(`inspect needs exactly one folder or file, got ${positionals.length} (see --help)`);
  const report = await inspectCheckpoint(positionals[0], { visionTower: o['vision-tower'] });
  io.out(o.json ? JSON.stringify(report, null, 1) + '\n' : formatReport(report, { all: o.all ?? false }));
  return 0;
}

/** The single-file kinds; a folder's kind describes itself (loading/checkpoint_kinds.ts). */
const FILE_DESCRIPTIONS: Record<Exclude<InspectKind, CheckpointKind>, string> = {
  'safetensors file': 'a single safetensors file',
  'torch .bin': 'a single torch.save file (read without executing anything)',
};
const describe = (l: InspectKind) =>
  l === 'safetensors file' || l === 'torch .bin' ? FILE_DESCRIPTIONS[l] : CHECKPOINT_KINDS[l].description;

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)} ${units[i]}`;
}

const plural = (n: number, w: string) => `${n} ${w}${n === 1 ? '' : 's'}`;
const dtypes = (t: RoleTotals) =>
  Object.entries(t.dtypes)
    .map(([d, n]) => (Object.keys(t.dtypes).length > 1 ? `${d}×${n}` : d))
    .join(' ');
const summary = (t: RoleTotals) =>
  `${plural(t.count, 'tensor')}, ${formatBytes(t.bytes)}${t.count ? ', ' + dtypes(t) : ''}`;

/** `a.layers.<k>.rest` -> [a.layers., k, rest] */
const LAYER = /^(.*?\.layers\.)(\d+)\.(.+)$/;

/**
 * Tensor lines; unless `all`, the layers of a `*.layers.<k>.*` list after the first are replaced by
 * one line per run of layers whose names, dtypes and shapes are those of the first layer.
 */
export function tensorLines(tensors: InspectedTensor[], all: boolean): string[] {
  const width = Math.min(
    90,
    tensors.reduce((w, t) => Math.max(w, t.name.length), 0),
  );
  const line = (t: InspectedTensor) => `    ${t.name.padEnd(width)}  ${t.dtype.padEnd(4)}  [${t.shape.join(', ')}]`;
  if (all) return tensors.map(line);
  // Signature of each layer of each prefix.
  const sig = new Map<string, Map<number, string[]>>();
  for (const t of tensors) {
    const m = LAYER.exec(t.name);
    if (!m) continue;
    const layers = sig.get(m[1]) ?? new Map<number, string[]>();
    const parts = layers.get(Number(m[2])) ?? [];
    parts.push(`${m[3]}|${t.dtype}|${t.shape.join(',')}`);
    layers.set(Number(m[2]), parts);
    sig.set(m[1], layers);
  }
  // The lowest layer index of each prefix (a loop: a spread of 200k indices overflows the stack).
  const firstLayer = new Map<string, number>();
  for (const [prefix, layers] of sig) {
    let first = Infinity;
    for (const k of layers.keys()) first = Math.min(first, k);
    firstLayer.set(prefix, first);
  }
  const sameAsFirst = (prefix: string, k: number): boolean => {
    const layers = sig.get(prefix)!;
    const first = firstLayer.get(prefix)!;
    return k !== first && [...layers.get(k)!].sort().join(';') === [...layers.get(first)!].sort().join(';');
  };
  const out: string[] = [];
  let run: { prefix: string; from: number; to: number; first: number; count: number } | null = null;
  const flush = () => {
    if (!run) return;
    const range = run.from === run.to ? `${run.from}` : `${run.from}..${run.to}`;
    out.push(
      `    ... ${run.prefix}${range}.*  same names, dtypes and shapes as layer ${run.first} (${plural(run.count, 'tensor')} each; --all lists them)`,
    );
    run = null;
  };
  for (const t of tensors) {
    const m = LAYER.exec(t.name);
    if (m && sameAsFirst(m[1], Number(m[2]))) {
      const k = Number(m[2]);
      if (run && run.prefix === m[1] && (k === run.to || k === run.to + 1)) {
        run.to = k;
      } else {
        flush();
        const layers = sig.get(m[1])!;
        run = { prefix: m[1], from: k, to: k, first: firstLayer.get(m[1])!, count: layers.get(k)!.length };
      }
      continue;
    }
    flush();
    out.push(line(t));
  }
  flush();
  return out;
}

const ROLE_TITLES: Record<TensorRole, string> = {
  tower: 'vision tower — loaded',
  projector: 'projector — loaded',
  image_newline: 'image_newline — loaded',
  ignored: 'ignored — never read',
};

export function formatReport(r: InspectReport, options: { all: boolean }): string {
  const lines: string[] = [];
  const kv = (k: string, v: string) => lines.push(`${(k + ':').padEnd(10)} ${v}`);
  kv('path', r.path);
  kv('kind', `${r.layout} — ${describe(r.layout)}`);
  const files = r.files.map(
    (f) =>
      `${path.relative(r.path, f.file) || path.basename(f.file)}${f.format === 'torch_bin' ? ' (torch .bin)' : ''}`,
  );
  const total = r.files.reduce((a, f) => a + f.bytes, 0);
  kv(
    'weights',
    r.files.length === 0 ? 'none' : `${plural(r.files.length, 'file')} (${formatBytes(total)}): ${files.join(', ')}`,
  );
  if (r.config) kv('config', `${path.basename(r.config.file)} (model_type ${r.config.modelType ?? 'none'})`);

  if (r.visionTower) {
    const vt = r.visionTower;
    lines.push('', 'vision tower folder');
    lines.push(`  mm_vision_tower: ${vt.name ?? '(none)'}`);
    lines.push(`  resolved:        ${vt.resolved ?? 'no — ' + (vt.unresolved ?? 'unknown')}`);
    const weights =
      vt.weightsFrom === 'checkpoint'
        ? "this checkpoint's fine-tuned copy (overrides the folder's weights)"
        : vt.weightsFrom === 'vision tower folder'
          ? `the vision tower folder${vt.folderTensors ? ` (${summary(vt.folderTensors)})` : ''}`
          : 'unknown until the folder is found (--vision-tower DIR)';
    lines.push(`  tower weights:   ${weights}`);
  }

  lines.push('', 'vision config' + (r.vision ? ` (${r.vision.source})` : ''));
  if (r.vision) {
    const v = r.vision;
    lines.push(
      `  hidden ${v.hiddenSize}, layers ${v.numHiddenLayers}, heads ${v.numAttentionHeads}, intermediate ${v.intermediateSize}`,
    );
    lines.push(
      `  image ${v.imageSize}, patch ${v.patchSize} (${v.numPatches} patches), act ${v.hiddenAct}, eps ${v.layerNormEps.toExponential()}`,
    );
  } else {
    lines.push(`  unknown: ${r.visionNote ?? 'no config'}`);
  }

  if (r.llava) {
    const l = r.llava;
    const p = l.projector;
    lines.push('', `LLaVA settings (${l.source === 'defaults' ? 'plain CLIP: the loader defaults' : l.source})`);
    lines.push(`  select:    layer ${JSON.stringify(l.selectLayer)}, feature ${l.selectFeature}`);
    lines.push(
      `  projector: ${p.type ?? 'none'}${p.type ? ` ${p.inFeatures ?? '?'} -> ${p.outFeatures ?? '?'}, act ${p.act}, bias ${p.bias ? 'yes' : 'no'}` : ''}` +
        `${p.weightsFrom.length ? ` (weights: ${p.weightsFrom.map((f) => path.relative(r.path, f)).join(', ')})` : ''}`,
    );
    const pins = l.gridPinpoints ? `, pinpoints (w×h) ${l.gridPinpoints.map(([w, h]) => `${w}×${h}`).join(' ')}` : '';
    lines.push(`  images:    aspect ${l.aspect}${pins}, merge ${l.mergeType}`);
    lines.push(`  unfreeze vision tower: ${l.unfreezeVisionTower ? 'yes' : 'no'}`);
  }

  if (r.fileProjector) {
    const p = r.fileProjector;
    lines.push(
      '',
      `projector (from the tensor names): ${p.type ?? 'unknown type'} ${p.inFeatures ?? '?'} -> ${p.outFeatures ?? '?'}, bias ${p.bias ? 'yes' : 'no'} (${p.prefix}*)`,
    );
  }

  if (r.threads) {
    const t = r.threads;
    const per = (xs: number[]) => (new Set(xs).size === 1 ? `${xs[0]} each` : xs.join(' / '));
    lines.push(
      '',
      `threads (wasm): ${t.threads}${t.threads < t.requested ? ` of ${t.requested} asked for (one per attention head at most)` : ''}, from ${t.from === 'available cores' ? 'the available cores' : t.from}`,
    );
    if (t.threads > 1) {
      lines.push(
        `  split: attention heads ${per(t.heads)}, MLP features ${per(t.features)}` +
          (t.projectorHidden ? `, projector hidden ${per(t.projectorHidden)}` : ', projector on the calling thread'),
      );
    }
  }
  lines.push('', `GEMM (wasm): ${r.gemm.description}${r.gemm.forced ? ', forced by LLAVA_VISION_GEMM' : ''}`);
  lines.push('', `tensors (${summary(r.totals.all)})`);
  for (const role of ['tower', 'projector', 'image_newline', 'ignored'] as TensorRole[]) {
    const ts = r.tensors.filter((t) => t.role === role);
    if (!ts.length) continue;
    if (role !== 'ignored') {
      lines.push(`  ${ROLE_TITLES[role]} (${summary(r.totals[role])})`);
      for (const l of tensorLines(ts, options.all)) lines.push(l);
      continue;
    }
    for (const [reason, t] of Object.entries(r.totals.ignoredBy)) {
      lines.push(`  ignored: ${reason} (${summary(t)})`);
      for (const l of tensorLines(
        ts.filter((x) => (x.reason ?? '') === reason),
        options.all,
      ))
        lines.push(l);
    }
  }

  const loaded = (['tower', 'projector', 'image_newline'] as TensorRole[]).filter((k) => r.totals[k].count);
  lines.push('');
  lines.push(
    `would load:   ${loaded.length ? loaded.map((k) => `${k} ${plural(r.totals[k].count, 'tensor')} (${formatBytes(r.totals[k].bytes)})`).join(', ') : 'nothing from this file'}` +
      `${r.visionTower?.folderTensors ? `; tower ${plural(r.visionTower.folderTensors.count, 'tensor')} (${formatBytes(r.visionTower.folderTensors.bytes)}) from the vision tower folder` : ''}`,
  );
  const ig = r.totals.ignored;
  lines.push(
    `would ignore: ${
      ig.count
        ? `${plural(ig.count, 'tensor')} (${formatBytes(ig.bytes)}): ${Object.entries(r.totals.ignoredBy)
            .map(([k, t]) => `${k} ${t.count}`)
            .join(', ')}`
        : 'nothing'
    }`,
  );
  for (const n of r.notes) lines.push(`note: ${n}`);
  lines.push(r.problems.length ? `problems (LlavaVision.load would fail or differ):` : 'problems: none');
  for (const p of r.problems) lines.push(`  - ${p}`);
  return lines.join('\n') + '\n';
}
