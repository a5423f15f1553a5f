#!/usr/bin/env node
// The compiled command line (npm run build; npm ci runs it through `prepare`): plain JavaScript,
// no TypeScript loader at run time.
await import('../dist/cli/main.js');
