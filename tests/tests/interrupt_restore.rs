//! A restore of a server with 64 live TCP clients that fails (a port held, an action script
//! failing) or is interrupted by SIGINT, SIGTERM or SIGKILL at several instants (reached
//! through cryo's `CRYO_TEST_PAUSE_AT` hook, not by timing): the network lock stays, no client
//! is reset, nothing of the attempt is left (no process, no socket closing on the server's
//! port), and a retry restores every connection (each client sends and gets its echo), after
//! which no lock is left. Once the lock is released (the point of no return) the restore goes
//! forward instead, whatever the signal: what the clients sent meanwhile, which the restored
//! sockets acknowledged, is echoed by the server.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cryo_tests::tcp_peer::EchoClients;
use cryo_tests::{children_of, cryo_bin, Pidfd, Workload, CMD_TIMEOUT};

const CLIENTS: usize = 64;

struct Server {
    w: Workload,
    port: u16,
    clients: EchoClients,
    dumps: u32,
}

impl Server {
    fn start() -> Self {
        cryo_bin();
        let w = Workload::spawn("tcp", &["127.0.0.1:0"]);
        let port: u16 = w.cmd("port").parse().expect("port");
        let clients = EchoClients::connect(&w, CLIENTS, Duration::from_secs(15));
        let mut server = Self {
            w,
            port,
            clients,
            dumps: 0,
        };
        server.send("before the dump");
        server.echo("before the dump");
        server
    }

    /// Dumps the server (killing it) with its connections into a new image directory, and
    /// checks the dump left its network lock.
    fn dump(&mut self) -> PathBuf {
        self.dumps += 1;
        let img = self.w.path(&format!("img{}", self.dumps));
        self.w.dump(&img, &["--tcp-established"]).assert_success();
        if self.dumps == 1 {
            self.w.wait_original();
        } else {
            // A restored server: its cryo restore exits once the dump killed it (or, restored
            // detached by a restore that went forward, the server itself is gone).
            self.w.wait_restored_gone();
        }
        assert!(
            cryo_core::network_lock_installed(&img).is_some(),
            "the dump left no network lock"
        );
        img
    }

    /// Every client sends 8 bytes (the server may be down: they wait in its send queue).
    #[track_caller]
    fn send(&mut self, when: &str) {
        self.clients.send(when);
    }

    /// The server echoes every client's last 8 bytes; every client reads them back.
    #[track_caller]
    fn echo(&mut self, when: &str) {
        self.clients.echo(&self.w, Duration::from_secs(30), when);
    }

    /// What a failed or killed attempt must leave: the lock, no process of it, no socket of
    /// the server's port closing (an orphan in FIN-WAIT would make the retry fail).
    #[track_caller]
    fn assert_attempt_gone(&self, img: &Path, trial: &str) {
        assert!(
            cryo_core::network_lock_installed(img).is_some(),
            "{trial}: the network lock is gone: the clients would be reset"
        );
        let deadline = Instant::now() + CMD_TIMEOUT;
        loop {
            let left = processes_naming(self.w.dir());
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{trial}: processes of the attempt left: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let closing = closing_sockets(self.port);
        assert!(
            closing.is_empty(),
            "{trial}: sockets of port {} left closing (state, remote port): {closing:?}",
            self.port
        );
    }

    /// A retry that succeeds: every connection echoes, and no lock is left.
    #[track_caller]
    fn retry(&mut self, img: &Path, trial: &str) {
        self.w.restore_background(img);
        self.send(&format!("after {trial}"));
        self.echo(&format!("after {trial}"));
        assert!(
            cryo_core::network_lock_installed(img).is_none(),
            "{trial}: network lock left after a restore that succeeded"
        );
    }
}

/// Live (not zombie) processes whose command line names `dir`: cryo, or a process it forked.
fn processes_naming(dir: &Path) -> Vec<(i32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            out.push((pid, cmdline));
        }
    }
    out
}

/// Sockets of local port `port` in a closing state (FIN_WAIT1/2, CLOSING, LAST_ACK,
/// CLOSE_WAIT), from /proc/net/tcp: (state, remote port).
fn closing_sockets(port: u16) -> Vec<(String, u16)> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(state)) = (f.get(1), f.get(2), f.get(3)) else {
            continue;
        };
        let port_of = |a: &str| {
            a.rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
        };
        let closing = matches!(*state, "04" | "05" | "0B" | "09" | "08");
        if port_of(local) == Some(port) && closing {
            out.push((state.to_string(), port_of(remote).unwrap_or(0)));
        }
    }
    out
}

#[test]
fn a_restore_failing_on_a_held_port_keeps_every_client_for_a_retry() {
    let mut server = Server::start();
    let img = server.dump();
    // Sent while the server is down: the lock drops it, the clients send it again.
    server.send("while the server is down");
    let squatter = TcpListener::bind(("127.0.0.1", server.port)).expect("hold the port");
    let out = server.w.cryo(&[
        "restore".as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
        "--detach".as_ref(),
    ]);
    assert!(!out.success(), "restore succeeded on a held port\n{out}");
    out.assert_stderr_mentions(&format!("cryo unlock -D {}", img.display()));
    server.assert_attempt_gone(&img, "a restore on a held port");
    drop(squatter);
    server.w.restore_background(&img);
    server.echo("after the retry");
    assert!(cryo_core::network_lock_installed(&img).is_none());
    server.send("after the retry");
    server.echo("after the retry");
}

#[test]
fn a_restore_failing_after_its_connections_are_live_keeps_every_client() {
    let mut server = Server::start();
    let flag = server.w.path("fail-now");
    let script = server.w.path("hook.sh");
    for stage in ["post-restore", "network-unlock"] {
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" = {stage} ] && [ -e {} ] && exit 3\nexit 0\n",
                flag.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(&flag, b"").unwrap();
        let img = server.dump();
        let out = server.w.cryo(&[
            "restore".as_ref(),
            "-D".as_ref(),
            img.as_os_str(),
            "--detach".as_ref(),
            "--action-script".as_ref(),
            script.as_os_str(),
        ]);
        assert!(
            !out.success(),
            "{stage}: the script did not fail the restore\n{out}"
        );
        let trial = format!("a restore failing at {stage}");
        server.assert_attempt_gone(&img, &trial);
        std::fs::remove_file(&flag).unwrap();
        server.retry(&img, &trial);
    }
}

/// Instants of a restore, in order: a process of the tree with every fd open (its sockets
/// out of repair mode) before it stops, every process created, a remote call of the
/// reshaping about to run and one stopped at its exit, every process whole, past the point of
/// no return with the lock still there, the lock released and the probes sent.
const POINTS: [&str; 7] = [
    "child-fds",
    "spawned",
    "call:3",
    "exit:12",
    "reshaped",
    "committed",
    "unlocked",
];

/// One trial: the server dumped, its restore paused at `point` and sent `signal` there, then
/// everything checked and a retry made.
fn interrupt_at(server: &mut Server, point: &str, signal: i32) {
    interrupt_at_with(server, point, signal, &[]);
}

/// [`interrupt_at`] with `env` set for cryo too (test hooks).
fn interrupt_at_with(server: &mut Server, point: &str, signal: i32, env: &[(&str, &str)]) {
    let img = server.dump();
    let trial = format!("restore interrupted at {point} by signal {signal} ({env:?})");
    let err_path = server.w.path(&format!("restore-{}.stderr", server.dumps));
    let mut cryo = Command::new(cryo_bin())
        .args(["restore", "-D"])
        .arg(&img)
        .arg("--detach")
        .env("CRYO_TEST_PAUSE_AT", point)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .process_group(0)
        .spawn()
        .expect("spawn cryo");
    // cryo says where it paused on its stderr; a process of the tree (`child-fds`) on its
    // own, which is the workload's log by then.
    let paused = format!("paused at {point}");
    let log = server.w.path(cryo_tests::protocol::LOG_FILE);
    let deadline = Instant::now() + CMD_TIMEOUT;
    loop {
        let said = |p: &Path| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains(&paused)
        };
        if said(&err_path) || said(&log) {
            break;
        }
        if let Some(status) = cryo.try_wait().expect("wait for cryo") {
            panic!(
                "{trial}: cryo ended ({status}) before pausing at {point}:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{trial}: never paused");
        std::thread::sleep(Duration::from_millis(2));
    }
    // cryo's helpers (the guardian) must be done before anything is checked.
    let helpers: Vec<Pidfd> = children_of(cryo.id())
        .into_iter()
        .filter(|&p| p != server.w.pid())
        .filter_map(|p| Pidfd::open(p).ok())
        .collect();
    let forward = matches!(point, "committed" | "unlocked");
    if forward {
        // The server still stopped: its sockets acknowledge these bytes once the lock is gone
        // (at `committed` the lock drops them, and the clients send them again after).
        server.send(&format!("{trial}, in the window"));
    }
    // As a Ctrl-C would: cryo's group, and a process of the tree still in its cryo phase.
    // SAFETY: kill takes plain values.
    unsafe { libc::kill(-(cryo.id() as i32), signal) };
    if point == "child-fds" && signal != libc::SIGKILL {
        // SAFETY: as above.
        unsafe { libc::kill(server.w.pid(), signal) };
    }
    let status = cryo.wait().expect("wait for cryo");
    let seen = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(!seen.contains("no restore guardian"), "{trial}: {seen}");
    if forward {
        if signal != libc::SIGKILL {
            assert!(status.success(), "{trial}: {status}\n{seen}");
        }
        for h in &helpers {
            assert!(
                h.wait_exit(CMD_TIMEOUT),
                "{trial}: a helper of cryo never ended"
            );
        }
        assert!(
            cryo_core::network_lock_installed(&img).is_none(),
            "{trial}: network lock left"
        );
        // Nothing acknowledged in the window is lost: the server (run on, not undone) echoes it.
        server.w.adopt_restored();
        server.echo(&format!("{trial}, in the window"));
        server.send(&format!("after {trial}"));
        server.echo(&format!("after {trial}"));
        return;
    }
    if signal == libc::SIGKILL {
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{trial}: {seen}");
    } else {
        assert!(!status.success(), "{trial}: cryo exited 0\n{seen}");
        assert!(seen.contains("interrupted"), "{trial}: {seen}");
        assert!(seen.contains("cryo unlock -D"), "{trial}: {seen}");
    }
    for h in &helpers {
        assert!(
            h.wait_exit(CMD_TIMEOUT),
            "{trial}: a helper of cryo never ended"
        );
    }
    server.assert_attempt_gone(&img, &format!("{trial}\n{seen}"));
    server.retry(&img, &trial);
}

/// Every point of [`POINTS`], or those of `$INTERRUPT_RESTORE_POINTS` (comma-separated: to
/// run against an engine that has only some).
fn every_point(signal: i32) {
    let mut server = Server::start();
    let chosen = std::env::var("INTERRUPT_RESTORE_POINTS").ok();
    let points: Vec<&str> = match &chosen {
        Some(list) => list.split(',').collect(),
        None => POINTS.to_vec(),
    };
    for point in points {
        interrupt_at(&mut server, point, signal);
    }
}

#[test]
fn sigkill_of_a_restore_leaves_every_client_for_a_retry() {
    every_point(libc::SIGKILL);
}

/// The same with the restore guardian slow to start (as on a loaded machine: it may not have
/// run at all when the tree is killed): it is out of cryo's process group from its fork, so
/// a SIGKILL of the group never takes it with the connections it holds.
#[test]
fn sigkill_of_a_restore_whose_guardian_starts_late_leaves_every_client() {
    let mut server = Server::start();
    let late = [("CRYO_TEST_GUARDIAN_LATE_MS", "300")];
    interrupt_at_with(&mut server, "child-fds", libc::SIGKILL, &late);
}

#[test]
fn sigint_of_a_restore_rolls_back_and_keeps_every_client() {
    every_point(libc::SIGINT);
}

#[test]
fn sigterm_of_a_restore_rolls_back_and_keeps_every_client() {
    every_point(libc::SIGTERM);
}
