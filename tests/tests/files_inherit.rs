//! Objects the dumped process shared with a process outside the dump, handed to the restore
//! by its caller (CRIU's `cryo restore --inherit-fd fd[N]:RESOURCE`): an anonymous pipe from a
//! producer outside (`producer | app`) or to a reader outside (`app | logger`) stays
//! connected, a log file is the one given; what cannot be used is refused before anything is
//! made, naming it.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use cryo_tests::protocol::LOG_FILE;
use cryo_tests::{control_dir, cryo_bin, parse_fds, Workload};
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// A pipe of the test's own: (read end, write end), close-on-exec.
fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2")
}

/// `pipe:[INODE]` of a pipe end.
fn pipe_name(end: &OwnedFd) -> String {
    let ino = File::from(end.try_clone().expect("dup"))
        .metadata()
        .expect("fstat")
        .ino();
    format!("pipe:[{ino}]")
}

/// What the read end `rd` shows within 10 s: the bytes a read gives (empty: end of file).
fn read_within(rd: &OwnedFd) -> Vec<u8> {
    let mut fds = [PollFd::new(rd.as_fd(), PollFlags::POLLIN)];
    let ready = nix::poll::poll(&mut fds, PollTimeout::from(10_000u16)).expect("poll");
    assert_eq!(ready, 1, "nothing on the pipe within 10 s");
    let mut buf = [0u8; 4096];
    let n = nix::unistd::read(rd, &mut buf).expect("read");
    buf[..n].to_vec()
}

fn write(wr: &OwnedFd, text: &str) {
    assert_eq!(
        nix::unistd::write(wr, text.as_bytes()).expect("write"),
        text.len()
    );
}

/// `producer | app`: the test writes into a pipe whose read end is the workload's stdin.
/// Restored with `--inherit-fd fd[0]:pipe:[INO]` (cryo's stdin: the read end of the same
/// pipe, kept by the test), the process reads what the producer wrote before the dump (once:
/// the dumped copy of the queue is not written back), while it was gone, and after; its fd 0
/// is that pipe, read-only. The dump warns, naming the pid, the fd, the pipe and the flag to
/// restore with. Before: the flag was refused (and without it the restored pipe was
/// a private copy: the producer's bytes never arrived).
#[test]
fn a_producer_outside_the_dump_writes_into_the_restored_process() {
    cryo_bin();
    let (rd, wr) = pipe();
    let name = pipe_name(&rd);
    let stdin = rd.try_clone().expect("dup");
    let mut w = Workload::spawn_configured(control_dir(), "pipe", &["0"], |c| {
        c.stdin(Stdio::from(stdin));
    });
    assert_eq!(parse_fds(&w.cmd("fds"))[&0], name);
    write(&wr, "before-");
    let img = w.path("img");
    let dumped = w.dump_ok(&img);
    let pid = w.pid();
    dumped.assert_stderr_mentions(&format!(
        "pid {pid} fd 0: {name} is shared with a process outside the dump, which writes into it"
    ));
    dumped.assert_stderr_mentions(&format!("--inherit-fd fd[N]:{name}"));
    write(&wr, "between-");
    let given = rd.try_clone().expect("dup");
    let arg = format!("fd[0]:{name}");
    w.start_restore_with(&img, |c| {
        c.stdin(Stdio::from(given)).args(["--inherit-fd", &arg]);
    });
    w.await_restored();
    write(&wr, "after");
    assert_eq!(w.cmd("read-fd 0"), "before-between-after");
    assert_eq!(parse_fds(&w.cmd("fds"))[&0], name, "the same pipe");
    assert_eq!(w.cmd("flags-of 0"), "0", "read-only, blocking, as dumped");
    write(&wr, "more");
    assert_eq!(w.cmd("read-fd 0"), "more");
    w.kill_restored();
}

/// `app | logger`: the workload's stdout is a pipe the test reads. Restored with
/// `--inherit-fd fd[1]:pipe:[INO]` (cryo's stdout: the write end, which the test then holds no
/// more), what the process writes reaches the reader outside, and once the process closes
/// its end the reader sees end of file while `cryo restore` still runs: nothing else (cryo,
/// its slots) holds the write end. Before: the flag was refused.
#[test]
fn a_reader_outside_the_dump_gets_what_the_restored_process_writes() {
    cryo_bin();
    let (rd, wr) = pipe();
    let name = pipe_name(&rd);
    let stdout = wr.try_clone().expect("dup");
    let mut w = Workload::spawn_configured(control_dir(), "pipe", &["0"], |c| {
        c.stdout(Stdio::from(stdout));
    });
    assert_eq!(w.cmd("say 1 first"), "ok");
    assert_eq!(read_within(&rd), b"first");
    let img = w.path("img");
    let dumped = w.dump_ok(&img);
    dumped.assert_stderr_mentions(&format!(
        "{name} is shared with a process outside the dump, which reads it"
    ));
    let arg = format!("fd[1]:{name}");
    w.start_restore_with(&img, |c| {
        c.stdout(Stdio::from(wr)).args(["--inherit-fd", &arg]);
    });
    w.await_restored();
    assert_eq!(w.cmd("say 1 second"), "ok");
    assert_eq!(read_within(&rd), b"second");
    assert_eq!(parse_fds(&w.cmd("fds"))[&1], name, "the same pipe");
    assert_eq!(w.cmd("close 1"), "ok");
    assert_eq!(
        read_within(&rd),
        b"",
        "end of file once the process closed its end"
    );
    assert!(w.restore_cryo_pid().is_some_and(cryo_tests::pid_exists));
    w.kill_restored();
}

/// What `--inherit-fd` cannot use is refused before anything is made, naming it: a resource
/// no dumped fd was on (with the image's pipes listed), an fd cryo does not have, the write
/// end given for a read end the process read from, an fd of another kind than the pipe it
/// stands for (each with the pid and fd that held the pipe), a file the process wrote to
/// given read-only, a socket (not supported); `--check-only` judges a
/// file given as the caller's. Then a restore with the pipe given on fd 0 and the workload's
/// log on fd 1 (another file, CRIU's relative path) works: its stdout and stderr write into
/// the file given. Before: every one of them failed to parse.
#[test]
fn inherit_fds_that_cannot_be_used_are_refused_naming_them() {
    cryo_bin();
    let (rd, wr) = pipe();
    let name = pipe_name(&rd);
    let stdin = rd.try_clone().expect("dup");
    let mut w = Workload::spawn_configured(control_dir(), "pipe", &["0"], |c| {
        c.stdin(Stdio::from(stdin));
    });
    let pid = w.pid();
    let log = w.path(LOG_FILE);
    let log_arg = log
        .to_str()
        .expect("utf-8")
        .trim_start_matches('/')
        .to_string();
    // --check-only: the log, written after the check dump, differs; given, it is not judged.
    let chk = w.path("chk");
    w.dump(&chk, &["--check-only"]).assert_success();
    assert_eq!(w.cmd("say 1 written-after-the-check"), "ok");
    let judged = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--check-only",
            "--json",
            "-D",
            chk.to_str().unwrap(),
        ];
        args.extend(extra);
        let out = w.cryo(&args);
        let verdict: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("the verdict is not JSON ({e}):\n{out}"));
        let on_log = verdict["findings"]
            .as_array()
            .unwrap_or_else(|| panic!("no findings:\n{out}"))
            .iter()
            .any(|f| f["subject"] == log.to_str().unwrap());
        (out, on_log)
    };
    let (out, on_log) = judged(&[]);
    assert!(on_log, "the log written after the check differs:\n{out}");
    let (out, on_log) = judged(&["--inherit-fd", &format!("fd[1]:{log_arg}")]);
    assert!(!on_log, "the log given is not judged:\n{out}");

    let img = w.path("img");
    w.dump_ok(&img);
    let refused = |arg: &str, stdin: Stdio, needles: &[&str]| {
        let img = img.to_str().unwrap();
        let out = w.cryo_with(&["restore", "-D", img, "--inherit-fd", arg], |c| {
            c.stdin(stdin);
        });
        out.assert_refused();
        for needle in needles {
            out.assert_stderr_mentions(needle);
        }
    };
    let given = || Stdio::from(rd.try_clone().expect("dup"));
    let held = format!("pid {pid} fd 0");
    refused(
        "fd[0]:pipe:[1]",
        given(),
        &["pipe:[1]", &format!("{name} ({held})")],
    );
    refused(&format!("fd[77]:{name}"), given(), &["fd 77 is not open"]);
    let writer = Stdio::from(wr.try_clone().expect("dup"));
    refused(
        &format!("fd[0]:{name}"),
        writer,
        &[
            &format!("{held} had {name} open read-only (it read from it)"),
            "fd 0 is open write-only",
        ],
    );
    let file = || Stdio::from(File::open(&log).expect("open the log"));
    refused(
        &format!("fd[0]:{name}"),
        file(),
        &[&held, "is a regular file, not a pipe"],
    );
    refused(
        &format!("fd[0]:{log_arg}"),
        file(),
        &[
            &format!("pid {pid} fd 1"),
            "open write-only",
            "fd 0 is open read-only",
        ],
    );
    refused(
        "fd[0]:socket:[5]",
        given(),
        &["socket resources are not supported"],
    );

    let other = w.path("other.log");
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&other)
        .expect("other log");
    let (pipe_arg, log_arg) = (format!("fd[0]:{name}"), format!("fd[1]:{log_arg}"));
    let stdin = rd.try_clone().expect("dup");
    w.start_restore_with(&img, |c| {
        c.stdin(Stdio::from(stdin)).stdout(out).args([
            "--inherit-fd",
            &pipe_arg,
            "--inherit-fd",
            &log_arg,
        ]);
    });
    w.await_restored();
    write(&wr, "fed");
    assert_eq!(w.cmd("read-fd 0"), "fed");
    assert_eq!(w.cmd("say 2 to-the-other-log"), "ok");
    let text = std::fs::read_to_string(&other).expect("read the other log");
    assert!(text.ends_with("to-the-other-log"), "{text:?}");
    let fds = parse_fds(&w.cmd("fds"));
    assert_eq!(fds[&1], other.display().to_string());
    assert_eq!(fds[&2], other.display().to_string());
    w.kill_restored();
}
