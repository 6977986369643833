/**
 * The WebGPU adapter Dawn offers on this machine, as the webgpu backend would pick it (a real GPU
 * first), with the limits that bound a batch: one JSON line on stdout. Exit code 0 with an adapter,
 * 2 without (the JSON says why: what is missing, or the adapters tried).
 *
 *   node dist/tools/device/adapter.js
 */
import { describeAdapter, findAdapter } from '../../src/gpu_adapters';

/** The limits worth reporting: what bounds a tensor, a dispatch and a workgroup. */
const LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
];

async function main(): Promise<number> {
  const found = await findAdapter({ gpuOnly: false });
  if (typeof found === 'string') {
    console.log(JSON.stringify({ found: false, reason: found }));
    return 2;
  }
  const limits: Record<string, number> = {};
  for (const key of LIMITS) {
    const value = found.adapter.limits[key];
    if (typeof value === 'number') limits[key] = value;
  }
  console.log(
    JSON.stringify({
      found: true,
      adapter: describeAdapter(found.summary),
      ...found.summary,
      limits,
    }),
  );
  return 0;
}

main().then(
  // Dawn's instance keeps the event loop alive: leave explicitly.
  (code) => process.exit(code),
  (e) => {
    console.error(`adapter: ${(e as Error).stack ?? String(e)}`);
    process.exit(1);
  },
);
