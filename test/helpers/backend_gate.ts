/**
 * The parity suites also run on other backends (`npm run test:webgpu`). That run's global setup
 * (webgpu_setup.ts) sets LLAVA_VISION_TEST_SKIP when the backend cannot run on this machine and prints
 * why; the suites are then skipped and counted as skipped, never passed.
 */
export const SKIP_REASON = process.env.LLAVA_VISION_TEST_SKIP ?? null;

export const describeOnBackend: jest.Describe = SKIP_REASON ? describe.skip : describe;
