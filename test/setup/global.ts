import { ensureService, services } from './services.js';

/**
 * Vitest global setup shared by every package and by test/: the servers the suite needs must
 * be up before any test runs. `BRANCHLINE_TEST_SERVICES` narrows the list (comma-separated).
 */
export default async function setup(): Promise<void> {
  const wanted =
    process.env.BRANCHLINE_TEST_SERVICES?.split(',')
      .map((s) => s.trim())
      .filter(Boolean) ?? Object.keys(services);
  for (const name of wanted) {
    const entry = services[name];
    if (!entry)
      throw new Error(
        `[test setup] BRANCHLINE_TEST_SERVICES names an unknown service "${name}" (known: ${Object.keys(services).join(', ')})`,
      );
    await ensureService(entry);
  }
}
