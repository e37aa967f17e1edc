import type { TestProject } from 'vitest/node';
import { ensureService, type ServiceName, services } from './services.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Servers this project's tests need beyond those every project gets (services.ts). */
    services: ServiceName[];
  }
}

/**
 * Vitest global setup shared by every package and by test/: the servers the suite needs must
 * be up before any test runs. Every project gets the services marked `everyProject`, plus those
 * its config names in `test: { provide: { services: [...] } }`. `BRANCHLINE_TEST_SERVICES`
 * (comma-separated) replaces the whole list.
 */
export default async function setup(project: TestProject): Promise<void> {
  const known = Object.keys(services);
  const fromEnv = process.env.BRANCHLINE_TEST_SERVICES?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const declared: unknown = project.getProvidedContext().services ?? [];
  if (!Array.isArray(declared))
    throw new Error(
      `[test setup] project "${project.name}": provide.services must be an array of service names (known: ${known.join(', ')}), got ${JSON.stringify(declared)}`,
    );
  const wanted =
    fromEnv ??
    new Set([
      ...known.filter((name) => services[name as ServiceName].everyProject),
      ...(declared as string[]),
    ]);
  const source = fromEnv ? 'BRANCHLINE_TEST_SERVICES' : `project "${project.name}" (provide.services)`;
  for (const name of wanted) {
    if (!Object.hasOwn(services, name))
      throw new Error(
        `[test setup] ${source} names an unknown service "${name}" (known: ${known.join(', ')})`,
      );
    await ensureService(services[name as ServiceName]);
  }
}
