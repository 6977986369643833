/**
 * Global setup of `npm run test:webgpu`: finds the adapter the suites will run on, or says why there
 * is none and marks the run to be skipped (see backend_gate.ts).
 */
import { describeAdapter, findAdapter } from '../../src/gpu_adapters';

export default async function webgpuSetup(): Promise<void> {
  const found = await findAdapter({ gpuOnly: false });
  if (typeof found === 'string') {
    process.env.LLAVA_VISION_TEST_SKIP = `webgpu: ${found}`;
    process.stdout.write(`\nwebgpu suites SKIPPED: ${found}\n`);
  } else {
    process.stdout.write(`\nwebgpu suites on ${describeAdapter(found.summary)}\n`);
  }
}
