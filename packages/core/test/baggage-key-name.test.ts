import { describe, expect, it } from 'vitest';
import { BAGGAGE_KEY_ENV, DEFAULT_BAGGAGE_KEY, resolveBaggageKey, routingBaggage } from '../src/index.js';
import { createKeyReader, nodeHeadersGetter } from '../src/transport.js';

describe('the baggage member name has one owner', () => {
  it('is the code option, else BRANCHLINE_BAGGAGE_KEY, else the default', () => {
    expect(resolveBaggageKey('team.key', { [BAGGAGE_KEY_ENV]: 'env-key' })).toBe('team.key');
    expect(resolveBaggageKey(undefined, { [BAGGAGE_KEY_ENV]: ' env-key ' })).toBe('env-key');
    expect(resolveBaggageKey('  ', { [BAGGAGE_KEY_ENV]: '' })).toBe(DEFAULT_BAGGAGE_KEY);
  });

  it('writes a member the key reader reads back, under the default and a custom name', () => {
    expect(routingBaggage('pr-42')).toBe(`${DEFAULT_BAGGAGE_KEY}=pr-42`);
    expect(createKeyReader().read({ baggage: routingBaggage('pr-42') }, nodeHeadersGetter)).toBe('pr-42');
    const custom = createKeyReader({ baggageKey: 'x-route' });
    expect(custom.read({ baggage: `a=1,${routingBaggage('pr-7', 'x-route')}` }, nodeHeadersGetter)).toBe(
      'pr-7',
    );
  });
});
