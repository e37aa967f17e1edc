import { beforeEach, describe, expect, it } from 'vitest';
import { MAX_BAGGAGE_BYTES } from '../src/baggage.js';
import { bufferTextMapGetter, joinHeaderValue, nodeHeadersGetter, recordSetter } from '../src/carriers.js';
import { createKeyReader, injectRoutingKey, tracestateMember } from '../src/extract.js';
import { counters, metricsText, resetCounters } from '../src/metrics.js';
import { CountingString } from './counting-string.js';

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

  it('keeps the routing key when another baggage member is malformed, and counts the dropped one', () => {
    const r = createKeyReader();
    expect(r.read({ baggage: 'branchline=pr-1,"' }, nodeHeadersGetter)).toBe('pr-1');
    expect(r.read({ baggage: 'vendor=a b,branchline=pr-1,x=%zz' }, nodeHeadersGetter)).toBe('pr-1');
    expect(counters.malformedBaggage).toBe(2);
    expect(counters.baggageMembersDropped).toBe(3);
    // A header that needed dropping is parsed, and counted, every time it comes.
    expect(r.read({ baggage: 'vendor=a b,branchline=pr-1,x=%zz' }, nodeHeadersGetter)).toBe('pr-1');
    expect(counters.baggageMembersDropped).toBe(5);
    expect(metricsText()).toContain('branchline_baggage_members_dropped_total 5\n');
  });

  it('keeps the routing key when an extra baggage line is garbage', () => {
    const r = createKeyReader();
    expect(r.read({ baggage: ['branchline=pr-2', '"garbage;;'] }, nodeHeadersGetter)).toBe('pr-2');
    expect(r.read({ baggage: ['<script>', 'branchline=pr-2'] }, bufferTextMapGetter)).toBe('pr-2');
    expect(counters.malformedBaggage).toBe(2);
  });

  it('reads the first 8192 bytes of an oversize header, and the first 180 members, counted', () => {
    const r = createKeyReader();
    expect(r.read({ baggage: `branchline=pr-3,p=${'x'.repeat(9000)}` }, nodeHeadersGetter)).toBe('pr-3');
    expect(r.read({ baggage: `p=${'x'.repeat(9000)},branchline=pr-3` }, nodeHeadersGetter)).toBeUndefined();
    const many = Array.from({ length: 180 }, (_, i) => `m${i}=v`).join(',');
    expect(r.read({ baggage: `${many},branchline=pr-3` }, nodeHeadersGetter)).toBeUndefined();
    expect(counters.oversizeBaggage).toBe(3);
    expect(counters.baggageMembersDropped).toBe(1);
  });

  it('treats our member given twice with different values, or malformed, as no key, without guessing elsewhere', () => {
    const r = createKeyReader({ header: 'x-key' });
    expect(
      r.read({ baggage: 'branchline=pr-1,branchline=pr-2', 'x-key': 'pr-9' }, nodeHeadersGetter),
    ).toBeUndefined();
    expect(r.read({ baggage: 'branchline=pr 1', 'x-key': 'pr-9' }, nodeHeadersGetter)).toBeUndefined();
    // Someone else's malformed member is not ours: the next source still decides.
    expect(r.read({ baggage: 'vendor=a b', 'x-key': 'pr-9' }, nodeHeadersGetter)).toBe('pr-9');
    expect(counters.malformedBaggage).toBe(3);
  });

  it('reads a bounded prefix of repeated header lines, however many there are', () => {
    // 2,000 lines of 1,000 characters: the reader must stop touching them past 8192 bytes.
    const lines = Array.from({ length: 2000 }, (_, i) => new CountingString(`m${i}=${'x'.repeat(995)}`));
    lines.unshift(new CountingString('branchline=pr-4'));
    const key = createKeyReader().read({ baggage: lines.map((l) => l.asString) }, nodeHeadersGetter);
    const read = lines.reduce((n, l) => n + l.reads, 0);
    expect(read).toBeLessThanOrEqual(MAX_BAGGAGE_BYTES + 1);
    expect(lines.filter((l) => l.reads > 0).length).toBeLessThanOrEqual(10);
    expect(key).toBe('pr-4');
    expect(counters.oversizeBaggage).toBe(1);
  });

  it('joins lines up to a limit, returning just enough to show the value is over it', () => {
    expect(joinHeaderValue(['a=1', 'b=2'], 100)).toBe('a=1,b=2');
    expect(joinHeaderValue(['a=1', 'b=2'], 4)).toBe('a=1,b');
    expect(joinHeaderValue(['a=1', 'b=2'], 3)).toBe('a=1,');
    expect(joinHeaderValue(['a=1', 'b=2', 'c=3'], 2)).toBe('a=1');
    expect(joinHeaderValue('abcdef', 3)).toBe('abcd');
    expect(joinHeaderValue(['a', 'b'])).toBe('a,b');
    expect(joinHeaderValue([], 10)).toBeUndefined();
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

  it('finds a tracestate member in time linear in the header, and ignores one over 16 KiB', () => {
    const r = createKeyReader({ tracestate: true });
    expect(r.read({ tracestate: ' rojo=00f067aa0ba902b7 , branchline = pr-6 ' }, nodeHeadersGetter)).toBe(
      'pr-6',
    );
    expect(tracestateMember('a=1,,=x,branchline,branchline=pr-7', 'branchline')).toBe('pr-7');
    expect(tracestateMember('a=1', 'branchline')).toBeUndefined();
    const reads = (header: string) => {
      const counted = new CountingString(header);
      tracestateMember(counted.asString, 'branchline');
      return counted.reads;
    };
    for (const shape of [
      (n: number) => ','.repeat(n),
      (n: number) => '='.repeat(n),
      (n: number) => 'a'.repeat(n),
      (n: number) => 'k=v,'.repeat(n / 4),
      (n: number) => `${' '.repeat(n - 20)}branchline=x`,
    ]) {
      const small = reads(shape(1024));
      const large = reads(shape(16 * 1024));
      // Linear: 16x the input is read about 16x as often (quadratic would be ~256x).
      expect(large / small, shape.toString()).toBeLessThan(20);
      expect(large, shape.toString()).toBeLessThanOrEqual(3 * 16 * 1024);
    }
    // Over the limit the header is not read at all, also when it comes as many lines.
    const lines = Array.from({ length: 100 }, () => new CountingString(`k=${'v'.repeat(998)}`));
    expect(r.read({ tracestate: lines.map((l) => l.asString) }, nodeHeadersGetter)).toBeUndefined();
    expect(lines.reduce((n, l) => n + l.reads, 0)).toBeLessThanOrEqual(16 * 1024 + 1);
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

  it('adds the key next to a malformed member, which it leaves as it was', () => {
    const h: Record<string, unknown> = { baggage: '"broken' };
    expect(injectRoutingKey(h, bufferTextMapGetter, recordSetter, 'pr-1')).toBe(true);
    expect(h.baggage).toBe('"broken,branchline=pr-1');
    expect(createKeyReader().read(h, bufferTextMapGetter)).toBe('pr-1');
  });

  it('leaves a full header alone, and says so', () => {
    const full = Array.from({ length: 180 }, (_, i) => `m${i}=v`).join(',');
    const h: Record<string, unknown> = { baggage: full };
    expect(injectRoutingKey(h, bufferTextMapGetter, recordSetter, 'pr-1')).toBe(false);
    expect(h.baggage).toBe(full);
  });
});
