// The two node-postgres modules pipeline.ts builds on (both exported by the package, untyped).
declare module 'pg/lib/result.js' {
  const Result: unknown;
  export default Result;
}
declare module 'pg/lib/utils.js' {
  const utils: { prepareValue(value: unknown): unknown };
  export default utils;
}
