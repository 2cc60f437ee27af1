// A node.js application that learns it was restored by cryo, without a native addon.
//
// node cannot call cryo_resume_open() (a C function) nor create a memfd, so it follows the
// FIFO variant of the cryo-resume convention (resume/README.md): a FIFO whose file name
// starts with "cryo-resume", opened read-write and non-blocking, IS the channel. cryo finds
// it at dump time (readlink /proc/PID/fd/N) and after each restore writes one JSON line
// into it. The FIFO file must still exist at restore (cryo reopens FIFOs by path).
//
//   node examples/resume-node/app.js [FIFO_PATH]
//
// Prints "listening <fd> <path>" once ready, then "resumed <json>" per record, and keeps
// serving a small HTTP-less TCP echo on CRYO_DEMO_PORT if set (to have something to break).
'use strict';

const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { execFileSync } = require('child_process');

/** Opens (creating if needed) the cryo-resume FIFO channel; returns { fd, path }. */
function openChannel(fifoPath) {
  if (!path.basename(fifoPath).startsWith('cryo-resume')) {
    throw new Error(`the channel's file name must start with "cryo-resume": ${fifoPath}`);
  }
  if (!fs.existsSync(fifoPath)) {
    execFileSync('mkfifo', ['-m', '600', fifoPath]);
  } else if (!fs.statSync(fifoPath).isFIFO()) {
    throw new Error(`${fifoPath} exists and is not a FIFO`);
  }
  // O_RDWR: the fd is its own writer, so it never sees EOF or POLLHUP; O_NONBLOCK: the
  // event loop (libuv) polls it.
  const fd = fs.openSync(fifoPath, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  return { fd, path: fifoPath };
}

/** Calls onEvent(record) for every JSON line cryo writes into the channel. */
function listen(channel, onEvent) {
  const stream = new net.Socket({ fd: channel.fd, readable: true, writable: false });
  const lines = readline.createInterface({ input: stream, crlfDelay: Infinity });
  lines.on('line', (line) => {
    if (line.trim() === '') return;
    let record;
    try {
      record = JSON.parse(line);
    } catch (e) {
      console.error(`cryo-resume: bad record ${JSON.stringify(line)}: ${e.message}`);
      return;
    }
    onEvent(record);
  });
  return stream;
}

const fifoPath = process.argv[2] || path.join(os.tmpdir(), `cryo-resume-${process.pid}`);
const channel = openChannel(fifoPath);
listen(channel, (ev) => {
  console.log(`resumed ${JSON.stringify(ev)}`);
  for (const b of ev.broken || []) {
    // A broken connection was already failed by cryo: its socket errors out on its own.
    console.log(`broken fd ${b.fd} ${b.local} -> ${b.remote}: ${b.reason}`);
  }
});
console.log(`listening ${channel.fd} ${channel.path}`);

if (process.env.CRYO_DEMO_PORT) {
  net.createServer((sock) => sock.pipe(sock)).listen(Number(process.env.CRYO_DEMO_PORT));
}
// Keep running even without the demo server: the channel's stream keeps the loop alive.
