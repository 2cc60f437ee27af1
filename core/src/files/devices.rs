//! Character devices, reopened by path (/dev/null, /dev/zero, /dev/urandom...), the system
//! console and the line terminals (virtual consoles, serial ports: major 4) too, whose modes
//! are the device's, not the process's. Other terminals only with --shell-job (pty pairs with
//! both ends in the dump are pty.rs's, a shell job's pty slave tty.rs's); block devices never.

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use cryo_proto::image::{file_desc::Kind, FileDesc};
use nix::errno::Errno;
use nix::unistd::Whence;
use tracing::debug;

use super::error::changed;
use super::inspect::OpenFd;
use super::kind::{Checking, Dumping, FileKind, Opened, Seen, Opening};
use super::open::{open_flags, set_async};
use super::{restore_err, FileError};

/// Character devices other than the shell job's terminal.
pub(super) struct CharDevice;

impl FileKind for CharDevice {
    type Record = String;

    fn record(kind: &Kind) -> Option<&String> {
        match kind {
            Kind::CharDevice(path) => Some(path),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        matches!(fd.seen, Seen::CharDevice { .. })
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        let Seen::CharDevice { path } = &fd.seen else {
            return Err(fd.open.refuse("not a character device", false));
        };
        let path = path.clone();
        if is_line_terminal(fd.meta.rdev()) && !fd.shell_job {
            check_line_terminal(fd)?;
        }
        dump(fd.open, &path, fd.meta, fd.shell_job).map(Kind::CharDevice)
    }

    fn validate(
        &self,
        desc: &FileDesc,
        path: &String,
        _cx: &mut Checking<'_>,
    ) -> Result<(), FileError> {
        // Found in the parent's mount namespace, which the restore may make, or only in the
        // process's own (made again for it): checked when the process opens it.
        if desc.parent_mount_namespace || desc.in_mount_namespace {
            return Ok(());
        }
        let meta = fs::metadata(path).map_err(|_| changed(desc, "the device node is gone"))?;
        if !meta.file_type().is_char_device() {
            return Err(changed(desc, "is no longer a character device"));
        }
        Ok(())
    }

    fn open(
        &self,
        desc: &FileDesc,
        path: &String,
        _cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError> {
        open(desc, path).map(Opened::Now)
    }

    fn hand_down(&self) -> bool {
        true
    }

    fn describe(&self, _desc: &FileDesc, path: &String) -> String {
        format!("char device {path}")
    }

    fn show(&self, _desc: &FileDesc, path: &String, flags: &str) -> String {
        format!("{path} (char device)  flags {flags}")
    }

    fn name(&self, _desc: &FileDesc, path: &String) -> String {
        path.clone()
    }
}

/// Majors of terminals: 4 (ttyN, ttySN), 5 (/dev/tty, console, ptmx), 136-143 (pts).
fn is_tty_major(major: u64) -> bool {
    matches!(major, 4 | 5 | 136..=143)
}

/// True if `path`, a character device numbered `rdev`, is a terminal.
pub(super) fn is_terminal(path: &str, rdev: u64) -> bool {
    is_tty_major(nix::sys::stat::major(rdev))
        || path.starts_with("/dev/tty")
        || path.starts_with("/dev/pts/")
        || path == "/dev/console"
        || path == "/dev/ptmx"
}

/// True for /dev/console (major 5 minor 1): the system console, a terminal no open makes
/// anyone's controlling terminal and whose modes are the system's, not the process's: it is
/// reopened by its path as any device.
fn is_console(rdev: u64) -> bool {
    nix::sys::stat::major(rdev) == 5 && nix::sys::stat::minor(rdev) == 1
}

/// True for a line terminal: a virtual console (/dev/ttyN, 4:1-63) or a serial port
/// (/dev/ttySN, 4:64-255). Its modes (termios, and a console's keyboard and display modes)
/// are the device's, kept by the kernel while the host runs, shared by every holder: an open
/// of it by path finds them as they were.
pub(super) fn is_line_terminal(rdev: u64) -> bool {
    nix::sys::stat::major(rdev) == 4 && nix::sys::stat::minor(rdev) >= 1
}

/// The node in /dev of line terminal `rdev` (/dev/ttyN, /dev/ttySN) when it is there and is
/// that device, looked up where `seen` says the process taking it sees the path: what a
/// restore opens (in that process) to make it a session's controlling terminal.
pub(super) fn line_terminal_node(
    rdev: u64,
    seen: impl Fn(&str) -> crate::task::mount_ns::NamespacePath,
) -> Option<String> {
    let minor = nix::sys::stat::minor(rdev);
    let path = match minor {
        1..=63 => format!("/dev/tty{minor}"),
        _ => format!("/dev/ttyS{}", minor - 64),
    };
    let meta = fs::metadata(&*seen(&path)).ok()?;
    (meta.file_type().is_char_device() && meta.rdev() == rdev).then_some(path)
}

/// Why line terminal `tty` (an fd on it) would not come back as it is from an open by path:
/// opened exclusively (TIOCEXCL: cleared with its last close), or a virtual console whose
/// switches wait for the process's signals (VT_PROCESS: the kernel drops that mode with the
/// process). Err: the step that failed.
pub(super) fn line_terminal_unrestorable(
    tty: BorrowedFd<'_>,
    rdev: u64,
) -> Result<Option<&'static str>, (&'static str, io::Error)> {
    let exclusive = crate::sys::tty::get_int(tty, libc::TIOCGEXCL).map_err(|e| ("TIOCGEXCL", e))?;
    if exclusive != 0 {
        return Ok(Some(
            "terminal in exclusive mode (TIOCEXCL), which its last close clears",
        ));
    }
    if nix::sys::stat::minor(rdev) < 64 {
        let mode = crate::sys::tty::vt_mode(tty).map_err(|e| ("VT_GETMODE", e))?;
        if mode != 0 {
            return Ok(Some(
                "virtual console switched by the process (VT_PROCESS: the kernel drops the \
                 mode with the process)",
            ));
        }
    }
    Ok(None)
}

/// Refuses a line terminal held by fd `fd` that a reopen would not give back as it is
/// ([`line_terminal_unrestorable`]). As a session's controlling terminal it is pty.rs's
/// finish_dump's too.
fn check_line_terminal(fd: &mut Dumping<'_>) -> Result<(), FileError> {
    let open = fd.open;
    let pidfd = super::kind::task_pidfd(open, fd.pidfd)?;
    let dup = crate::sys::pidfd::pidfd_getfd(pidfd, open.fd)
        .map_err(|e| open.inspect_err("pidfd_getfd", open.proc_path(), e))?;
    match line_terminal_unrestorable(dup.as_fd(), fd.meta.rdev()) {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(open.refuse(why, false)),
        Err((op, e)) => Err(open.inspect_err(op, open.proc_path(), e)),
    }
}

/// The path to record for character device fd `open` (a terminal only with shell_job; the
/// console always).
fn dump(
    open: &OpenFd,
    path: &str,
    meta: &fs::Metadata,
    shell_job: bool,
) -> Result<String, FileError> {
    let by_path = is_console(meta.rdev()) || is_line_terminal(meta.rdev());
    if is_terminal(path, meta.rdev()) && !by_path && !shell_job {
        return Err(FileError::Terminal {
            pid: open.pid,
            fd: open.fd,
            path: path.to_string(),
        });
    }
    if !is_terminal(path, meta.rdev()) {
        if let Some(why) = held_state(meta.rdev(), open.flags) {
            return Err(open.refuse(format!("character device {path}: {why}"), false));
        }
    }
    debug!(pid = %open.pid, fd = open.fd, path, flags = format_args!("{:o}", open.flags), "char device");
    Ok(path.to_string())
}

/// Why an open of character device `rdev` (not a terminal) holds state of its own that an
/// open of its node by path, which is how a restore makes it again, would not have; `None`
/// for the memory devices (/dev/null, zero, full, random, urandom, mem...: an offset at most,
/// set again), /dev/kmsg open only for writing.
fn held_state(rdev: u64, flags: u32) -> Option<&'static str> {
    use nix::sys::stat::{major, minor};
    /// /dev/kmsg: 1:11.
    const KMSG: u64 = 11;
    let read = flags as i32 & libc::O_ACCMODE != libc::O_WRONLY;
    match (major(rdev), minor(rdev)) {
        (1, KMSG) if read => Some(
            "its reader's place in the kernel log (a sequence number, not an offset a reopen \
             can be put at) would start again",
        ),
        (1, _) => None,
        (10, _) => Some(
            "a misc device (/dev/net/tun, /dev/fuse, /dev/cpu_dma_latency, /dev/uinput, /dev/kvm, \
             a watchdog...), whose open carries its own state (an interface attached, a mount \
             served, a request held) that a new open would not have",
        ),
        _ => Some(
            "a device whose open may carry state of its own (a driver's, per open) that a new \
             open by path would not have",
        ),
    }
}

/// Reopens character device `path` for description `desc`.
pub(super) fn open(desc: &FileDesc, path: &str) -> Result<OwnedFd, FileError> {
    let fd = super::open::open_as_dumped(desc, path, open_flags(desc.flags)).map_err(|e| {
            if e == Errno::ENOENT {
                changed(desc, "the device node is gone")
            } else {
                restore_err(desc, "open", e.into())
            }
        })?;
    if desc.flags & libc::O_PATH as u32 != 0 {
        return Ok(fd);
    }
    let meta = nix::sys::stat::fstat(&fd).map_err(|e| restore_err(desc, "fstat", e.into()))?;
    if meta.st_mode & libc::S_IFMT != libc::S_IFCHR {
        return Err(changed(desc, "is no longer a character device"));
    }
    if desc.pos != 0 {
        let pos = i64::try_from(desc.pos).unwrap_or(i64::MAX);
        if let Err(e) = nix::unistd::lseek(&fd, pos, Whence::SeekSet) {
            debug!(id = desc.id, path, error = %e, "device position not restored");
        }
    }
    set_async(desc, &fd)?;
    Ok(fd)
}
