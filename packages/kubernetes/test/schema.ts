// Checks a Kubernetes object against the API's schema without a cluster, two ways:
// - kubernetes-models' validators (compiled from the Kubernetes OpenAPI document): types,
//   required fields, formats;
// - every field must be a field of its type, per @kubernetes/client-node's models (generated from
//   the same OpenAPI document), because the validators above accept unknown fields, which an API
//   server with strict field validation refuses.
// What neither checks: the API server's own validation (name formats, immutable fields, quotas),
// admission, and defaulting. Name and label formats are checked here by hand.
import * as k8s from '@kubernetes/client-node';

type Obj = {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; labels?: Record<string, string> };
};

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const DNS_LABEL = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$/;

async function modelValidate(o: Obj): Promise<string[]> {
  const [group, version] = o.apiVersion?.includes('/') ? o.apiVersion.split('/') : [undefined, o.apiVersion];
  const path = `kubernetes-models/${group ? `${group}/` : ''}${version}/${o.kind}`;
  let Model: new (data: unknown) => { validate(): void };
  try {
    Model = (await import(path))[o.kind as string];
  } catch {
    return [`no schema for apiVersion ${o.apiVersion} kind ${o.kind} (${path})`];
  }
  try {
    new Model(o).validate();
    return [];
  } catch (err) {
    return [(err as Error).message];
  }
}

function unknownFields(value: unknown, type: string, path: string, out: string[]): void {
  if (value === null || value === undefined) return;
  let m = /^Array<(.+)>$/.exec(type);
  if (m) {
    const item = m[1]!;
    if (Array.isArray(value))
      for (const [i, v] of value.entries()) unknownFields(v, item, `${path}[${i}]`, out);
    return;
  }
  m = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (m) {
    for (const [k, v] of Object.entries(value as object)) unknownFields(v, m[1]!, `${path}.${k}`, out);
    return;
  }
  const model = (
    k8s as unknown as Record<string, { getAttributeTypeMap?: () => { baseName: string; type: string }[] }>
  )[type];
  if (!model?.getAttributeTypeMap || typeof value !== 'object') return;
  const known = new Map(model.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value as object)) {
    const t = known.get(k);
    if (t === undefined) out.push(`${path}.${k} is not a field of ${type}`);
    else unknownFields(v, t, `${path}.${k}`, out);
  }
}

/** Every problem the schema finds with `o` (empty: valid). */
export async function schemaProblems(o: unknown): Promise<string[]> {
  const obj = o as Obj;
  const out = await modelValidate(obj);
  const type = `V1${obj.kind}`;
  if (!(k8s as Record<string, unknown>)[type]) out.push(`no client-node model ${type}`);
  else unknownFields(obj, type, obj.kind ?? '?', out);
  const name = obj.metadata?.name;
  const nameRe = obj.kind === 'Service' || obj.kind === 'Namespace' ? DNS_LABEL : DNS_SUBDOMAIN;
  if (!name || !nameRe.test(name))
    out.push(`metadata.name ${JSON.stringify(name)} is not a valid ${obj.kind} name`);
  const labelSets: [string, Record<string, string> | undefined][] = [
    ['metadata.labels', obj.metadata?.labels],
  ];
  const tpl = (obj as { spec?: { template?: { metadata?: { labels?: Record<string, string> } } } }).spec
    ?.template;
  if (tpl) labelSets.push(['spec.template.metadata.labels', tpl.metadata?.labels]);
  for (const [where, labels] of labelSets)
    for (const [k, v] of Object.entries(labels ?? {}))
      if (!LABEL_VALUE.test(v) || v.length > 63)
        out.push(`${where}.${k}=${JSON.stringify(v)} is not a label value`);
  return out;
}
