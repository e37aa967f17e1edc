import { createKeyReader, injectRoutingKey } from '@branchline/core/transport';
import { Metadata } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import {
  grpcMetadataGetter,
  grpcMetadataSetter,
  HOP_MARKER,
  HOP_METADATA,
  isForwarded,
} from '../src/index.js';

describe('gRPC metadata carrier', () => {
  it('reads a routing key from baggage metadata, and a repeated key as a list', () => {
    const md = new Metadata();
    md.add('baggage', 'a=1');
    md.add('baggage', 'branchline=pr-7');
    expect(grpcMetadataGetter.get(md, 'baggage')).toEqual(['a=1', 'branchline=pr-7']);
    expect(grpcMetadataGetter.keys(md)).toContain('baggage');
    expect(createKeyReader().read(md, grpcMetadataGetter)).toBe('pr-7');
  });

  it('reads binary (-bin) values as text and absent keys as undefined', () => {
    const md = new Metadata();
    md.set('trace-bin', Buffer.from('abc'));
    expect(grpcMetadataGetter.get(md, 'trace-bin')).toBe('abc');
    expect(grpcMetadataGetter.get(md, 'baggage')).toBeUndefined();
  });

  it('merges the routing key into existing baggage without duplicating the entry', () => {
    const md = new Metadata();
    md.set('baggage', 'team=blue');
    expect(injectRoutingKey(md, grpcMetadataGetter, grpcMetadataSetter, 'pr-9')).toBe(true);
    expect(md.get('baggage')).toEqual(['team=blue,branchline=pr-9']);
  });
});

describe('the hop marker', () => {
  it('HOP_METADATA, the deprecated name, is HOP_MARKER, and either marks a call as forwarded', () => {
    expect(HOP_METADATA).toBe(HOP_MARKER);
    const md = new Metadata();
    expect(isForwarded(md)).toBe(false);
    md.set(HOP_METADATA, 'orders');
    expect(isForwarded(md)).toBe(true);
    expect(md.get(HOP_MARKER)).toEqual(['orders']);
  });
});
