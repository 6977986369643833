/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  // The webgpu backend's own checks run in `npm run test:webgpu` (jest.webgpu.config.js).
  testPathIgnorePatterns: ['/node_modules/', '/test/webgpu.test.ts$'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] },
  // The examples import the package by its name, as an app does (tsconfig.json's paths; at run time
  // from dist/, package.json's exports resolve it).
  moduleNameMapper: { '^llava-vision-tfjs$': '<rootDir>/src/index.ts' },
  testTimeout: 120000,
  // The wasm backend is single-threaded in Node; two workers use both cores.
  maxWorkers: 2,
  reporters: ['default', '<rootDir>/test/helpers/closing_line_reporter.js'],
};
