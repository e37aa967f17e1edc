import {
  type Baggage,
  type BaggageEntry,
  baggageEntryMetadataFromString,
  type Context,
  defaultTextMapGetter,
  defaultTextMapSetter,
  propagation,
  ROOT_CONTEXT,
  type TextMapPropagator,
} from '@opentelemetry/api';
import { W3CBaggagePropagator } from '@opentelemetry/core';
import fc from 'fast-check';
import { beforeEach, describe, expect, it } from 'vitest';
import { MAX_BAGGAGE_BYTES, parseBaggage } from '../src/baggage.js';
import { nodeHeadersGetter } from '../src/carriers.js';
import { BranchlineBaggagePropagator } from '../src/context.js';
import { createKeyReader } from '../src/extract.js';
import { counters, resetCounters } from '../src/metrics.js';

const ours = new BranchlineBaggagePropagator();
const otel = new W3CBaggagePropagator();

type Entries = Record<string, { value: string; metadata?: string }>;

function contextWith(entries: Entries): Context {
  const record: Record<string, BaggageEntry> = {};
  for (const [key, e] of Object.entries(entries))
    record[key] =
      e.metadata === undefined
        ? { value: e.value }
        : { value: e.value, metadata: baggageEntryMetadataFromString(e.metadata) };
  return propagation.setBaggage(ROOT_CONTEXT, propagation.createBaggage(record));
}

function entriesOf(bag: Baggage | undefined): Entries {
  const out: Entries = Object.create(null);
  for (const [key, e] of bag?.getAllEntries() ?? []) {
    const metadata = e.metadata?.toString();
    out[key] = metadata === undefined || metadata === '' ? { value: e.value } : { value: e.value, metadata };
  }
  return out;
}

function inject(p: TextMapPropagator, ctx: Context): Record<string, string> {
  const carrier: Record<string, string> = {};
  p.inject(ctx, carrier, defaultTextMapSetter);
  return carrier;
}

function extract(p: TextMapPropagator, carrier: Record<string, unknown>): Entries {
  return entriesOf(propagation.getBaggage(p.extract(ROOT_CONTEXT, carrier, defaultTextMapGetter)));
}

const tokenChar = fc.constantFrom(
  ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&'*+-.^_`|~".split(''),
);
const token = fc.string({ unit: tokenChar, minLength: 1, maxLength: 10 });
const octet = fc.constantFrom(..."abcXYZ019!#$&'()*+-./:<=>?@[]^_`{|}~".split(''));
const metadata = fc
  .array(fc.tuple(token, fc.option(fc.string({ unit: octet, minLength: 1, maxLength: 6 }))), {
    minLength: 1,
    maxLength: 3,
  })
  .map((ps) => ps.map(([k, v]) => (v === null ? k : `${k}=${v}`)).join(';'));
// Any key and value an application can put in its baggage: full Unicode, spaces, separators.
// Left out of the comparison with OpenTelemetry, which cannot carry them: empty values (its
// reader drops them), keys with `(` or `)` (its writer leaves them unencoded, which makes the
// member invalid: keys are tokens), and `__proto__` (it collects entries in a plain object).
const key = fc
  .oneof(token, fc.string({ unit: 'binary', minLength: 1, maxLength: 10 }))
  .filter((k) => !/[()]/.test(k) && k !== '__proto__');
const value = fc.string({ unit: 'binary', minLength: 1, maxLength: 20 });
const entries: fc.Arbitrary<Entries> = fc
  .uniqueArray(fc.tuple(key, value, fc.option(metadata, { nil: undefined })), {
    selector: ([k]) => k,
    maxLength: 12,
  })
  .map((list) => {
    const out: Entries = {};
    for (const [k, v, m] of list) out[k] = m === undefined ? { value: v } : { value: v, metadata: m };
    return out;
  });

describe('BranchlineBaggagePropagator', () => {
  beforeEach(() => resetCounters());

  it('round-trips every entry with its metadata, and agrees with OpenTelemetry W3CBaggagePropagator both ways', () => {
    fc.assert(
      fc.property(entries, (bag) => {
        const ctx = contextWith(bag);
        const written = inject(ours, ctx);
        if (Object.keys(bag).length === 0) {
          expect(written).toEqual({});
          return;
        }
        // What we write, we and OpenTelemetry read back unchanged, in full.
        expect(extract(ours, written)).toEqual(bag);
        expect(extract(otel, written)).toEqual(bag);
        // What OpenTelemetry writes, we read back unchanged.
        expect(extract(ours, inject(otel, ctx))).toEqual(bag);
      }),
      { numRuns: 500 },
    );
  });

  it('round-trips what OpenTelemetry cannot: empty values, keys with parentheses', () => {
    const bag: Entries = { ' ': { value: '' }, k: { value: '', metadata: 'p' }, 'f(x)': { value: ' ' } };
    const written = inject(ours, contextWith(bag));
    expect(written).toEqual({ baggage: '%20=,k=;p,f%28x%29=%20' });
    expect(extract(ours, written)).toEqual(bag);
  });

  it('writes percent-encoded keys the reader accepts', () => {
    const written = inject(ours, contextWith({ 'user id': { value: 'a,b' }, branchline: { value: 'pr-1' } }));
    expect(written).toEqual({ baggage: 'user%20id=a%2Cb,branchline=pr-1' });
    expect(createKeyReader().read(written, nodeHeadersGetter)).toBe('pr-1');
  });

  it('writes at most 180 members and 8192 bytes, keeps the routing key, and counts what it left out', () => {
    const many: Entries = {};
    for (let i = 0; i < 250; i++) many[`m${i}`] = { value: 'x'.repeat(40) };
    many.branchline = { value: 'pr-1' };
    const written = inject(ours, contextWith(many));
    expect(written.baggage!.length).toBeLessThanOrEqual(MAX_BAGGAGE_BYTES);
    const back = parseBaggage(written.baggage!);
    expect(back).toMatchObject({ malformed: 0, excess: 0, truncated: false });
    expect(back.members.length).toBeLessThanOrEqual(180);
    expect(createKeyReader().read(written, nodeHeadersGetter)).toBe('pr-1');
    expect(counters.baggageMembersDropped).toBe(251 - back.members.length);
  });

  it('writes an entry without metadata that would break the header', () => {
    const written = inject(
      ours,
      contextWith({ a: { value: '1', metadata: 'x,evil=1' }, b: { value: '2', metadata: 'ttl=3' } }),
    );
    expect(written).toEqual({ baggage: 'a=1,b=2;ttl=3' });
  });

  it('keeps the well-formed members of a header with malformed ones, and counts the dropped', () => {
    expect(extract(ours, { baggage: 'a=1,"bad",branchline=pr-1;ttl=3,c=%zz' })).toEqual({
      a: { value: '1' },
      branchline: { value: 'pr-1', metadata: 'ttl=3' },
    });
    expect(extract(ours, { baggage: ['branchline=pr-2', '"garbage'] })).toEqual({
      branchline: { value: 'pr-2' },
    });
    expect(counters.baggageMembersDropped).toBe(3);
    expect(counters.malformedBaggage).toBe(2);
  });

  it('drops a key given twice with different values, as the key reader does, and keeps equal duplicates', () => {
    const header = { baggage: 'branchline=pr-1,a=1,branchline=pr-2,a=1,__proto__=x,toString=y' };
    expect(extract(ours, header)).toEqual({
      a: { value: '1' },
      ['__proto__']: { value: 'x' },
      toString: { value: 'y' },
    });
    expect(createKeyReader().read(header, nodeHeadersGetter)).toBeUndefined();
  });

  it('reads only the first 8192 bytes of repeated header lines', () => {
    const lines = ['branchline=pr-3', ...Array.from({ length: 1000 }, (_, i) => `m${i}=${'x'.repeat(100)}`)];
    const got = extract(ours, { baggage: lines });
    expect(got.branchline).toEqual({ value: 'pr-3' });
    expect(Object.keys(got).length).toBeLessThan(90);
    expect(counters.oversizeBaggage).toBe(1);
  });
});
