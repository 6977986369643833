/**
 * The model of the device check (tools/device_check.sh), generated (weightgen v1) where it runs, never
 * carried:
 *
 *   node dist/tools/device/make_model.js --size full|small
 *
 * - full: ViT-L/14-336 + mlp2x_gelu 1024→4096→4096 (LLaVA-1.5's shapes: the full-size golden case's
 *   manifest) in weights/generated/vitl14_336, the folder `npm run bench` and `npm run test:full` use;
 * - small: the same architecture, image size and projector type with 3 encoder layers of width 64
 *   (4 heads, MLP 256) and a 64→128→128 projector, in weights/generated/device_small: the dry run's
 *   model, seconds on a CPU emulation of a GPU.
 *
 * Prints one JSON line: the tower and LLaVA folders and the model's sizes.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { clipVisionTensorSpecs, writeFullSizeCase } from '../make_checkpoint';
import { packageRoot } from '../../src/version';

const CASE = 'vitl14_336_generated_sel-2_patch';

/** The small model's sizes (the rest is the full-size case's config). */
const SMALL = { hidden_size: 64, intermediate_size: 256, num_attention_heads: 4, num_hidden_layers: 3 };
const SMALL_PROJECTOR = 128;

type ClipConfig = { vision_config: Record<string, unknown> } & Record<string, unknown>;

/** A case folder (case.json + model/) for the small model, made from the full-size case's files. */
function smallCase(caseDir: string, dir: string): string {
  const model = path.join(dir, 'model');
  fs.mkdirSync(model, { recursive: true });
  fs.copyFileSync(path.join(caseDir, 'case.json'), path.join(dir, 'case.json')); // the run: projector type, select layer
  fs.copyFileSync(
    path.join(caseDir, 'model', 'preprocessor_config.json'),
    path.join(model, 'preprocessor_config.json'),
  );
  const config = JSON.parse(fs.readFileSync(path.join(caseDir, 'model', 'config.json'), 'utf8')) as ClipConfig;
  Object.assign(config.vision_config, SMALL);
  fs.writeFileSync(path.join(model, 'config.json'), JSON.stringify(config, null, 1) + '\n');
  const width = SMALL.hidden_size;
  const tensors = [
    ...clipVisionTensorSpecs(config),
    { name: 'model.mm_projector.0.weight', shape: [SMALL_PROJECTOR, width] },
    { name: 'model.mm_projector.0.bias', shape: [SMALL_PROJECTOR] },
    { name: 'model.mm_projector.2.weight', shape: [SMALL_PROJECTOR, SMALL_PROJECTOR] },
    { name: 'model.mm_projector.2.bias', shape: [SMALL_PROJECTOR] },
  ];
  fs.writeFileSync(path.join(model, 'weights_manifest.json'), JSON.stringify({ tensors }, null, 1) + '\n');
  return model;
}

function main(argv: string[]): void {
  const sizeArg = argv.indexOf('--size');
  const size = sizeArg >= 0 ? argv[sizeArg + 1] : undefined;
  if (size !== 'full' && size !== 'small') throw new Error('usage: make_model --size full|small');
  const root = packageRoot();
  const caseDir = path.join(root, 'test', 'fixtures', 'cases', CASE);
  const t0 = performance.now();
  let result;
  if (size === 'full') {
    result = writeFullSizeCase(path.join(caseDir, 'model'), path.join(root, 'weights', 'generated', 'vitl14_336'));
  } else {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-device-model-'));
    try {
      const model = smallCase(caseDir, tmp);
      result = writeFullSizeCase(model, path.join(root, 'weights', 'generated', 'device_small'));
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  const config = JSON.parse(fs.readFileSync(path.join(result.towerDir, 'config.json'), 'utf8')) as ClipConfig;
  const v = config.vision_config;
  console.log(
    JSON.stringify({
      size,
      towerDir: result.towerDir,
      llavaDir: result.llavaDir,
      layers: v.num_hidden_layers,
      hiddenSize: v.hidden_size,
      imageSize: v.image_size,
      bytes: result.tower.bytes + result.projector.bytes,
      cached: result.tower.cached && result.projector.cached,
      seconds: (performance.now() - t0) / 1000,
    }),
  );
}

if (require.main === module) {
  try {
    main(process.argv.slice(2));
  } catch (e) {
    console.error(`make_model: ${(e as Error).message}`);
    process.exitCode = 1;
  }
}
