//! The notification channel end to end: a real process using cryo-resume blocks in poll on
//! its channel; the engine's notify module finds the channel from outside, writes a record
//! into it and queues `--notify-signal`, and the process reports what it read. The same
//! after a real `cryo dump` and `cryo restore` of the process.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cryo_core::notify;
use cryo_core::Pid;
use cryo_resume::{BrokenConnection, BrokenReason, ListenerRef, ResumeEvent};
use cryo_tests::{pid_exists, run_cryo, Pidfd};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The probe process and its directory.
struct Probe {
    child: Option<Child>,
    pid: i32,
    dir: tempfile::TempDir,
}

impl Probe {
    fn spawn(signo: Option<i32>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cryo-resume-probe"));
        cmd.arg(dir.path());
        if let Some(s) = signo {
            cmd.arg(s.to_string());
        }
        let stderr = fs::File::create(dir.path().join("stderr")).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let p = Self {
            child: Some(child),
            pid,
            dir,
        };
        p.wait_for(|| p.dir.path().join("ready").exists(), "ready");
        p
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.pid)
    }

    /// `(channel fd, marker fd)` as the probe reported them.
    fn ready(&self) -> (i32, i32) {
        let text = fs::read_to_string(self.dir.path().join("ready")).unwrap();
        let mut it = text.split_whitespace().map(|n| n.parse().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    }

    fn log(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[track_caller]
    fn wait_for(&self, mut done: impl FnMut() -> bool, what: &str) {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < TIMEOUT,
                "probe {}: no {what} after {TIMEOUT:?}; log {:?}, stderr {:?}",
                self.pid,
                self.log(),
                fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The log's lines once it has `n`.
    #[track_caller]
    fn wait_lines(&self, n: usize) -> Vec<String> {
        self.wait_for(|| self.log().len() >= n, &format!("{n} log lines"));
        self.log()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        } else if let Ok(pidfd) = Pidfd::open(self.pid) {
            let _ = pidfd.signal(libc::SIGKILL);
            pidfd.wait_exit(TIMEOUT);
        }
    }
}

fn record(id: &str, broken: Vec<BrokenConnection>) -> ResumeEvent {
    ResumeEvent {
        checkpoint_id: id.into(),
        downtime_ms: 1234,
        broken,
    }
}

fn broken(fd: i32, reason: BrokenReason) -> BrokenConnection {
    BrokenConnection {
        fd,
        local: "127.0.0.1:8080".into(),
        remote: "127.0.0.1:51234".into(),
        reason,
    }
}

/// The record the probe read, from an `event {json}` line, checked both ways: the library's
/// struct as it decoded it, and the engine's struct decoding the library's encoding.
#[track_caller]
fn assert_event(line: &str, want: &ResumeEvent) {
    let json = line
        .strip_prefix("event ")
        .unwrap_or_else(|| panic!("not an event: {line}"));
    let got: cryo_resume::ResumeEvent = serde_json::from_str(json).unwrap();
    assert_eq!(got.checkpoint_id, want.checkpoint_id);
    assert_eq!(got.downtime_ms, want.downtime_ms);
    assert_eq!(got.broken.len(), want.broken.len());
    let back: ResumeEvent = serde_json::from_str(json).unwrap();
    assert_eq!(&back, want);
}

#[test]
fn a_process_blocked_in_poll_reads_the_record_and_gets_the_signal() {
    let signo = libc::SIGRTMIN() + 2;
    let probe = Probe::spawn(Some(signo));
    let (chan, marker) = probe.ready();

    let found = notify::find_listener(probe.pid()).unwrap();
    assert_eq!(
        found,
        Some(ListenerRef {
            fd: chan,
            marker_fd: Some(marker)
        })
    );
    let l = found.unwrap();

    let first = record(
        "ck-a",
        vec![
            broken(7, BrokenReason::Reset),
            broken(8, BrokenReason::Timeout),
            broken(9, BrokenReason::ExternalPeer),
            broken(10, BrokenReason::ClosedByPolicy),
        ],
    );
    notify::notify(probe.pid(), &l, &first).unwrap();
    let lines = probe.wait_lines(1);
    assert_event(&lines[0], &first);
    let got: cryo_resume::ResumeEvent =
        serde_json::from_str(lines[0].strip_prefix("event ").unwrap()).unwrap();
    let reasons: Vec<_> = got.broken.iter().map(|b| b.reason).collect();
    assert_eq!(
        reasons,
        [
            cryo_resume::BrokenReason::Reset,
            cryo_resume::BrokenReason::Timeout,
            cryo_resume::BrokenReason::ExternalPeer,
            cryo_resume::BrokenReason::ClosedByPolicy
        ]
    );
    assert_eq!(got.broken[0].fd, 7);
    assert_eq!(got.broken[0].remote, "127.0.0.1:51234");

    // --notify-signal: the count arrives as sival_int, si_code SI_QUEUE.
    notify::queue_signal(probe.pid(), signo, 4).unwrap();
    let lines = probe.wait_lines(2);
    assert_eq!(lines[1], format!("signal {signo} 4 {}", libc::SI_QUEUE));

    // Nothing broken: a record all the same.
    let second = record("ck-b", vec![]);
    notify::notify(probe.pid(), &l, &second).unwrap();
    let lines = probe.wait_lines(3);
    assert_event(&lines[2], &second);
    assert_eq!(lines.len(), 3, "{lines:?}");
}

#[test]
fn a_process_without_the_library_has_no_listener() {
    let mut child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let found = notify::find_listener(Pid::from_raw(child.id() as i32)).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(found, None);
}

#[test]
fn the_channel_survives_dump_and_restore() {
    let probe = Probe::spawn(None);
    let pid = probe.pid();
    // What the dump stores with the image.
    let stored = serde_json::to_string(&notify::find_listener(pid).unwrap().unwrap()).unwrap();

    // A record the application has not read yet when it is frozen: it must come back too.
    // (Written while the probe is stopped so it cannot read it first.)
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let unread = record("before-dump", vec![]);
    let l: ListenerRef = serde_json::from_str(&stored).unwrap();
    notify::notify(pid, &l, &unread).unwrap();

    let img = probe.dir.path().join("img");
    fs::create_dir(&img).unwrap();
    let out = run_cryo(
        probe.dir.path(),
        "dump",
        ["dump", "-t", &pid.to_string(), "-D", img.to_str().unwrap()],
    );
    out.assert_success();
    let mut probe = probe;
    let status = probe.child.take().unwrap().wait().unwrap();
    assert!(!status.success(), "the dump kills the probe: {status}");
    assert!(!pid_exists(pid.as_raw()));

    let out = run_cryo(
        probe.dir.path(),
        "restore",
        ["restore", "-D", img.to_str().unwrap(), "--detach"],
    );
    out.assert_success();
    assert!(pid_exists(pid.as_raw()), "restored at its pid\n{out}");
    // It was stopped when dumped; let it run.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();

    // The unread record was restored with the pipe; then cryo's own record of this restore,
    // naming the checkpoint, with nothing broken.
    let lines = probe.wait_lines(2);
    assert_event(&lines[0], &unread);
    let inventory: cryo_proto::image::Inventory = cryo_proto::frame::read_single(
        &img.join("inventory.img"),
        cryo_proto::ImageKind::Inventory,
    )
    .unwrap();
    let auto: serde_json::Value = serde_json::from_str(lines[1].trim_start_matches("event "))
        .unwrap_or_else(|e| panic!("cryo's record is not JSON ({e}): {}", lines[1]));
    assert_eq!(
        auto["checkpoint_id"],
        inventory.checkpoint_id.as_str(),
        "{}",
        lines[1]
    );
    assert_eq!(auto["broken"], serde_json::json!([]), "{}", lines[1]);

    // The reference stored at dump time finds the channel in the restored process.
    let after = record("ck-restored", vec![broken(5, BrokenReason::Reset)]);
    notify::notify(pid, &l, &after).unwrap();
    let lines = probe.wait_lines(3);
    assert_event(&lines[2], &after);
    assert_eq!(notify::find_listener(pid).unwrap(), Some(l));
}

#[test]
fn a_stale_listener_reference_is_refused_not_written() {
    let probe = Probe::spawn(None);
    let (chan, marker) = probe.ready();
    let wrong = ListenerRef {
        fd: marker,
        marker_fd: Some(chan),
    };
    let err = notify::notify(probe.pid(), &wrong, &record("x", vec![])).unwrap_err();
    assert!(
        err.to_string().contains("not a cryo-resume channel"),
        "{err}"
    );
}
