//! Test helpers: a byte pattern that exposes loss, duplication and
//! reordering, and a peer that runs in ANOTHER process (this test binary,
//! re-executed with `CRYO_TCP_PEER` set) driven by line commands on stdin.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Byte `i` of a stream: the little-endian bytes of the counters 0, 1, 2, ...
/// Any lost, duplicated or reordered byte run breaks the sequence.
pub fn pattern(offset: u64, len: usize, salt: u8) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| (i / 8).to_le_bytes()[(i % 8) as usize] ^ salt)
        .collect()
}

/// Checks that `data` is the pattern at `offset`; names the first bad byte.
pub fn check_pattern(data: &[u8], offset: u64, salt: u8) -> Result<(), String> {
    let want = pattern(offset, data.len(), salt);
    match data.iter().zip(&want).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(format!(
            "byte at stream offset {} is {:#x}, expected {:#x}",
            offset + i as u64,
            data[i],
            want[i]
        )),
    }
}

/// Salt of the bytes the peer sends.
pub const PEER_SALT: u8 = 0x5a;
/// Salt of the bytes the test process sends.
pub const LOCAL_SALT: u8 = 0xa5;

pub const PEER_ENV: &str = "CRYO_TCP_PEER";

/// The peer's main loop, run in the child process.
pub fn run_peer(addr: &str) {
    let addr: SocketAddr = addr.parse().expect("peer address");
    let mut s = TcpStream::connect(addr).expect("peer connect");
    println!("CRYO:connected {}", s.local_addr().unwrap());
    let (mut out_off, mut in_off) = (0u64, 0u64);
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or("");
        let n: usize = words.next().map(|w| w.parse().unwrap()).unwrap_or(0);
        let reply = match cmd {
            "write" => match s.write_all(&pattern(out_off, n, PEER_SALT)) {
                Ok(()) => {
                    out_off += n as u64;
                    "ok".to_string()
                }
                Err(e) => format!("bad write: {e}"),
            },
            "read" => {
                let mut buf = vec![0u8; n];
                match s.read_exact(&mut buf) {
                    Ok(()) => match check_pattern(&buf, in_off, LOCAL_SALT) {
                        Ok(()) => {
                            in_off += n as u64;
                            "ok".to_string()
                        }
                        Err(e) => format!("bad {e}"),
                    },
                    Err(e) => format!("bad read after {in_off} bytes: {e}"),
                }
            }
            "shutdown" => match s.shutdown(Shutdown::Write) {
                Ok(()) => "ok".into(),
                Err(e) => format!("bad {e}"),
            },
            "eof" => {
                let mut b = [0u8; 1];
                match s.read(&mut b) {
                    Ok(0) => "ok".into(),
                    Ok(_) => "bad data instead of eof".into(),
                    Err(e) => format!("bad {e}"),
                }
            }
            "exit" => break,
            other => format!("bad command {other}"),
        };
        println!("CRYO:{reply}");
    }
}

/// The test side of a peer process.
pub struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The peer's end of the connection.
    pub addr: SocketAddr,
}

impl Peer {
    /// Starts a peer process that connects to `server`.
    pub fn connect(server: SocketAddr) -> Peer {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args(["--exact", "peer_child", "--nocapture", "--test-threads=1"])
            .env(PEER_ENV, server.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn peer");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut peer = Peer {
            child,
            stdin,
            stdout,
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        let line = peer.reply();
        peer.addr = line
            .strip_prefix("connected ")
            .expect("connected line")
            .parse()
            .unwrap();
        peer
    }

    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).unwrap() == 0 {
                panic!("peer exited");
            }
            // The harness prints "test peer_child ... " before the first line.
            if let Some(i) = line.find("CRYO:") {
                return line[i + 5..].trim_end().to_string();
            }
        }
    }

    /// Sends a command and asserts the answer is `ok`.
    pub fn cmd(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        let r = self.reply();
        assert_eq!(r, "ok", "peer command {line:?}");
    }

    /// Sends a command without waiting for the answer.
    pub fn cmd_start(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
    }

    /// Waits for the answer of [`Peer::cmd_start`].
    pub fn cmd_finish(&mut self, line: &str) {
        let r = self.reply();
        assert_eq!(r, "ok", "peer command {line:?}");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.child.wait();
    }
}
