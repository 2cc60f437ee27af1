//! The `cryo` binary as users run it: subcommands, flags, exit statuses, error messages, and
//! the demo's workload.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn cryo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cryo"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run cryo")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_the_subcommands() {
    let out = cryo(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for verb in [
        "dump",
        "restore",
        "show",
        "check",
        "demo",
        "--verbose",
        "--log-file",
    ] {
        assert!(help.contains(verb), "{verb} missing from:\n{help}");
    }
    assert!(
        !help.contains("__demo-workload"),
        "hidden command shown:\n{help}"
    );
}

#[test]
fn subcommand_help_lists_their_flags() {
    for (verb, flags) in [
        (
            "dump",
            &[
                "--tree",
                "--images-dir",
                "--leave-running",
                "--shell-job",
                "--tcp-established",
            ][..],
        ),
        ("restore", &["--images-dir", "--detach"]),
        ("show", &["--images-dir", "--json"]),
        ("check", &["--json", "--no-cache"]),
    ] {
        let out = cryo(&[verb, "--help"]);
        assert!(out.status.success(), "{verb} --help");
        let help = text(&out.stdout);
        for flag in flags {
            assert!(
                help.contains(flag),
                "{flag} missing from {verb} --help:\n{help}"
            );
        }
    }
}

#[test]
fn check_json_is_an_array_of_probes() {
    for args in [&["check", "--json"][..], &["check", "--json", "--no-cache"]] {
        let out = cryo(args);
        let stdout = text(&out.stdout);
        let probes: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{stdout}"));
        let probes = probes.as_array().expect("an array");
        assert!(!probes.is_empty());
        for p in probes {
            assert!(p["name"].is_string() && p["required"].is_boolean(), "{p}");
        }
        let all_required = probes
            .iter()
            .all(|p| p["required"] == false || p["status"]["state"] == "found");
        assert_eq!(out.status.success(), all_required, "{args:?}: exit status");
        if !all_required {
            assert_eq!(out.status.code(), Some(1));
        }
    }
}

#[test]
fn check_table() {
    let out = cryo(&["check"]);
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("FEATURE"), "{stdout}");
    assert!(stdout.contains("ptrace"), "{stdout}");
}

#[test]
fn dump_of_a_missing_pid_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("img");
    let out = cryo(&["dump", "-t", "999999999", "-D", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("cryo: error: "), "{stderr}");
    assert!(stderr.contains("999999999"), "{stderr}");
}

#[test]
fn show_of_a_missing_dir_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("no-such-images");
    let dir = dir.to_str().unwrap();
    for json in [false, true] {
        let mut args = vec!["show", "-D", dir];
        if json {
            args.push("--json");
        }
        let out = cryo(&args);
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        assert!(stderr.starts_with("cryo: error: "), "{stderr}");
        assert!(stderr.contains(dir), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn restore_of_a_missing_dir_fails() {
    let out = cryo(&["restore", "-D", "/nonexistent/cryo-images", "--detach"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/cryo-images"));
}

#[test]
fn bad_flags_give_clap_errors() {
    for (args, needle) in [
        (&["dump", "-D", "img"][..], "--tree"),
        (&["dump", "-t", "12", "-D", "img", "--bogus"], "--bogus"),
        (&["dump", "-t", "abc", "-D", "img"], "abc"),
        (&["dump", "-t", "0", "-D", "img"], "0"),
        (&["show"], "--images-dir"),
        (&["frobnicate"], "frobnicate"),
    ] {
        let out = cryo(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn log_file_is_private_and_gets_the_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("cryo.log");
    let out = cryo(&[
        "-vv",
        "--log-file",
        log.to_str().unwrap(),
        "check",
        "--no-cache",
    ]);
    assert!(out.status.code().is_some());
    let meta = std::fs::metadata(&log).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("probed"), "{logged}");
    assert!(
        !text(&out.stderr).contains("probed"),
        "logs went to stderr too"
    );
}

#[test]
fn errors_go_to_the_log_file_too() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("cryo.log");
    let out = cryo(&[
        "--log-file",
        log.to_str().unwrap(),
        "show",
        "-D",
        "/nonexistent/x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/x"));
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("/nonexistent/x"));
}

/// The whole demo with the engine: checkpoint (kill mode, with its TCP connection), restore,
/// and everything continues, the connection to the demo included.
#[test]
fn demo_checkpoints_and_restores_with_its_tcp_client() {
    let out = cryo(&["demo"]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for needle in [
        "1. started the workload",
        "tick=5 ",
        "this demo is that client: connected 127.0.0.1:",
        "2. checkpointed pid",
        "the dump killed it",
        "3. restored pid",
        "same connection, never closed",
        "-> sent-while-checkpointed",
        "<- tick=6 got=",
        "4. ok: the counter went on 5 -> 6",
        "the pipe at pipe-00006",
        "went on, never reset or closed: tick lines 1..=11 without a gap or a repeat",
        "the workload got all 11 lines this demo sent",
    ] {
        assert!(
            stdout.contains(needle),
            "{needle:?} missing from:\n{stdout}\n{stderr}"
        );
    }
    assert_no_workload_left(&stdout);
}

/// The whole demo with SIGSTOP/SIGCONT standing in for the engine.
#[test]
fn demo_rehearsal() {
    let out = cryo(&["demo", "--rehearse"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for needle in [
        "1. started the workload",
        "2. checkpointed pid",
        "3. restored pid",
        "4. ok: the counter went on 5 -> 6",
        "the pipe at pipe-00006",
        "the TCP connection 127.0.0.1:",
        "went on, never reset or closed",
    ] {
        assert!(
            stdout.contains(needle),
            "{needle:?} missing from:\n{stdout}"
        );
    }
    assert_no_workload_left(&stdout);
}

/// The demo's temporary directory is gone and its workload pid is not running.
fn assert_no_workload_left(stdout: &str) {
    let dir = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("working directory "))
        .expect("the demo names its directory");
    assert!(!Path::new(dir).exists(), "{dir} left behind");
    let pid = stdout
        .split("started the workload: pid ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("the demo names the workload's pid");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !stat.contains("__demo-workload"),
        "workload {pid} still running"
    );
}

/// A workload started by hand, killed when dropped.
struct Workload(std::process::Child);

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn workload_ticks_alone_with_its_file_and_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cryo"))
        .args(["__demo-workload", dir.to_str().unwrap()])
        .args(["--ready-after", "3", "--interval-ms", "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let workload = Workload(child);
    let pid = workload.0.id();
    // It says where it listens, waits for its one client, says ready, then lets go of its
    // stdout (EOF).
    let mut said = Vec::new();
    let mut byte = [0u8];
    while !said.ends_with(b"\n") {
        assert_eq!(stdout.read(&mut byte).unwrap(), 1, "{said:?}");
        said.push(byte[0]);
    }
    let said = text(&said);
    let addr = said
        .trim_end()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("{said:?}"));
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    let mut said = String::new();
    stdout.read_to_string(&mut said).unwrap();
    assert_eq!(said, "ready\n");
    // A tick line per tick; what the client sends is counted and echoed.
    let mut lines = std::io::BufReader::new(client.try_clone().unwrap());
    let mut line = String::new();
    for n in 1..=3 {
        line.clear();
        std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
        assert_eq!(line, format!("tick={n} got=0 last=\"\"\n"));
    }
    client.write_all(b"hello\nworld\n").unwrap();
    wait_for("the client's lines counted", || {
        line.clear();
        std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
        line.ends_with("got=2 last=\"world\"\n")
    });

    let log_path = dir.join("workload.log");
    let log = || std::fs::read_to_string(&log_path).unwrap();
    wait_for("8 ticks", || {
        log().lines().filter(|l| l.starts_with("tick=")).count() >= 8
    });
    let log = log();
    let ticks: Vec<&str> = log.lines().filter(|l| l.starts_with("tick=")).collect();
    assert_eq!(
        ticks[0], "tick=1 file=\"input line 0601\" offset=9616 pipe=\"pipe-00001\"",
        "{log}"
    );
    assert_eq!(
        ticks[7], "tick=8 file=\"input line 0608\" offset=9728 pipe=\"pipe-00008\"",
        "{log}"
    );
    assert!(
        log.starts_with(&format!("workload pid={pid} started")),
        "{log}"
    );

    // Its own session, no terminal: stat fields 6 (session) and 7 (tty_nr).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_eq!(fields[3], pid.to_string(), "session: {stat}");
    assert_eq!(fields[4], "0", "tty_nr: {stat}");

    // stdin /dev/null, stdout and stderr the log, the input file, both ends of one pipe.
    let fd = |n: &str| {
        std::fs::read_link(format!("/proc/{pid}/fd/{n}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(fd("0"), "/dev/null");
    assert_eq!(fd("1"), log_path.to_str().unwrap());
    assert_eq!(fd("2"), log_path.to_str().unwrap());
    let targets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| fd(e.unwrap().file_name().to_str().unwrap()))
        .collect();
    assert!(
        targets
            .iter()
            .any(|t| t == dir.join("input.txt").to_str().unwrap()),
        "{targets:?}"
    );
    // 0, 1, 2, the log, the input file, the pipe's two ends, the connection (the listener
    // is closed): nothing inherited.
    assert_eq!(targets.len(), 8, "{targets:?}");
    assert_eq!(
        targets.iter().filter(|t| t.starts_with("socket:")).count(),
        1,
        "{targets:?}"
    );
    let pipes: Vec<&String> = targets.iter().filter(|t| t.starts_with("pipe:")).collect();
    assert_eq!(pipes.len(), 2, "{targets:?}");
    assert_eq!(pipes[0], pipes[1], "{targets:?}");
    drop(workload);
}
