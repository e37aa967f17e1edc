/** The Node.js versions the CLI runs on, as in package.json's `engines` (keep the two in step). */
export const SUPPORTED_NODE = 'Node.js 22.19 or a later 22.x, or 24 and later';

/**
 * Whether `version` (e.g. `20.20.2`) can run the CLI. The registry uses the built-in
 * `node:sqlite`, which older versions lack; they would stop at the first import with
 * ERR_UNKNOWN_BUILTIN_MODULE, which says nothing about the fix.
 */
export function isSupportedNode(version: string): boolean {
  const [major = 0, minor = 0] = version.replace(/^v/, '').split('.').map(Number);
  return (major === 22 && minor >= 19) || major >= 24;
}

/** The message for an unsupported runtime: what runs, what is needed, how to get it. */
export function unsupportedNodeMessage(version: string, execPath: string): string {
  return `branchline needs ${SUPPORTED_NODE}; this is Node.js ${version.replace(/^v?/, 'v')} (${execPath}). Install a supported version (for example "nvm install 24") and run it again.`;
}
