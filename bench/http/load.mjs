// A minimal keep-alive HTTP/1.1 load generator on raw sockets, for the forwarding-hop figures.
// autocannon reports latency in whole milliseconds, too coarse for a hop that costs a fraction
// of one; this records every request's latency in microseconds. One request in flight per
// connection (no pipelining), like autocannon's default.
import { connect } from 'node:net';
import { percentile } from '../lib.mjs';

const CRLFCRLF = Buffer.from('\r\n\r\n');

/**
 * Drives `url` with `connections` connections for `duration` seconds, or, when `requests` is
 * given, until that many requests have been answered (the instruction-count mode's fixed count).
 */
export function load(url, { connections = 1, duration = 5, headers = {}, requests } = {}) {
  const u = new URL(url);
  let head = `GET ${u.pathname}${u.search} HTTP/1.1\r\nhost: ${u.host}\r\n`;
  for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
  const request = Buffer.from(`${head}\r\n`);
  const samples = [];
  let errors = 0;
  let sent = 0;
  const deadline = performance.now() + duration * 1000;
  const started = performance.now();
  return new Promise((resolve) => {
    let open = connections;
    const finish = () => {
      if (--open > 0) return;
      const elapsed = (performance.now() - started) / 1000;
      const sorted = Float64Array.from(samples).sort();
      resolve({
        requests: samples.length,
        errors,
        rps: samples.length / elapsed,
        p50: percentile(sorted, 50),
        p90: percentile(sorted, 90),
        p99: percentile(sorted, 99),
      });
    };
    for (let c = 0; c < connections; c++) {
      const socket = connect(Number(u.port), u.hostname);
      socket.setNoDelay(true);
      let buf = Buffer.alloc(0);
      let t0 = 0;
      let need = -1;
      const send = () => {
        sent++;
        t0 = performance.now();
        socket.write(request);
      };
      socket.on('connect', () => (requests === undefined || sent < requests ? send() : socket.end()));
      socket.on('data', (d) => {
        buf = buf.length ? Buffer.concat([buf, d]) : d;
        if (need < 0) {
          const end = buf.indexOf(CRLFCRLF);
          if (end < 0) return;
          const text = buf.subarray(0, end).toString('latin1');
          const m = /\r\ncontent-length:\s*(\d+)/i.exec(text);
          if (!text.startsWith('HTTP/1.1 200') || !m) {
            errors++;
            socket.destroy();
            return;
          }
          need = end + 4 + Number(m[1]);
        }
        if (buf.length < need) return;
        samples.push((performance.now() - t0) * 1000);
        buf = buf.subarray(need);
        need = -1;
        if (requests !== undefined ? sent < requests : performance.now() < deadline) send();
        else socket.end();
      });
      socket.on('error', () => errors++);
      socket.on('close', finish);
    }
  });
}
