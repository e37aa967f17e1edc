/**
 * The page served at `/`. A placeholder until the dashboard lands; it is replaced by swapping
 * this module, so the server only knows `renderDashboard`.
 */
export function renderDashboard(info: { revision: number; sandboxes: number; groups: number }): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Branchline registry</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}code{background:#f3f3f3;padding:0 .2em}</style>
</head><body>
<h1>Branchline registry</h1>
<p>The dashboard is coming in a later release. Meanwhile:</p>
<ul>
<li>${info.sandboxes} live sandboxes, ${info.groups} route groups, revision ${info.revision}</li>
<li><code>branchline sandbox list</code>, <code>branchline rules</code>, <code>branchline watch</code></li>
<li>API: <code>GET /v1/sandboxes</code>, <code>GET /v1/rules</code>, <code>GET /v1/watch</code>, <code>GET /metrics</code></li>
</ul>
</body></html>
`;
}
