/**
 * Finds types the public API refers to but does not export: a user can see them in a signature but
 * cannot name them (`import { X } from 'llava-vision-tfjs'` fails). Reads the compiled declarations
 * (dist/src/index.d.ts, so run `npm run build` first) with the TypeScript compiler API: every
 * exported symbol (also inside exported namespaces such as `image` and `train`) is walked for type
 * references, heritage clauses, `typeof` queries and `import("...")` types; any that resolve to a
 * declaration of this package that is not itself exported is reported.
 *
 *   node dist/tools/check_public_types.js [dist/src/index.d.ts]
 */
import * as path from 'path';
import * as ts from 'typescript';

export interface UnexportedReference {
  /** The type that is referenced but not exported. */
  name: string;
  /** Where it is declared, relative to the declarations' folder. */
  declaredIn: string;
  /** The exported names whose declarations refer to it. */
  referencedBy: string[];
}

export function findUnexportedReferences(entry: string): UnexportedReference[] {
  const program = ts.createProgram([entry], {
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
    types: ['node'],
  });
  const checker = program.getTypeChecker();
  const root = path.dirname(path.resolve(entry)) + path.sep;
  const isOurs = (decl: ts.Node) => {
    const file = decl.getSourceFile().fileName;
    return path.resolve(file).startsWith(root) && !file.includes(`${path.sep}node_modules${path.sep}`);
  };
  const resolve = (s: ts.Symbol) => (s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s);

  const entryFile = program.getSourceFile(entry);
  const entrySymbol = entryFile && checker.getSymbolAtLocation(entryFile);
  if (!entrySymbol) throw new Error(`${entry}: not a module (build first: npm run build)`);

  // The exported surface: the entry's exports, and those of our modules it re-exports as namespaces.
  const exported = new Map<ts.Symbol, string>();
  const collect = (moduleSymbol: ts.Symbol, prefix: string) => {
    for (const e of checker.getExportsOfModule(moduleSymbol)) {
      const s = resolve(e);
      if (exported.has(s)) continue;
      exported.set(s, prefix + e.name);
      const isOurModule = (s.flags & ts.SymbolFlags.ValueModule) !== 0 && (s.declarations ?? []).some(isOurs);
      if (isOurModule) collect(s, `${prefix}${e.name}.`);
    }
  };
  collect(entrySymbol, '');

  const problems = new Map<ts.Symbol, UnexportedReference>();
  const report = (target: ts.Symbol, from: string) => {
    const decl = target.declarations?.[0];
    if (!decl || !isOurs(decl) || exported.has(target)) return;
    if (
      target.flags &
      (ts.SymbolFlags.TypeParameter | ts.SymbolFlags.EnumMember | ts.SymbolFlags.Property | ts.SymbolFlags.Method)
    )
      return;
    const entry = problems.get(target) ?? {
      name: target.name,
      declaredIn: path.relative(root, decl.getSourceFile().fileName),
      referencedBy: [],
    };
    if (!entry.referencedBy.includes(from)) entry.referencedBy.push(from);
    problems.set(target, entry);
  };
  const symbolAt = (node: ts.Node): ts.Symbol | undefined => {
    const s = checker.getSymbolAtLocation(node);
    return s && resolve(s);
  };
  const visit = (node: ts.Node, from: string) => {
    // Private members are not part of the API (their declarations carry no type anyway).
    if (ts.canHaveModifiers(node) && ts.getModifiers(node)?.some((m) => m.kind === ts.SyntaxKind.PrivateKeyword))
      return;
    let target: ts.Symbol | undefined;
    if (ts.isTypeReferenceNode(node)) target = symbolAt(node.typeName);
    else if (ts.isExpressionWithTypeArguments(node)) target = symbolAt(node.expression);
    else if (ts.isTypeQueryNode(node)) target = symbolAt(node.exprName);
    else if (ts.isImportTypeNode(node)) {
      const type = checker.getTypeFromTypeNode(node);
      target = type.aliasSymbol ?? type.getSymbol();
    }
    if (target) report(target, from);
    ts.forEachChild(node, (child) => visit(child, from));
  };
  for (const [symbol, name] of exported) {
    for (const decl of symbol.declarations ?? []) {
      if (isOurs(decl) && !ts.isSourceFile(decl) && !ts.isModuleDeclaration(decl)) visit(decl, name);
    }
  }
  return [...problems.values()].sort((a, b) => a.name.localeCompare(b.name));
}

if (require.main === module) {
  const entry = process.argv[2] ?? path.join(__dirname, '..', 'src', 'index.d.ts');
  const problems = findUnexportedReferences(entry);
  for (const p of problems)
    console.log(`${p.name} (${p.declaredIn}) is not exported but appears in ${p.referencedBy.join(', ')}`);
  console.log(
    problems.length
      ? `${problems.length} unexported type(s) in the public API`
      : 'every type the public API refers to is exported',
  );
  process.exitCode = problems.length ? 1 : 0;
}
