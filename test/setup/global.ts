import type { TestProject } from 'vitest/node';
import { ensureService, type ServiceName, services } from './services.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The servers this project's tests talk to (names from services.ts); `[]` for none. */
    services: ServiceName[];
  }
}

/**
 * Vitest global setup shared by every package and by test/: the servers a project's tests talk
 * to must be up before any of them runs. Each project names them in its config,
 * `test: { provide: { services: ['kafka'] } }` (`[]` when it needs none), so running one
 * package's tests starts only what that package uses. `BRANCHLINE_TEST_SERVICES`
 * (comma-separated) replaces the list of every project.
 */
export default async function setup(project: TestProject): Promise<void> {
  const known = Object.keys(services);
  const fromEnv = process.env.BRANCHLINE_TEST_SERVICES?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const declared: unknown = project.getProvidedContext().services;
  if (!Array.isArray(declared))
    throw new Error(
      `[test setup] project "${project.name}": its vitest config must name the services its tests use, e.g. test: { provide: { services: ['postgres'] } } or [] for none (known: ${known.join(', ')}); got ${JSON.stringify(declared)}`,
    );
  const wanted = fromEnv ?? new Set(declared as string[]);
  const source = fromEnv ? 'BRANCHLINE_TEST_SERVICES' : `project "${project.name}" (provide.services)`;
  for (const name of wanted) {
    if (!Object.hasOwn(services, name))
      throw new Error(
        `[test setup] ${source} names an unknown service "${name}" (known: ${known.join(', ')})`,
      );
    await ensureService(services[name as ServiceName]);
  }
}
