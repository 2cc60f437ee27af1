//! A real node.js REPL served over TCP (examples/node-repl/server.js), checkpointed between
//! messages and restored: the same client, new clients, copies in their own namespaces.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`), and node on the PATH.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cryo_tests::{control_dir, cryo_bin, run_cryo, CryoOutput, Pidfd, TempDir, CMD_TIMEOUT};

fn server_js() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/node-repl/server.js")
}

/// The node REPL server, started by the test (not dumped with it).
struct Server {
    child: Option<Child>,
    pid: i32,
    port: u16,
    dir: TempDir,
    /// Processes restored from its images, killed at the end.
    restored: Vec<Pidfd>,
    runs: std::cell::Cell<u32>,
}

impl Server {
    fn start() -> Self {
        let dir = control_dir();
        let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
        let mut child = cryo_tests::own_session(&mut Command::new("node"))
            .arg(server_js())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start node (is it on the PATH?)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!(
                "node did not print its port ({line:?}): {}",
                std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default()
            )
        });
        Server {
            pid: child.id() as i32,
            child: Some(child),
            port,
            dir,
            restored: Vec::new(),
            runs: std::cell::Cell::new(0),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cryo(&self, args: &[&str]) -> CryoOutput {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        run_cryo(self.dir.path(), &format!("cryo-{n}-{}", args[0]), args)
    }

    fn checkpoint(&self, img: &Path) {
        self.cryo(&[
            "dump",
            "-t",
            &self.pid.to_string(),
            "-D",
            img.to_str().unwrap(),
            "--tcp-established",
            "--leave-running",
        ])
        .assert_success();
    }

    /// The final checkpoint, as the issue tells it: dumped with `--leave-running`, then
    /// killed with `cryo kill`, which ends node with its connections in repair mode, so its
    /// clients see nothing until the restore.
    fn checkpoint_and_stop(&mut self, img: &Path) {
        self.checkpoint(img);
        self.cryo(&["kill", "-D", img.to_str().unwrap()])
            .assert_success();
        // Reap it: its pid is free again for the restore.
        if let Some(mut child) = self.child.take() {
            child.wait().unwrap();
        }
    }

    fn kill_original(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Restores `img` detached; returns the restored pid as cryo sees it.
    fn restore(&mut self, img: &Path, extra: &[&str]) -> i32 {
        let mut args = vec!["restore", "-D", img.to_str().unwrap(), "--detach"];
        args.extend_from_slice(extra);
        let out = self.cryo(&args);
        out.assert_success();
        let pid: i32 = out.stdout.trim().parse().unwrap();
        self.restored.push(Pidfd::open(pid).unwrap());
        pid
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_original();
        for p in &self.restored {
            let _ = p.signal(libc::SIGKILL);
        }
    }
}

/// One REPL session over a TCP connection.
struct Client {
    stream: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Self {
        Self::from_stream(TcpStream::connect(("127.0.0.1", port)).unwrap())
    }

    /// Connects from inside the network namespace of `pid`.
    fn connect_in(pid: i32, port: u16) -> Self {
        let stream = std::thread::spawn(move || {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            TcpStream::connect(("127.0.0.1", port)).unwrap()
        })
        .join()
        .unwrap();
        Self::from_stream(stream)
    }

    fn from_stream(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(CMD_TIMEOUT)).unwrap();
        let mut c = Client { stream };
        assert_eq!(c.read_reply(), "", "the REPL greets with a prompt");
        c
    }

    fn read_reply(&mut self) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"> ") {
            let n = match self.stream.read(&mut buf) {
                // A read with a timeout (SO_RCVTIMEO) is not restarted after a signal or a
                // stop of this process: read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                read => read.unwrap_or_else(|e| {
                    panic!(
                        "REPL reply: {e} (so far {:?})",
                        String::from_utf8_lossy(&got)
                    )
                }),
            };
            assert!(
                n > 0,
                "the REPL closed the connection after {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got[..got.len() - 2])
            .trim()
            .to_string()
    }

    fn eval(&mut self, line: &str) -> String {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        self.read_reply()
    }
}

#[test]
fn the_same_client_and_a_new_one_see_the_state_after_restore() {
    cryo_bin();
    let mut server = Server::start();
    let mut client = Client::connect(server.port);
    assert_eq!(client.eval("var x = 41"), "undefined");
    assert_eq!(client.eval("function f(a) { return a + 1 }"), "undefined");
    let img = server.path("img");
    server.checkpoint_and_stop(&img);
    server.restore(&img, &[]);
    assert_eq!(client.eval("f(x)"), "42", "the old client, still connected");
    let mut fresh = Client::connect(server.port);
    assert_eq!(
        fresh.eval("f(x) + 1"),
        "43",
        "a new client sees the same globals"
    );
    assert_eq!(client.eval("x"), "41");
}

#[test]
fn a_checkpoint_after_every_message_restores_to_its_message() {
    cryo_bin();
    let mut server = Server::start();
    let mut client = Client::connect(server.port);
    for i in 1..=100 {
        assert_eq!(client.eval(&format!("var n = {i}")), "undefined");
        server.checkpoint(&server.path(&format!("img-{i}")));
    }
    // The original still runs: each copy gets its own PID and network namespace.
    for i in [1, 37, 64, 100] {
        let pid = server.restore(&server.path(&format!("img-{i}")), &["--pidns", "--netns"]);
        let mut inside = Client::connect_in(pid, server.port);
        assert_eq!(inside.eval("n"), i.to_string(), "image {i}");
    }
    assert_eq!(client.eval("n"), "100", "the original is untouched");
}

#[test]
fn ten_copies_at_once_each_in_its_own_namespaces() {
    cryo_bin();
    let mut server = Server::start();
    let mut client = Client::connect(server.port);
    assert_eq!(client.eval("var x = 7"), "undefined");
    let img = server.path("img");
    server.checkpoint(&img);
    let pids: Vec<i32> = (0..10)
        .map(|_| server.restore(&img, &["--pidns", "--netns"]))
        .collect();
    for (i, &pid) in pids.iter().enumerate() {
        let mut inside = Client::connect_in(pid, server.port);
        assert_eq!(
            inside.eval(&format!("x * {i}")),
            (7 * i).to_string(),
            "copy {i}"
        );
        assert_eq!(
            inside.eval("process.pid"),
            server.pid.to_string(),
            "copy {i} keeps the pid"
        );
    }
    for p in &server.restored {
        assert!(!p.exited(), "a copy died");
    }
    assert_eq!(client.eval("x"), "7", "the original answers its client");
}
