import { type FetchSandboxDatabaseOptions, fetchDatabaseOutputs } from '@branchline/core/transport';
import type { SandboxDatabaseOutputs } from './types.js';

export type { FetchSandboxDatabaseOptions };

/**
 * The connection details of this sandbox's database `resource`, read from the registry with
 * the sandbox's token (they are never in the public sandbox document). For a sandbox workload:
 *
 * ```ts
 * const { url } = await fetchSandboxDatabase('orders-db'); // mysql://…, from BRANCHLINE_REGISTRY/_TOKEN/_SANDBOX
 * ```
 */
export function fetchSandboxDatabase(
  resource: string,
  options: FetchSandboxDatabaseOptions = {},
): Promise<SandboxDatabaseOutputs> {
  return fetchDatabaseOutputs<SandboxDatabaseOutputs>('mysql', resource, options);
}
