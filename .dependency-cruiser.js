// dependency-cruiser: the layering of src/, checked by `npm run lint` (`depcruise src`). A module may
// import its own layer and the layers below it, never one above; no import cycle anywhere in src/ (type-only
// imports included: tsPreCompilationDeps); src/ never imports tools/, test/ or examples/ (they may import
// anything). test/layering.test.ts plants an upward import and a cycle in a copy of src/ and watches this fail.
'use strict';

/**
 * The layers, top first. `path` is a regular expression over paths from the repository root; every
 * file of src/ is in exactly one layer.
 */
const LAYERS = [
  {
    name: 'entry',
    path: '^src/(index\\.ts$|cli/|testing/|parallel/pool/encode_worker\\.ts$)',
    why: "the mains: the package's index, the /testing subpath, the CLI and the encode worker's thread entry (it loads a LlavaVision); they put the layers below together",
  },
  {
    name: 'train',
    path: '^src/train/',
    why: 'fine-tuning the projector: it runs models (api) over datasets of their outputs (dataset)',
  },
  {
    name: 'dataset',
    path: '^src/dataset/',
    why: "writing a dataset is encoding images with a LlavaVision through encode_job's units and the worker pool; the format and reader ship beside the writer",
  },
  {
    name: 'api',
    path: '^src/api/',
    why: 'the user-facing classes and jobs (LlavaVision, CLIPVisionTower, encode, check): they run what the services below load',
  },
  {
    name: 'services',
    path: '^src/(loading/|parallel/(?!pool/encode_worker\\.ts$))',
    why: 'loading model folders (the load plan, sources, inspect) and running models on threads (tensor-parallel, the pool): siblings that may use each other, never in a cycle',
  },
  {
    name: 'core',
    path: '^src/((model|image|io|check)/|backend\\.ts$)',
    why: 'the model as tfjs layers, image decoding and preprocessing, checkpoint and file I/O, parity comparison, and the backend choice (it picks the GEMM kernel of model/kernels; the layers ensure a backend): the work itself, knowing nothing of how it is loaded or run',
  },
  {
    name: 'runtime',
    path: '^src/(tf|tf_peers|webgpu|gpu_adapters|load_module)\\.ts$',
    why: 'TensorFlow.js and its optional peers, loaded in one place, and the WebGPU adapter: what the model computes with',
  },
  {
    name: 'config',
    path: '^src/config/',
    why: "typed configs with HF's defaults and the bounds of every number read",
  },
  {
    name: 'base',
    path: '^src/(errors|random|version|parity|demo)\\.ts$',
    why: 'error classes and small leaf helpers every layer may use',
  },
];

const layerRules = LAYERS.slice(1).map((layer, i) => ({
  name: `layer-${layer.name}`,
  comment: `${layer.name} (${layer.why}) may not import a layer above it: ${LAYERS.slice(0, i + 1)
    .map((l) => l.name)
    .join(', ')}`,
  severity: 'error',
  from: { path: layer.path },
  to: { path: LAYERS.slice(0, i + 1).map((l) => l.path) },
}));

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'an import cycle: put what both sides need in the lower layer (type-only imports count)',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'src-not-to-dev',
      comment: 'the shipped code never imports tools/, test/ or examples/ (those may import anything)',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(tools|test|examples)/' },
    },
    {
      name: 'no-tfjs-in-check-and-testing',
      comment:
        'src/check/ and the /testing subpath load no TensorFlow.js (a Jest or Vitest suite imports the matchers without it)',
      severity: 'error',
      from: { path: '^src/(check|testing)/' },
      to: {
        path: [
          '^src/(tf|tf_peers|backend|webgpu)\\.ts$',
          '^src/(model|api|loading|parallel|dataset|train)/',
          '@tensorflow',
        ],
      },
    },
    {
      name: 'in-a-layer',
      comment: 'every file of src/ belongs to a layer of .dependency-cruiser.js (add it to LAYERS)',
      severity: 'error',
      from: { path: '^src/', pathNot: LAYERS.map((l) => l.path) },
      to: {},
    },
    ...layerRules,
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    exclude: { path: '\\.d\\.ts$' },
  },
};
// For test/layering.test.ts (every file of src/ in exactly one layer); not enumerable, so not part of
// the configuration dependency-cruiser validates.
Object.defineProperty(module.exports, 'LAYERS', { value: LAYERS });
