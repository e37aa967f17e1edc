#!/usr/bin/env node
import { existsSync } from 'node:fs';
import { isSupportedNode, unsupportedNodeMessage } from './node-version.js';

// The version check comes before anything else is loaded: the program imports the registry,
// which needs a newer Node.js than some machines have (see node-version.ts).
if (!isSupportedNode(process.versions.node)) {
  let message = unsupportedNodeMessage(process.versions.node, process.execPath);
  // Run from a checkout of the Branchline repository: its script installs a supported Node.js.
  if (existsSync(new URL('../../../scripts/node-env.sh', import.meta.url)))
    message += ' In the Branchline repository, "source scripts/node-env.sh" puts Node.js 24 on PATH.';
  process.stderr.write(`${message}\n`);
  process.exitCode = 1;
} else {
  const { main } = await import('./program.js');
  process.exitCode = await main();
}
