//! Action scripts (`--action-script`): every stage runs in order with its environment, and a
//! script that fails aborts the operation cleanly: a dump leaves its target running and
//! answering (its live connection too), a restore kills what it created, a refused
//! pre-restore creates nothing at all.
//!
//! The workload (`tcp` mode) serves one live connection from the test, so that dumps take
//! the network lock and the network-lock and network-unlock stages run. The script each test
//! writes appends one `|`-separated line per stage to a log: what the script saw.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cryo_tests::protocol::{len_and_checksum, pattern};
use cryo_tests::{cryo_bin, pid_exists, Workload};

const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// What the script saw at one stage.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    stage: String,
    pids: String,
    image_dir: String,
    criu_action: String,
    lock: String,
    checkpoint: String,
    /// The first letter of the State of each pid of CRYO_PIDS (`t`: stopped by cryo).
    states: String,
    /// cryo's children other than the script itself.
    cryo_children: String,
}

/// Writes the action script into the workload's dir: it logs what it sees, and at stage
/// `fail` prints on both outputs and exits 7.
fn write_script(w: &Workload, fail: Option<&str>) -> (PathBuf, PathBuf) {
    let script = w.path(&format!("hook-{}.sh", fail.unwrap_or("ok")));
    let log = w.path("hook.log");
    let body = format!(
        r#"#!/bin/sh
states=
for p in $(echo "$CRYO_PIDS" | tr , ' '); do
    states="$states$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' /proc/$p/status)"
done
kids=$(cat /proc/$PPID/task/*/children | tr ' ' '\n' | grep -vx "$$" | tr '\n' ' ')
echo "$CRYO_HOOK_STAGE|$CRYO_PIDS|$CRYO_IMAGE_DIR|$CRTOOLS_SCRIPT_ACTION|$CRYO_NETWORK_LOCK|$CRYO_CHECKPOINT_ID|$states|$kids" >> {log}
if [ "$CRYO_HOOK_STAGE" = "{fail}" ]; then
    echo "the test refuses $CRYO_HOOK_STAGE"
    echo "(said on stderr)" >&2
    exit 7
fi
"#,
        log = log.display(),
        fail = fail.unwrap_or("-"),
    );
    std::fs::write(&script, body).expect("write the script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (script, log)
}

fn seen(log: &Path) -> Vec<Seen> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 8, "bad log line {l:?}");
            Seen {
                stage: f[0].into(),
                pids: f[1].into(),
                image_dir: f[2].into(),
                criu_action: f[3].into(),
                lock: f[4].into(),
                checkpoint: f[5].into(),
                states: f[6].into(),
                cryo_children: f[7].trim().into(),
            }
        })
        .collect()
}

fn stages(log: &Path) -> Vec<String> {
    seen(log).into_iter().map(|s| s.stage).collect()
}

/// A `tcp` workload with one accepted connection from the test, data exchanged on it.
fn served() -> (Workload, TcpStream) {
    cryo_bin();
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

/// The connection carries data both ways.
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

fn installed(lock: &str) -> bool {
    cryo_netns::installed_locks()
        .expect("list locks")
        .iter()
        .any(|l| l == lock)
}

fn dump_args(script: &Path) -> [&str; 3] {
    [
        "--tcp-established",
        "--action-script",
        script.to_str().expect("utf-8 path"),
    ]
}

fn restore_args<'a>(img: &'a Path, script: &'a Path) -> [&'a str; 6] {
    [
        "restore",
        "-D",
        img.to_str().expect("utf-8 path"),
        "--detach",
        "--action-script",
        script.to_str().expect("utf-8 path"),
    ]
}

#[test]
fn stages_run_in_order_with_their_environment() {
    let mut served = served();
    let (script, log) = write_script(&served.0, None);
    let w = &mut served.0;
    let img = w.path("img");
    let pid = w.pid().to_string();
    let dir = img.to_str().unwrap().to_string();

    w.dump(&img, &dump_args(&script)).assert_success();
    w.wait_original();
    let dumped = seen(&log);
    assert_eq!(
        stages(&log),
        ["pre-dump", "network-lock", "post-dump"],
        "{dumped:#?}"
    );
    let lock = dumped[1].lock.clone();
    assert!(lock.starts_with("dump-"), "{dumped:#?}");
    assert!(installed(&lock), "lock {lock} not installed after the dump");
    let checkpoint = dumped[2].checkpoint.clone();
    assert!(!checkpoint.is_empty(), "{dumped:#?}");
    for s in &dumped {
        assert_eq!((&s.pids, &s.image_dir), (&pid, &dir), "{s:?}");
        assert_eq!(s.criu_action, s.stage, "{s:?}");
    }
    // Running before the freeze, frozen (ptrace-stopped) under the lock and once written.
    assert_ne!(dumped[0].states, "t", "{dumped:#?}");
    assert_eq!(
        (&dumped[0].lock, &dumped[0].checkpoint),
        (&"".into(), &"".into())
    );
    assert_eq!(dumped[1].states, "t", "{dumped:#?}");
    assert_eq!((&dumped[2].states, &dumped[2].lock), (&"t".into(), &lock));

    std::fs::remove_file(&log).unwrap();
    w.restore_detached_with(&img, &["--action-script", script.to_str().unwrap()]);
    let restored = seen(&log);
    assert_eq!(
        stages(&log),
        [
            "pre-restore",
            "post-restore",
            "network-unlock",
            "post-resume"
        ],
        "{restored:#?}"
    );
    for s in &restored {
        assert_eq!(s.image_dir, dir, "{s:?}");
        assert_eq!(s.criu_action, s.stage, "{s:?}");
        assert_eq!((&s.lock, &s.checkpoint), (&lock, &checkpoint), "{s:?}");
    }
    // Nothing exists before pre-restore; the process is whole but stopped at post-restore,
    // and runs at post-resume.
    assert_eq!(
        (&restored[0].pids, &restored[0].cryo_children),
        (&"".into(), &"".into()),
        "{restored:#?}"
    );
    assert_eq!(
        (&restored[1].pids, &restored[1].states),
        (&pid, &"t".into())
    );
    assert_eq!(restored[2].pids, pid);
    assert_eq!(restored[3].pids, pid);
    assert_ne!(restored[3].states, "t", "{restored:#?}");
    assert!(
        !installed(&lock),
        "lock {lock} still installed after restore"
    );
    assert_echoes(&mut served, 2);
}

/// A dump whose script fails at `stage` is refused with the script's output, and leaves the
/// workload running, answering, its connection live, no lock, the image dir empty.
fn failed_dump_leaves_the_target_running(stage: &str) {
    let mut served = served();
    let (script, log) = write_script(&served.0, Some(stage));
    let w = &served.0;
    let img = w.path("img");
    let out = w.dump(&img, &dump_args(&script));
    out.assert_refused()
        .assert_stderr_mentions(&format!("{stage} action script {}", script.display()))
        .assert_stderr_mentions("exited with status 7")
        .assert_stderr_mentions(&format!("the test refuses {stage}"))
        .assert_stderr_mentions("(said on stderr)");
    let ran = stages(&log);
    assert_eq!(ran.last().map(String::as_str), Some(stage), "{ran:?}");
    w.assert_untouched();
    let left: Vec<_> = std::fs::read_dir(&img)
        .expect("the image dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "a failed dump left {left:?}");
    for s in seen(&log).iter().filter(|s| !s.lock.is_empty()) {
        assert!(!installed(&s.lock), "lock {} left installed", s.lock);
    }
    assert_echoes(&mut served, 3);
}

#[test]
fn failing_pre_dump_leaves_the_target_running() {
    failed_dump_leaves_the_target_running("pre-dump");
}

#[test]
fn failing_network_lock_leaves_the_target_running() {
    failed_dump_leaves_the_target_running("network-lock");
}

#[test]
fn failing_post_dump_leaves_the_target_running() {
    failed_dump_leaves_the_target_running("post-dump");
}

/// Dumps `w` (killing it) with a passing script; returns the image dir.
fn dumped(w: &mut Workload, extra: &[&str]) -> PathBuf {
    let img = w.path("img");
    w.dump(&img, extra).assert_success();
    w.wait_original();
    img
}

/// A restore whose script fails at `stage` is refused with the script's output, and the
/// process it restored is gone (its pid free) when cryo returns.
fn failed_restore_kills_what_it_created(w: &mut Workload, img: &Path, stage: &str) {
    let (script, log) = write_script(w, Some(stage));
    let out = w.cryo(&restore_args(img, &script));
    out.assert_refused()
        .assert_stderr_mentions(&format!("{stage} action script {}", script.display()))
        .assert_stderr_mentions(&format!("the test refuses {stage}"));
    assert_eq!(stages(&log).last().map(String::as_str), Some(stage));
    assert!(
        !pid_exists(w.pid()),
        "pid {} still exists after a restore refused at {stage}\n{out}",
        w.pid()
    );
}

#[test]
fn failing_post_restore_kills_the_restored_process() {
    let (mut w, _client) = served();
    let img = dumped(&mut w, &["--tcp-established"]);
    failed_restore_kills_what_it_created(&mut w, &img, "post-restore");
}

#[test]
fn failing_network_unlock_kills_the_restored_process() {
    let (mut w, _client) = served();
    let img = dumped(&mut w, &["--tcp-established"]);
    failed_restore_kills_what_it_created(&mut w, &img, "network-unlock");
}

#[test]
fn failing_post_resume_kills_the_restored_process() {
    let (mut w, _client) = served();
    let img = dumped(&mut w, &["--tcp-established"]);
    failed_restore_kills_what_it_created(&mut w, &img, "post-resume");
}

/// Every thread of a process stopped at post-restore is traced by cryo: killing it must
/// reap them all (the leader cannot be reaped before).
#[test]
fn failing_post_restore_kills_a_threaded_process() {
    cryo_bin();
    let mut w = Workload::spawn("threads", &["4"]);
    let img = dumped(&mut w, &[]);
    failed_restore_kills_what_it_created(&mut w, &img, "post-restore");
}

#[test]
fn failing_pre_restore_creates_nothing() {
    let mut served = served();
    let img = dumped(&mut served.0, &["--tcp-established"]);
    let w = &mut served.0;
    let (script, log) = write_script(w, Some("pre-restore"));
    let out = w.cryo(&restore_args(&img, &script));
    out.assert_refused()
        .assert_stderr_mentions("pre-restore action script")
        .assert_stderr_mentions("the test refuses pre-restore");
    let ran = seen(&log);
    assert_eq!(stages(&log), ["pre-restore"]);
    assert_eq!(ran[0].cryo_children, "", "cryo had children at pre-restore");
    assert!(!pid_exists(w.pid()));
    // Untouched: the connection is still held silent, and the image restores.
    assert!(installed(&ran[0].lock), "the refusal released the lock");
    let (ok, _) = write_script(w, None);
    w.restore_detached_with(&img, &["--action-script", ok.to_str().unwrap()]);
    assert_echoes(&mut served, 4);
}

#[test]
fn a_missing_script_aborts_the_dump() {
    cryo_bin();
    let w = Workload::spawn("counter", &[]);
    let missing = w.path("no-such-script");
    let out = w.dump(
        &w.path("img"),
        &["--action-script", missing.to_str().unwrap()],
    );
    out.assert_refused()
        .assert_stderr_mentions("pre-dump action script")
        .assert_stderr_mentions("could not be executed");
    w.assert_untouched();
}

#[test]
fn a_script_that_hangs_is_killed_after_its_timeout() {
    cryo_bin();
    let w = Workload::spawn("counter", &[]);
    let script = w.path("hang.sh");
    std::fs::write(&script, "#!/bin/sh\necho waiting\nexec sleep 1000\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let started = Instant::now();
    let out = w.dump(
        &w.path("img"),
        &[
            "--action-script",
            script.to_str().unwrap(),
            "--action-script-timeout",
            "1",
        ],
    );
    out.assert_refused()
        .assert_stderr_mentions("still running after 1.0 s")
        .assert_stderr_mentions("waiting");
    assert!(started.elapsed() < Duration::from_secs(20));
    w.assert_untouched();
}
