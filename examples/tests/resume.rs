//! The resume examples, in Rust and in node.js: each is started, the engine's notify module
//! finds its channel from outside (memfd marker for Rust, cryo-resume* FIFO for node) and
//! writes a record, and the example prints it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cryo_core::notify;
use cryo_core::Pid;
use cryo_resume::{BrokenConnection, BrokenReason, ResumeEvent};

const TIMEOUT: Duration = Duration::from_secs(20);

fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("examples").join(name);
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "cryo-examples", "--example", name])
            .status()
            .unwrap();
        assert!(status.success());
    }
    bin
}

/// A started example whose stdout goes to a file; killed on drop.
struct App {
    child: Child,
    out: PathBuf,
}

impl App {
    fn start(cmd: &mut Command, dir: &Path) -> Self {
        let out = dir.join("stdout");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        Self { child, out }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    #[track_caller]
    fn wait_line(&mut self, prefix: &str) -> String {
        let start = Instant::now();
        loop {
            let text = fs::read_to_string(&self.out).unwrap_or_default();
            if let Some(l) = text.lines().find(|l| l.starts_with(prefix)) {
                return l.to_owned();
            }
            let stderr = fs::read_to_string(self.out.with_file_name("stderr")).unwrap_or_default();
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the example exited; stdout {text:?} stderr {stderr:?}"
            );
            assert!(
                start.elapsed() < TIMEOUT,
                "no {prefix:?} line; stdout {text:?} stderr {stderr:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn record() -> ResumeEvent {
    ResumeEvent {
        checkpoint_id: "ck-example".into(),
        downtime_ms: 77,
        broken: vec![BrokenConnection {
            fd: 9,
            local: "127.0.0.1:7000".into(),
            remote: "127.0.0.1:45000".into(),
            reason: BrokenReason::Timeout,
        }],
    }
}

#[test]
fn rust_example_prints_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = App::start(&mut Command::new(example_binary("resume-rust")), dir.path());
    let ready = app.wait_line("pid ");
    let fd: i32 = ready.rsplit(' ').next().unwrap().parse().unwrap();
    let l = notify::find_listener(app.pid()).unwrap().expect("listener");
    assert_eq!(l.fd, fd);
    assert!(l.marker_fd.is_some());
    notify::notify(app.pid(), &l, &record()).unwrap();
    let line = app.wait_line("restored from ");
    assert_eq!(
        line,
        "restored from ck-example after 77 ms; 1 broken connection(s)"
    );
    let detail = app.wait_line("  fd 9 ");
    assert_eq!(detail, "  fd 9 127.0.0.1:7000 -> 127.0.0.1:45000: Timeout");
}

#[test]
fn node_example_prints_the_record() {
    if Command::new("node").arg("--version").output().is_err() {
        panic!("node is not installed: this test needs node (v20 on these machines)");
    }
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("cryo-resume-node-test");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("resume-node/app.js");
    let mut app = App::start(Command::new("node").arg(&script).arg(&fifo), dir.path());
    let ready = app.wait_line("listening ");
    let mut words = ready.split(' ').skip(1);
    let fd: i32 = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), fifo.to_str());
    let l = notify::find_listener(app.pid()).unwrap().expect("listener");
    assert_eq!(l.fd, fd);
    assert_eq!(l.marker_fd, None, "a FIFO channel has no marker");
    notify::notify(app.pid(), &l, &record()).unwrap();
    let line = app.wait_line("resumed ");
    let ev: ResumeEvent = serde_json::from_str(line.strip_prefix("resumed ").unwrap()).unwrap();
    assert_eq!(ev, record());
    let detail = app.wait_line("broken fd ");
    assert_eq!(
        detail,
        "broken fd 9 127.0.0.1:7000 -> 127.0.0.1:45000: timeout"
    );
    // A second restore, a second line.
    let mut again = record();
    again.checkpoint_id = "ck-2".into();
    again.broken.clear();
    notify::notify(app.pid(), &l, &again).unwrap();
    app.wait_line("resumed {\"checkpoint_id\":\"ck-2\"");
}
