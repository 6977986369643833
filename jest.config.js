/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  // The webgpu backend's own checks run in `npm run test:webgpu` (jest.webgpu.config.js).
  testPathIgnorePatterns: ['/node_modules/', '/test/webgpu.test.ts$'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] },
  testTimeout: 120000,
  // The wasm backend is single-threaded in Node; two workers use both cores.
  maxWorkers: 2,
  reporters: ['default', '<rootDir>/test/helpers/closing_line_reporter.js'],
};
