// The Branchline dashboard: a plain script (no build step, no framework) inlined into the page
// the registry serves at `/`. It follows `GET /v1/watch` (server-sent events read through
// fetch, so a bearer token can be sent) and polls `GET /v1/activity`. Every value from the
// registry reaches the page through textContent or an attribute, never as HTML.

(() => {
  const KINDS = ['forwarded', 'consumed', 'routed'];
  const TOKEN_KEY = 'branchline.registry.token';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const ACTIVITY_POLL_MS = 2000;

  // ---- settings from the address ------------------------------------------------------
  const params = new URLSearchParams(location.search);
  if (params.has('token')) {
    // Kept for this tab only, and removed from the address bar so it is not bookmarked or shared.
    sessionStorage.setItem(TOKEN_KEY, params.get('token') || '');
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + (rest ? `?${rest}` : '') + location.hash);
  }
  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  const bk = params.get('baggageKey') || '';
  const baggageKey = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(bk) ? bk : 'branchline';
  const pinned = (params.get('services') || '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const base = new URL('.', location.href);

  // ---- state ----------------------------------------------------------------------------
  const st = {
    revision: 0,
    sandboxes: new Map(), // id → doc (tombstones included)
    groups: new Map(),
    skew: 0, // registry clock − browser clock, from heartbeats
    interval: 500,
    lastMessage: 0,
    activity: undefined,
    activityVersion: 0,
  };
  const now = () => Date.now() + st.skew;

  // ---- DOM helpers ----------------------------------------------------------------------
  const $ = (sel) => document.querySelector(sel);
  function put(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.setAttribute('class', v);
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  function append(el, children) {
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    put(el, attrs);
    return append(el, children);
  }
  /** replaceChildren that skips null/false, like h(). */
  function fill(el, ...children) {
    el.replaceChildren();
    return append(el, children);
  }
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    put(el, attrs);
    return append(el, children);
  }

  function hue(name) {
    let x = 2166136261;
    for (let i = 0; i < name.length; i++) x = Math.imul(x ^ name.charCodeAt(i), 16777619);
    return (x >>> 0) % 360;
  }
  const color = (name) => `hsl(${hue(name)} 62% 42%)`;
  const tint = (name) => `hsl(${hue(name)} 70% 94%)`;

  function fmtDuration(ms) {
    const t = Math.max(0, Math.floor(ms / 1000));
    const d = Math.floor(t / 86400);
    const hr = Math.floor((t % 86400) / 3600);
    const m = Math.floor((t % 3600) / 60);
    const sec = t % 60;
    const p = (n) => String(n).padStart(2, '0');
    if (d) return `${d}d ${p(hr)}h`;
    if (hr) return `${hr}h ${p(m)}m ${p(sec)}s`;
    if (m) return `${m}m ${p(sec)}s`;
    return `${sec}s`;
  }
  function ago(t) {
    const d = now() - t;
    if (d < 5000) return 'just now';
    return `${fmtDuration(d).split(' ')[0]} ago`;
  }
  const headerFor = (key) => `baggage: ${baggageKey}=${key}`;
  const live = () =>
    [...st.sandboxes.values()]
      .filter((x) => x.deletedAt == null)
      .sort((a, b) => a.createdAt - b.createdAt || (a.name < b.name ? -1 : 1));
  const liveGroups = () =>
    [...st.groups.values()]
      .filter((x) => x.deletedAt == null)
      .sort((a, b) => a.createdAt - b.createdAt || (a.name < b.name ? -1 : 1));

  /** Same rule as the registry: every label (mode all) or one of them (mode any). */
  function groupMatches(g, sb) {
    const want = Object.entries(g.match?.labels || {});
    if (!want.length) return false;
    // Own labels only, as the registry matches them (not Object.prototype's constructor etc.).
    const hit = ([k, v]) => sb.labels != null && Object.hasOwn(sb.labels, k) && sb.labels[k] === v;
    return g.match.mode === 'any' ? want.some(hit) : want.every(hit);
  }

  function servicesOf(sb) {
    return [
      ...new Set([
        ...Object.keys(sb.overrides || {}),
        ...Object.keys(sb.declared || {}),
        ...Object.keys(sb.announced || {}),
      ]),
    ].sort();
  }

  /** heartbeat: a workload announced it; declared: PUT gave an endpoint; none: nothing routes. */
  function readiness(sb, svc) {
    const a = sb.announced?.[svc];
    if (a && (a.http.length || a.grpc.length)) return 'heartbeat';
    if (sb.overrides?.[svc]) return 'declared';
    return 'idle';
  }

  function endpoints(ep) {
    if (!ep) return [];
    const arr = (v) => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
    return [...arr(ep.http), ...arr(ep.grpc).map((g) => `grpc ${g}`)];
  }

  // ---- connection ------------------------------------------------------------------------
  function setConn(state, text) {
    const el = $('#conn');
    el.dataset.state = state;
    el.textContent =
      text ||
      {
        connecting: 'connecting…',
        live: 'live',
        reconnecting: 'reconnecting…',
        'needs-token': 'token needed',
        error: 'error',
      }[state];
    document.documentElement.dataset.connection = state;
  }

  function authHeaders(extra) {
    const hd = Object.assign({}, extra);
    if (token) hd.authorization = `Bearer ${token}`;
    return hd;
  }

  let tokenWaiters = [];
  function waitForToken(message) {
    setConn('needs-token');
    const banner = $('#banner');
    banner.hidden = false;
    fill(
      banner,
      h('strong', { text: 'This registry needs a token to read.' }),
      ' ',
      h('span', { class: 'muted', text: message || '' }),
      h(
        'form',
        { id: 'token-form', onsubmit: submitToken },
        h('input', {
          id: 'token-input',
          type: 'password',
          autocomplete: 'off',
          placeholder: 'a token with the read scope',
          'aria-label': 'registry token',
        }),
        h('button', { class: 'copy', type: 'submit', text: 'Use token' }),
      ),
      h('div', {
        class: 'muted',
        text: 'Kept in this tab only (sessionStorage). You can also open the page as /?token=<token>.',
      }),
    );
    return new Promise((resolve) => tokenWaiters.push(resolve));
  }
  function submitToken(e) {
    e.preventDefault();
    token = $('#token-input').value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    $('#banner').hidden = true;
    const w = tokenWaiters;
    tokenWaiters = [];
    for (const f of w) f();
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      return body.message || res.statusText;
    } catch {
      return res.statusText;
    }
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function watch() {
    let failures = 0;
    for (;;) {
      const ctrl = new AbortController();
      const url = new URL('v1/watch', base);
      if (st.revision) url.searchParams.set('since', String(st.revision));
      let watchdog;
      try {
        const res = await fetch(url, {
          headers: authHeaders({ accept: 'text/event-stream' }),
          signal: ctrl.signal,
          cache: 'no-store',
        });
        if (res.status === 401 || res.status === 403) {
          await waitForToken(await errorText(res));
          continue;
        }
        if (!res.ok || !res.body)
          throw new Error(`the registry answered ${res.status}: ${await errorText(res)}`);
        st.lastMessage = Date.now();
        // A stream that stops talking (not even heartbeats) is dropped and reopened.
        watchdog = setInterval(() => {
          if (Date.now() - st.lastMessage > Math.max(3 * st.interval, 5000)) ctrl.abort();
        }, 1000);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          st.lastMessage = Date.now();
          buf += value.replace(/\r\n?/g, '\n');
          let end = buf.indexOf('\n\n');
          while (end >= 0) {
            frame(buf.slice(0, end));
            buf = buf.slice(end + 2);
            end = buf.indexOf('\n\n');
          }
          failures = 0;
        }
        throw new Error('the registry closed the watch stream');
      } catch (err) {
        failures++;
        setConn('reconnecting', `reconnecting… (${err?.message || err})`);
      } finally {
        clearInterval(watchdog);
        ctrl.abort();
      }
      await sleep(Math.min(5000, 250 * 2 ** Math.min(failures, 5)) * (0.5 + Math.random() / 2));
    }
  }

  function frame(text) {
    let event = 'message';
    let data = '';
    for (const line of text.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      let v = i < 0 ? '' : line.slice(i + 1);
      if (v.startsWith(' ')) v = v.slice(1);
      if (field === 'event') event = v;
      else if (field === 'data') data += (data ? '\n' : '') + v;
    }
    if (!data) return;
    let d;
    try {
      d = JSON.parse(data);
    } catch {
      return;
    }
    apply(event, d);
  }

  function apply(event, d) {
    const mapFor = (kind) => (kind === 'group' ? st.groups : st.sandboxes);
    switch (event) {
      case 'snapshot':
        st.sandboxes.clear();
        st.groups.clear();
        for (const x of d.sandboxes || []) st.sandboxes.set(x.id, x);
        for (const x of d.groups || []) st.groups.set(x.id, x);
        st.revision = d.revision;
        break;
      case 'add':
      case 'replace':
      case 'remove':
        if (d.object) mapFor(d.kind).set(d.id, d.object);
        st.revision = d.revision;
        break;
      case 'forget':
        mapFor(d.kind).delete(d.id);
        st.revision = d.revision;
        break;
      case 'synced':
        setConn('live');
        break;
      case 'heartbeat':
        if (typeof d.time === 'number') st.skew = d.time - Date.now();
        if (typeof d.interval === 'number') st.interval = d.interval;
        return;
      default:
        return;
    }
    scheduleRender();
  }

  async function pollActivity() {
    try {
      if (document.documentElement.dataset.connection !== 'needs-token') {
        const res = await fetch(new URL('v1/activity', base), { headers: authHeaders(), cache: 'no-store' });
        if (res.ok) {
          st.activity = await res.json();
          st.activityVersion++;
          scheduleRender();
        } else if (res.status === 404) st.activity = null;
      }
    } catch {
      // the watch loop reports connection trouble
    }
    setTimeout(pollActivity, document.hidden ? 5 * ACTIVITY_POLL_MS : ACTIVITY_POLL_MS);
  }

  // ---- copy -----------------------------------------------------------------------------
  async function copy(text, btn) {
    let ok = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        ok = true;
      }
    } catch {
      ok = false;
    }
    if (!ok) {
      const ta = h('textarea', { readonly: true });
      ta.value = text;
      document.body.append(ta);
      ta.select();
      try {
        ok = document.execCommand('copy');
      } catch {
        ok = false;
      }
      ta.remove();
    }
    document.documentElement.dataset.copied = text;
    btn.textContent = ok ? 'Copied ✓' : 'Select and copy';
    btn.toggleAttribute('data-done', ok);
    setTimeout(() => {
      btn.textContent = 'Copy header';
      btn.removeAttribute('data-done');
    }, 1500);
  }

  function keyLine(key) {
    const header = headerFor(key);
    const btn = h('button', {
      class: 'copy',
      type: 'button',
      'data-copy': '',
      'data-header': header,
      title: 'Copy the header a request needs to reach this sandbox',
      text: 'Copy header',
    });
    btn.addEventListener('click', () => copy(header, btn));
    return h('div', { class: 'keyline' }, h('code', { text: header, title: header }), btn);
  }

  // ---- rendering --------------------------------------------------------------------------
  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    setTimeout(() => {
      renderQueued = false;
      render();
    }, 10);
  }

  function ttlSpan(expiresAt) {
    return h('span', {
      class: 'ttl',
      'data-expires': expiresAt == null ? 'never' : String(expiresAt),
      title: expiresAt == null ? 'no expiry' : `expires ${new Date(expiresAt).toLocaleString()}`,
    });
  }

  function tickTtl() {
    const t = now();
    for (const el of document.querySelectorAll('[data-expires]')) {
      const v = el.dataset.expires;
      if (v === 'never') {
        el.textContent = 'no expiry';
        continue;
      }
      const left = Number(v) - t;
      el.textContent = left > 0 ? `expires in ${fmtDuration(left)}` : 'expiring…';
      el.classList.toggle('soon', left < 10 * 60_000);
    }
  }

  function labelChips(labels) {
    const entries = Object.entries(labels || {});
    const order = (k) => (k === 'owner' ? 0 : k === 'pr' ? 1 : k === 'repo' ? 2 : 3);
    entries.sort((a, b) => order(a[0]) - order(b[0]) || (a[0] < b[0] ? -1 : 1));
    return h(
      'div',
      { class: 'labels' },
      entries.map(([k, v]) => {
        if (k === 'pr' && /^\d+$/.test(v) && /^[\w.-]+\/[\w.-]+$/.test(labels.repo || ''))
          return h(
            'span',
            { class: 'chip', 'data-label': k },
            h('b', { text: 'PR ' }),
            h('a', {
              href: `https://github.com/${labels.repo}/pull/${v}`,
              target: '_blank',
              rel: 'noopener noreferrer',
              text: `#${v}`,
            }),
          );
        return h(
          'span',
          { class: 'chip', 'data-label': k },
          h('b', { text: `${k === 'pr' ? 'PR' : k}: ` }),
          v,
        );
      }),
    );
  }

  function fillSandboxCard(card, sb) {
    card.style.setProperty('--accent', color(sb.name));
    const services = servicesOf(sb);
    const rows = services.map((svc) => {
      const r = readiness(sb, svc);
      const title = {
        heartbeat: 'a workload announced this endpoint with a heartbeat',
        declared: 'declared when the sandbox was created; no heartbeat',
        idle: 'no endpoint: nothing is routed here',
      }[r];
      return h(
        'tr',
        { 'data-service': svc },
        h('td', {}, h('b', { text: svc })),
        h('td', {}, h('span', { class: `badge ${r}`, title, text: r })),
        h('td', { class: 'ep', text: endpoints(sb.overrides?.[svc]).join(', ') || '—' }),
      );
    });
    const resources = Object.entries(sb.resources || {}).map(([n, r]) =>
      h(
        'tr',
        { 'data-resource': n },
        h('td', {}, h('b', { text: n })),
        h('td', {}, h('span', { class: `badge ${r.status}`, text: r.status })),
        h(
          'td',
          { class: 'ep' },
          r.type,
          r.progress?.message ? ` — ${r.progress.message}` : '',
          r.error ? h('div', { class: 'err', text: r.error }) : null,
        ),
      ),
    );
    fill(
      card,
      h(
        'div',
        { class: 'head' },
        h('span', { class: 'name', text: sb.name }),
        h('span', {
          class: `badge ${sb.status}`,
          'data-status': sb.status,
          title: 'resources: pending, provisioning, ready or failed',
          text: sb.status,
        }),
        ttlSpan(sb.expiresAt),
      ),
      keyLine(sb.key),
      Object.keys(sb.labels || {}).length ? labelChips(sb.labels) : null,
      services.length
        ? h('table', { class: 'svc' }, h('tbody', {}, rows))
        : h('div', {
            class: 'muted',
            text: 'No endpoints yet: nothing routes here until its workload sends a heartbeat or the sandbox declares overrides.',
          }),
      resources.length
        ? h(
            'table',
            { class: 'svc' },
            h('caption', { class: 'muted', text: 'resources' }),
            h('tbody', {}, resources),
          )
        : null,
      h('div', { class: 'activity', 'data-activity': '' }),
      h('div', { class: 'muted', text: `created ${ago(sb.createdAt)}` }),
    );
    tickTtl();
  }

  function sparkline(series, name) {
    const max = Math.max(1, ...series);
    const w = series.length || 1;
    const svg = s('svg', { viewBox: `0 0 ${w} 20`, preserveAspectRatio: 'none', 'aria-hidden': 'true' });
    svg.append(s('line', { x1: 0, y1: 19.5, x2: w, y2: 19.5, stroke: '#e3e6eb', 'stroke-width': 1 }));
    series.forEach((v, i) => {
      if (!v) return;
      const bh = Math.max(1.5, (v / max) * 19);
      svg.append(s('rect', { x: i + 0.1, y: 20 - bh, width: 0.8, height: bh, fill: color(name) }));
    });
    return svg;
  }

  function fillActivity(el, name) {
    if (st.activity === null) {
      fill(el, h('span', { class: 'muted', text: 'activity not available from this registry' }));
      return;
    }
    const a = st.activity?.sandboxes?.[name];
    const minutes = Math.round((st.activity?.windowMs || 900000) / 60000);
    if (!a) {
      fill(el, h('span', { class: 'muted', text: `no routed traffic reported in ${minutes} min` }));
      return;
    }
    fill(
      el,
      ...KINDS.filter((k) => k !== 'routed' || a.total.routed).map((k) =>
        h('span', { 'data-kind': k }, h('span', { class: 'n', text: String(a.total[k]) }), ` ${k}`),
      ),
      sparkline(a.series || [], name),
      h('span', { class: 'muted when', text: `in the last ${minutes} min · last report ${ago(a.lastAt)}` }),
    );
    el.title = Object.entries(a.services)
      .map(([svc, c]) => `${svc}: ${KINDS.map((k) => `${c[k]} ${k}`).join(', ')}`)
      .join('\n');
  }

  // When each card appeared and disappeared (browser clock), for tests and for the curious.
  const seenAt = { shown: {}, removed: {} };
  window.branchlineDashboard = seenAt;
  const sandboxCards = new Map();
  const groupCards = new Map();

  function reconcile(host, cache, items, idOf, make, versionOf, refill, after) {
    const seen = new Set();
    let prev = null;
    for (const item of items) {
      const id = idOf(item);
      seen.add(id);
      let card = cache.get(id);
      if (!card) {
        card = make(item);
        if (card.dataset.sandbox) seenAt.shown[card.dataset.sandbox] = Date.now();
        cache.set(id, card);
      }
      const v = versionOf(item);
      if (card.dataset.version !== v) {
        refill(card, item);
        card.dataset.version = v;
      }
      after?.(card, item);
      const next = prev ? prev.nextSibling : host.firstChild;
      if (next !== card) host.insertBefore(card, next);
      prev = card;
    }
    for (const [id, card] of cache)
      if (!seen.has(id)) {
        card.remove();
        if (card.dataset.sandbox) seenAt.removed[card.dataset.sandbox] = Date.now();
        cache.delete(id);
      }
  }

  function fillGroupCard(card, g, members) {
    card.style.setProperty('--accent', color(g.name));
    const svcCount = new Map();
    for (const m of members)
      for (const svc of Object.keys(m.overrides || {}))
        svcCount.set(svc, [...(svcCount.get(svc) || []), m.name]);
    const overlaps = [...svcCount].filter(([, names]) => names.length > 1);
    fill(
      card,
      h(
        'div',
        { class: 'head' },
        h('span', { class: 'name', text: g.name }),
        h('span', { class: 'badge declared', text: 'route group' }),
        ttlSpan(g.expiresAt),
      ),
      keyLine(g.key),
      h(
        'div',
        { class: 'labels' },
        h('span', {
          class: 'muted',
          text: `selects live sandboxes labelled (${g.match.mode === 'any' ? 'any' : 'all'})`,
        }),
        labelChips(g.match.labels),
      ),
      h(
        'div',
        { class: 'labels', 'data-members': members.map((m) => m.name).join(',') },
        members.length
          ? members.map((m) =>
              h('span', { class: 'chip', text: `${m.name} → ${servicesOf(m).join(', ') || '—'}` }),
            )
          : h('span', { class: 'muted', text: 'no live sandbox matches yet' }),
      ),
      overlaps.length
        ? h('div', {
            class: 'err',
            text: `overlap: ${overlaps.map(([svc, n]) => `${svc} (${n.join(', ')})`).join('; ')} — the older sandbox serves (GET /v1/routegroups/${g.name} lists conflicts)`,
          })
        : null,
    );
    tickTtl();
  }

  function knownServices(sbs) {
    const set = new Set();
    for (const sb of sbs) for (const svc of servicesOf(sb)) set.add(svc);
    const names = new Set(sbs.map((x) => x.name));
    for (const [name, a] of Object.entries(st.activity?.sandboxes || {}))
      if (names.has(name)) for (const svc of Object.keys(a.services)) set.add(svc);
    const rest = [...set].filter((x) => !pinned.includes(x)).sort();
    return [...pinned, ...rest];
  }

  function renderMap(sbs, groups) {
    const host = $('#map');
    const services = knownServices(sbs);
    if (!services.length) {
      fill(
        host,
        h('p', {
          class: 'hint',
          text: 'No services known yet. Services appear when a sandbox overrides one or an SDK reports activity; pin the baseline with ?services=gateway,orders,payments.',
        }),
      );
      return;
    }
    const labelW = 190;
    const colW = 150;
    const boxW = 124;
    const rowH = 46;
    const top = 16;
    const baseH = 40;
    const firstRow = top + baseH + 34;
    const memberGroups = groups
      .map((g) => ({ g, rows: sbs.map((sb, i) => (groupMatches(g, sb) ? i : -1)).filter((i) => i >= 0) }))
      .filter((x) => x.rows.length);
    const width = labelW + services.length * colW + memberGroups.length * 110 + 10;
    const height = firstRow + Math.max(1, sbs.length) * rowH + 6;
    const svg = s('svg', {
      viewBox: `0 0 ${width} ${height}`,
      role: 'img',
      'aria-label': 'baseline services and the sandboxes overriding them',
      'font-family': 'system-ui, Liberation Sans, sans-serif',
    });
    const cx = (i) => labelW + i * colW + colW / 2;
    const rowY = (i) => firstRow + i * rowH + rowH / 2;
    // Column guides: a request with a sandbox's key passes through baseline where the sandbox has no override.
    services.forEach((_svc, i) => {
      svg.append(
        s('line', {
          x1: cx(i),
          y1: top + baseH,
          x2: cx(i),
          y2: height - 4,
          stroke: '#d0d5dd',
          'stroke-dasharray': '3 4',
        }),
      );
    });
    svg.append(
      s(
        'text',
        { x: 8, y: top + baseH / 2 + 5, 'font-size': 14, 'font-weight': 600, fill: '#1d2330' },
        'baseline',
      ),
    );
    services.forEach((svc, i) => {
      const g = s('g', { 'data-map-service': svc });
      g.append(
        s('rect', {
          x: cx(i) - boxW / 2,
          y: top,
          width: boxW,
          height: baseH,
          rx: 6,
          fill: '#eef1f5',
          stroke: '#98a2b3',
        }),
        s(
          'text',
          { x: cx(i), y: top + baseH / 2 + 5, 'text-anchor': 'middle', 'font-size': 13, fill: '#1d2330' },
          svc,
        ),
      );
      svg.append(g);
    });
    if (!sbs.length)
      svg.append(
        s(
          'text',
          { x: 8, y: rowY(0) + 4, 'font-size': 12, fill: '#667085' },
          'no sandboxes: all traffic is served by the baseline',
        ),
      );
    sbs.forEach((sb, r) => {
      const y = rowY(r);
      const g = s('g', { 'data-map-sandbox': sb.name });
      g.append(
        s('line', {
          x1: 24,
          y1: y,
          x2: labelW + services.length * colW - 10,
          y2: y,
          stroke: color(sb.name),
          'stroke-opacity': 0.35,
          'stroke-dasharray': '6 5',
        }),
        s('circle', { cx: 12, cy: y, r: 6, fill: color(sb.name) }),
        s('text', { x: 24, y: y - 3, 'font-size': 13, 'font-weight': 600, fill: '#1d2330' }, sb.name),
      );
      const a = st.activity?.sandboxes?.[sb.name];
      const sub = a
        ? `${a.total.forwarded + a.total.routed} req · ${a.total.consumed} msg / ${Math.round(st.activity.windowMs / 60000)}m`
        : sb.labels?.owner
          ? `owner ${sb.labels.owner}`
          : `key ${sb.key}`;
      g.append(s('text', { x: 24, y: y + 13, 'font-size': 11, fill: '#667085' }, sub));
      services.forEach((svc, i) => {
        if (!servicesOf(sb).includes(svc)) return;
        const rd = readiness(sb, svc);
        const x = cx(i) - boxW / 2;
        g.append(
          s('rect', {
            x,
            y: y - 15,
            width: boxW,
            height: 30,
            rx: 6,
            fill: tint(sb.name),
            stroke: color(sb.name),
            'stroke-width': 2,
            'data-map-override': svc,
          }),
          s(
            'text',
            { x: cx(i) + 6, y: y + 5, 'text-anchor': 'middle', 'font-size': 12, fill: '#1d2330' },
            `${svc}′`,
          ),
          s('circle', {
            cx: x + 12,
            cy: y,
            r: 4.5,
            fill:
              sb.status === 'failed'
                ? '#c23030'
                : sb.status === 'provisioning'
                  ? '#b86e00'
                  : rd === 'heartbeat'
                    ? '#12875a'
                    : rd === 'declared'
                      ? '#2f5fd0'
                      : '#98a2b3',
          }),
        );
      });
      svg.append(g);
    });
    memberGroups.forEach(({ g, rows }, k) => {
      const x = labelW + services.length * colW + 14 + k * 110;
      const grp = s('g', { 'data-map-group': g.name });
      grp.append(
        s('line', {
          x1: x,
          y1: rowY(rows[0]),
          x2: x,
          y2: rowY(rows[rows.length - 1]),
          stroke: color(g.name),
          'stroke-width': 3,
        }),
        ...rows.map((r) => s('circle', { cx: x, cy: rowY(r), r: 5, fill: color(g.name) })),
        s(
          'text',
          { x: x + 9, y: rowY(rows[0]) + 4, 'font-size': 12, 'font-weight': 600, fill: color(g.name) },
          g.name,
        ),
      );
      svg.append(grp);
    });
    fill(
      host,
      svg,
      h('p', {
        class: 'hint',
        text: 'Top row: the baseline. Each dashed line is a sandbox key: requests and messages carrying it are served by the sandbox where it has a box (′) and by the baseline everywhere else. Dot: green heartbeat, blue declared, amber provisioning, red failed.',
      }),
    );
  }

  function render() {
    const sbs = live();
    const groups = liveGroups();
    $('#counts').textContent =
      `${sbs.length} sandbox${sbs.length === 1 ? '' : 'es'} · ${groups.length} route group${groups.length === 1 ? '' : 's'} · revision ${st.revision}`;
    renderMap(sbs, groups);
    reconcile(
      $('#sandboxes'),
      sandboxCards,
      sbs,
      (x) => x.id,
      (x) => h('article', { class: 'card', 'data-sandbox': x.name, 'data-key': x.key }),
      (x) => `${x.updatedAt}:${x.status}`,
      fillSandboxCard,
      (card, x) => {
        if (card.dataset.av !== String(st.activityVersion) || card.dataset.version !== card.dataset.filled) {
          fillActivity(card.querySelector('[data-activity]'), x.name);
          card.dataset.av = String(st.activityVersion);
          card.dataset.filled = card.dataset.version;
        }
      },
    );
    $('#sandboxes-empty').hidden = sbs.length > 0;
    const membersOf = (g) => sbs.filter((x) => groupMatches(g, x));
    reconcile(
      $('#groups'),
      groupCards,
      groups,
      (g) => g.id,
      (g) => h('article', { class: 'card', 'data-group': g.name, 'data-key': g.key }),
      (g) =>
        `${g.updatedAt}|${membersOf(g)
          .map((m) => `${m.name}:${servicesOf(m).join('+')}`)
          .join(',')}`,
      (card, g) => fillGroupCard(card, g, membersOf(g)),
    );
    $('#groups-empty').hidden = groups.length > 0;
    const dead = [...st.sandboxes.values()]
      .filter((x) => x.deletedAt != null)
      .sort((a, b) => b.deletedAt - a.deletedAt)
      .slice(0, 20);
    $('#deleted').hidden = dead.length === 0;
    fill(
      $('#deleted ul'),
      ...dead.map((x) =>
        h(
          'li',
          { 'data-tombstone': x.name },
          h('b', { text: x.name }),
          ` (key ${x.key}) — ${x.deleteReason || 'deleted'} ${ago(x.deletedAt)}`,
          x.status === 'deleting' ? ' · removing resources…' : '',
        ),
      ),
    );
  }

  // ---- start ------------------------------------------------------------------------------
  $('#forget-token').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    token = '';
    location.reload();
  });
  setConn('connecting');
  render();
  setInterval(tickTtl, 1000);
  watch();
  pollActivity();
})();
