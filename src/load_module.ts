/**
 * A module loaded when it is needed, not when this package is: an optional peer (a tfjs backend
 * registers itself as it loads), the webgpu package's native binary, a package.json. The one
 * `require` of the package (eslint.config.js allows it here only).
 */
export function loadModule(name: string): unknown {
  return require(name);
}
