// Whether something accepts TCP connections at host:port within `ms`: how the demo and each of
// its legs decide to run or to skip with a line that says how to start the missing server.
import { connect } from 'node:net';

export function reachable(host, port, ms = 1500) {
  return new Promise((resolve) => {
    const s = connect({ host, port: Number(port) });
    const end = (v) => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(ms, () => end(false));
    s.once('connect', () => end(true));
    s.once('error', () => end(false));
  });
}
