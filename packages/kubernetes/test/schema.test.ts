import { describe, expect, it } from 'vitest';
import { shopBaseline } from './fake-kubernetes.js';
import { schemaProblems } from './schema.js';

// biome-ignore lint/suspicious/noExplicitAny: a document made invalid on purpose
type Json = any;

// The check every generated object and every manifest goes through must be able to say no.
describe('the schema check', () => {
  it('accepts a well-formed Deployment and Service', async () => {
    const { deployment, service } = shopBaseline();
    expect(await schemaProblems(deployment)).toEqual([]);
    expect(await schemaProblems(service)).toEqual([]);
  });

  it('refuses an unknown field, a wrong type, a missing required field, a bad name and a bad label value', async () => {
    const { deployment, service } = shopBaseline();
    const d = structuredClone(deployment) as Json;
    d.spec.template.spec.containers[0].imagePullPolicy = 'Always';
    d.spec.template.spec.containers[0].envv = [];
    d.spec.replicas = '2';
    d.metadata.name = 'Orders_v2';
    d.metadata.labels.version = 'not a label value';
    const problems = await schemaProblems(d);
    expect(problems.join('\n')).toContain('data/spec/replicas must be integer');
    expect(problems).toContain(
      'Deployment.spec.template.spec.containers[0].envv is not a field of V1Container',
    );
    expect(problems).toContain('metadata.name "Orders_v2" is not a valid Deployment name');
    expect(problems).toContain('metadata.labels.version="not a label value" is not a label value');
    delete (d.spec as Record<string, unknown>).selector;
    expect((await schemaProblems(d)).join('\n')).toContain('data/spec must have required property selector');
    expect(await schemaProblems({ ...service, kind: 'Servise' })).toContain('no client-node model V1Servise');
  });
});
