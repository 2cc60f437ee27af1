//! Shell jobs (`cryo dump -j`): a process whose stdio is a terminal comes back on the terminal
//! `cryo restore` runs on, and can read and write it there. Each test opens real ptys: the
//! workload runs on one, cryo restore on a new one; the test types into the masters and reads
//! what the restored process wrote.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cryo_tests::{control_dir, cryo_bin, Workload, CMD_TIMEOUT};
use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};

/// One pty pair, held by the test.
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
    path: String,
}

impl Pty {
    fn open() -> Self {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let path = nix::unistd::ttyname(&pty.slave)
            .expect("ttyname")
            .display()
            .to_string();
        Self {
            master: pty.master,
            slave: pty.slave,
            path,
        }
    }

    /// Puts `command`'s stdin, stdout and stderr on the slave.
    fn stdio(&self, command: &mut Command) {
        let dup = || Stdio::from(self.slave.try_clone().expect("dup the slave"));
        command.stdin(dup()).stdout(dup()).stderr(dup());
    }

    /// /proc/PID/stat's tty_nr of the slave.
    fn tty_nr(&self) -> i64 {
        let rdev = nix::sys::stat::fstat(&self.slave).expect("fstat").st_rdev;
        let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)) as i64
    }

    fn echo(&self) -> bool {
        let t = tcgetattr(&self.slave).expect("tcgetattr");
        t.local_flags.contains(LocalFlags::ECHO)
    }

    fn set_echo(&self, on: bool) {
        let mut t = tcgetattr(&self.slave).expect("tcgetattr");
        t.local_flags.set(LocalFlags::ECHO, on);
        tcsetattr(&self.slave, SetArg::TCSANOW, &t).expect("tcsetattr");
    }

    /// Types a line.
    fn type_line(&self, line: &str) {
        nix::unistd::write(&self.master, format!("{line}\n").as_bytes()).expect("write master");
    }

    /// Reads the master until `needle` shows up; panics with what came otherwise.
    #[track_caller]
    fn expect(&self, needle: &str) {
        let deadline = Instant::now() + CMD_TIMEOUT;
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut p = libc::pollfd {
                fd: self.master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, left.as_millis() as i32) };
            if r <= 0 || left == Duration::ZERO {
                panic!(
                    "{needle:?} never came on {}: {:?}",
                    self.path,
                    String::from_utf8_lossy(&seen)
                );
            }
            let mut buf = [0u8; 512];
            let n = nix::unistd::read(self.master.as_fd(), &mut buf).expect("read master");
            seen.extend_from_slice(&buf[..n]);
        }
    }
}

/// The workload's `tty` answer: (tty_nr, pgid, sid, tpgid).
fn tty_of(w: &Workload) -> (i64, i32, i32, i32) {
    let reply = w.cmd("tty");
    let f: Vec<i64> = reply
        .split(' ')
        .map(|x| x.parse().unwrap_or_else(|_| panic!("tty: {reply}")))
        .collect();
    (f[0], f[1] as i32, f[2] as i32, f[3] as i32)
}

/// The restored process reads a line typed on `pty` and writes it back there.
#[track_caller]
fn echoes_on(w: &Workload, pty: &Pty, word: &str) {
    pty.type_line(word);
    assert_eq!(w.cmd("line"), format!("ok {word}"));
    pty.expect(&format!("got {word}"));
}

#[test]
fn a_shell_job_comes_back_on_the_terminal_of_cryo_restore() {
    let _ptys = cryo_tests::pty_turn();
    cryo_bin();
    let old = Pty::open();
    old.set_echo(false);
    let mut w = Workload::spawn_configured(control_dir(), "job-shell", &["tty"], |c| old.stdio(c));
    // A job of a shell: its own group, in the foreground of the shell's terminal.
    let (tty_nr, pgid, sid, tpgid) = tty_of(&w);
    assert_eq!(tty_nr, old.tty_nr());
    assert_eq!((pgid, tpgid), (w.pid(), w.pid()));
    assert_ne!(sid, w.pid());
    echoes_on(&w, &old, "before");

    // Without -j the terminal is refused: pid, fd and terminal named.
    let refused = w.dump(&w.path("img-no-j"), &[]);
    refused
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions("fd 0")
        .assert_stderr_mentions(&old.path)
        .assert_stderr_mentions("--shell-job");
    w.assert_untouched();

    let img = w.path("img");
    w.dump(&img, &["-j"]).assert_success();
    w.wait_original();

    // cryo restore as a shell runs a command: its own session on the new terminal, which
    // is its controlling terminal, in the foreground.
    let new = Pty::open();
    assert!(new.echo());
    w.start_restore_with(&img, |c| {
        new.stdio(c);
        // SAFETY: setsid and ioctl are async-signal-safe; no memory is touched.
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            })
        };
    });
    w.await_restored();
    let cryo = w.restore_cryo_pid().expect("cryo restore runs");
    let (tty_nr, pgid, sid, tpgid) = tty_of(&w);
    assert_eq!(
        tty_nr,
        new.tty_nr(),
        "the controlling terminal is cryo restore's"
    );
    assert_eq!(
        (pgid, sid, tpgid),
        (cryo, cryo, cryo),
        "the job runs in the foreground group of cryo restore"
    );
    assert!(
        !new.echo(),
        "the terminal modes of the job (echo off) are set"
    );
    echoes_on(&w, &new, "after");
    assert_eq!(w.cmd("exit 0"), "bye");
    assert!(w.wait_restore().success());
}

#[test]
fn a_session_leader_takes_the_new_terminal_as_its_controlling_terminal() {
    let _ptys = cryo_tests::pty_turn();
    cryo_bin();
    let old = Pty::open();
    let mut w = Workload::spawn_configured(control_dir(), "tty", &["ctty"], |c| old.stdio(c));
    let pid = w.pid();
    assert_eq!(tty_of(&w), (old.tty_nr(), pid, pid, pid));
    echoes_on(&w, &old, "before");
    let img = w.path("img");
    w.dump(&img, &["--shell-job"]).assert_success();
    w.wait_original();

    // A restore without a terminal on its stdin cannot give the job one.
    w.cryo(&["restore".as_ref(), "-D".as_ref(), img.as_os_str()])
        .assert_refused()
        .assert_stderr_mentions("needs a terminal")
        .assert_stderr_mentions(&old.path)
        .assert_stderr_has_word(&pid.to_string());

    // cryo restore in a session of its own, on a terminal no session controls.
    let new = Pty::open();
    w.start_restore_with(&img, |c| {
        new.stdio(c);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                Ok(())
            })
        };
    });
    w.await_restored();
    assert_eq!(
        tty_of(&w),
        (new.tty_nr(), pid, pid, pid),
        "a session leader again, the new terminal its controlling terminal, in the foreground"
    );
    echoes_on(&w, &new, "after");
    w.kill_restored();
}
