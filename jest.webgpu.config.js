/**
 * `npm run test:webgpu`: the tiny parity suites on the webgpu backend (Dawn), with the same parity
 * bound as every backend, plus its own checks. Skipped, visibly, where no WebGPU adapter exists.
 * @type {import('jest').Config}
 */
const base = require('./jest.config');
module.exports = {
  ...base,
  testMatch: ['**/tower_parity.test.ts', '**/image_pipeline_parity.test.ts', '**/webgpu.test.ts'],
  testPathIgnorePatterns: [],
  globalSetup: '<rootDir>/test/helpers/webgpu_setup.ts',
  // One process: a software adapter (llvmpipe) already uses every core.
  maxWorkers: 1,
};
