//! Runnable scenarios live in examples/; this library holds what the benches share.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;

/// The `cryo` binary built beside the running example (target/PROFILE/cryo; `cargo build
/// --release -p cryo` first), run as a separate process so it inherits none of the bench's
/// own sockets. With CRYO_BENCH_LOG=PATH it logs its stages (-vv) there.
pub struct Cryo {
    bin: PathBuf,
    log: Vec<String>,
}

impl Cryo {
    /// The binary two directories above this example's own (target/PROFILE/examples/NAME).
    pub fn beside_this_example() -> Self {
        let bin = std::env::current_exe()
            .expect("own path")
            .parent()
            .and_then(|p| p.parent())
            .expect("target dir")
            .join("cryo");
        let log = std::env::var("CRYO_BENCH_LOG")
            .map(|p| vec!["-vv".into(), "--log-file".into(), p])
            .unwrap_or_default();
        Self { bin, log }
    }

    /// The binary at `bin` (another build, to compare with), logging as
    /// [`beside_this_example`](Self::beside_this_example) does.
    pub fn at(bin: PathBuf) -> Self {
        Self {
            bin,
            ..Self::beside_this_example()
        }
    }

    /// Runs `cryo ARGS...`, which must succeed; returns its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .args(&self.log)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.bin.display()));
        assert!(
            out.status.success(),
            "cryo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Seconds to send `bytes` over a fresh TCP connection on 127.0.0.1 (read and dropped).
pub fn tcp_copy(bytes: u64) -> std::time::Duration {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        got
    });
    let buf = vec![0x5au8; 1 << 20];
    let started = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(buf.len() as u64) as usize;
        s.write_all(&buf[..n]).unwrap();
        sent += n as u64;
    }
    drop(s);
    let got = reader.join().unwrap();
    assert_eq!(got, bytes);
    started.elapsed()
}
