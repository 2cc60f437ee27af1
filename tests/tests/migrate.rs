//! `cryo migrate` between two hosts, with a third one for the clients: network namespaces A
//! (the source), B (the destination, `cryo serve` in a PID namespace of its own, so that the
//! frozen originals keep their pids while B restores them) and C (the clients), joined by
//! veths. The service address sits on `lo` of A and B; C routes it to A until the
//! migration's action script, at migrate-restored, flips the route to B.
//!
//! ```text
//!            10.1.1.0/24            10.1.2.0/24
//!   A  ac ---------------- ca  C  cb ---------------- bc  B
//!   lo 10.99.0.1                                          lo 10.99.0.1
//!   ab ------------------------ 10.1.3.0/24 ------------- ba (cryo serve: 10.1.3.2)
//! ```
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`), and `ip` (iproute2).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use cryo_tests::hosts::{Hosts, B_LISTEN, SERVICE};
use cryo_tests::protocol::pattern;
use cryo_tests::{control_dir, cryo_bin, key_file, serve_address, CryoOutput, Pidfd, Workload};

/// How long any one wait of these tests may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Tells apart the output files of one workload's migrations.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// The echo server on A with `n` clients on C, accepted, after one round trip of `len`
/// bytes (round 1) through it.
fn server_with_clients(hosts: &Hosts, n: usize, len: usize) -> (Workload, Vec<TcpStream>) {
    let w = Hosts::spawn(&hosts.a, "tcp", &[&format!("{SERVICE}:0")]);
    let port: u16 = w.cmd("port").parse().unwrap();
    let mut clients = clients(hosts, port, n);
    assert_eq!(w.cmd(&format!("accept-n {n}")), n.to_string());
    echo_round(&w, &mut clients, 1, len);
    (w, clients)
}

/// `n` clients on C connected to the service's `port`.
fn clients(hosts: &Hosts, port: u16, n: usize) -> Vec<TcpStream> {
    Hosts::inside(&hosts.c, move || {
        (0..n)
            .map(|_| {
                let s = TcpStream::connect((SERVICE, port)).expect("connect from C");
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                s.set_write_timeout(Some(TIMEOUT)).unwrap();
                s
            })
            .collect()
    })
}

/// `cryo serve` on B, as PID 1 of a PID namespace of its own (and a mount namespace with
/// its /proc, where `prelude`, a shell command, runs first); killed with everything it
/// restored on drop.
struct Serve {
    child: Option<Child>,
    addr: String,
    lines: Receiver<String>,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Serve {
    fn start(hosts: &Hosts, dir: &Path, prelude: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with(hosts, dir, prelude, env, 20)
    }

    /// As [`Serve::start`], giving up on a silent source after `secs`, with an action script
    /// that logs each stage into `dir`/dest.log.
    fn start_with(
        hosts: &Hosts,
        dir: &Path,
        prelude: &str,
        env: &[(&str, &str)],
        secs: u32,
    ) -> Self {
        let script = dir.join("dest-script");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$CRYO_HOOK_STAGE $CRYO_PIDS\" >> {}\n",
                dir.join("dest.log").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let key = key_file(dir, "key", "a key of the migration tests, long enough");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &hosts.b])
            .args(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"])
            .args(["sh", "-c", &format!("{prelude} exec \"$0\" \"$@\"")])
            .arg(cryo_bin())
            .args(["-v", "serve", "--listen", &format!("{B_LISTEN}:0"), "-D"])
            .arg(dir.join("root"))
            .arg("--psk-file")
            .arg(&key)
            .args(["--stream-timeout", &secs.to_string()])
            .arg("--action-script")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn cryo serve in B");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let keep = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let addr =
            serve_address(&mut child).unwrap_or_else(|e| panic!("{e}: {}", log.lock().unwrap()));
        Self {
            child: Some(child),
            addr,
            lines,
            log,
        }
    }

    /// Waits until serve writes a line containing `needle`.
    #[track_caller]
    fn await_line(&self, needle: &str) {
        let until = Instant::now() + TIMEOUT;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("serve never said {needle:?}:\n{}", self.log());
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Kills B's serve and everything in its PID namespace.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `cryo migrate` run in A, in the background.
struct Migrate {
    child: Child,
    pidfd: Pidfd,
    args: Vec<String>,
    stdout: PathBuf,
    stderr: PathBuf,
    started: Instant,
}

impl Migrate {
    /// [`Migrate::spawn`] with the source's action script ([`source_script`]) and `extra`.
    fn scripted(hosts: &Hosts, w: &Workload, serve: &Serve, extra: &[&str]) -> Self {
        Self::scripted_with_env(hosts, w, serve, extra, &[])
    }

    /// [`Migrate::scripted`] with `env` set for cryo.
    fn scripted_with_env(
        hosts: &Hosts,
        w: &Workload,
        serve: &Serve,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let script = source_script(w, hosts);
        let mut args = vec!["--action-script", script.to_str().unwrap()];
        args.extend(extra);
        Self::spawn_with_env(hosts, w, serve, &args, env)
    }

    fn spawn_with_env(
        hosts: &Hosts,
        w: &Workload,
        serve: &Serve,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut args: Vec<String> = vec![
            "migrate".into(),
            "-t".into(),
            w.pid().to_string(),
            "--to".into(),
            serve.addr.clone(),
            "--psk-file".into(),
            w.path("key").display().to_string(),
        ];
        if !extra.contains(&"--stream-timeout") {
            args.extend(["--stream-timeout".into(), "20".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let stdout = w.path(&format!("migrate-{n}.stdout"));
        let stderr = w.path(&format!("migrate-{n}.stderr"));
        let mut command = Command::new(cryo_bin());
        Hosts::enter(&mut command, &hosts.a);
        let child = command
            .args(&args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn cryo migrate in A");
        let pidfd = Pidfd::open(child.id() as i32).unwrap();
        Self {
            child,
            pidfd,
            args,
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    /// Waits until it says `needle` on its stderr.
    #[track_caller]
    fn await_stderr(&self, needle: &str) {
        let until = Instant::now() + TIMEOUT;
        while !std::fs::read_to_string(&self.stderr)
            .unwrap_or_default()
            .contains(needle)
        {
            assert!(Instant::now() < until, "cryo migrate never said {needle:?}");
            assert!(
                !self.pidfd.wait_exit(Duration::from_millis(5)),
                "cryo migrate ended before saying {needle:?}: {}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
    }

    /// Waits for it to end (killed past the timeout).
    fn wait(mut self) -> (CryoOutput, Duration) {
        let exited = self.pidfd.wait_exit(TIMEOUT);
        if !exited {
            let _ = self.child.kill();
        }
        let status: ExitStatus = self.child.wait().unwrap();
        let took = self.started.elapsed();
        let out = CryoOutput {
            args: self.args.clone(),
            status,
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        };
        assert!(exited, "cryo migrate hung:\n{out}");
        (out, took)
    }
}

/// The source's action script: logs each stage (with whether the original still exists and
/// its state), flips C's route at migrate-restored and back at migrate-rollback; at
/// migrate-restored it also says so on the FIFO `said` and waits for a line on `go`, when
/// they exist, and then fails if the file `fail` exists.
fn source_script(w: &Workload, hosts: &Hosts) -> PathBuf {
    let path = w.path("script");
    let log = w.path("script.log");
    let (said, go) = (w.path("said"), w.path("go"));
    let body = format!(
        r#"#!/bin/sh
pid=$CRYO_PIDS
letter=$(sed -n 's/^State:\t\(.\).*/\1/p' /proc/$pid/status 2>/dev/null)
# A zombie (the test's child, not reaped yet) is gone too.
case "$letter" in ""|Z) state=gone ;; *) state="alive $letter" ;; esac
echo "$CRYO_HOOK_STAGE $state there=$CRYO_MIGRATE_PIDS" >> {log}
case "$CRYO_HOOK_STAGE" in
migrate-restored)
    ip -n {c} route replace {SERVICE} via 10.1.2.2 || exit 1
    if [ -p {said} ]; then echo "$state" > {said}; read line < {go}; fi
    if [ -e {fail} ]; then echo "told to fail"; exit 1; fi ;;
migrate-rollback)
    ip -n {c} route replace {SERVICE} via 10.1.1.2 ;;
esac
"#,
        log = log.display(),
        c = hosts.c,
        said = said.display(),
        go = go.display(),
        fail = w.path("fail").display(),
    );
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// Reads one line from the FIFO `path` (opened without blocking), waiting at most TIMEOUT;
/// fails at once if `writer` exits first.
#[track_caller]
fn read_fifo_line(path: &Path, writer: &Pidfd) -> String {
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap();
    let until = Instant::now() + TIMEOUT;
    let mut got = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "nothing on {} in time", path.display());
        let mut fds = [
            nix::poll::PollFd::new(fifo.as_fd(), nix::poll::PollFlags::POLLIN),
            nix::poll::PollFd::new(writer.as_fd(), nix::poll::PollFlags::POLLIN),
        ];
        let ms = nix::poll::PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap();
        let _ = nix::poll::poll(&mut fds, ms);
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            let mut buf = [0u8; 256];
            if let Ok(n) = fifo.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
                if let Some(nl) = got.iter().position(|&b| b == b'\n') {
                    return String::from_utf8_lossy(&got[..nl]).into_owned();
                }
            }
            continue;
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            panic!(
                "pid {} exited before writing {}",
                writer.pid(),
                path.display()
            );
        }
    }
}

/// Each client `i` sends `n` bytes of pattern(seed(round, i)).
fn send_round(clients: &mut [TcpStream], round: u64, n: usize) {
    send_some(clients, 0..clients.len(), round, n);
}

/// [`send_round`] for the clients in `which` only.
fn send_some(clients: &mut [TcpStream], which: std::ops::Range<usize>, round: u64, n: usize) {
    for i in which {
        clients[i]
            .write_all(&pattern(n, seed(round, i)))
            .unwrap_or_else(|e| panic!("client {i}, round {round}: write: {e}"));
    }
}

/// Each client reads back what it sent in `rounds` (round, length), in order.
fn expect_echo(clients: &mut [TcpStream], rounds: &[(u64, usize)]) {
    for (i, c) in clients.iter_mut().enumerate() {
        for &(round, n) in rounds {
            let mut got = vec![0u8; n];
            c.read_exact(&mut got)
                .unwrap_or_else(|e| panic!("client {i}, round {round}: read: {e}"));
            assert!(
                got == pattern(n, seed(round, i)),
                "client {i}, round {round}: other bytes came back"
            );
        }
    }
}

/// One round trip through the server: every client sends, the server echoes, every client
/// checks.
fn echo_round(w: &Workload, clients: &mut [TcpStream], round: u64, n: usize) {
    send_round(clients, round, n);
    assert_eq!(
        w.cmd(&format!("echo-all {n}")),
        clients.len().to_string(),
        "round {round}"
    );
    expect_echo(clients, &[(round, n)]);
}

/// Runs `meanwhile` on the clients once the script at migrate-restored said the original is
/// frozen (and C's route moved), then lets the script finish and waits for migrate.
fn in_the_window(
    w: &Workload,
    hosts: &Hosts,
    migrate: Migrate,
    meanwhile: impl FnOnce(&mut [TcpStream]),
    clients: &mut [TcpStream],
) -> (CryoOutput, Duration) {
    let state = read_fifo_line(&w.path("said"), &migrate.pidfd);
    assert_eq!(state, "alive t", "the original at migrate-restored");
    assert_eq!(hosts.route(), "B");
    meanwhile(clients);
    // Held open until migrate ends: the line stays in the FIFO until the script reads it.
    let mut go = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(w.path("go"))
        .unwrap();
    go.write_all(b"go\n").unwrap();
    migrate.wait()
}

fn seed(round: u64, client: usize) -> u64 {
    round << 32 | client as u64
}

/// The pid, as this test sees it, of the process whose innermost pid is `inner` (in another
/// PID namespace) and whose command line names `dir`.
fn pid_here(inner: i32, dir: &Path) -> Option<i32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let nspid: Vec<i32> = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))?
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (nspid.len() > 1
            && nspid.last() == Some(&inner)
            && cmdline.windows(needle.len()).any(|w| w == needle))
        .then_some(pid)
    })
}

#[test]
fn a_server_with_100_clients_moves_to_b_and_every_client_goes_on() {
    cryo_bin();
    let hosts = Hosts::new("cryo-mig");
    let (mut w, mut clients) = server_with_clients(&hosts, 100, 1000);
    // Sent before the migration, read by the server only once on B.
    send_round(&mut clients, 2, 3000);
    let serve = Serve::start(&hosts, w.dir(), "", &[]);
    mkfifo(&w.path("said"));
    mkfifo(&w.path("go"));
    let migrate = Migrate::scripted(&hosts, &w, &serve, &["--tcp-established"]);
    // migrate-restored: B holds every process, stopped and locked; the originals are
    // frozen, still there. Half the clients send while A is frozen and B locked, after the
    // address moved: dropped by B's lock, sent again once B runs. The other half stay idle:
    // only B's probes, sent after the move, tell B they live.
    let (out, took) = in_the_window(
        &w,
        &hosts,
        migrate,
        |c| send_some(c, 0..50, 3, 2000),
        &mut clients,
    );
    assert!(out.success(), "{out}\n--- serve on B\n{}", serve.log());
    // The originals are gone once migrate returns (killed only after B ran them).
    assert!(!w.original_alive(), "the original survived the migration");
    let status = w.wait_original();
    assert!(
        std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGKILL),
        "{status}"
    );
    // Nothing but the summary on a file (progress is for terminals).
    assert!(!out.stderr.contains(" sent ("), "{out}");
    let dest = std::fs::read_to_string(w.path("dest.log")).unwrap();
    let pid = w.pid();
    assert_eq!(
        dest.lines().collect::<Vec<_>>(),
        [
            "pre-restore ".to_string(),
            format!("post-restore {pid}"),
            format!("network-unlock {pid}"),
            format!("post-resume {pid}"),
        ],
        "B's stages"
    );
    let stages = std::fs::read_to_string(w.path("script.log")).unwrap();
    let stages: Vec<&str> = stages.lines().collect();
    assert_eq!(stages.len(), 5, "{stages:?}\n{out}");
    assert!(stages[0].starts_with("pre-dump alive"), "{stages:?}");
    assert!(stages[1].starts_with("network-lock alive t"), "{stages:?}");
    assert!(stages[2].starts_with("post-dump alive t"), "{stages:?}");
    assert!(
        stages[3].starts_with("migrate-restored alive t there="),
        "{stages:?}"
    );
    assert!(stages[4].starts_with("migrate-done gone"), "{stages:?}");
    let here = pid_here(w.pid(), w.dir())
        .unwrap_or_else(|| panic!("no restored workload in B's PID namespace\n{}", serve.log()));
    w.adopt_restored_at(here);
    // On B: what was queued before, and what was sent during the migration, in order.
    send_some(&mut clients, 50..100, 3, 2000);
    assert_eq!(w.cmd("echo-all 5000"), "100");
    expect_echo(&mut clients, &[(2, 3000), (3, 2000)]);
    echo_round(&w, &mut clients, 4, 1000);
    for (i, c) in clients.iter().enumerate() {
        assert!(c.take_error().unwrap().is_none(), "client {i}: an error");
    }
    eprintln!(
        "100-client migration: {} ms (test's view); {}",
        took.as_millis(),
        out.stderr
            .lines()
            .find(|l| l.contains("migrated pid"))
            .unwrap_or_default()
    );
}

#[test]
fn a_failure_after_the_address_moved_rolls_back_and_what_b_was_sent_reaches_a() {
    cryo_bin();
    let hosts = Hosts::new("cryo-mig");
    let (w, mut clients) = server_with_clients(&hosts, 10, 500);
    let serve = Serve::start(&hosts, w.dir(), "", &[]);
    mkfifo(&w.path("said"));
    mkfifo(&w.path("go"));
    std::fs::write(w.path("fail"), "").unwrap();
    let migrate = Migrate::scripted(&hosts, &w, &serve, &["--tcp-established"]);
    // Sent to B (the route moved) while it holds the connections locked; then the script
    // fails: B must not have taken these bytes, or A never gets them.
    let (out, _) = in_the_window(&w, &hosts, migrate, |c| send_round(c, 2, 900), &mut clients);
    out.assert_refused()
        .assert_stderr_mentions("step 3b, the action script")
        .assert_stderr_mentions("told to fail")
        .assert_stderr_mentions("rolled back");
    serve.await_line("every process restored here killed");
    w.assert_untouched();
    assert_eq!(hosts.route(), "A");
    let stages = std::fs::read_to_string(w.path("script.log")).unwrap();
    assert!(
        stages
            .lines()
            .last()
            .unwrap()
            .starts_with("migrate-rollback alive"),
        "{stages}"
    );
    // Sent again by the clients' TCP, to A now.
    assert_eq!(w.cmd("echo-all 900"), "10");
    expect_echo(&mut clients, &[(2, 900)]);
    echo_round(&w, &mut clients, 3, 500);
    assert!(
        pid_here(w.pid(), w.dir()).is_none(),
        "B kept what it restored"
    );
}

#[test]
fn a_destination_without_go_kills_what_it_restored_and_keeps_its_lock_until_a_retry() {
    cryo_bin();
    let hosts = Hosts::new("cryo-mig");
    let (mut w, mut clients) = server_with_clients(&hosts, 10, 500);
    // B waits 2 s for the go; the source's script takes longer.
    let serve = Serve::start_with(&hosts, w.dir(), "", &[], 2);
    mkfifo(&w.path("said"));
    mkfifo(&w.path("go"));
    let migrate = Migrate::scripted(&hosts, &w, &serve, &["--tcp-established"]);
    let (out, _) = in_the_window(
        &w,
        &hosts,
        migrate,
        |c| {
            serve.await_line("no go within 2 s");
            serve.await_line("every process restored here killed");
            // The route points at B, which gave up: its lock stays, so these are dropped
            // there (not reset) until the source has rolled back and moved the route back.
            send_round(c, 2, 800);
        },
        &mut clients,
    );
    out.assert_refused()
        .assert_stderr_mentions("step 3c")
        .assert_stderr_mentions("rolled back");
    w.assert_untouched();
    assert_eq!(hosts.route(), "A");
    assert!(
        serve.log().contains("network lock kept here"),
        "{}",
        serve.log()
    );
    let locks = Hosts::inside(&hosts.b, || cryo_netns::installed_locks().unwrap());
    assert_eq!(locks.len(), 1, "B's lock is kept: {locks:?}");
    let dest = std::fs::read_to_string(w.path("dest.log")).unwrap();
    let dest: Vec<&str> = dest.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        dest,
        ["pre-restore", "post-restore", "migrate-rollback"],
        "B's stages"
    );
    assert_eq!(w.cmd("echo-all 800"), "10");
    expect_echo(&mut clients, &[(2, 800)]);
    // A retry to the same receiver: the lock kept goes as it starts, and the clients follow.
    std::fs::remove_file(w.path("said")).unwrap();
    std::fs::remove_file(w.path("go")).unwrap();
    let (out, _) = Migrate::scripted(&hosts, &w, &serve, &["--tcp-established"]).wait();
    assert!(out.success(), "{out}\n--- serve on B\n{}", serve.log());
    assert_eq!(hosts.route(), "B");
    w.wait_original();
    let here = pid_here(w.pid(), w.dir()).expect("restored on B");
    w.adopt_restored_at(here);
    let locks = Hosts::inside(&hosts.b, || cryo_netns::installed_locks().unwrap());
    assert!(locks.is_empty(), "locks left on B: {locks:?}");
    echo_round(&w, &mut clients, 3, 500);
}

#[test]
fn the_destination_killed_mid_transfer_leaves_the_source_serving() {
    cryo_bin();
    let hosts = Hosts::new("cryo-mig");
    let (w, mut clients) = server_with_clients(&hosts, 10, 500);
    send_round(&mut clients, 2, 700);
    // B stops once the whole image is there, before it confirms it.
    let mut serve = Serve::start(
        &hosts,
        w.dir(),
        "",
        &[("CRYO_TEST_PAUSE_AT", "migrate-received")],
    );
    let migrate = Migrate::scripted(&hosts, &w, &serve, &["--tcp-established"]);
    serve.await_line("paused at migrate-received");
    serve.kill();
    let (out, _) = migrate.wait();
    out.assert_refused()
        .assert_stderr_mentions("step 2, the image stream")
        .assert_stderr_mentions("rolled back");
    w.assert_untouched();
    let stages = std::fs::read_to_string(w.path("script.log")).unwrap();
    assert!(
        stages
            .lines()
            .last()
            .unwrap()
            .starts_with("migrate-rollback alive"),
        "{stages}"
    );
    assert_eq!(hosts.route(), "A");
    // The server on A runs on with every client: what was queued, then more.
    assert_eq!(w.cmd("echo-all 700"), "10");
    expect_echo(&mut clients, &[(2, 700)]);
    echo_round(&w, &mut clients, 3, 500);
}

/// The entries of `dir` named like a receiver's scratch directory.
fn scratch_dirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cryo-serve-"))
        .collect()
}

#[test]
fn a_receiver_killed_mid_migration_leaves_no_image_behind_once_one_starts_again() {
    cryo_bin();
    let hosts = Hosts::new("cryo-mig");
    let w = Hosts::spawn(&hosts.a, "writer", &["4", "1", "no-last"]);
    // B's /dev/shm, where a receiver stages what it receives, is this test's own.
    let shm = w.path("shm");
    std::fs::create_dir(&shm).unwrap();
    let prelude = format!("mount --bind {} /dev/shm &&", shm.display());
    let mut serve = Serve::start(
        &hosts,
        w.dir(),
        &prelude,
        &[("CRYO_TEST_PAUSE_AT", "migrate-received")],
    );
    let migrate = Migrate::spawn_with_env(&hosts, &w, &serve, &[], &[]);
    serve.await_line("paused at migrate-received");
    let staged = scratch_dirs(&shm);
    assert_eq!(
        staged.len(),
        1,
        "the image is staged in B's /dev/shm: {staged:?}"
    );
    serve.kill();
    let (out, _) = migrate.wait();
    out.assert_refused().assert_stderr_mentions("rolled back");
    assert!(w.cmd("verify").starts_with("ok "), "the source runs on");
    assert_eq!(scratch_dirs(&shm), staged, "SIGKILL left the image there");
    // The next receiver to start removes it.
    let serve = Serve::start(&hosts, w.dir(), &prelude, &[]);
    assert_eq!(scratch_dirs(&shm), Vec::<String>::new(), "{}", serve.log());
}

#[test]
fn a_file_that_differs_on_the_destination_stops_before_the_freeze() {
    cryo_bin();
    let hosts = Hosts::new("cryo-mig");
    let dir = control_dir();
    let data = dir.path().join("data");
    std::fs::write(&data, pattern(8192, 1)).unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, pattern(8192, 2)).unwrap();
    let w = Hosts::spawn_in(&hosts.a, dir, "file", &[data.to_str().unwrap()]);
    let before = w.cmd("ping");
    // On B the same path holds other bytes (B's serve in a mount namespace of its own).
    let serve = Serve::start(
        &hosts,
        w.dir(),
        &format!("mount --bind {} {} &&", other.display(), data.display()),
        &[],
    );
    let migrate = Migrate::scripted(&hosts, &w, &serve, &[]);
    let (out, _) = migrate.wait();
    assert_eq!(out.status.code(), Some(3), "{out}");
    out.assert_stderr_mentions("permanent file")
        .assert_stderr_mentions(data.to_str().unwrap())
        .assert_stderr_mentions("step 1, the check");
    // Never frozen: no stage of the dump ran, and it runs on as before.
    assert!(!w.path("script.log").exists(), "a stage ran");
    w.assert_untouched();
    assert_eq!(w.cmd("ping"), before);
}

#[test]
fn a_server_moves_with_pre_copy_rounds_and_its_clients_go_on() {
    cryo_bin();
    let hosts = Hosts::new("cryo-mig");
    let (mut w, mut clients) = server_with_clients(&hosts, 10, 1000);
    send_round(&mut clients, 2, 3000);
    let serve = Serve::start(&hosts, w.dir(), "", &[]);
    mkfifo(&w.path("said"));
    mkfifo(&w.path("go"));
    let migrate = Migrate::scripted(&hosts, &w, &serve, &["--tcp-established", "--pre-copy"]);
    let (out, _) = in_the_window(&w, &hosts, migrate, |_| {}, &mut clients);
    assert!(out.success(), "{out}\n--- serve on B\n{}", serve.log());
    assert!(out.stderr.contains("pre-copy round"), "{out}");
    w.wait_original();
    let here = pid_here(w.pid(), w.dir())
        .unwrap_or_else(|| panic!("no restored workload in B's PID namespace\n{}", serve.log()));
    w.adopt_restored_at(here);
    // Its memory (the queued round 2, its state) came through the rounds and the merge.
    assert_eq!(w.cmd("echo-all 3000"), "10");
    expect_echo(&mut clients, &[(2, 3000)]);
    echo_round(&w, &mut clients, 3, 500);
}

/// The VmFlags of the VMA of `pid` starting at `start`.
fn vm_flags_at(pid: i32, start: u64) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let head = format!("{start:x}-");
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
    lines
        .find_map(|l| l.strip_prefix("VmFlags:"))
        .unwrap_or_else(|| panic!("no VMA at {start:#x} in pid {pid}"))
        .trim()
        .to_string()
}

#[test]
fn a_pre_copy_migration_hands_over_the_memory_kept_there_as_last_written() {
    // The destination keeps the rounds' pages in memory and hands them to the restored
    // process (memory/warm.rs): every page must be the last written, pages dropped after
    // the first round zero again, and each VMA mapped as it was (MAP_NORESERVE or not).
    cryo_bin();
    let hosts = Hosts::new("cryo-mig");
    let mut w = Hosts::spawn(&hosts.a, "writer", &["64", "4", "nr", "no-last"]);
    assert!(
        w.cmd("verify").starts_with("ok "),
        "the workload checks itself"
    );
    let areas: Vec<u64> = w
        .cmd("areas")
        .split_whitespace()
        .map(|a| a.parse().unwrap())
        .collect();
    let flags: Vec<String> = areas.iter().map(|&a| vm_flags_at(w.pid(), a)).collect();
    assert!(flags[0].split_whitespace().any(|f| f == "nr"), "{flags:?}");
    assert!(!flags[1].split_whitespace().any(|f| f == "nr"), "{flags:?}");
    let serve = Serve::start(&hosts, w.dir(), "", &[]);
    let resume = w.path("resume");
    let migrate = Migrate::spawn_with_env(
        &hosts,
        &w,
        &serve,
        &["--pre-copy"],
        &[
            ("CRYO_TEST_PAUSE_AT", "pre-copy-round"),
            ("CRYO_TEST_RESUME_FILE", resume.to_str().unwrap()),
        ],
    );
    // Round 0 is on B (absorbed): half the holes go, and later rounds or the final dump
    // must say so.
    migrate.await_stderr("paused at pre-copy-round");
    assert_eq!(w.cmd("zap"), "ok");
    std::fs::write(&resume, "").unwrap();
    let (out, _) = migrate.wait();
    assert!(out.success(), "{out}\n--- serve on B\n{}", serve.log());
    assert!(out.stderr.contains("pre-copy round"), "{out}");
    w.wait_original();
    let here = pid_here(w.pid(), w.dir())
        .unwrap_or_else(|| panic!("no restored workload in B's PID namespace\n{}", serve.log()));
    w.adopt_restored_at(here);
    let reply = w.cmd("verify");
    assert!(
        reply.starts_with("ok "),
        "every page as last written: {reply}"
    );
    let after: Vec<String> = areas.iter().map(|&a| vm_flags_at(here, a)).collect();
    assert_eq!(after, flags, "the VMAs are mapped as they were");
}

/// Pss of `pid` in KiB.
fn pss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_else(|e| panic!("smaps_rollup of {pid}: {e}"))
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no Pss for {pid}"))
}

#[test]
fn a_forked_server_moved_with_pre_copy_keeps_its_copy_on_write_memory_shared() {
    // The root takes its memory from what B kept of the rounds; its workers inherit it from
    // the root as from any parent: one copy for the tree, as before.
    cryo_bin();
    const MIB: u64 = 32;
    let hosts = Hosts::new("cryo-mig");
    let mut w = Hosts::spawn(&hosts.a, "cow-tree", &[&MIB.to_string(), "3"]);
    let kids = w.kids();
    assert_eq!(w.cmd("check"), "ok");
    let before: u64 = std::iter::once(w.pid())
        .chain(kids.iter().copied())
        .map(pss_kib)
        .sum();
    assert!(before < 2 * MIB * 1024, "not shared: Pss {before} KiB");
    let serve = Serve::start(&hosts, w.dir(), "", &[]);
    let migrate = Migrate::spawn_with_env(&hosts, &w, &serve, &["--pre-copy"], &[]);
    let (out, _) = migrate.wait();
    assert!(out.success(), "{out}\n--- serve on B\n{}", serve.log());
    w.wait_original();
    let here = |pid: i32| {
        pid_here(pid, w.dir()).unwrap_or_else(|| panic!("{pid} not restored in B\n{}", serve.log()))
    };
    let (root, kids_here): (i32, Vec<i32>) =
        (here(w.pid()), kids.iter().map(|&k| here(k)).collect());
    w.adopt_restored_at(root);
    assert_eq!(w.cmd("check"), "ok");
    let after: u64 = std::iter::once(root)
        .chain(kids_here.iter().copied())
        .map(pss_kib)
        .sum();
    let margin = (before / 50).max(4 << 10);
    assert!(
        after <= before + margin,
        "memory no longer shared after the move: Pss {before} KiB before, {after} KiB after"
    );
}

#[test]
fn a_source_killed_once_its_go_is_sent_leaves_only_the_destination_running() {
    cryo_bin();
    let hosts = Hosts::new("cryo-mig");
    let (mut w, mut clients) = server_with_clients(&hosts, 10, 500);
    let serve = Serve::start(&hosts, w.dir(), "", &[]);
    let mut migrate = Migrate::scripted_with_env(
        &hosts,
        &w,
        &serve,
        &["--tcp-established"],
        &[("CRYO_TEST_PAUSE_AT", "go-sent")],
    );
    migrate.await_stderr("paused at go-sent");
    // SIGKILL: nothing of cryo's own runs after this (its dump guardian is a process apart).
    migrate.child.kill().unwrap();
    let _ = migrate.child.wait();
    serve.await_line("migrated here: running");
    // The original dies (its dump guardian, armed before the go), not thawed beside B's.
    w.wait_original();
    assert_eq!(hosts.route(), "B");
    let here = pid_here(w.pid(), w.dir()).expect("restored on B");
    w.adopt_restored_at(here);
    echo_round(&w, &mut clients, 2, 500);
}

#[test]
fn a_lost_answer_to_the_go_is_asked_for_again_and_only_the_destination_runs() {
    lose_the_answer_to_the_go(false);
}

#[test]
fn a_once_receiver_stays_to_answer_a_source_that_lost_the_answer_to_its_go() {
    lose_the_answer_to_the_go(true);
}

/// B runs the processes but the connection is lost before the source hears it: the source asks
/// again and commits, the original killed, B's copy serving. With `once`, B's `serve --once`
/// (not its PID namespace's init, so that its exit leaves the processes) stays until the source
/// has its answer, then exits 0.
fn lose_the_answer_to_the_go(once: bool) {
    cryo_bin();
    let hosts = Hosts::new("cryo-mig");
    let (mut w, mut clients) = server_with_clients(&hosts, 10, 500);
    let resume = w.path("resume");
    let prelude = if once {
        r#""$0" "$@" --once; echo "serve exited $?" >&2; exec sleep 600;"#
    } else {
        ""
    };
    // B stops once its processes run, before it says so.
    let serve = Serve::start(
        &hosts,
        w.dir(),
        prelude,
        &[
            ("CRYO_TEST_PAUSE_AT", "migrate-running"),
            ("CRYO_TEST_RESUME_FILE", resume.to_str().unwrap()),
        ],
    );
    let migrate = Migrate::scripted(
        &hosts,
        &w,
        &serve,
        &["--tcp-established", "--stream-timeout", "5"],
    );
    serve.await_line("paused at migrate-running");
    // The connection is lost there: B's end destroyed (SOCK_DESTROY resets the source's).
    let port = serve.addr.rsplit_once(':').unwrap().1.to_string();
    let mut ss = Command::new("ss");
    Hosts::enter(&mut ss, &hosts.b);
    let out = ss
        .args(["-K", "src", B_LISTEN, "sport", "=", &format!(":{port}")])
        .output()
        .expect("run ss");
    assert!(out.status.success(), "ss -K: {out:?}");
    std::fs::write(&resume, "").unwrap();
    let (out, _) = migrate.wait();
    assert!(out.success(), "{out}\n--- serve on B\n{}", serve.log());
    out.assert_stderr_mentions("the answer to the go was lost");
    assert!(
        serve.log().contains("told the source how migration"),
        "{}",
        serve.log()
    );
    if once {
        serve.await_line("serve exited 0");
    }
    // The original is killed, not thawed beside B's copy.
    w.wait_original();
    assert_eq!(hosts.route(), "B");
    let here = pid_here(w.pid(), w.dir()).expect("restored on B");
    w.adopt_restored_at(here);
    echo_round(&w, &mut clients, 2, 500);
}
