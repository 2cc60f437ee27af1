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
        let bin = built_beside();
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

/// Seconds to send `bytes` over a fresh TCP connection on 127.0.0.1 (read and dropped): the
/// network's bare cost, with no file read on one end nor written on the other.
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

/// Seconds to copy the file `src` over a fresh TCP connection on 127.0.0.1 into a new file
/// `dst` as a user would without cryo (`nc`, or an scp without compression or cipher): read
/// the file in 1 MiB pieces, send them, write what arrives into `dst`, fsync it; timed from
/// the connect until the fsync returned. Removes `dst` afterwards.
pub fn tcp_file_copy(src: &std::path::Path, dst: &std::path::Path) -> std::time::Duration {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let out_path = dst.to_owned();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut out = std::fs::File::create(&out_path).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).unwrap();
            got += n as u64;
        }
        out.sync_all().unwrap();
        got
    });
    let started = std::time::Instant::now();
    let mut file = std::fs::File::open(src).unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut sent = 0u64;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).unwrap();
        sent += n as u64;
    }
    drop(s);
    let got = reader.join().unwrap();
    let took = started.elapsed();
    assert_eq!(got, sent);
    let _ = std::fs::remove_file(dst);
    took
}

/// The `cryo` binary two directories above the running example's own
/// (target/PROFILE/examples/NAME -> target/PROFILE/cryo).
fn built_beside() -> PathBuf {
    std::env::current_exe()
        .expect("own path")
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join("cryo")
}

/// The `cryo` binary a bench that runs it by path uses: CRYO_BIN, else the one built beside
/// the running example.
pub fn cryo_bin() -> PathBuf {
    std::env::var_os("CRYO_BIN").map_or_else(built_beside, PathBuf::from)
}

/// A redis-server to load and write to, over RESP.
pub mod redis {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::{Duration, Instant};

    /// One RESP command on `s`, its reply read (one line, or a bulk string); the end of the
    /// stream is an error.
    pub fn command(s: &mut BufReader<TcpStream>, args: &[&[u8]]) -> std::io::Result<String> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        s.get_mut().write_all(&req)?;
        let mut line = String::new();
        if s.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(n) = line
            .strip_prefix('$')
            .and_then(|n| n.trim().parse::<i64>().ok())
        {
            if n >= 0 {
                let mut body = vec![0u8; n as usize + 2];
                s.read_exact(&mut body)?;
            }
        }
        Ok(line.trim().to_string())
    }

    /// Fills the redis at `addr` with `mib` MiB of 4 KiB values (DEBUG POPULATE: keys
    /// `key:0`...), connecting again for up to 10 s while it starts.
    pub fn populate(addr: SocketAddr, mib: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("redis did not start: {e}"),
            }
        };
        let mut s = BufReader::new(stream);
        let keys = (mib << 20) / 4096;
        let reply = command(
            &mut s,
            &[
                b"DEBUG",
                b"POPULATE",
                keys.to_string().as_bytes(),
                b"key",
                b"4096",
            ],
        )
        .expect("DEBUG POPULATE");
        assert_eq!(reply, "+OK", "DEBUG POPULATE");
    }
}
