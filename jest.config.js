/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] },
  testTimeout: 120000,
  // The wasm backend is single-threaded in Node; two workers use both cores.
  maxWorkers: 2,
  reporters: ['default', '<rootDir>/test/helpers/closing_line_reporter.js'],
};
