// A node.js REPL served over TCP: every client gets a REPL on the same global scope, so what
// one client defines, the next one sees. Prints its port on stdout once listening.
//
//   node server.js [PORT] [HOST]      (port 0, the default, picks a free one)
'use strict';
const net = require('net');
const repl = require('repl');

const port = Number(process.argv[2] || 0);
const host = process.argv[3] || '127.0.0.1';
let clients = 0;

const server = net.createServer((sock) => {
  clients += 1;
  const r = repl.start({
    prompt: '> ',
    input: sock,
    output: sock,
    terminal: false,
    useGlobal: true,
  });
  r.context.clients = () => clients;
  r.on('exit', () => sock.end());
  sock.on('error', () => r.close());
  // readline re-emits the socket's error on the REPL: a client that reset its connection (or
  // one a restore found gone) ends its own session, not the server.
  r.on('error', () => sock.destroy());
});

server.listen(port, host, () => {
  process.stdout.write(`${server.address().port}\n`);
});
