// The baggage member name is process-wide: this file runs in its own worker, so the state it
// changes is its own.
import { expect, it } from 'vitest';
import { createRuntime, getRoutingKey, setLogger, withRoutingKey } from '../src/index.js';
import { nodeHeadersGetter } from '../src/transport.js';

it('the first runtime with a baggage name sets it, later ones follow it or are warned, never switch it', () => {
  const warnings: string[] = [];
  setLogger({ debug() {}, info() {}, warn: (msg) => warnings.push(msg), error() {} });
  try {
    const first = createRuntime({ service: 'a', baggageKey: 'route', routes: { sandboxes: [] } });
    expect(first.keys.read({ baggage: 'branchline=x,route=pr-1' }, nodeHeadersGetter)).toBe('pr-1');

    // Configured with no name: follows the process, so its reader and the context agree.
    const follower = createRuntime({ service: 'b', routes: { sandboxes: [] } });
    expect(follower.config.baggageKey).toBe('route');
    expect(follower.keys.read({ baggage: 'branchline=x,route=pr-2' }, nodeHeadersGetter)).toBe('pr-2');
    expect(warnings).toEqual([]);

    // A conflicting name is reported and does not move the context off the first name.
    createRuntime({ service: 'c', baggageKey: 'other', routes: { sandboxes: [] } });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/another baggage member name/);
    withRoutingKey('pr-3', () => expect(getRoutingKey()).toBe('pr-3'));
    const second = createRuntime({ service: 'd', routes: { sandboxes: [] } });
    expect(second.config.baggageKey).toBe('route');
  } finally {
    setLogger(undefined);
  }
});
