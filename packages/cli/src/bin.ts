#!/usr/bin/env node
import { isSupportedNode, unsupportedNodeMessage } from './node-version.js';

// The version check comes before anything else is loaded: the program imports the registry,
// which needs a newer Node.js than some machines have (see node-version.ts).
if (!isSupportedNode(process.versions.node)) {
  process.stderr.write(`${unsupportedNodeMessage(process.versions.node, process.execPath)}\n`);
  process.exitCode = 1;
} else {
  const { main } = await import('./program.js');
  process.exitCode = await main();
}
