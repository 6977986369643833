/**
 * The load plan (src/loading/load_plan.ts): `inspect` renders it and `LlavaVision.load` executes it, so for
 * every model folder of the fixtures, of every layout, the two agree field by field; the parameters
 * the plan expects are the ones the built modules declare; and what inspect records as a problem is
 * what a load throws.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '../src/tf';
import { InspectReport, inspectCheckpoint } from '../src/loading/inspect';
import { LlavaVision } from '../src/api/llava_vision';
import { planLoad } from '../src/loading/load_plan';
import { findWeights } from '../src/loading/sources';
import { readVisionConfig } from '../src/loading/sources';
import { initBackend } from '../src/backend';
import { CLIPVisionConfig } from '../src/config/clip';
import { ConfigError, CheckpointError } from '../src/errors';
import { CHECKPOINT_KINDS, CheckpointKind } from '../src/loading/checkpoint_kinds';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors';
import { TorchBinFile } from '../src/io/torch_bin';
import { TOWER_LAYOUTS } from '../src/model/layout';
import { disposeWeights } from '../src/model/weights';
import { projectorSpecs, sameParams, specsOf, visionTowerSpecs } from '../src/model/param_specs';
import { Projector } from '../src/model/projector';
import { CLIPVisionModel } from '../src/model/vision_transformer';
import { CASES } from './helpers/golden';
import { isolatedTempDir } from './helpers/isolation';

const tmp = isolatedTempDir('load-plan-');
beforeAll(() => initBackend({ log: null }));

/** Every model folder of the fixtures that holds weights, with the tower folder an original LLaVA one needs. */
function fixtureFolders(): { dir: string; visionTower?: string }[] {
  const found: { dir: string; visionTower?: string }[] = [];
  for (const c of fs.readdirSync(CASES).sort()) {
    for (const sub of ['model', 'llava', 'clip_tower']) {
      const dir = path.join(CASES, c, sub);
      if (!fs.existsSync(path.join(dir, 'config.json')) || !findWeights(dir)) continue;
      const tower = path.join(CASES, c, 'clip_tower');
      found.push(sub === 'llava' ? { dir, visionTower: tower } : { dir });
    }
  }
  return found;
}

/** The tensors a load reads, per file (safetensors and torch .bin reads, spied on). */
async function loadAndRecord(
  dir: string,
  visionTower?: string,
): Promise<{ model: LlavaVision; read: Map<string, string[]> }> {
  const s1 = jest.spyOn(SafetensorsFile.prototype, 'readBytes');
  const s2 = jest.spyOn(TorchBinFile.prototype, 'readBytes');
  try {
    // One thread: the reads are counted on this thread (shard threads read their slices of the same tensors).
    const model = await LlavaVision.load(dir, { log: null, visionTower, threads: 1 });
    const read = new Map<string, Set<string>>();
    const note = (file: string, name: string) => read.set(file, (read.get(file) ?? new Set()).add(name));
    s1.mock.calls.forEach(([name], i) => note((s1.mock.contexts[i] as SafetensorsFile).path, name));
    s2.mock.calls.forEach(([name], i) => note((s2.mock.contexts[i] as TorchBinFile).path, name));
    return { model, read: new Map([...read].map(([f, names]) => [path.resolve(f), [...names].sort()])) };
  } finally {
    s1.mockRestore();
    s2.mockRestore();
  }
}

/**
 * The tensors inspect says a load reads, per file: named for the checkpoint (and a projector file), only
 * counted for a tower folder; `read` (the load's) is brought to the same form.
 */
function sameForm(
  r: InspectReport,
  read: Map<string, string[]>,
): { inspect: Map<string, string[] | number>; load: Map<string, string[] | number> } {
  const inspect = new Map<string, string[] | number>();
  for (const t of r.tensors)
    if (t.role !== 'ignored')
      inspect.set(t.file, [...((inspect.get(t.file) as string[] | undefined) ?? []), t.name].sort());
  const load = new Map<string, string[] | number>(read);
  const folder = r.visionTower?.folderTensors;
  if (folder) {
    expect(folder.files).toHaveLength(1);
    inspect.set(folder.files[0], folder.count);
    load.set(folder.files[0], read.get(folder.files[0])?.length ?? 0);
  }
  return { inspect, load };
}

const visionFields = (c: CLIPVisionConfig) => ({
  hiddenSize: c.hiddenSize,
  intermediateSize: c.intermediateSize,
  numHiddenLayers: c.numHiddenLayers,
  numAttentionHeads: c.numAttentionHeads,
  imageSize: c.imageSize,
  patchSize: c.patchSize,
  hiddenAct: c.hiddenAct,
  layerNormEps: c.layerNormEps,
});

test('for every fixture folder, of every layout, inspect reports what LlavaVision.load does', async () => {
  const layouts = new Set<CheckpointKind>();
  const folders = fixtureFolders();
  expect(folders.length).toBeGreaterThan(15);
  for (const { dir, visionTower } of folders) {
    const r = await inspectCheckpoint(dir, { visionTower });
    const { model, read } = await loadAndRecord(dir, visionTower);
    try {
      const p = model.projector?.projectorConfig;
      const actual = {
        dir,
        layout: model.checkpointKind,
        vision: { ...visionFields(model.tower.config), source: model.tower.configFile },
        select: { layer: model.settings.selectLayer, feature: model.tower.selectFeature },
        projector: p
          ? {
              type: p.type,
              inFeatures: p.inFeatures,
              outFeatures: model.projector.outFeatures,
              act: p.hiddenAct,
              bias: p.bias,
            }
          : null,
        imageNewline: model.imageNewline?.shape ?? null,
        merge: model.settings.mergeType,
        aspect: model.settings.aspect,
        read: sameForm(r, read).load,
      };
      const newline = r.tensors.find((t) => t.role === 'image_newline');
      const rp = r.llava!.projector;
      const reported = {
        dir,
        layout: r.layout,
        vision: { ...visionFields(r.vision as unknown as CLIPVisionConfig), source: r.vision!.source },
        select: { layer: r.llava!.selectLayer, feature: r.llava!.selectFeature },
        projector: rp.type
          ? { type: rp.type, inFeatures: rp.inFeatures, outFeatures: rp.outFeatures, act: rp.act, bias: rp.bias }
          : null,
        imageNewline: newline?.shape ?? null,
        merge: r.llava!.mergeType,
        aspect: r.llava!.aspect,
        read: sameForm(r, read).inspect,
      };
      expect(reported).toEqual(actual);
      expect({ dir, problems: r.problems }).toEqual({ dir, problems: [] });
      layouts.add(model.checkpointKind);
    } finally {
      model.dispose();
    }
  }
  // A new row of src/loading/layouts.ts needs a fixture folder here.
  expect([...layouts].sort()).toEqual(Object.keys(CHECKPOINT_KINDS).sort());
});

describe('the plan expects the parameters the modules declare', () => {
  const all = fixtureFolders().map(({ dir, visionTower }) => readVisionConfig(visionTower ?? dir));
  const configs = [...new Map(all.map((c) => [JSON.stringify(c), c])).values()];

  test.each(TOWER_LAYOUTS)('the tower, layout %s, for every fixture config', (layout) => {
    expect(configs.length).toBeGreaterThan(4);
    for (const cfg of configs) {
      const model = new CLIPVisionModel(cfg, { layout });
      try {
        expect(specsOf(model).length).toBe(visionTowerSpecs(cfg).length);
        expect(sameParams(model, visionTowerSpecs(cfg))).toBe(true);
        expect(sameParams(model, visionTowerSpecs({ ...cfg, intermediateSize: cfg.intermediateSize * 2 }))).toBe(false);
      } finally {
        disposeWeights(model);
      }
    }
  });

  test.each([
    ['linear', true],
    ['linear', false],
    ['mlp2x_gelu', true],
    ['mlp2x_gelu', false],
    ['mlp3x_gelu', true],
    ['identity', true],
  ] as const)('the projector: %s, bias %s', (type, bias) => {
    const cfg = { type, inFeatures: 8, outFeatures: 16, bias };
    const projector = new Projector(cfg);
    try {
      expect(sameParams(projector, projectorSpecs(cfg))).toBe(true);
      if (type !== 'identity') expect(sameParams(projector, projectorSpecs({ ...cfg, outFeatures: 8 }))).toBe(false);
    } finally {
      disposeWeights(projector);
    }
  });
});

describe('a problem inspect records is what a load throws', () => {
  const LLAVA = path.join(CASES, 'tiny_llava_linear_sel-1_patch', 'llava');
  const TOWER = path.join(CASES, 'tiny_llava_linear_sel-1_patch', 'clip_tower');
  let n = 0;
  const copy = (edit: (config: Record<string, unknown>, dir: string) => void): string => {
    const dir = path.join(tmp(), `case-${n++}`);
    fs.cpSync(LLAVA, dir, { recursive: true });
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    edit(config, dir);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    return dir;
  };

  test.each([
    [
      'mm_hidden_size against the tower width',
      ConfigError,
      (c: Record<string, unknown>) => (c.mm_hidden_size = 32),
      /^mm_hidden_size 32 disagrees with the vision tower's feature width 64$/,
    ],
    [
      'a select layer past the tower depth',
      ConfigError,
      (c: Record<string, unknown>) => (c.mm_vision_select_layer = 9),
      /^select layer 9 is out of range: the tower has \d+ hidden states/,
    ],
    [
      'an unknown projector type',
      ConfigError,
      (c: Record<string, unknown>) => (c.mm_projector_type = 'mlp2x_relu'),
      /Unknown projector type: mlp2x_relu/,
    ],
    [
      'a projector type without projector tensors',
      CheckpointError,
      (c: Record<string, unknown>, dir: string) => {
        c.mm_projector_type = 'linear';
        const file = path.join(dir, 'model.safetensors');
        const st = SafetensorsFile.open(file);
        const kept = Object.fromEntries(
          st
            .keys()
            .filter((k) => !k.startsWith('model.mm_projector.'))
            .map((k) => [k, st.read(k)]),
        );
        st.close();
        writeSafetensors(file, kept);
      },
      /mm_projector_type "linear" but no projector tensors \(model\.mm_projector\.\*\) found; pass --projector FILE$/,
    ],
  ] as const)('%s', async (_, errorClass, edit, message) => {
    const dir = copy(edit);
    const plan = await planLoad(dir, { visionTower: TOWER, mode: 'inspect' });
    expect(plan.problems[0]).toMatch(message); // the first; those after it follow from it
    const before = tf.memory().numTensors;
    const e = await LlavaVision.load(dir, { log: null, visionTower: TOWER }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(errorClass);
    expect((e as Error).message).toBe(plan.problems[0]);
    expect(tf.memory().numTensors).toBe(before);
  });

  test("an unresolved mm_vision_tower: the load throws it; inspect plans on, with the checkpoint's tensors", async () => {
    const plan = await planLoad(LLAVA, { mode: 'inspect' });
    expect(plan.tower).toMatchObject({
      dir: null,
      config: null,
      weightsFrom: 'unknown',
      weights: null,
      featureWidth: null,
    });
    expect(plan.tower.unresolved).toMatch(/mm_vision_tower "fixtures\/clip-tower" is not a local CLIP folder/);
    expect(plan.projector).toMatchObject({
      type: 'linear',
      inFeatures: 64,
      outFeatures: 48,
      weights: { from: LLAVA, prefix: 'model.mm_projector.' },
    });
    expect(plan.problems).toEqual([plan.tower.unresolved]); // what the load fails on
    await expect(LlavaVision.load(LLAVA, { log: null })).rejects.toThrow(plan.tower.unresolved);
  });
});
