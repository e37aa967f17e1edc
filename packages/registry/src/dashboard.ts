import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

/**
 * The page served at `/`: one HTML document with its stylesheet and script inlined (no build
 * step, no framework, no other request but the API). The script and stylesheet live in
 * `src/dashboard/` (shipped with the package) and are read once. A Content-Security-Policy in
 * the page allows exactly those two inline blocks (by hash) and connections to this origin.
 */
let cached: { css: string; js: string; csp: string } | undefined;

function assets(): { css: string; js: string; csp: string } {
  if (cached) return cached;
  // Resolves to packages/registry/src/dashboard/ both from dist/dashboard.js and src/dashboard.ts.
  const dir = new URL('../src/dashboard/', import.meta.url);
  const css = readFileSync(new URL('app.css', dir), 'utf8');
  const js = readFileSync(new URL('app.js', dir), 'utf8');
  const hash = (s: string) => `'sha256-${createHash('sha256').update(s, 'utf8').digest('base64')}'`;
  const csp = [
    "default-src 'none'",
    `script-src ${hash(js)}`,
    `style-src ${hash(css)}`,
    "connect-src 'self'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
  ].join('; ');
  cached = { css, js, csp };
  return cached;
}

export function renderDashboard(info: { revision: number; sandboxes: number; groups: number }): string {
  let a: { css: string; js: string; csp: string };
  try {
    a = assets();
  } catch (err) {
    return `<!doctype html><meta charset="utf-8"><title>Branchline registry</title>
<p>The dashboard's files are missing from this installation of @branchline/registry
(${String((err as Error).message).replace(/[<>&]/g, '')}). Reinstall the package; the API under /v1 works regardless.</p>\n`;
  }
  // `</` cannot occur inside the inlined blocks without ending them early.
  if (a.js.includes('</script') || a.css.includes('</style'))
    throw new Error('branchline registry: the dashboard assets contain a closing tag');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${a.csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>Branchline registry</title>
<style>${a.css}</style>
</head>
<body>
<header class="top">
<h1>Branchline</h1>
<span class="counts" id="counts">${info.sandboxes} sandboxes · ${info.groups} route groups · revision ${info.revision}</span>
<span class="spacer"></span>
<span class="conn" id="conn" data-state="connecting">connecting…</span>
</header>
<main>
<noscript><p class="banner">The dashboard needs JavaScript. The API works without it: <code>GET /v1/sandboxes</code>, <code>GET /v1/rules</code>, <code>GET /v1/watch</code>.</p></noscript>
<div id="banner" class="banner" hidden></div>
<h2>Baseline and sandbox overrides</h2>
<section class="panel map" id="map"></section>
<h2>Sandboxes</h2>
<p class="empty" id="sandboxes-empty" hidden>No sandboxes. Create one with <code>branchline sandbox create NAME --override SERVICE=URL</code>.</p>
<section class="cards" id="sandboxes"></section>
<h2>Route groups</h2>
<p class="empty" id="groups-empty" hidden>No route groups. A route group's key selects every sandbox whose labels match it.</p>
<section class="cards" id="groups"></section>
<h2>History</h2>
<details class="tombstones panel" id="deleted" hidden><summary>Recently deleted sandboxes</summary><ul></ul></details>
<footer>
Live from <code>GET /v1/watch</code>; activity from <code>GET /v1/activity</code> (reported by the SDKs, last 15 minutes).
Send the copied header with a request (or put the key in OpenTelemetry baggage) to reach a sandbox.
<button type="button" id="forget-token">Forget the token</button>
</footer>
</main>
<script>${a.js}</script>
</body>
</html>
`;
}
