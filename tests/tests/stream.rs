//! Images streamed to a receiver with confirmed delivery (`cryo serve`, `cryo dump --to`,
//! `cryo restore --from`): the target dies only once the receiver committed the image, and
//! every way a transfer can fail (receiver killed, a frame corrupted, a wrong key, another
//! protocol version) leaves it running with nothing taken for an image on the receiver.
//!
//! Between sender and receiver, a proxy of this test reads the frames (their headers are in
//! clear: cryo_stream::frame) to hold, corrupt or cut the stream at an exact frame.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

use cryo_stream::frame::{FrameType, HEADER_LEN, TAG_LEN};
use cryo_tests::protocol::{len_and_checksum, pattern};
use cryo_tests::{
    cryo_bin, key_file, pid_exists, serve_address, status_field, CryoOutput, Pidfd, Workload,
};

const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A `cryo serve --once` on an ephemeral port of 127.0.0.1; killed on drop.
struct Serve {
    child: Option<Child>,
    pidfd: Pidfd,
    addr: SocketAddr,
    root: PathBuf,
    stderr: PathBuf,
}

impl Serve {
    fn start(dir: &Path, key: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(dir, key, env, &["--once"])
    }

    /// As [`Serve::start`], with `flags` instead of `--once`.
    fn start_with(dir: &Path, key: &Path, env: &[(&str, &str)], flags: &[&str]) -> Self {
        let root = dir.join("root");
        let stderr = dir.join(format!(
            "serve-{}.stderr",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut cmd = Command::new(cryo_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(flags)
            .arg("-D")
            .arg(&root)
            .arg("--psk-file")
            .arg(key)
            .args(["--stream-timeout", "20"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn cryo serve");
        let pidfd = Pidfd::open(child.id() as i32).unwrap();
        let addr = serve_address(&mut child)
            .unwrap_or_else(|e| {
                panic!(
                    "{e}: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                )
            })
            .parse()
            .unwrap();
        Self {
            child: Some(child),
            pidfd,
            addr,
            root,
            stderr,
        }
    }

    fn pid(&self) -> i32 {
        self.pidfd.pid()
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Waits for the receiver to exit; returns its status and stderr.
    fn wait(&mut self) -> (ExitStatus, String) {
        assert!(
            self.pidfd.wait_exit(IO_TIMEOUT),
            "cryo serve did not exit: {}",
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        );
        let status = self.child.take().unwrap().wait().unwrap();
        (
            status,
            std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }

    /// Every entry of the root (partial directories included).
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.root)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `cryo dump -t PID --to ADDR --name NAME --psk-file KEY EXTRA...`.
fn dump_to(w: &Workload, addr: &str, name: &str, key: &Path, extra: &[&str]) -> CryoOutput {
    let mut args: Vec<String> = vec![
        "dump".into(),
        "-t".into(),
        w.pid().to_string(),
        "--to".into(),
        addr.into(),
        "--name".into(),
        name.into(),
        "--psk-file".into(),
        key.display().to_string(),
    ];
    if !extra.contains(&"--stream-timeout") {
        args.extend(["--stream-timeout".into(), "20".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    w.cryo(&args)
}

/// What the proxy does to the stream.
#[derive(Clone, Copy)]
enum Plan {
    /// Holds the receiver's Committed frame until told to let it go.
    HoldCommitted,
    /// Flips one byte in the payload of the sender's first Data frame.
    CorruptFirstData,
    /// Once the sender's first FileClose reached the receiver, SIGKILLs the receiver and
    /// drops both connections.
    KillReceiverAfterFirstFile(i32),
}

/// A proxy between one sender and the receiver at `upstream`, doing `plan`; it reports on
/// `events` ("holding", "corrupted", "killed") and waits on `release` where it holds.
struct Proxy {
    addr: SocketAddr,
    events: Receiver<&'static str>,
    release: Sender<()>,
}

/// Reads one whole frame; `keyed`: a tag follows it. None at the end of the stream.
fn read_frame(from: &mut TcpStream, keyed: bool) -> Option<(FrameType, Vec<u8>)> {
    let mut h = [0u8; HEADER_LEN];
    from.read_exact(&mut h).ok()?;
    let kind = FrameType::from_u16(u16::from_be_bytes([h[4], h[5]]))?;
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
    let mut frame = h.to_vec();
    frame.resize(HEADER_LEN + len + if keyed { TAG_LEN } else { 0 }, 0);
    from.read_exact(&mut frame[HEADER_LEN..]).ok()?;
    Some((kind, frame))
}

impl Proxy {
    fn start(upstream: SocketAddr, plan: Plan) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (ev_tx, events) = channel();
        let (release, rel_rx) = channel::<()>();
        std::thread::spawn(move || {
            let Ok((mut client, _)) = listener.accept() else {
                return;
            };
            let mut server = TcpStream::connect(upstream).unwrap();
            // Receiver to sender: its first frame (ServerHello) is not tagged.
            let (mut s_rd, mut c_wr) = (server.try_clone().unwrap(), client.try_clone().unwrap());
            let ev = ev_tx.clone();
            let back = std::thread::spawn(move || {
                let mut n = 0;
                while let Some((kind, frame)) = read_frame(&mut s_rd, n >= 1) {
                    n += 1;
                    if kind == FrameType::Committed && matches!(plan, Plan::HoldCommitted) {
                        let _ = ev.send("holding");
                        let _ = rel_rx.recv_timeout(IO_TIMEOUT);
                    }
                    if c_wr.write_all(&frame).is_err() {
                        break;
                    }
                }
                let _ = c_wr.shutdown(Shutdown::Both);
            });
            // Sender to receiver: Hello and ClientProof are not tagged.
            let mut n = 0;
            let mut corrupted = false;
            while let Some((kind, mut frame)) = read_frame(&mut client, n >= 2) {
                n += 1;
                if kind == FrameType::Data
                    && !corrupted
                    && matches!(plan, Plan::CorruptFirstData)
                    && frame.len() > HEADER_LEN + TAG_LEN
                {
                    let mid = HEADER_LEN + (frame.len() - HEADER_LEN - TAG_LEN) / 2;
                    frame[mid] ^= 0x40;
                    corrupted = true;
                    let _ = ev_tx.send("corrupted");
                }
                if server.write_all(&frame).is_err() {
                    break;
                }
                if let (FrameType::FileClose, Plan::KillReceiverAfterFirstFile(pid)) = (kind, plan)
                {
                    if let Ok(receiver) = Pidfd::open(pid) {
                        let _ = receiver.signal(libc::SIGKILL);
                    }
                    let _ = ev_tx.send("killed");
                    break;
                }
            }
            let _ = server.shutdown(Shutdown::Both);
            let _ = client.shutdown(Shutdown::Both);
            let _ = back.join();
        });
        Self {
            addr,
            events,
            release,
        }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    #[track_caller]
    fn expect(&self, event: &str) {
        assert_eq!(self.events.recv_timeout(IO_TIMEOUT).ok(), Some(event));
    }
}

/// The workload's process state letter.
fn state(pid: i32) -> String {
    status_field(pid, "State").unwrap_or_default()
}

fn verified(w: &Workload) -> String {
    let reply = w.cmd("verify");
    assert!(reply.starts_with("ok "), "memory check failed: {reply}");
    reply
}

#[test]
fn dump_to_a_receiver_kills_only_after_commit_and_restore_from_brings_it_back() {
    cryo_bin();
    let mut w = Workload::spawn("memory", &["64", "0x5eed"]);
    let before = verified(&w);
    let key = key_file(w.dir(), "key", "stream-test-key-0123456789");
    let mut serve = Serve::start(w.dir(), &key, &[]);
    // The receiver's confirmation is held on its way back: the image is committed on the
    // receiver, and the target must still exist (frozen), not killed.
    let proxy = Proxy::start(serve.addr, Plan::HoldCommitted);
    let dumping = {
        let (w_pid, dir, addr, key) = (w.pid(), w.dir().to_path_buf(), proxy.addr(), key.clone());
        std::thread::spawn(move || {
            cryo_tests::run_cryo(
                &dir,
                "dump-to",
                [
                    "dump".to_string(),
                    "-t".into(),
                    w_pid.to_string(),
                    "--to".into(),
                    addr,
                    "--name".into(),
                    "mem".into(),
                    "--psk-file".into(),
                    key.display().to_string(),
                ],
            )
        })
    };
    proxy.expect("holding");
    let (status, log) = serve.wait();
    assert!(status.success(), "serve: {status}\n{log}");
    assert!(log.contains("committed image mem"), "{log}");
    assert_eq!(serve.entries(), ["mem"], "only the committed image");
    assert!(
        pid_exists(w.pid()) && !state(w.pid()).starts_with('Z'),
        "the target died before the sender had the confirmation: {}",
        state(w.pid())
    );
    proxy.release.send(()).unwrap();
    let out = dumping.join().unwrap();
    out.assert_success();
    assert!(w.wait_original().signal_killed(), "killed once confirmed");
    // Fetched back from a second receiver on the same root, restored here.
    let mut serve = Serve::start(w.dir(), &key, &[]);
    let restore = w.cryo(&[
        "restore",
        "--from",
        &serve.addr(),
        "--name",
        "mem",
        "--psk-file",
        key.to_str().unwrap(),
        "--detach",
    ]);
    restore.assert_success();
    let (status, log) = serve.wait();
    assert!(status.success(), "serve: {status}\n{log}");
    assert!(log.contains("served image mem"), "{log}");
    assert_eq!(restore.stdout.trim(), w.pid().to_string());
    w.adopt_restored();
    assert_eq!(
        verified(&w),
        before,
        "every word of memory, from the restored process"
    );
    // The fetched copy is gone from /dev/shm.
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("cryo-restore-"))
        .filter(|e| {
            // Only ours: a copy of our image holds pages of our pid.
            e.path().join(format!("pages-{}.img", w.pid())).exists()
        })
        .collect();
    assert!(left.is_empty(), "scratch copies left: {left:?}");
    w.kill_restored();
}

trait Killed {
    fn signal_killed(&self) -> bool;
}

impl Killed for ExitStatus {
    fn signal_killed(&self) -> bool {
        std::os::unix::process::ExitStatusExt::signal(self).is_some()
    }
}

#[test]
fn a_unix_pair_with_data_in_flight_comes_back_through_the_receiver() {
    cryo_bin();
    let mut w = Workload::spawn("unix-pair", &["stream"]);
    assert_eq!(w.cmd("send 0 across-the-wire"), "ok");
    let key = key_file(w.dir(), "key", "stream-test-key-0123456789");
    let mut serve = Serve::start(w.dir(), &key, &[]);
    dump_to(&w, &serve.addr(), "pair", &key, &[]).assert_success();
    assert!(serve.wait().0.success());
    w.wait_original();
    let mut serve = Serve::start(w.dir(), &key, &[]);
    w.cryo(&[
        "restore",
        "--from",
        &serve.addr(),
        "--name",
        "pair",
        "--psk-file",
        key.to_str().unwrap(),
        "--detach",
    ])
    .assert_success();
    assert!(serve.wait().0.success());
    w.adopt_restored();
    assert_eq!(w.cmd("recv 1"), "across-the-wire");
    w.kill_restored();
}

/// A TCP server workload with one live client connection (the test), echoing.
fn served() -> (Workload, TcpStream) {
    let w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    let port: u16 = w.cmd("port").parse().expect("port");
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(w.cmd("accept"), "0");
    let mut pair = (w, client);
    assert_echoes(&mut pair, 1);
    pair
}

#[track_caller]
fn assert_echoes((w, client): &mut (Workload, TcpStream), seed: u64) {
    let data = pattern(20_000, seed);
    client.write_all(&data).expect("client write");
    assert_eq!(w.cmd("echo 0 20000"), len_and_checksum(&data));
    let mut back = vec![0u8; data.len()];
    let mut got = 0;
    while got < back.len() {
        match client.read(&mut back[got..]) {
            Ok(0) => panic!("eof after {got} bytes of the echo"),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("client read after {got} bytes: {e}"),
        }
    }
    assert!(back == data, "echo damaged");
}

fn locks() -> Vec<String> {
    cryo_netns::installed_locks().expect("list locks")
}

#[test]
fn receiver_killed_mid_transfer_rolls_the_dump_back() {
    cryo_bin();
    let mut pair = served();
    let locks_before = locks();
    let key = key_file(pair.0.dir(), "key", "stream-test-key-0123456789");
    let mut serve = Serve::start(pair.0.dir(), &key, &[]);
    let proxy = Proxy::start(serve.addr, Plan::KillReceiverAfterFirstFile(serve.pid()));
    let out = dump_to(&pair.0, &proxy.addr(), "tcp", &key, &["--tcp-established"]);
    proxy.expect("killed");
    out.assert_refused()
        .assert_stderr_mentions("stream to")
        .assert_stderr_mentions("rolled back, the processes run as before");
    assert!(
        out.stderr.contains("send ") || out.stderr.contains("commit"),
        "the step is named: {out}"
    );
    let (status, _) = serve.wait();
    assert!(!status.success(), "the receiver was killed");
    assert!(
        !serve.entries().iter().any(|e| e == "tcp"),
        "no image under its name: {:?}",
        serve.entries()
    );
    // No lock of this dump left, the target untouched, its client connection alive.
    let after = locks();
    assert!(
        after.iter().all(|l| locks_before.contains(l)),
        "a lock was left: {after:?}"
    );
    pair.0.assert_untouched();
    assert_echoes(&mut pair, 2);
    // A receiver started again clears the partial directory the killed one left.
    let serve = Serve::start(pair.0.dir(), &key, &[]);
    assert!(
        serve.entries().is_empty(),
        "partial left: {:?}",
        serve.entries()
    );
}

#[test]
fn a_corrupted_frame_is_discarded_by_the_receiver_and_the_dump_rolled_back() {
    cryo_bin();
    let w = Workload::spawn("memory", &["8"]);
    let before = verified(&w);
    let key = key_file(w.dir(), "key", "stream-test-key-0123456789");
    let mut serve = Serve::start(w.dir(), &key, &[]);
    let proxy = Proxy::start(serve.addr, Plan::CorruptFirstData);
    let out = dump_to(&w, &proxy.addr(), "bad", &key, &[]);
    proxy.expect("corrupted");
    out.assert_refused()
        // A keyed session: the frame's tag is what a corrupted byte fails.
        .assert_stderr_mentions("fails authentication (corrupted in transit")
        .assert_stderr_mentions("the image was discarded")
        .assert_stderr_mentions("rolled back");
    let (status, log) = serve.wait();
    assert!(!status.success(), "serve: {log}");
    assert!(log.contains("fails authentication"), "{log}");
    assert!(log.contains("incomplete image discarded"), "{log}");
    assert!(serve.entries().is_empty(), "{:?}", serve.entries());
    w.assert_untouched();
    assert_eq!(verified(&w), before);
}

#[test]
fn a_wrong_key_is_refused_before_any_image_byte() {
    cryo_bin();
    let w = Workload::spawn("memory", &["8"]);
    let key = key_file(w.dir(), "key", "stream-test-key-0123456789");
    let other = key_file(w.dir(), "other", "another-key-abcdefghijklmn");
    let mut serve = Serve::start(w.dir(), &key, &[]);
    let out = dump_to(&w, &serve.addr(), "nope", &other, &[]);
    out.assert_refused()
        .assert_stderr_mentions("authentication failed")
        .assert_stderr_mentions("rolled back");
    let (status, log) = serve.wait();
    assert!(!status.success());
    assert!(log.contains("authentication failed"), "{log}");
    assert!(serve.entries().is_empty(), "{:?}", serve.entries());
    w.assert_untouched();
    // A key file others can read is refused, naming it, before anything is frozen.
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = dump_to(&w, "127.0.0.1:9", "nope", &other, &[]);
    out.assert_refused()
        .assert_stderr_mentions(&other.display().to_string())
        .assert_stderr_mentions("0600");
    w.assert_untouched();
}

#[test]
fn a_receiver_of_another_protocol_version_is_named_with_its_versions() {
    cryo_bin();
    let w = Workload::spawn("memory", &["8"]);
    let key = key_file(w.dir(), "key", "stream-test-key-0123456789");
    // A receiver of the version before the keyed-BLAKE3 tags (1), as an older cryo is.
    let mut serve = Serve::start(w.dir(), &key, &[("CRYO_TEST_STREAM_VERSIONS", "1")]);
    let out = dump_to(&w, &serve.addr(), "v", &key, &[]);
    out.assert_refused()
        .assert_stderr_mentions("speaks protocol versions [1], this cryo speaks [2]");
    assert!(!serve.wait().0.success());
    assert!(serve.entries().is_empty());
    w.assert_untouched();
    // No receiver at all: refused at the connection, the target untouched.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = dump_to(&w, &closed.to_string(), "v", &key, &[]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("connect to {closed}"))
        .assert_stderr_mentions("rolled back");
    w.assert_untouched();
}

#[test]
fn the_receiver_restores_an_image_itself_when_asked() {
    cryo_bin();
    let mut w = Workload::spawn("memory", &["8", "3"]);
    let before = verified(&w);
    let key = key_file(w.dir(), "key", "stream-test-key-0123456789");
    let mut serve = Serve::start(w.dir(), &key, &[]);
    dump_to(&w, &serve.addr(), "here", &key, &[]).assert_success();
    assert!(serve.wait().0.success());
    w.wait_original();
    let mut serve = Serve::start(w.dir(), &key, &[]);
    let out = w.cryo(&[
        "restore",
        "--from",
        &serve.addr(),
        "--name",
        "here",
        "--psk-file",
        key.to_str().unwrap(),
        "--on-receiver",
    ]);
    out.assert_success();
    assert_eq!(out.stdout.trim(), w.pid().to_string());
    let (status, log) = serve.wait();
    assert!(status.success(), "{log}");
    w.adopt_restored();
    assert_eq!(verified(&w), before);
    w.kill_restored();
}

#[test]
fn one_receiver_keeps_several_images_and_refuses_a_name_taken() {
    cryo_bin();
    let w = Workload::spawn("memory", &["8", "5"]);
    let before = verified(&w);
    let key = key_file(w.dir(), "key", "stream-test-key-0123456789");
    // A receiver without --once: it serves connection after connection.
    let serve = Serve::start_with(w.dir(), &key, &[], &[]);
    dump_to(&w, &serve.addr(), "first", &key, &["--leave-running"]).assert_success();
    dump_to(&w, &serve.addr(), "second", &key, &["--leave-running"]).assert_success();
    assert_eq!(serve.entries(), ["first", "second"]);
    w.assert_untouched();
    // A killing dump to a name the receiver holds already is refused by it: rolled back.
    let out = dump_to(&w, &serve.addr(), "first", &key, &[]);
    out.assert_refused()
        .assert_stderr_mentions("an image named \"first\" exists on the receiver already")
        .assert_stderr_mentions("rolled back");
    w.assert_untouched();
    assert_eq!(verified(&w), before);
    assert_eq!(serve.entries(), ["first", "second"]);
}

#[test]
fn a_confirmation_that_never_comes_times_out_and_rolls_back() {
    cryo_bin();
    let w = Workload::spawn("memory", &["8", "9"]);
    let before = verified(&w);
    let key = key_file(w.dir(), "key", "stream-test-key-0123456789");
    let mut serve = Serve::start(w.dir(), &key, &[]);
    // The receiver commits, but its answer is held past the sender's timeout.
    let proxy = Proxy::start(serve.addr, Plan::HoldCommitted);
    let out = dump_to(&w, &proxy.addr(), "late", &key, &["--stream-timeout", "1"]);
    proxy.expect("holding");
    out.assert_refused()
        .assert_stderr_mentions("to commit image \"late\": receive from")
        .assert_stderr_mentions("no answer within 1 s")
        .assert_stderr_mentions("rolled back");
    w.assert_untouched();
    assert_eq!(verified(&w), before);
    // Delivery is confirmed one way only: the receiver keeps what it committed.
    assert!(serve.wait().0.success());
    assert_eq!(serve.entries(), ["late"]);
    drop(proxy.release);
}

#[test]
fn an_image_file_others_could_write_is_not_served_back() {
    cryo_bin();
    let mut w = Workload::spawn("memory", &["8", "11"]);
    let key = key_file(w.dir(), "key", "stream-test-key-0123456789");
    let mut serve = Serve::start(w.dir(), &key, &[]);
    dump_to(&w, &serve.addr(), "kept", &key, &[]).assert_success();
    assert!(serve.wait().0.success());
    w.wait_original();
    // Someone opened a file of the kept image to others: the image rules refuse it.
    let pages = serve
        .root
        .join("kept")
        .join(format!("pages-{}.img", w.pid()));
    std::fs::set_permissions(&pages, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut serve = Serve::start(w.dir(), &key, &[]);
    let out = w.cryo(&[
        "restore",
        "--from",
        &serve.addr(),
        "--name",
        "kept",
        "--psk-file",
        key.to_str().unwrap(),
        "--detach",
    ]);
    out.assert_refused()
        .assert_stderr_mentions(&pages.display().to_string())
        .assert_stderr_mentions("writable by");
    assert!(!serve.wait().0.success());
    assert!(!pid_exists(w.pid()), "nothing restored");
}

#[test]
fn a_check_image_goes_to_a_receiver_and_is_judged_from_it() {
    cryo_bin();
    let mut w = Workload::spawn("memory", &["8", "9"]);
    let before = verified(&w);
    let key = key_file(w.dir(), "key", "stream-test-key-0123456789");
    let serve = Serve::start_with(w.dir(), &key, &[], &[]);
    dump_to(&w, &serve.addr(), "chk", &key, &["--check-only"]).assert_success();
    w.assert_untouched();
    assert_eq!(verified(&w), before);
    let kept = serve.root.join("chk");
    assert!(kept.join("check.img").exists(), "{:?}", serve.entries());
    assert!(
        !std::fs::read_dir(&kept)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("pages-")),
        "a check image holds no pages: {:?}",
        std::fs::read_dir(&kept)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );
    let judge = |w: &Workload| {
        w.cryo(&[
            "restore",
            "--check-only",
            "--from",
            &serve.addr(),
            "--name",
            "chk",
            "--psk-file",
            &key.display().to_string(),
        ])
    };
    // Its pid is still taken by the original: temporary.
    let out = judge(&w);
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(
        out.stdout.contains(&format!("temporary pid {}", w.pid())),
        "{out}"
    );
    w.kill_original();
    let out = judge(&w);
    assert_eq!(out.status.code(), Some(0), "{out}");
}
