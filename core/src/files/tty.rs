//! The terminal of a shell job (`--shell-job`): a process started from a shell has its stdio
//! on the shell's terminal, whose other end (the pty master, in sshd or a terminal emulator)
//! is no part of the dump. Such a process comes back on the terminal `cryo restore` runs on.
//!
//! ```text
//! dump     an fd on a pty slave (/dev/pts/N) -> Tty: the device, termios (TCGETS through a
//!          pidfd_getfd duplicate), whether it was the controlling terminal of the process's
//!          session (tty_nr of /proc/PID/stat) and the foreground group then (tpgid). One
//!          terminal per dump: a second one is refused.
//! restore  cryo reopens its stdin (a terminal, or the restore is refused), holds it at a slot
//!          fd the tree inherits; every Tty description reopens it with its own flags; the
//!          dumped termios are set on it once the processes are whole, before they run
//! ```
//!
//! Sessions and groups (see README "Shell jobs"): a root that was not a session leader joins
//! cryo's session and process group (task::adopt_shell_job), so it is in the terminal's
//! foreground group whenever `cryo restore` is, and the shell's job control reaches both. A
//! session leader whose controlling terminal it was gets the new terminal as its controlling
//! terminal (TIOCSCTTY) when the terminal is no session's yet; cryo never takes it from its own
//! shell's session. A group that was the terminal's foreground group takes the foreground.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use cryo_proto::image::{file_desc::Kind, FdEntry, FileDesc, ProcessEntry, Tty};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::sys::termios::{tcgetattr, tcsetattr, SetArg, Termios};
use nix::unistd::Pid;
use tracing::{debug, warn};

use super::inspect::OpenFd;
use super::kind::{task_pidfd, Dumping, FileKind, Opened, Seen, Opening};
use super::open::{open_flags, set_async};
use super::pty::is_device;
use super::{restore_err, FileError};
use crate::sys;
use crate::proc::task_stat;

/// The terminal of a shell job: a pty slave, dumped with `--shell-job`.
pub(super) struct ShellJobTerminal;

/// The dump's terminal once met: (device, path, pid, fd).
#[derive(Debug, Default)]
struct SeenTerminal(Option<(u64, String, Pid, RawFd)>);

impl FileKind for ShellJobTerminal {
    type Record = Tty;

    fn record(kind: &Kind) -> Option<&Tty> {
        match kind {
            Kind::Tty(t) => Some(t),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        matches!(fd.seen, Seen::CharDevice { .. }) && fd.shell_job && is_pty_slave(fd.meta.rdev())
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        let Seen::CharDevice { path } = &fd.seen else {
            return Err(fd.open.refuse("not a terminal", false));
        };
        let path = path.clone();
        let pidfd = task_pidfd(fd.open, fd.pidfd)?;
        let seen = &mut fd.state.get::<SeenTerminal>().0;
        dump(fd.open, &path, fd.meta, pidfd, seen).map(Kind::Tty)
    }

    fn open(&self, desc: &FileDesc, t: &Tty, cx: &mut Opening<'_>) -> Result<Opened, FileError> {
        open(desc, t, cx.opts.terminal).map(Opened::Now)
    }

    fn describe(&self, _desc: &FileDesc, t: &Tty) -> String {
        format!("terminal {} (the shell job's)", t.path)
    }
}

/// True for a pty slave (/dev/pts/N: majors 136-143).
pub fn is_pty_slave(rdev: u64) -> bool {
    matches!(nix::sys::stat::major(rdev), 136..=143)
}

/// True for a pty master (/dev/ptmx, /dev/pts/ptmx: major 5 minor 2).
pub(super) fn is_pty_master(rdev: u64) -> bool {
    nix::sys::stat::major(rdev) == 5 && nix::sys::stat::minor(rdev) == 2
}

/// Dumps pty slave fd `open` (on `path`) of a shell job: its termios and what it was to the
/// process's session. `seen` holds the dump's terminal once met: a second one is refused.
fn dump(
    open: &OpenFd,
    path: &str,
    meta: &fs::Metadata,
    pidfd: BorrowedFd<'_>,
    seen: &mut Option<(u64, String, Pid, RawFd)>,
) -> Result<Tty, FileError> {
    let rdev = meta.rdev();
    match seen {
        Some((other, first, pid, fd)) if *other != rdev => {
            return Err(open.dump_err(format!(
                "a second terminal {path} (pid {pid} fd {fd} is on {first}): a shell job has \
                 one terminal, the shell's"
            )))
        }
        Some(_) => {}
        None => *seen = Some((rdev, path.to_string(), open.pid, open.fd)),
    }
    let dup = sys::pidfd::pidfd_getfd(pidfd, open.fd)
        .map_err(|e| open.inspect_err("pidfd_getfd", open.proc_path(), e))?;
    let termios = libc::termios::from(
        tcgetattr(&dup).map_err(|e| open.inspect_err("TCGETS", open.proc_path(), e.into()))?,
    );
    let stat = task_stat::read(open.pid).map_err(|e| {
        let path = PathBuf::from(format!("/proc/{}/stat", open.pid));
        open.inspect_err("read", path, e)
    })?;
    let controlling = is_device(stat.tty_nr, rdev);
    debug!(pid = %open.pid, fd = open.fd, path, controlling, sid = stat.sid, foreground = stat.tpgid, "shell job terminal");
    Ok(Tty {
        path: path.to_string(),
        rdev,
        sid: if controlling { stat.sid } else { 0 },
        foreground_pgid: if controlling { stat.tpgid } else { 0 },
        iflag: termios.c_iflag,
        oflag: termios.c_oflag,
        cflag: termios.c_cflag,
        lflag: termios.c_lflag,
        line: termios.c_line as u32,
        cc: termios.c_cc.to_vec(),
    })
}

/// A description of the shell job's terminal: a reopen of the terminal of `cryo restore`,
/// held at fd `terminal`, with the description's flags.
fn open(desc: &FileDesc, t: &Tty, terminal: Option<RawFd>) -> Result<OwnedFd, FileError> {
    let Some(slot) = terminal else {
        return Err(FileError::Invalid {
            id: desc.id,
            detail: format!(
                "terminal {} of a shell job: only a restore of the whole image attaches it to \
                 the terminal of cryo restore",
                t.path
            ),
        });
    };
    let path = PathBuf::from(format!("/proc/self/fd/{slot}"));
    let fd = nix::fcntl::open(&path, open_flags(desc.flags), Mode::empty())
        .map_err(|e| restore_err(desc, "reopen the terminal of cryo restore", e.into()))?;
    set_async(desc, &fd)?;
    Ok(fd)
}

/// What each restored process does with the terminal, decided by cryo before the fork.
#[derive(Debug, Clone, Copy)]
pub struct Attach {
    /// The dumped session whose controlling terminal it was (0: none).
    session: i32,
    /// The dumped foreground process group of that session.
    foreground: i32,
    /// The terminal is no session's controlling terminal that cryo knows of: a session leader
    /// may take it (cryo's own, its shell's, is never taken).
    may_take: bool,
}

/// In the restore child, once its session and group are set: a session leader whose
/// controlling terminal it was takes the terminal (`fd`) as its controlling terminal, and a
/// group that was the foreground one takes the foreground (all signals are blocked here, so
/// a background group gets no SIGTTOU). Failures leave the process without them: cryo
/// checks the outcome and says so.
pub fn attach(fd: RawFd, entry: &ProcessEntry, a: &Attach) {
    let term = sys::fd::borrow_raw(fd);
    if a.session == 0 || entry.sid != a.session {
        return;
    }
    if entry.sid == entry.pid && a.may_take {
        let _ = sys::tty::set_controlling_terminal(term);
    }
    if entry.pgid == entry.pid && entry.pgid == a.foreground {
        let _ = nix::unistd::tcsetpgrp(term, Pid::from_raw(entry.pgid));
    }
}

/// The terminal of `cryo restore`, for the shell job of an image.
#[derive(Debug)]
pub struct Terminal {
    fd: OwnedFd,
    rdev: u64,
    /// cryo's own controlling terminal (its shell's): never taken from its session.
    cryo_ctty: bool,
    /// The dumped terminal.
    image: Tty,
}

impl Terminal {
    /// The terminal of `cryo restore` when the image has a shell job terminal used by an fd
    /// of `tasks` (pid, fds): cryo's stdin, which must be a terminal.
    pub fn open(
        descs: &[FileDesc],
        tasks: &[(i32, &[FdEntry])],
    ) -> Result<Option<Self>, FileError> {
        let ttys: std::collections::HashMap<u32, &Tty> = descs
            .iter()
            .filter_map(|d| match &d.kind {
                Some(Kind::Tty(t)) => Some((d.id, t)),
                _ => None,
            })
            .collect();
        if ttys.is_empty() {
            return Ok(None);
        }
        let used = tasks.iter().find_map(|(pid, fds)| {
            fds.iter()
                .find_map(|e| ttys.get(&e.file_id).map(|&t| (*pid, e.fd, t)))
        });
        let Some((pid, fd, image)) = used else {
            return Ok(None);
        };
        let stdin = std::io::stdin();
        if !nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
            return Err(FileError::NoTerminal {
                pid: Pid::from_raw(pid),
                fd,
                path: image.path.clone(),
            });
        }
        let term = nix::fcntl::open(
            "/proc/self/fd/0",
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FileError::Inspect {
            pid: nix::unistd::getpid(),
            fd: 0,
            op: "reopen the terminal",
            path: PathBuf::from("/proc/self/fd/0"),
            source: e.into(),
        })?;
        let rdev = nix::sys::stat::fstat(&term).map(|m| m.st_rdev).unwrap_or(0);
        let cryo_ctty = task_stat::read(nix::unistd::getpid())
            .map(|s| is_device(s.tty_nr, rdev))
            .unwrap_or(true);
        debug!(was = %image.path, rdev, cryo_ctty, "shell job terminal: cryo's stdin");
        Ok(Some(Self {
            fd: term,
            rdev,
            cryo_ctty,
            image: image.clone(),
        }))
    }

    /// cryo's fd on the terminal.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// What the restored processes do with it.
    pub fn attach_plan(&self) -> Attach {
        Attach {
            session: self.image.sid,
            foreground: self.image.foreground_pgid,
            may_take: !self.cryo_ctty,
        }
    }

    /// Whether the process of `entry` is to get the terminal as its controlling terminal;
    /// warns when it cannot (the terminal is cryo's own).
    pub fn wants_controlling(&self, entry: &ProcessEntry) -> bool {
        let leader = entry.sid == entry.pid && self.image.sid == entry.sid;
        if leader && self.cryo_ctty {
            warn!(
                pid = entry.pid,
                "pid {} led the session of terminal {}: it runs without a controlling terminal, \
                 because the terminal of cryo restore is its own shell's (restore from a \
                 terminal no session controls, e.g. under setsid, to give it one)",
                entry.pid,
                self.image.path
            );
        }
        leader && !self.cryo_ctty
    }

    /// Checks that restored process `pid` (seen as `seen`) has the terminal as its
    /// controlling terminal; says so when it could not take it (another session has it).
    pub fn check_controlling(&self, pid: i32, seen: Pid) {
        let has = task_stat::read(seen).is_ok_and(|s| is_device(s.tty_nr, self.rdev));
        if !has {
            warn!(
                pid,
                "pid {pid} runs without a controlling terminal: the terminal of cryo restore is \
                 another session's"
            );
        }
    }

    /// Sets the dumped terminal modes (termios) on the terminal: once the processes are whole,
    /// before they run.
    pub fn set_modes(&self) -> Result<(), FileError> {
        let io = |op: &'static str, e: nix::errno::Errno| FileError::Inspect {
            pid: nix::unistd::getpid(),
            fd: 0,
            op,
            path: PathBuf::from("/proc/self/fd/0"),
            source: e.into(),
        };
        let mut t = libc::termios::from(tcgetattr(&self.fd).map_err(|e| io("TCGETS", e))?);
        t.c_iflag = self.image.iflag;
        t.c_oflag = self.image.oflag;
        t.c_cflag = self.image.cflag;
        t.c_lflag = self.image.lflag;
        t.c_line = self.image.line as libc::cc_t;
        for (to, from) in t.c_cc.iter_mut().zip(&self.image.cc) {
            *to = *from;
        }
        tcsetattr(&self.fd, SetArg::TCSANOW, &Termios::from(t)).map_err(|e| io("TCSETS", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_tty_numbers_name_devices() {
        // /dev/pts/3: major 136 minor 3 -> 34819; minor 300 spills into the high bits.
        assert!(is_device(34819, nix::sys::stat::makedev(136, 3)));
        let nr = (300 & 0xff) | (136 << 8) | ((300 & !0xff) << 12);
        assert!(is_device(nr, nix::sys::stat::makedev(136, 300)));
        assert!(!is_device(0, nix::sys::stat::makedev(0, 0)));
        assert!(is_pty_slave(nix::sys::stat::makedev(136, 3)));
        assert!(is_pty_master(nix::sys::stat::makedev(5, 2)));
    }
}
