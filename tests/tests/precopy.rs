//! Pre-copy (`cryo dump --to --pre-copy`): memory streamed round after round while the
//! process runs, the frozen dump sending only what changed since, the receiver merging the
//! rounds into one ordinary image. The target (workload `writer`) keeps rewriting its memory
//! from a thread; restored, it checks every word of that memory against its counter. Guard
//! pages and droppable memory come through a pre-copy too.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cryo_tests::{cryo_bin, key_file, parse_fds, serve_address, CryoOutput, Pidfd, Workload};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The key file (0600) of these tests, in `dir`.
fn psk(dir: &Path) -> PathBuf {
    key_file(dir, "key", "precopy-test-key-precopy-test-key")
}

/// A `cryo serve --once` on an ephemeral port of 127.0.0.1; killed on drop.
struct Serve {
    child: Option<Child>,
    pidfd: Pidfd,
    addr: String,
    root: PathBuf,
    stderr: PathBuf,
}

impl Serve {
    fn start(dir: &Path, key: &Path) -> Self {
        let root = dir.join("root");
        let stderr = dir.join("serve.stderr");
        let mut child = Command::new(cryo_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--once", "-D"])
            .arg(&root)
            .arg("--psk-file")
            .arg(key)
            .args(["--stream-timeout", "20"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn cryo serve");
        let pidfd = Pidfd::open(child.id() as i32).unwrap();
        let addr = serve_address(&mut child).unwrap_or_else(|e| panic!("{e}"));
        Self {
            child: Some(child),
            pidfd,
            addr,
            root,
            stderr,
        }
    }

    /// Waits for the receiver to exit; returns whether it succeeded, and its stderr.
    fn wait(&mut self) -> (bool, String) {
        assert!(self.pidfd.wait_exit(TIMEOUT), "cryo serve did not exit");
        let status = self.child.take().unwrap().wait().unwrap();
        (
            status.success(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }

    /// The partial image being received, if any.
    fn partial(&self) -> Option<PathBuf> {
        std::fs::read_dir(&self.root)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains(".partial-"))
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

fn dump_args(w: &Workload, serve: &Serve, key: &Path, name: &str) -> Vec<String> {
    vec![
        "dump".into(),
        "-t".into(),
        w.pid().to_string(),
        "--to".into(),
        serve.addr.clone(),
        "--name".into(),
        name.into(),
        "--psk-file".into(),
        key.display().to_string(),
        "--stream-timeout".into(),
        "20".into(),
        "--pre-copy".into(),
    ]
}

/// The bytes of each pre-copy round, from the dump's summary line.
fn rounds(out: &CryoOutput) -> Vec<f64> {
    let text = out.to_string();
    let Some(at) = text.find("pre-copy round") else {
        return Vec::new();
    };
    let rest = &text[at..];
    let list = &rest[rest.find(": ").unwrap() + 2..rest.find(')').unwrap()];
    list.split(", ")
        .map(|s| s.trim_end_matches(" MiB").parse::<f64>().unwrap())
        .collect()
}

/// The VMAs of `pid` with VmFlags `flag`.
fn vmas_flagged(pid: i32, flag: &str) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("VmFlags:"))
        .filter(|f| f.split_whitespace().any(|c| c == flag))
        .count()
}

#[test]
fn pre_copy_restores_every_page_as_last_written() {
    let mut w = Workload::spawn("writer", &["64", "4"]);
    let key = psk(w.dir());
    let mut serve = Serve::start(w.dir(), &key);
    assert!(
        w.cmd("verify").starts_with("ok "),
        "the workload checks itself"
    );
    let out = w.cryo(&dump_args(&w, &serve, &key, "pc"));
    out.assert_success();
    w.wait_original();
    let (ok, serve_err) = serve.wait();
    assert!(ok, "the receiver committed: {serve_err}");
    let sizes = rounds(&out);
    eprintln!("pre-copy rounds (MiB): {sizes:?}; {out}");
    assert!(!sizes.is_empty(), "the dump reports its rounds: {out}");
    assert!(sizes[0] >= 60.0, "round 0 sends all the memory: {sizes:?}");
    assert!(
        sizes.len() == 1 || sizes.last().unwrap() < &sizes[0],
        "rounds shrink: {sizes:?}"
    );
    // The original wrote its last write number here before it was frozen.
    let last: u64 = {
        let b = std::fs::read(w.path("last")).unwrap();
        u64::from_ne_bytes(b[..8].try_into().unwrap())
    };
    let img = serve.root.join("pc");
    let names: Vec<String> = std::fs::read_dir(&img)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("precopy-")),
        "the committed image holds no rounds: {names:?}"
    );
    w.restore_detached(&img).assert_success();
    let reply = w.cmd("verify");
    let fields: Vec<&str> = reply.split_whitespace().collect();
    assert_eq!(
        fields.first(),
        Some(&"ok"),
        "every page as last written: {reply}"
    );
    let counter: u64 = fields[1].parse().unwrap();
    assert!(
        counter + 1 >= last,
        "the restored counter {counter} is not behind the original's last write {last}"
    );
    w.kill_restored();
}

#[test]
fn pre_copy_refuses_a_process_with_its_own_userfaultfd() {
    let w = Workload::spawn("writer", &["4", "1"]);
    let key = psk(w.dir());
    let mut serve = Serve::start(w.dir(), &key);
    let fd = w.cmd("uffd");
    let fds_before = parse_fds(&w.cmd("fds"));
    let out = w.cryo(&dump_args(&w, &serve, &key, "uf"));
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {}", w.pid()))
        .assert_stderr_mentions(&format!("fd {fd} is a userfaultfd"));
    let (ok, _) = serve.wait();
    assert!(!ok, "nothing committed");
    assert!(w.cmd("verify").starts_with("ok "), "runs on as before");
    assert_eq!(parse_fds(&w.cmd("fds")), fds_before);
    assert_eq!(vmas_flagged(w.pid(), "uw"), 0);
}

#[test]
fn pre_copy_rolled_back_when_the_receiver_dies() {
    let w = Workload::spawn("writer", &["128", "4"]);
    let key = psk(w.dir());
    let serve = Serve::start(w.dir(), &key);
    let fds_before = parse_fds(&w.cmd("fds"));
    let err = w.dir().join("dump.stderr");
    let mut dump = Command::new(cryo_bin())
        .args(dump_args(&w, &serve, &key, "gone"))
        .env("CRYO_TEST_PAUSE_AT", "pre-copy-round")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    // Paused after round 0 (the hook waits for a signal): the tracking is in place.
    let deadline = Instant::now() + TIMEOUT;
    while !std::fs::read_to_string(&err)
        .unwrap_or_default()
        .contains("paused at pre-copy-round")
    {
        assert!(Instant::now() < deadline, "the dump never paused");
        assert!(dump.try_wait().unwrap().is_none(), "the dump ended early");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(serve.partial().is_some(), "round 0 is on the receiver");
    assert!(
        vmas_flagged(w.pid(), "uw") > 0,
        "cryo's tracking is in place"
    );
    // The receiver dies, then the dump goes on (SIGTERM ends the pause): it fails either
    // way, and must leave the target as it was.
    drop(serve);
    // SAFETY: kill takes a pid and a signal; the pid is our own child, not yet reaped.
    unsafe { libc::kill(dump.id() as i32, libc::SIGTERM) };
    let status = dump.wait().unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(!status.success(), "the dump failed: {stderr}");
    assert_eq!(vmas_flagged(w.pid(), "uw"), 0, "no tracking left: {stderr}");
    assert_eq!(parse_fds(&w.cmd("fds")), fds_before, "fds as before");
    assert!(w.cmd("verify").starts_with("ok "), "runs on as before");
}

/// hugetlb memory is not tracked (write-protect works in base pages): a pre-copy sends it in
/// the frozen dump, and it comes back in huge pages with its contents.
#[test]
fn pre_copy_brings_hugetlb_memory_back_in_huge_pages() {
    let _turn = cryo_tests::huge_pages::turn(24);
    let mut w = Workload::spawn("hugetlb", &[]);
    let key = psk(w.dir());
    let mut serve = Serve::start(w.dir(), &key);
    let views = ["priv", "shared", "memfd", "sysv", "nr", "zeros"];
    let seen = |w: &Workload| -> Vec<String> {
        views
            .iter()
            .map(|v| {
                assert_eq!(w.cmd(&format!("check {v}")), "ok", "the pattern of {v}");
                w.cmd(&format!("smaps {v}"))
            })
            .collect()
    };
    let before = seen(&w);
    let out = w.cryo(&dump_args(&w, &serve, &key, "huge"));
    out.assert_success();
    w.wait_original();
    let (ok, serve_err) = serve.wait();
    assert!(ok, "the receiver committed: {serve_err}");
    w.restore_detached(&serve.root.join("huge"))
        .assert_success();
    assert_eq!(seen(&w), before, "hugetlb VMAs after the restore");
    assert_eq!(w.cmd("kid check shared"), "ok");
    w.kill_restored();
}

/// Guard pages (MADV_GUARD_INSTALL) show as swapped pages written since the start: a round
/// sends none of them (reading one fails), and they come back guards. Droppable memory
/// (which no userfaultfd tracks) is sent by no round and comes back droppable, dropped.
#[test]
fn pre_copy_brings_guard_pages_and_droppable_memory_back() {
    for (mode, check, want) in [
        ("guarded", "probe", "anon=.GG.G. file=G.G."),
        ("droppable", "data", "d=zero r=zero"),
    ] {
        let mut w = Workload::spawn("special-maps", &[mode]);
        let key = psk(w.dir());
        let mut serve = Serve::start(w.dir(), &key);
        let before = if mode == "droppable" {
            "d=intact r=intact"
        } else {
            want
        };
        assert_eq!(w.cmd(check), before, "{mode}: before the dump");
        let out = w.cryo(&dump_args(&w, &serve, &key, mode));
        out.assert_success();
        w.wait_original();
        let (ok, serve_err) = serve.wait();
        assert!(ok, "{mode}: the receiver committed: {serve_err}");
        w.restore_detached(&serve.root.join(mode)).assert_success();
        assert_eq!(w.cmd(check), want, "{mode}: after the restore");
        w.kill_restored();
    }
}
