//! Pty pairs whose both ends are in the dump: a terminal and the shell on it come back as a
//! connected pair with the same /dev/pts/N, modes, window size, session, controlling
//! terminal and foreground group; a tmux server with two windows comes back with both
//! shells answering and clients able to attach.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`); the tmux test needs tmux
//! and script (util-linux) on the PATH.
//!
//! The tests take one lock: a restore needs the dumped pty index free, and devpts hands out
//! the lowest free one, so a pty opened by a neighbouring test between dump and restore would
//! take it.

use std::ffi::CString;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cryo_tests::{
    control_dir, cryo_bin, pid_exists, run_cryo, Pidfd, TempDir, Workload, CMD_TIMEOUT,
};
use nix::fcntl::OFlag;

/// SIGKILLs a process on drop (a restored shell, which no harness owns).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(p) = Pidfd::open(self.0) {
            let _ = p.signal(libc::SIGKILL);
        }
    }
}

/// Fields 5-8 of /proc/PID/stat as the shell reads them itself: pgrp, session, tty_nr, tpgid.
fn own_stat(w: &Workload) -> String {
    let line = w.cmd("sh read l < /proc/$$/stat; echo $l");
    let after = &line[line.rfind(')').expect("comm in stat") + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    format!(
        "pgrp {} session {} tty_nr {} tpgid {}",
        f[2], f[3], f[4], f[5]
    )
}

#[test]
fn a_shell_on_a_pty_comes_back_with_its_terminal() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let mut w = Workload::spawn("pty-shell", &[]);
    let shell: i32 = w.cmd("child").parse().unwrap();
    let _shell = KillOnDrop(shell);
    let pty = w.cmd("pty");
    assert_eq!(w.cmd("sh tty"), format!("{pty}|"));
    // Modes and window size set from inside, by the shell's own stty.
    w.cmd("sh stty rows 33 cols 101 -ixon erase ^H intr ^B");
    let modes = w.cmd("sh stty -a");
    assert!(modes.contains("rows 33; columns 101"), "{modes}");
    assert!(
        modes.contains("intr = ^B") && modes.contains("-ixon"),
        "{modes}"
    );
    let stat = own_stat(&w);
    // The shell's fds on the terminal: the slave and its /dev/tty (dash keeps it at fd 10),
    // their status flags and close-on-exec.
    let fd_flags = "sh grep -h flags /proc/$$/fdinfo/0 /proc/$$/fdinfo/10";
    let flags = w.cmd(fd_flags);
    assert!(
        stat.starts_with(&format!("pgrp {shell} session {shell} ")),
        "{stat}"
    );
    assert!(
        !stat.contains("tty_nr 0 "),
        "the shell has its controlling tty: {stat}"
    );

    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_detached(&img);

    // The same terminal, seen from the restored shell: path, modes, window size, session,
    // controlling terminal and foreground group.
    assert_eq!(w.cmd("sh tty"), format!("{pty}|"));
    assert_eq!(w.cmd("sh stty -a"), modes);
    assert_eq!(own_stat(&w), stat);
    assert_eq!(w.cmd(fd_flags), flags);
    // Job control works: a foreground job may change the terminal (a background one would be
    // stopped by SIGTTOU), and the master sees what it prints.
    assert_eq!(w.cmd("sh stty rows 40 cols 120; stty size"), "40 120|");
    assert_eq!(w.cmd("sh echo A$((1+1))"), "A2|");
    let img2 = w.path("img2");
    w.dump_ok(&img2);
    w.restore_detached(&img2);
    assert_eq!(w.cmd("sh echo A$((1+2))"), "A3|");
    w.kill_restored();
}

#[test]
fn a_pty_keeps_its_packet_mode_and_slave_lock() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let mut w = Workload::spawn("pty-shell", &[]);
    let _shell = KillOnDrop(w.cmd("child").parse().unwrap());
    assert_eq!(w.cmd("pty-state"), "packet 0 locked 0");
    w.cmd("pty-set packet lock");
    // Locked: the shell's own fds still work (reads of the master in packet mode start with
    // a status byte).
    let state = "packet 1 locked 1";
    assert_eq!(w.cmd("pty-state"), state);
    assert_eq!(w.cmd("sh echo A$((1+1))"), "A2|");
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_detached(&img);
    // Seen by the restored process through its own master.
    assert_eq!(w.cmd("pty-state"), state);
    assert_eq!(w.cmd("sh echo B$((1+2))"), "B3|");
    w.kill_restored();
}

/// The slave's node keeps the owner, group and mode a process gave it (zdtm's pty01 fchowns
/// it; `mesg n` clears its group write bit): the shell on it reads them after the restore.
#[test]
fn a_pty_slave_node_keeps_its_owner_group_and_mode() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let mut w = Workload::spawn("pty-shell", &[]);
    let _shell = KillOnDrop(w.cmd("child").parse().unwrap());
    let node = "1234.4321.600|";
    assert_eq!(
        w.cmd("sh chown 1234:4321 $(tty) && chmod 600 $(tty) && stat -c %u.%g.%a $(tty)"),
        node
    );
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_detached(&img);
    assert_eq!(
        w.cmd("sh stat -c %u.%g.%a $(tty)"),
        node,
        "seen by the restored shell"
    );
    w.kill_restored();
}

/// Pty slave `path` opened by the test (a process outside the dump), not as its controlling
/// terminal.
fn open_slave(path: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .unwrap()
}

#[test]
fn a_pty_whose_slave_is_outside_the_dump_is_refused() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let w = Workload::spawn("pty-shell", &["master-only"]);
    let pty = w.cmd("pty");
    // The slave held by the test, not by the dumped process.
    let slave = open_slave(&pty);
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions("fd 60")
        .assert_stderr_mentions(&format!("pty master of {pty}"))
        .assert_stderr_mentions("no dumped process holds its slave");
    w.assert_untouched();
    drop(slave);
}

#[test]
fn a_controlling_terminal_outside_the_dump_is_refused() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    // The master stays with the test (close-on-exec); the workload takes the slave as its
    // controlling terminal and keeps no fd on it.
    let master =
        nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).unwrap();
    nix::pty::grantpt(&master).unwrap();
    nix::pty::unlockpt(&master).unwrap();
    let path = nix::pty::ptsname_r(&master).unwrap();
    let slave = CString::new(path.clone()).unwrap();
    let w = Workload::spawn_configured(control_dir(), "counter", &[], |c| {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            c.pre_exec(move || {
                libc::setsid();
                let fd = libc::open(slave.as_ptr(), libc::O_RDWR);
                if fd < 0 || libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
    });
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions(&format!(
            "its controlling terminal {path} is outside the dump"
        ));
    w.assert_untouched();
    drop(master);
}

/// Holds pty `index` (once the dumped one is gone): opens /dev/ptmx until devpts gives it,
/// keeping the lower ones too.
fn hold_pty_index(index: u32) -> Vec<nix::pty::PtyMaster> {
    let path = format!("/dev/pts/{index}");
    let deadline = Instant::now() + CMD_TIMEOUT;
    while Path::new(&path).exists() {
        assert!(Instant::now() < deadline, "{path} stays after the dump");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut held = Vec::new();
    loop {
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).unwrap();
        let name = nix::pty::ptsname_r(&master).unwrap();
        held.push(master);
        let got: u32 = name.trim_start_matches("/dev/pts/").parse().unwrap();
        if got == index {
            return held;
        }
        assert!(got < index, "{path} was taken by someone else ({name})");
    }
}

#[test]
fn a_taken_pty_index_is_refused_at_restore_before_anything_is_created() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let mut w = Workload::spawn("pty-shell", &[]);
    let _shell = KillOnDrop(w.cmd("child").parse().unwrap());
    let pty = w.cmd("pty");
    let index: u32 = pty.trim_start_matches("/dev/pts/").parse().unwrap();
    let img = w.path("img");
    w.dump_ok(&img);
    let held = hold_pty_index(index);
    w.cryo(&["restore", "-D", img.to_str().unwrap(), "--detach"])
        .assert_refused()
        .assert_stderr_mentions(&format!("{pty} is taken on this machine"));
    assert!(
        !pid_exists(w.pid()),
        "the refused restore created a process"
    );
    // Once the index is free again, the same image restores.
    drop(held);
    w.restore_detached(&img);
    assert_eq!(w.cmd("sh tty"), format!("{pty}|"));
    w.kill_restored();
}

/// A tmux server on a socket in the test's dir, killed (server and shells) on drop.
struct Tmux {
    dir: TempDir,
    sock: PathBuf,
    pid: Option<i32>,
    clients: Vec<Child>,
}

impl Tmux {
    fn start() -> Self {
        let dir = control_dir();
        let sock = dir.path().join("tmux.sock");
        let mut t = Tmux {
            dir,
            sock,
            pid: None,
            clients: Vec::new(),
        };
        t.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            "sh",
        ]);
        t.pid = Some(t.run(&["display", "-p", "#{pid}"]).trim().parse().unwrap());
        t.run(&["new-window", "-d", "sh"]);
        t
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.sock).args(args);
        c.env("PS1", "$ ").env_remove("TMUX");
        c.stdin(Stdio::null());
        c
    }

    /// `tmux -S SOCK ARGS`: must succeed; its stdout.
    #[track_caller]
    fn run(&self, args: &[&str]) -> String {
        let out = self
            .command(args)
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("run tmux (is it installed?): {e}"));
        assert!(
            out.status.success(),
            "tmux {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `line` into window `window` once its shell shows its prompt, and waits (bounded)
    /// until its pane shows a line `expect`; panics with the pane otherwise. (Typed before
    /// the prompt, the line is echoed by the terminal first and the answer lands after the
    /// prompt: "# B3".)
    #[track_caller]
    fn answers(&self, window: u32, line: &str, expect: &str) {
        let target = format!(":{window}");
        let deadline = Instant::now() + CMD_TIMEOUT;
        loop {
            let pane = self.run(&["capture-pane", "-p", "-t", &target]);
            let last = pane.lines().rev().find(|l| !l.trim().is_empty());
            if last.is_some_and(|l| matches!(l.trim_end().chars().last(), Some('#' | '$'))) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "window {window} shows no prompt:\n{pane}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.run(&["send-keys", "-t", &target, line, "Enter"]);
        let deadline = Instant::now() + CMD_TIMEOUT;
        loop {
            let pane = self.run(&["capture-pane", "-p", "-t", &target]);
            if pane.lines().any(|l| l.trim_end() == expect) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "window {window} did not answer {line:?} with {expect:?}:\n{pane}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cryo(&self, tag: &str, args: &[&str]) -> cryo_tests::CryoOutput {
        run_cryo(self.dir.path(), tag, args)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        for c in &mut self.clients {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self
            .command(&["kill-server"])
            .stderr(Stdio::null())
            .status();
        if let Some(p) = self.pid.and_then(|p| Pidfd::open(p).ok()) {
            let _ = p.signal(libc::SIGKILL);
        }
    }
}

/// Waits (bounded) for `pid` to be gone.
fn wait_gone(pid: i32) {
    if let Ok(p) = Pidfd::open(pid) {
        assert!(
            p.wait_exit(CMD_TIMEOUT),
            "pid {pid} still runs after the dump"
        );
    }
}

#[test]
fn a_tmux_server_with_two_shells_comes_back_attachable() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let mut tmux = Tmux::start();
    let pid = tmux.pid.unwrap();
    tmux.answers(0, "echo A$((1+1))", "A2");
    tmux.answers(1, "echo B$((1+2))", "B3");
    let ttys = tmux.run(&[
        "list-panes",
        "-a",
        "-F",
        "#{window_index} #{pane_tty} #{pane_pid}",
    ]);
    let shells: Vec<i32> = ttys
        .lines()
        .map(|l| l.split(' ').nth(2).unwrap().parse().unwrap())
        .collect();
    let _shells: Vec<KillOnDrop> = shells.iter().map(|&p| KillOnDrop(p)).collect();

    let img = tmux.path("img");
    let img_arg = img.to_str().unwrap();
    tmux.cryo(
        "cryo-1-dump",
        &["dump", "-t", &pid.to_string(), "-D", img_arg],
    )
    .assert_success();
    wait_gone(pid);
    tmux.cryo("cryo-2-restore", &["restore", "-D", img_arg, "--detach"])
        .assert_success();

    // Both shells answer, on the same terminals.
    tmux.answers(0, "echo A$((2+2))", "A4");
    tmux.answers(1, "echo B$((2+3))", "B5");
    assert_eq!(
        tmux.run(&[
            "list-panes",
            "-a",
            "-F",
            "#{window_index} #{pane_tty} #{pane_pid}"
        ]),
        ttys
    );
    // A client attaches (on a terminal of script's) and the server lists it.
    let attach = format!("tmux -S {} attach", tmux.sock.display());
    let client = Command::new("script")
        .args(["-qfc", &attach, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run script (util-linux)");
    tmux.clients.push(client);
    let deadline = Instant::now() + CMD_TIMEOUT;
    while tmux.run(&["list-clients"]).trim().is_empty() {
        assert!(Instant::now() < deadline, "no client could attach");
        std::thread::sleep(Duration::from_millis(20));
    }
    tmux.answers(0, "echo C$((3+3))", "C6");
    tmux.run(&["kill-server"]);
    wait_gone(pid);
}

#[test]
fn a_pty_slave_also_held_outside_the_dump_is_refused() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let w = Workload::spawn("pty-shell", &[]);
    let shell: i32 = w.cmd("child").parse().unwrap();
    let _shell = KillOnDrop(shell);
    let pty = w.cmd("pty");
    // The slave opened by the test too: a process outside the dump.
    let slave = open_slave(&pty);
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_mentions(&format!("pid {shell} fd "))
        .assert_stderr_mentions(&format!(
            "pty slave {pty}: also held by pid {}",
            std::process::id()
        ));
    w.assert_untouched();
    assert_eq!(w.cmd("sh tty"), format!("{pty}|"));
    drop(slave);
}

/// The pty-pair workload's reads of both ends: what the slave reads (one [line] per read),
/// then what the master reads.
fn unread(w: &Workload) -> (String, String) {
    (w.cmd("read-slave"), w.cmd("read-master"))
}

/// Input the slave has not read (a complete line, one VEOF ended, an empty one VEOF ended,
/// a partial line) and output the master has not read: still there, unchanged, after a
/// `--leave-running` dump and in the restored process, and no echo of the input again.
#[test]
fn a_pty_keeps_the_input_and_output_neither_end_has_read() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let mut w = Workload::spawn("pty-pair", &[]);
    // Canonical mode with echo: the master reads the echo here, before the dump.
    w.cmd(r"type ab\ncd\x04\x04ef ab\r\ncdef");
    w.cmd(r"print out\n 5");
    let expected = (r"[ab\n][cd][]".to_string(), r"out\r\n".to_string());
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(unread(&w), expected, "the original after --leave-running");
    // The partial line is there: a newline completes it.
    w.cmd(r"type \n \r\n");
    assert_eq!(w.cmd("read-slave"), r"[ef\n]");
    w.kill_original();
    w.restore_detached(&img);
    assert_eq!(unread(&w), expected, "the restored process");
    w.cmd(r"type \n \r\n");
    assert_eq!(w.cmd("read-slave"), r"[ef\n]");
    w.kill_restored();
}

/// A slave in raw mode: its unread input comes back byte for byte (no translation of \r,
/// no signal for ^C, NUL and 0xff kept).
#[test]
fn a_raw_pty_keeps_its_unread_input_byte_for_byte() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let mut w = Workload::spawn("pty-pair", &[]);
    w.cmd("raw");
    w.cmd(r"type a\r\x03\x00\xff\x13\n -");
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_detached(&img);
    assert_eq!(w.cmd("read-slave"), r"[a\r\x03\x00\xff\x13\n]");
    w.kill_restored();
}

/// What a restore would not put back as it was is refused, and left where it was: a packet
/// status byte the master has not read, a queue too long to be sure it is all seen.
#[test]
fn pty_queues_a_restore_would_not_put_back_are_refused_and_kept() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let w = Workload::spawn("pty-pair", &[]);
    w.cmd("packet");
    w.cmd("flush");
    w.assert_dump_refused("60", "a packet-mode status byte the master has not read");
    let w = Workload::spawn("pty-pair", &[]);
    w.cmd("raw");
    let long = "x".repeat(3500);
    w.cmd(&format!("type {long} -"));
    w.assert_dump_refused("61", "3500 bytes of input not read yet");
    assert_eq!(w.cmd("read-slave"), format!("[{long}]"));
}

/// A pty whose slave was opened and closed (no process holds it): its master reads EIO
/// after the restore as before, the input typed before the close is still there for the
/// slave opened again, which then works both ways. A --leave-running dump leaves the
/// original so too.
#[test]
fn a_pty_whose_slave_was_closed_comes_back_closed_and_opens_again() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let mut w = Workload::spawn("pty-pair", &[]);
    w.cmd(r"type ab\n ab\r\n");
    w.cmd("close-slave");
    assert_eq!(w.cmd("read-master"), "EIO");
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(
        w.cmd("read-master"),
        "EIO",
        "the original after --leave-running"
    );
    w.kill_original();
    w.restore_detached(&img);
    assert_eq!(w.cmd("read-master"), "EIO", "the restored master");
    w.cmd("open-slave");
    assert_eq!(w.cmd("read-master"), "");
    assert_eq!(w.cmd("read-slave"), r"[ab\n]");
    w.cmd(r"print x\n 3");
    assert_eq!(w.cmd("read-master"), r"x\r\n");
    w.kill_restored();
}

/// A session leader whose controlling terminal is a pty slave it holds no fd on (closed
/// since), the master its own: it comes back with that controlling terminal, /dev/tty opens.
#[test]
fn a_session_leader_keeps_a_controlling_terminal_it_holds_no_fd_on() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let mut w = Workload::spawn_configured(control_dir(), "pty-pair", &[], |c| {
        cryo_tests::own_session(c);
    });
    w.cmd("take-ctty");
    w.cmd("close-slave");
    let ctty = w.cmd("ctty");
    assert_ne!(ctty, "0");
    assert_eq!(w.cmd("open-tty"), "ok");
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_detached(&img);
    assert_eq!(
        w.cmd("ctty"),
        ctty,
        "the restored process's controlling terminal"
    );
    assert_eq!(w.cmd("open-tty"), "ok");
    assert_eq!(w.cmd("read-master"), "EIO");
    w.kill_restored();
}

/// A slave whose master was closed (hung up: reads end of file, every other call EIO) comes
/// back hung up, on the same /dev/pts/N device.
#[test]
fn a_pty_slave_whose_master_was_closed_comes_back_hung_up() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let mut w = Workload::spawn("pty-pair", &[]);
    let index = w.cmd("pty").trim_start_matches("/dev/pts/").to_string();
    assert_eq!(
        w.cmd("slave-state"),
        format!("read blocks write 0 modes 0 dev 136:{index}")
    );
    w.cmd("close-master");
    let hung_up = format!("read 0 write EIO modes EIO dev 136:{index}");
    assert_eq!(w.cmd("slave-state"), hung_up);
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_detached(&img);
    assert_eq!(w.cmd("slave-state"), hung_up, "the restored slave");
    w.kill_restored();
}

/// A session leader whose controlling terminal is a pty its parent made and holds (master
/// and slave), the leader holding only /dev/tty on it (it took the slave, then closed it):
/// after a `--leave-running` dump and after a restore it has the same controlling terminal,
/// its /dev/tty is that slave (TIOCGDEV) and what it writes there reaches the master.
#[test]
fn a_session_leader_holding_only_dev_tty_on_its_parents_pty_comes_back_with_it() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let mut w = Workload::spawn("pty-pair", &[]);
    let kid: i32 = w.cmd("fork-kid leader").parse().unwrap();
    let index = w.cmd("pty").trim_start_matches("/dev/pts/").to_string();
    let state = w.cmd("kid tty-state");
    assert!(
        state.ends_with(&format!(" dev 136:{index} leader yes")) && !state.starts_with("ctty 0 "),
        "{state}"
    );
    let writes = |w: &Workload, what: &str| {
        assert_eq!(w.cmd(&format!(r"kid tty-write {what}\n")), "ok");
        let n = what.len() + 2;
        assert_eq!(w.cmd(&format!("read-master {n}")), format!(r"{what}\r\n"));
    };
    writes(&w, "hi");
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(
        w.cmd("kid tty-state"),
        state,
        "the original after --leave-running"
    );
    writes(&w, "still");
    w.kill_original();
    wait_gone(kid);
    w.restore_detached(&img);
    assert_eq!(w.cmd("kid tty-state"), state, "the restored leader");
    writes(&w, "back");
    w.kill_restored();
}

/// As above with the parent holding the master only: the slave is held by the leader's
/// /dev/tty alone. It comes back so, the slave node with the mode it had; the slave also
/// opened by a process outside the dump is refused, naming the leader's pid and fd.
#[test]
fn a_session_leader_holding_the_only_slave_open_through_dev_tty_comes_back_with_it() {
    use std::os::unix::fs::PermissionsExt;
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let mut w = Workload::spawn("pty-pair", &[]);
    let kid: i32 = w.cmd("fork-kid leader").parse().unwrap();
    assert_eq!(w.cmd("close-slave"), "ok");
    let pty = w.cmd("pty");
    std::fs::set_permissions(&pty, std::fs::Permissions::from_mode(0o604)).unwrap();
    let state = w.cmd("kid tty-state");
    assert!(state.ends_with(" leader yes"), "{state}");
    let writes = |w: &Workload, what: &str| {
        assert_eq!(w.cmd(&format!(r"kid tty-write {what}\n")), "ok");
        let n = what.len() + 2;
        assert_eq!(w.cmd(&format!("read-master {n}")), format!(r"{what}\r\n"));
    };
    writes(&w, "hi");
    let outside = open_slave(&pty);
    w.dump(&w.path("refused"), &[])
        .assert_refused()
        .assert_stderr_has_word(&kid.to_string())
        .assert_stderr_mentions("fd 62")
        .assert_stderr_mentions(&format!("also held by pid {}", std::process::id()));
    w.assert_untouched();
    drop(outside);
    assert_eq!(w.cmd("kid tty-state"), state);
    let img = w.path("img");
    w.dump_ok(&img);
    wait_gone(kid);
    w.restore_detached(&img);
    assert_eq!(w.cmd("kid tty-state"), state, "the restored leader");
    writes(&w, "back");
    let mode = std::fs::metadata(&pty).unwrap().permissions().mode() & 0o7777;
    assert_eq!(format!("{mode:o}"), "604", "the slave node's mode");
    w.kill_restored();
}

/// A session leader whose controlling terminal's pair is held by its child only (the leader
/// took the slave, opened /dev/tty and closed its fds on the pair, the child kept both
/// ends): it comes back with that terminal, its child in the session with it too.
#[test]
fn a_session_leader_whose_terminal_pair_its_child_holds_comes_back_with_it() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let mut w = Workload::spawn_configured(control_dir(), "pty-pair", &[], |c| {
        cryo_tests::own_session(c);
    });
    w.cmd("take-ctty");
    let ctty = w.cmd("ctty");
    let kid: i32 = w.cmd("fork-kid pair").parse().unwrap();
    let _kid = KillOnDrop(kid);
    let state = w.cmd("tty-state");
    assert!(state.starts_with(&format!("ctty {ctty} ")), "{state}");
    assert_eq!(w.cmd("kid ctty"), ctty);
    let writes = |w: &Workload, what: &str| {
        assert_eq!(w.cmd(&format!(r"tty-write {what}\n")), "ok");
        let n = what.len() + 2;
        assert_eq!(
            w.cmd(&format!("kid read-master {n}")),
            format!(r"{what}\r\n")
        );
    };
    writes(&w, "hi");
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_detached(&img);
    assert_eq!(w.cmd("tty-state"), state, "the restored leader");
    assert_eq!(w.cmd("kid ctty"), ctty, "the restored child");
    writes(&w, "back");
    w.kill_restored();
}

/// A session leader whose controlling terminal's master is held outside the dump (by the
/// test), holding /dev/tty on it: refused, naming its pid and fd, with and without
/// `--leave-running`, the process left as it was.
#[test]
fn a_dev_tty_whose_master_is_outside_the_dump_is_refused() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let master =
        nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).unwrap();
    nix::pty::grantpt(&master).unwrap();
    nix::pty::unlockpt(&master).unwrap();
    let path = nix::pty::ptsname_r(&master).unwrap();
    let slave = CString::new(path.clone()).unwrap();
    let w = Workload::spawn_configured(control_dir(), "pty-pair", &[], |c| {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            c.pre_exec(move || {
                libc::setsid();
                let fd = libc::open(slave.as_ptr(), libc::O_RDWR);
                if fd < 0 || libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
    });
    assert_eq!(w.cmd("open-tty-at"), "ok");
    let state = w.cmd("tty-state");
    for extra in [&[][..], &["--leave-running"][..]] {
        w.dump(&w.path("img"), extra)
            .assert_refused()
            .assert_stderr_has_word(&w.pid().to_string())
            .assert_stderr_mentions("fd 62")
            .assert_stderr_mentions(&format!(
                "pty slave {path}: its master is held outside the dump"
            ));
        w.assert_untouched();
        assert_eq!(w.cmd("tty-state"), state);
    }
    drop(master);
}

/// Unread input or output while a description of the end that reads it has O_ASYNC is
/// refused (putting it back would send SIGIO), naming the fd, and left where it was.
#[test]
fn pty_queues_under_o_async_are_refused_and_kept() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let w = Workload::spawn("pty-pair", &[]);
    w.cmd("raw");
    w.cmd("async");
    w.cmd("type ab -");
    w.assert_dump_refused(
        "61",
        "2 bytes of input not read yet while a description of it has O_ASYNC",
    );
    assert_eq!(w.cmd("read-slave"), "[ab]");
    w.cmd(r"print out 3");
    w.assert_dump_refused(
        "60",
        "3 bytes written by the slave not read yet while a description of it has O_ASYNC",
    );
    assert_eq!(w.cmd("read-master"), "out");
}

/// Unread input under EXTPROC is refused, naming the slave's fd, and left where it was.
#[test]
fn pty_input_under_extproc_is_refused_and_kept() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let w = Workload::spawn("pty-pair", &[]);
    w.cmd("raw");
    w.cmd("extproc");
    w.cmd("type ab -");
    w.assert_dump_refused("61", "2 bytes of input not read yet in EXTPROC mode");
    assert_eq!(w.cmd("read-slave"), "[ab]");
}

/// Raw input with IXON on holding a byte that is now the VSTOP character (typed before it
/// was made one) comes back byte for byte, output not stopped, after a `--leave-running`
/// dump and a restore; with the master in packet mode such input is refused and kept.
#[test]
fn raw_input_holding_a_flow_character_comes_back_byte_for_byte() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    let mut w = Workload::spawn("pty-pair", &[]);
    w.cmd("raw");
    w.cmd("ixon");
    w.cmd("type axb -");
    w.cmd("vstop 78");
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(
        w.cmd("read-slave"),
        "[axb]",
        "the original after --leave-running"
    );
    w.cmd(r"print o 1");
    assert_eq!(w.cmd("read-master"), "o", "the original's output flows");
    w.kill_original();
    w.restore_detached(&img);
    assert_eq!(w.cmd("read-slave"), "[axb]", "the restored slave");
    w.cmd(r"print o 1");
    assert_eq!(w.cmd("read-master"), "o", "the restored output flows");
    w.kill_restored();

    // Packet mode last: a mode change before it queues no status byte for the master.
    let w = Workload::spawn("pty-pair", &[]);
    w.cmd("raw");
    w.cmd("ixon");
    w.cmd("packet");
    w.cmd("type axb -");
    w.assert_dump_refused(
        "61",
        "3 bytes of raw input not read yet with IXON on while the master is in packet mode",
    );
    assert_eq!(w.cmd("read-slave"), "[axb]");
}

#[test]
fn output_stopped_by_the_stop_character_or_by_tcflow_comes_back_stopped_the_same_way() {
    cryo_bin();
    let _one = cryo_tests::pty_turn();
    // ^S: the start character restarts it, TCOON does not.
    let mut w = Workload::spawn("pty-pair", &[]);
    w.cmd("raw");
    w.cmd("ixon");
    w.cmd("flow-char stop");
    assert_eq!(w.cmd("flows"), "slave no master yes");
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(
        w.cmd("flows"),
        "slave no master yes",
        "the original after --leave-running"
    );
    w.kill_original();
    w.restore_detached(&img);
    assert_eq!(w.cmd("flows"), "slave no master yes", "the restored slave");
    w.cmd("tcflow slave on");
    assert_eq!(
        w.cmd("flows"),
        "slave no master yes",
        "TCOON restarts no output the stop character stopped"
    );
    w.cmd("flow-char start");
    assert_eq!(w.cmd("flows"), "slave yes master yes");
    w.cmd("print o 1");
    assert_eq!(w.cmd("read-master"), "o", "the restored output flows");
    w.kill_restored();

    // tcflow(TCOOFF) on both ends: TCOON restarts them, the start character does not.
    let mut w = Workload::spawn("pty-pair", &[]);
    w.cmd("raw");
    w.cmd("ixon");
    w.cmd("tcflow slave off");
    w.cmd("tcflow master off");
    assert_eq!(w.cmd("flows"), "slave no master no");
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(
        w.cmd("flows"),
        "slave no master no",
        "the original after --leave-running"
    );
    w.kill_original();
    w.restore_detached(&img);
    assert_eq!(w.cmd("flows"), "slave no master no", "the restored pair");
    // A master stopped takes no input: restarted first.
    w.cmd("tcflow master on");
    w.cmd("flow-char start");
    assert_eq!(
        w.cmd("flows"),
        "slave no master yes",
        "the start character restarts no output TCOOFF stopped"
    );
    w.cmd("tcflow slave on");
    assert_eq!(w.cmd("flows"), "slave yes master yes");
    w.kill_restored();

    // In packet mode a restore would queue a status byte: refused, left as it was.
    let w = Workload::spawn("pty-pair", &[]);
    w.cmd("packet");
    w.cmd("tcflow slave off");
    // The status byte TCOOFF queued for the master, read.
    w.cmd("read-master");
    w.assert_dump_refused(
        "61",
        "output stopped while the master is in packet mode: not supported",
    );
    assert_eq!(w.cmd("flows"), "slave no master yes");
}
