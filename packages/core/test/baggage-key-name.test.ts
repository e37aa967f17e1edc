import { describe, expect, it } from 'vitest';
import {
  BAGGAGE_KEY_ENV,
  ConfigError,
  DEFAULT_BAGGAGE_KEY,
  HTTP_TOKEN_RULE,
  loadConfig,
  resolveBaggageKey,
  routingBaggage,
} from '../src/index.js';
import { createKeyReader, nodeHeadersGetter } from '../src/transport.js';

describe('the baggage member name has one owner', () => {
  it('is the code option, else BRANCHLINE_BAGGAGE_KEY, else the default', () => {
    expect(resolveBaggageKey('team.key', { [BAGGAGE_KEY_ENV]: 'env-key' })).toBe('team.key');
    expect(resolveBaggageKey(undefined, { [BAGGAGE_KEY_ENV]: ' env-key ' })).toBe('env-key');
    expect(resolveBaggageKey(undefined, { [BAGGAGE_KEY_ENV]: '  ' })).toBe(DEFAULT_BAGGAGE_KEY);
    expect(resolveBaggageKey(undefined, {})).toBe(DEFAULT_BAGGAGE_KEY);
  });

  it('refuses a blank name given in code instead of replacing it, in resolveBaggageKey and loadConfig alike', () => {
    for (const blank of ['', '  ']) {
      const env = { [BAGGAGE_KEY_ENV]: 'env-key' };
      expect(() => resolveBaggageKey(blank, env)).toThrow(ConfigError);
      expect(() => resolveBaggageKey(blank, env)).toThrow(/option baggageKey=/);
      expect(() => loadConfig({ baggageKey: blank }, env)).toThrow(/option baggageKey=/);
    }
  });

  it('uses a name given in code as given: surrounding spaces make it invalid in both', () => {
    expect(() => resolveBaggageKey(' team.key ', {})).toThrow(/option baggageKey=" team\.key "/);
    expect(() => loadConfig({ baggageKey: ' team.key ' }, {})).toThrow(/option baggageKey=" team\.key "/);
  });

  it('names the variable when the environment holds an invalid name, and agrees with loadConfig', () => {
    const env = { [BAGGAGE_KEY_ENV]: 'bad key' };
    let error: unknown;
    try {
      resolveBaggageKey(undefined, env);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).variable).toBe(BAGGAGE_KEY_ENV);
    expect((error as ConfigError).message).toBe(
      `branchline: BRANCHLINE_BAGGAGE_KEY="bad key" is not a valid baggage member name: use ${HTTP_TOKEN_RULE}`,
    );
    expect(() => loadConfig({}, env)).toThrow((error as ConfigError).message);
    expect(loadConfig({}, { [BAGGAGE_KEY_ENV]: ' route ' }).baggageKey).toBe('route');
    expect(loadConfig({ baggageKey: 'team.key' }, env).baggageKey).toBe('team.key');
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
