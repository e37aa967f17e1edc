// For bench/grpc (BENCH_GRPC_FLOOR=1): lower bounds for a forwarding hop made by a Node process.
// Neither is a usable proxy; they bound what engineering the stream relay could still gain.
import http2 from 'node:http2';
import net from 'node:net';

/**
 * A node:http2 server that answers every call itself with `reply` (a serialized response
 * message) and status OK: the server half of any relay inside a grpc-js server, which owns that
 * node:http2 session. Its CPU per call is a floor for a relay's CPU per call.
 */
export async function answeringServer(reply) {
  const frame = Buffer.alloc(5 + reply.length);
  frame.writeUInt32BE(reply.length, 1);
  reply.copy(frame, 5);
  const server = http2.createServer();
  server.on('stream', (stream) => {
    stream.on('error', () => {});
    stream.resume();
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.end(frame);
    });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `127.0.0.1:${server.address().port}`;
}

const DATA = 0;
const HEADERS = 1;
const SETTINGS = 4;
const PING = 6;
const WINDOW_UPDATE = 8;
const END_STREAM = 1;
const ACK = 1;
const END_HEADERS = 4;

function frameHeader(length, type, flags, streamId) {
  const b = Buffer.allocUnsafe(9);
  b.writeUIntBE(length, 0, 3);
  b[3] = type;
  b[4] = flags;
  b.writeUInt32BE(streamId, 5);
  return b;
}

/** An HPACK literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2). */
function literal(name, value) {
  const n = Buffer.from(name);
  const v = Buffer.from(String(value));
  if (n.length > 126 || v.length > 126) throw new Error('bench frame relay: header too long');
  return Buffer.concat([Buffer.from([0, n.length]), n, Buffer.from([v.length]), v]);
}

/**
 * An optimistic bound for a relay whose outgoing side is written by hand instead of with
 * node:http2: the caller side stays node:http2 (as it must inside grpc-js), the sandbox side is
 * raw HTTP/2 frames on one socket. It does not decode the sandbox's response headers or
 * trailers (it answers with fixed ones), keeps huge flow-control windows instead of managing
 * them, and handles unary calls only: a real client would cost more than this.
 */
export async function frameRelay(target) {
  const [host, port] = target.split(':');
  const socket = net.connect({ host, port: Number(port), noDelay: true });
  const settings = Buffer.alloc(18);
  settings.writeUInt16BE(1, 0); // HEADER_TABLE_SIZE 0: the sandbox's header blocks need no table
  settings.writeUInt32BE(0, 2);
  settings.writeUInt16BE(2, 6); // ENABLE_PUSH 0
  settings.writeUInt32BE(0, 8);
  settings.writeUInt16BE(4, 12); // INITIAL_WINDOW_SIZE max
  settings.writeUInt32BE(0x7fffffff, 14);
  const window = Buffer.alloc(4);
  window.writeUInt32BE(0x7fffffff - 65535, 0);
  socket.write(
    Buffer.concat([
      Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
      frameHeader(18, SETTINGS, 0, 0),
      settings,
      frameHeader(4, WINDOW_UPDATE, 0, 0),
      window,
    ]),
  );
  await new Promise((resolve) => socket.once('connect', resolve));

  // Frames queued in one turn go out in one write.
  let pending = [];
  const flush = () => {
    const bufs = pending;
    pending = [];
    socket.write(bufs.length === 1 ? bufs[0] : Buffer.concat(bufs));
  };
  const send = (...bufs) => {
    if (pending.length === 0) queueMicrotask(flush);
    pending.push(...bufs);
  };

  const streams = new Map();
  let nextId = 1;
  const onFrame = (type, flags, id, payload) => {
    const stream = streams.get(id);
    if (type === DATA) {
      if (stream && payload.length) stream.write(payload);
    } else if (type === HEADERS) {
      if (stream && !stream.headersSent)
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    } else if (type === SETTINGS) {
      if (!(flags & ACK)) send(frameHeader(0, SETTINGS, ACK, 0));
    } else if (type === PING) {
      if (!(flags & ACK)) send(frameHeader(8, PING, ACK, 0), payload);
    }
    if (stream && (type === DATA || type === HEADERS) && flags & END_STREAM) {
      streams.delete(id);
      stream.end();
    }
  };
  let buffered = null;
  socket.on('data', (chunk) => {
    buffered = buffered ? Buffer.concat([buffered, chunk]) : chunk;
    while (buffered && buffered.length >= 9) {
      const length = buffered.readUIntBE(0, 3);
      if (buffered.length < 9 + length) break;
      const payload = buffered.subarray(9, 9 + length);
      onFrame(buffered[3], buffered[4], buffered.readUInt32BE(5) & 0x7fffffff, payload);
      buffered = buffered.length === 9 + length ? null : buffered.subarray(9 + length);
    }
  });

  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const id = nextId;
    nextId += 2;
    streams.set(id, stream);
    const fields = [
      literal(':method', 'POST'),
      literal(':scheme', 'http'),
      literal(':path', headers[':path']),
    ];
    fields.push(literal(':authority', target));
    for (const name in headers) if (name[0] !== ':') fields.push(literal(name, headers[name]));
    const block = Buffer.concat(fields);
    send(frameHeader(block.length, HEADERS, END_HEADERS, id), block);
    stream.on('error', () => {});
    stream.on('data', (chunk) => send(frameHeader(chunk.length, DATA, 0, id), chunk));
    stream.on('end', () => send(frameHeader(0, DATA, END_STREAM, id)));
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `127.0.0.1:${server.address().port}`;
}
