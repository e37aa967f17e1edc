import { beforeEach, describe, expect, it } from 'vitest';
import { bufferTextMapGetter, nodeHeadersGetter, recordSetter } from '../src/carriers.js';
import { createKeyReader, injectRoutingKey } from '../src/extract.js';
import { counters, resetCounters } from '../src/metrics.js';

describe('reading the routing key from a carrier', () => {
  beforeEach(() => resetCounters());

  it('reads the baggage member and ignores requests without one', () => {
    const r = createKeyReader();
    expect(r.read({ baggage: 'a=1,branchline=pr-1' }, nodeHeadersGetter)).toBe('pr-1');
    expect(r.read({}, nodeHeadersGetter)).toBeUndefined();
    expect(r.read({ baggage: 'a=1' }, nodeHeadersGetter)).toBeUndefined();
  });

  it('joins repeated baggage header lines', () => {
    expect(createKeyReader().read({ baggage: ['a=1', 'branchline=pr-2'] }, nodeHeadersGetter)).toBe('pr-2');
  });

  it('treats an invalid key as absent and counts it', () => {
    expect(createKeyReader().read({ baggage: 'branchline=Not_Valid' }, nodeHeadersGetter)).toBeUndefined();
    expect(counters.invalidKey).toBe(1);
  });

  it('answers a repeated header like a new one, and counts a bad header every time it comes', () => {
    const r = createKeyReader();
    const h = (baggage: string) => ({ baggage });
    expect(r.read(h('branchline=pr-1'), nodeHeadersGetter)).toBe('pr-1');
    expect(r.read(h('branchline=pr-1'), nodeHeadersGetter)).toBe('pr-1');
    expect(r.read(h('branchline=pr-2'), nodeHeadersGetter)).toBe('pr-2');
    expect(r.read(h('a=1'), nodeHeadersGetter)).toBeUndefined();
    expect(r.read(h('branchline=pr-2'), nodeHeadersGetter)).toBe('pr-2');
    expect(r.read({}, nodeHeadersGetter)).toBeUndefined();
    expect(r.read(h('branchline=Bad_Key'), nodeHeadersGetter)).toBeUndefined();
    expect(r.read(h('branchline=Bad_Key'), nodeHeadersGetter)).toBeUndefined();
    expect(counters.invalidKey).toBe(2);
    expect(r.read(h('branchline=pr-2'), nodeHeadersGetter)).toBe('pr-2');
  });

  it('counts malformed and oversize headers', () => {
    const r = createKeyReader();
    expect(r.read({ baggage: 'branchline=ok,"' }, nodeHeadersGetter)).toBeUndefined();
    expect(r.read({ baggage: `branchline=ok,p=${'x'.repeat(9000)}` }, nodeHeadersGetter)).toBeUndefined();
    expect(counters.malformedBaggage).toBe(1);
    expect(counters.oversizeBaggage).toBe(1);
  });

  it('uses a configured baggage key', () => {
    expect(
      createKeyReader({ baggageKey: 'route' }).read({ baggage: 'branchline=a,route=b' }, nodeHeadersGetter),
    ).toBe('b');
  });

  it('follows the documented precedence across aliases', () => {
    const r = createKeyReader({
      jaeger: true,
      openTracing: true,
      tracestate: true,
      header: 'X-Branchline-Key',
      signadot: true,
    });
    expect(r.sources).toEqual([
      'baggage[branchline]',
      'uberctx-branchline',
      'ot-baggage-branchline',
      'tracestate[branchline]',
      'x-branchline-key',
      'baggage[sd-routing-key]',
      'uberctx-sd-routing-key',
      'ot-baggage-sd-routing-key',
      'sd-routing-key',
    ]);
    const all = {
      baggage: 'branchline=b1,sd-routing-key=s1',
      'uberctx-branchline': 'j1',
      'ot-baggage-branchline': 'o1',
      tracestate: 'rojo=00f067aa0ba902b7,branchline=t1',
      'x-branchline-key': 'h1',
      'uberctx-sd-routing-key': 's2',
      'ot-baggage-sd-routing-key': 's3',
      'sd-routing-key': 's4',
    };
    const order = ['b1', 'j1', 'o1', 't1', 'h1', 's1', 's2', 's3', 's4'];
    const headers: Record<string, string> = { ...all };
    for (const expected of order) {
      expect(r.read(headers, nodeHeadersGetter)).toBe(expected);
      // Remove the source that just won; the next one in order must take over.
      if (expected === 'b1') headers.baggage = 'sd-routing-key=s1';
      else if (expected === 'j1') delete headers['uberctx-branchline'];
      else if (expected === 'o1') delete headers['ot-baggage-branchline'];
      else if (expected === 't1') delete headers.tracestate;
      else if (expected === 'h1') delete headers['x-branchline-key'];
      else if (expected === 's1') delete headers.baggage;
      else if (expected === 's2') delete headers['uberctx-sd-routing-key'];
      else if (expected === 's3') delete headers['ot-baggage-sd-routing-key'];
    }
  });

  it('does not read aliases unless enabled', () => {
    expect(
      createKeyReader().read({ 'uberctx-branchline': 'j1', 'sd-routing-key': 's' }, nodeHeadersGetter),
    ).toBeUndefined();
  });

  it('stops at the first present source even when its value is invalid (no guessing)', () => {
    const r = createKeyReader({ header: 'x-key' });
    expect(r.read({ baggage: 'branchline=BAD', 'x-key': 'good' }, nodeHeadersGetter)).toBeUndefined();
  });

  it('decodes percent-encoded Jaeger values', () => {
    expect(
      createKeyReader({ jaeger: true }).read({ 'uberctx-branchline': 'pr%2D9' }, nodeHeadersGetter),
    ).toBe('pr-9');
  });

  it('rejects a bad baggage key or header name when the reader is built', () => {
    expect(() => createKeyReader({ baggageKey: 'has space' })).toThrow(TypeError);
    expect(() => createKeyReader({ header: 'bad header' })).toThrow(/header/);
  });

  it('reads Kafka/AMQP style headers with Buffer values, any case', () => {
    const r = createKeyReader();
    expect(r.read({ baggage: Buffer.from('branchline=pr-3') }, bufferTextMapGetter)).toBe('pr-3');
    expect(r.read({ Baggage: 'branchline=pr-4' }, bufferTextMapGetter)).toBe('pr-4');
    expect(
      r.read({ baggage: [Buffer.from('a=1'), Buffer.from('branchline=pr-5')] }, bufferTextMapGetter),
    ).toBe('pr-5');
    expect(r.read(undefined, bufferTextMapGetter)).toBeUndefined();
  });
});

describe('writing the routing key into a carrier', () => {
  it('adds the member, merged into existing baggage, without duplicating the header', () => {
    const h: Record<string, unknown> = { Baggage: 'a=1' };
    expect(injectRoutingKey(h, bufferTextMapGetter, recordSetter, 'pr-1')).toBe(true);
    expect(h).toEqual({ baggage: 'a=1,branchline=pr-1' });
  });

  it('never overwrites a member the application set explicitly', () => {
    const h: Record<string, unknown> = { baggage: 'branchline=mine' };
    injectRoutingKey(h, bufferTextMapGetter, recordSetter, 'pr-1');
    expect(h.baggage).toBe('branchline=mine');
  });

  it('leaves a malformed header alone', () => {
    const h: Record<string, unknown> = { baggage: '"broken' };
    expect(injectRoutingKey(h, bufferTextMapGetter, recordSetter, 'pr-1')).toBe(false);
    expect(h.baggage).toBe('"broken');
  });
});
