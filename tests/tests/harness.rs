//! The harness and the workload on their own: no cryo needed.
//!
//! Run alone with `cargo test -p cryo-tests --test harness`.

use std::path::Path;
use std::time::{Duration, Instant};

use cryo_tests::protocol::{self, DEFAULT_SEED};
use cryo_tests::{
    control_dir, has_word, locate_cryo, mask_has, parse_fds, pid_exists, write_file, Mount,
    Workload,
};

#[test]
fn counter_answers_and_counts() {
    let w = Workload::spawn("counter", &[]);
    assert_eq!(w.cmd("get"), "0");
    assert_eq!(w.cmd("tick"), "1");
    assert_eq!(w.cmd("tick"), "2");
    assert_eq!(w.cmd("get"), "2");
    assert_eq!(w.cmd("pid"), w.pid().to_string());
    assert_eq!(w.cmd("ppid"), std::process::id().to_string());
    assert!(w.cmd("bogus").starts_with("err unknown command"));
    w.assert_untouched();
}

#[test]
fn workload_holds_nothing_of_the_test() {
    let w = Workload::spawn("counter", &[]);
    let fds = parse_fds(&w.cmd("fds"));
    let log = w.path(protocol::LOG_FILE);
    let log = log.to_str().unwrap();
    let cmd = w.path(protocol::CMD_FIFO);
    let want: Vec<(i32, &str)> = vec![
        (0, "/dev/null"),
        (1, log),
        (2, log),
        (3, cmd.to_str().unwrap()),
    ];
    let got: Vec<(i32, &str)> = fds.iter().map(|(n, t)| (*n, t.as_str())).collect();
    assert_eq!(got, want);
    // Its own session, so it can be dumped without --shell-job.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", w.pid())).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split(' ').collect();
    assert_eq!(fields[3], w.pid().to_string(), "session id: {stat}");
}

#[test]
fn memory_verifies_and_touch_changes_checksum() {
    let w = Workload::spawn("memory", &["8", "0x1234"]);
    let first = w.cmd("verify");
    assert!(first.starts_with("ok "), "{first}");
    assert_eq!(first.split(' ').nth(2), Some("2048"), "{first}");
    assert_eq!(w.cmd("verify"), first);
    let touched = w.cmd("touch");
    let want = (0..2048)
        .step_by(protocol::TOUCH_STRIDE)
        .filter(|&p| !protocol::memory_page_is_hole(p))
        .count();
    assert_eq!(touched, format!("touched {want}"));
    let second = w.cmd("verify");
    assert!(second.starts_with("ok "), "{second}");
    assert_ne!(second, first);
    assert!(w.cmd("addr").starts_with("0x"));
}

#[test]
fn memory_detects_corruption() {
    let w = Workload::spawn("memory", &["1"]);
    let addr = u64::from_str_radix(w.cmd("addr").trim_start_matches("0x"), 16).unwrap();
    // Write a wrong word into page 3 from outside, through /proc/PID/mem.
    use std::os::unix::fs::FileExt;
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{}/mem", w.pid()))
        .unwrap();
    mem.write_all_at(&[0xff; 8], addr + 3 * 4096 + 16).unwrap();
    let reply = w.cmd("verify");
    assert!(reply.starts_with("bad 0x3010 "), "{reply}");
}

#[test]
fn file_reads_byte_by_byte() {
    let dir = control_dir();
    let data = protocol::pattern(100, 7);
    let path = dir.path().join("data");
    write_file(&path, &data);
    let w = Workload::spawn_in(dir, "file", &[path.to_str().unwrap()]);
    for (off, b) in data.iter().enumerate().take(5) {
        assert_eq!(w.cmd("next"), format!("{off} {b}"));
    }
    assert_eq!(w.cmd("pos"), "5");
    let fds = parse_fds(&w.cmd("fds"));
    assert!(fds.values().any(|t| Path::new(t) == path), "{fds:?}");
}

#[test]
fn file_reports_eof() {
    let dir = control_dir();
    let path = dir.path().join("data");
    write_file(&path, b"x");
    let w = Workload::spawn_in(dir, "file", &[path.to_str().unwrap()]);
    assert_eq!(w.cmd("next"), format!("0 {}", b'x'));
    assert_eq!(w.cmd("next"), "eof 1");
}

#[test]
fn deleted_file_keeps_contents() {
    let w = Workload::spawn("deleted-file", &["5000", "99"]);
    let want = protocol::len_and_checksum(&protocol::pattern(5000, 99));
    assert_eq!(w.cmd("read"), want);
    assert_eq!(w.cmd("pos"), "5000");
    assert!(!w.path(protocol::DELETED_FILE).exists());
    let fds = parse_fds(&w.cmd("fds"));
    assert!(
        fds.values().any(|t| t.ends_with(" (deleted)")),
        "no deleted file among {fds:?}"
    );
}

#[test]
fn pipe_holds_data_until_drained() {
    let w = Workload::spawn("pipe", &["3000"]);
    let data = protocol::pattern(3000, DEFAULT_SEED);
    assert_eq!(
        w.cmd("take 1000"),
        protocol::len_and_checksum(&data[..1000])
    );
    assert_eq!(w.cmd("drain"), protocol::len_and_checksum(&data[1000..]));
    assert_eq!(w.cmd("drain"), protocol::len_and_checksum(&[]));
    let fds = parse_fds(&w.cmd("fds"));
    let pipes: Vec<&String> = fds.values().filter(|t| t.starts_with("pipe:")).collect();
    assert_eq!(pipes.len(), 2, "{fds:?}");
    assert_eq!(pipes[0], pipes[1], "both ends of one pipe");
}

#[test]
fn signal_handler_counts() {
    let w = Workload::spawn("signal", &[]);
    assert_eq!(w.cmd("count"), "0");
    let cgt = w.status("SigCgt");
    assert!(mask_has(&cgt, libc::SIGUSR1), "SigCgt {cgt}");
    assert!(mask_has(&w.status("SigBlk"), libc::SIGUSR2));
    // SAFETY: signalling our own child, which has a handler for it.
    assert_eq!(unsafe { libc::kill(w.pid(), libc::SIGUSR1) }, 0);
    assert_eq!(w.cmd("count"), "1");
    assert_eq!(w.cmd("pending"), "0");
    // SAFETY: SIGUSR2 is blocked in the workload: it stays pending.
    assert_eq!(unsafe { libc::kill(w.pid(), libc::SIGUSR2) }, 0);
    assert_eq!(w.cmd("pending"), "1");
    // The handler interrupted the blocking read, which restarted (SA_RESTART).
    assert_eq!(w.cmd("tick"), "1");
}

#[test]
fn unsupported_objects_open() {
    let w = Workload::spawn("unsupported", &["io_uring", "47"]);
    assert_eq!(w.cmd("fd"), "47");
    let fds = parse_fds(&w.cmd("fds"));
    assert!(fds[&47].starts_with("anon_inode:[io_uring]"), "{fds:?}");
}

#[test]
fn exit_command_sets_status() {
    let mut w = Workload::spawn("counter", &[]);
    assert_eq!(w.cmd("exit 7"), "bye");
    assert_eq!(w.wait_original().code(), Some(7));
}

#[test]
fn dead_workload_fails_fast() {
    let mut w = Workload::spawn("counter", &[]);
    w.kill_original();
    let start = Instant::now();
    let err = w.try_cmd("tick", Duration::from_secs(30)).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5), "{err}");
    assert!(err.contains("exited before replying"), "{err}");
}

#[test]
fn stopped_workload_times_out() {
    let w = Workload::spawn("counter", &[]);
    // SAFETY: stopping our own child.
    assert_eq!(unsafe { libc::kill(w.pid(), libc::SIGSTOP) }, 0);
    let err = w.try_cmd("tick", Duration::from_millis(300)).unwrap_err();
    assert!(err.contains("no reply within"), "{err}");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(w.pid(), libc::SIGCONT) }, 0);
    // The command queued in the FIFO is read once it runs again.
    assert_eq!(w.cmd("get"), "1");
}

#[test]
fn drop_kills_and_reaps() {
    let w = Workload::spawn("counter", &[]);
    let pid = w.pid();
    let dir = w.dir().to_path_buf();
    drop(w);
    assert!(!pid_exists(pid), "pid {pid} still exists");
    assert!(!dir.exists());
}

#[test]
fn tmpfs_mount_is_unmounted_on_drop() {
    let w = Workload::spawn("counter", &[]);
    let at = w.path("small");
    {
        let m = Mount::tmpfs(&at, "size=1M");
        let big = vec![0u8; 2 << 20];
        let err = std::fs::write(m.path().join("big"), &big).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(at.to_str().unwrap()));
    {
        let m = Mount::tmpfs(&w.path("ro"), "ro,size=1M");
        let err = std::fs::create_dir(m.path().join("x")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    }
}

#[test]
fn locate_cryo_says_how_to_build_it() {
    let exe = Path::new("/nonexistent/target/debug/deps/basic-0123");
    let err = locate_cryo(None, exe).unwrap_err();
    assert!(err.contains("/nonexistent/target/debug/cryo"), "{err}");
    assert!(err.contains("build it with cargo build -p cryo"), "{err}");
    let sh = locate_cryo(Some("/bin/sh".into()), exe).unwrap();
    assert_eq!(sh, Path::new("/bin/sh"));
}

#[test]
fn word_matching() {
    assert!(has_word("pid 1234 fd 47: io_uring", "47"));
    assert!(has_word("fd=47,", "47"));
    assert!(!has_word("fd 470", "47"));
    assert!(!has_word("pid 12345", "1234"));
}
