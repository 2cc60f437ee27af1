//! A dump of a server with 120 live TCP clients, interrupted by SIGINT, SIGTERM or SIGKILL at
//! several instants (reached through cryo's `CRYO_TEST_PAUSE_AT` hook, not by timing), in
//! killing and `--leave-running` mode: the server runs on as if nothing happened, every
//! client still echoes, no network lock is left, and no image of a live process remains.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use cryo_tests::tcp_peer::EchoClients;
use cryo_tests::{children_of, cryo_bin, Pidfd, Workload, CMD_TIMEOUT};

const CLIENTS: usize = 120;

/// Instants of a dump, in order: all frozen, lock installed and connections captured,
/// the first remote call about to run (the scratch mmap), a later one stopped at its exit,
/// a call in the middle of the collection, the task collected, the images written.
const POINTS: [&str; 7] = [
    "frozen",
    "locked",
    "call:1",
    "exit:5",
    "call:8",
    "collected",
    "written",
];

struct Server {
    w: Workload,
    clients: EchoClients,
}

impl Server {
    fn start() -> Self {
        let w = Workload::spawn("tcp", &["127.0.0.1:0"]);
        let clients = EchoClients::connect(&w, CLIENTS, Duration::from_secs(10));
        let mut server = Self { w, clients };
        server.echo_round("before the dump");
        server
    }

    /// Every client sends 8 bytes, the server echoes them all, every client reads them back.
    #[track_caller]
    fn echo_round(&mut self, when: &str) {
        self.clients.send(when);
        self.clients.echo(&self.w, CMD_TIMEOUT, when);
    }
}

/// One trial: dump paused at `point`, `signal` sent to cryo there, then everything checked.
fn interrupt_at(point: &str, signal: i32, leave_running: bool) {
    interrupt_at_with(point, signal, leave_running, &[]);
}

/// What is checked of the server while cryo is paused, before the signal.
type WhilePaused<'a> = &'a dyn Fn(&Workload, &str);

/// [`interrupt_at`] with cryo in a process group of its own, the signal sent to the whole
/// group (as a Ctrl-C or a service manager does) when `env` is not empty, and `env` set for
/// cryo (test hooks).
fn interrupt_at_with(point: &str, signal: i32, leave_running: bool, env: &[(&str, &str)]) {
    interrupt_checking(point, signal, leave_running, env, &|_, _| {});
}

/// [`interrupt_at_with`], `while_paused` checking the server while cryo is paused.
fn interrupt_checking(
    point: &str,
    signal: i32,
    leave_running: bool,
    env: &[(&str, &str)],
    while_paused: WhilePaused<'_>,
) {
    use std::os::unix::process::CommandExt;
    let mut server = Server::start();
    let img = server.w.path("img");
    let mut cmd = Command::new(cryo_bin());
    cmd.args(["dump", "-t", &server.w.pid().to_string(), "-D"])
        .arg(&img)
        .arg("--tcp-established")
        .env("CRYO_TEST_PAUSE_AT", point)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let group = !env.is_empty();
    if group {
        cmd.process_group(0);
    }
    if leave_running {
        cmd.arg("--leave-running");
    }
    let mut cryo = cmd.spawn().expect("spawn cryo");
    let mut stderr = BufReader::new(cryo.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = stderr.read_line(&mut line).expect("cryo stderr");
        seen.push_str(&line);
        if n == 0 {
            panic!("cryo ended before pausing at {point}:\n{seen}");
        }
        if line.contains(&format!("paused at {point}")) {
            break;
        }
    }
    while_paused(&server.w, point);
    // The guardian (forked at dump start) must be done before anything is checked.
    let guardians: Vec<Pidfd> = children_of(cryo.id())
        .into_iter()
        .filter_map(|p| Pidfd::open(p).ok())
        .collect();
    let target = if group {
        -(cryo.id() as i32)
    } else {
        cryo.id() as i32
    };
    // SAFETY: kill takes plain values.
    unsafe { libc::kill(target, signal) };
    let status = cryo.wait().expect("wait for cryo");
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    seen.push_str(&rest);
    let trial = format!("{point}, signal {signal}, leave_running {leave_running}, {env:?}");
    if signal == libc::SIGKILL {
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{trial}: {seen}");
    } else {
        assert!(!status.success(), "{trial}: cryo exited 0\n{seen}");
        assert!(seen.contains("interrupted by"), "{trial}: {seen}");
    }
    for g in &guardians {
        assert!(
            g.wait_exit(CMD_TIMEOUT),
            "{trial}: the guardian never ended"
        );
    }

    assert!(
        server.w.original_alive(),
        "{trial}: the server died\n{seen}\n{}",
        server.w.log()
    );
    let lock = cryo_core::lock_id_for(&img);
    assert!(
        !cryo_netns::installed_locks()
            .expect("list locks")
            .contains(&lock),
        "{trial}: network lock {lock} left installed"
    );
    assert!(
        !img.join("inventory.img").exists() || leave_running,
        "{trial}: an image of a process that runs on"
    );
    server.echo_round(&format!("after {trial}"));
    // And a dump after that works.
    let again = server.w.path("img2");
    server
        .w
        .dump(&again, &["--tcp-established", "--leave-running"])
        .assert_success();
    server.echo_round(&format!("after a dump following {trial}"));
}

/// A killing dump paused after its connections were captured, up to the images written: every
/// connection of the server is out of repair mode (a thread whose blocking read resumed in
/// repair mode, cryo killed there, got EPERM before the guardian was done), then cryo is
/// killed and everything checked. Before: TCP_REPAIR read 1 on each.
#[test]
fn connections_captured_are_out_of_repair_mode_while_the_dump_goes_on() {
    cryo_bin();
    let out_of_repair: WhilePaused<'_> = &|w, point| {
        let modes = cryo_tests::servers::tcp_repair_modes(w.pid());
        assert!(
            modes.len() > CLIENTS,
            "{point}: {} TCP sockets",
            modes.len()
        );
        let held: Vec<_> = modes.iter().filter(|(_, m)| *m != 0).collect();
        assert!(held.is_empty(), "{point}: in repair mode: {held:?}");
    };
    for point in ["collected", "written"] {
        interrupt_checking(point, libc::SIGKILL, false, &[], out_of_repair);
    }
}

/// cryo's whole process group killed once the connections are captured behind the lock, with the dump guardian slow to start (a loaded machine: it may not have run yet):
/// it is out of cryo's group from its fork, so it survives and gives the target back whole.
#[test]
fn sigkill_of_cryos_group_with_a_late_guardian_leaves_the_target_whole() {
    cryo_bin();
    let late = [("CRYO_TEST_GUARDIAN_LATE_MS", "300")];
    interrupt_at_with("collected", libc::SIGKILL, false, &late);
}

fn every_point(signal: i32, leave_running: bool) {
    cryo_bin();
    for point in POINTS {
        interrupt_at(point, signal, leave_running);
    }
}

#[test]
fn sigint_rolls_back_a_killing_dump() {
    every_point(libc::SIGINT, false);
}

#[test]
fn sigterm_rolls_back_a_killing_dump() {
    every_point(libc::SIGTERM, false);
}

#[test]
fn sigkill_leaves_the_target_of_a_killing_dump_whole() {
    every_point(libc::SIGKILL, false);
}

#[test]
fn sigint_rolls_back_a_leave_running_dump() {
    every_point(libc::SIGINT, true);
}

#[test]
fn sigterm_rolls_back_a_leave_running_dump() {
    every_point(libc::SIGTERM, true);
}

#[test]
fn sigkill_leaves_the_target_of_a_leave_running_dump_whole() {
    every_point(libc::SIGKILL, true);
}
