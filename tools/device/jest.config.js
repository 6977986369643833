/**
 * `npm run test:webgpu` as tools/device_check.sh runs it on a GPU host: the same suites, setup and
 * closing line (jest.webgpu.config.js), compiled to JavaScript by `npm run device:bundle` (dist/test),
 * so that neither ts-jest nor TypeScript has to travel.
 * @type {import('jest').Config}
 */
const webgpu = require('../../jest.webgpu.config');
module.exports = {
  rootDir: '../..',
  testEnvironment: 'node',
  roots: ['<rootDir>/dist/test'],
  testMatch: webgpu.testMatch.map((pattern) => pattern.replace(/\.ts$/, '.js')),
  transform: {},
  globalSetup: '<rootDir>/dist/test/helpers/webgpu_setup.js',
  testTimeout: webgpu.testTimeout,
  maxWorkers: 1,
  reporters: webgpu.reporters,
};
