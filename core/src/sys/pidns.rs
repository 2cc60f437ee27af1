//! The numbers a PID namespace keeps for itself: the last pid it handed out
//! (/proc/sys/kernel/ns_last_pid) and, since Linux 6.14, its pid_max. Both files name the
//! namespace of whoever reads or writes them, so a child forked into the namespace does it.
//!
//! ```text
//! cryo                                 child, pid P there (raw system calls only: cryo has
//! setns pid_for_children               threads)
//! clone3 ----------------------------> read: open, read pid_max; write P - 1 to ns_last_pid
//! setns back                           write: write the value to the file
//! [read the pipe: P, pid_max] <------- [write P, pid_max]
//! waitpid                   <--------- _exit(errno or 0)
//! ```

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sched::CloneFlags;

use super::process::Forked;

const LAST_PID: &CStr = c"/proc/sys/kernel/ns_last_pid";
const PID_MAX: &CStr = c"/proc/sys/kernel/pid_max";

/// Sets the last pid handed out in PID namespace `pidns` (an open /proc/PID/ns/pid) to `last`
/// (/proc/sys/kernel/ns_last_pid, written by a child forked into it, after its own pid was
/// taken): the next process made there gets `last + 1` again, or the first free pid after it.
pub fn set_last_pid(pidns: BorrowedFd<'_>, last: i32) -> io::Result<()> {
    write_number(pidns, LAST_PID, i64::from(last))
}

/// Sets the pid_max of PID namespace `pidns` (its own since Linux 6.14; the machine's before,
/// which the caller must not mean to change).
pub fn set_pid_max(pidns: BorrowedFd<'_>, max: u32) -> io::Result<()> {
    write_number(pidns, PID_MAX, i64::from(max))
}

/// PID namespace `pidns`'s pid_max (its own since Linux 6.14, the machine's before) and the
/// last pid it handed out, read by a child forked into it; the child, pid P there, sets that
/// last pid back to P - 1 (the next process there gets P, the pid it would have had: the
/// first free one after the last), and reports it.
pub fn numbers(pidns: BorrowedFd<'_>) -> io::Result<(u32, i32)> {
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let status = in_child(pidns, || {
        let mut max = [0u8; 24];
        // SAFETY: open, read and write take our own NUL-terminated paths and stack buffers
        // of the lengths passed; getpid has no arguments.
        unsafe {
            let fd = libc::open(PID_MAX.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return errno();
            }
            let n = libc::read(fd, max.as_mut_ptr().cast(), max.len());
            let Ok(n) = usize::try_from(n) else {
                return errno();
            };
            let me = libc::getpid();
            let mut last = [0u8; 24];
            let len = decimal(i64::from(me) - 1, &mut last);
            let fd = libc::open(LAST_PID.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, last.as_ptr().cast(), len) < 0 {
                return errno();
            }
            let mut report = [0u8; 28];
            report[..4].copy_from_slice(&me.to_ne_bytes());
            report[4..4 + n].copy_from_slice(&max[..n]);
            if libc::write(report_w.as_raw_fd(), report.as_ptr().cast(), 4 + n) < 0 {
                return errno();
            }
            0
        }
    });
    drop(report_w);
    status?;
    let mut report = Vec::new();
    let mut buf = [0u8; 32];
    loop {
        match nix::unistd::read(report_r.as_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => report.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let bad = || io::Error::other(format!("pid namespace reader: report {report:?}"));
    let me = report
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(bad)?;
    let max = std::str::from_utf8(&report[4..])
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(bad)?;
    Ok((max, me - 1))
}

/// Writes `value` in decimal to `path`, a file naming the PID namespace of its writer, from a
/// child forked into `pidns`.
fn write_number(pidns: BorrowedFd<'_>, path: &CStr, value: i64) -> io::Result<()> {
    // The text written, made before the fork (the child may not allocate).
    let mut text = [0u8; 24];
    let len = decimal(value, &mut text);
    in_child(pidns, || {
        // SAFETY: open and write take our own NUL-terminated path and stack buffer.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, text.as_ptr().cast(), len) < 0 {
                return errno();
            }
            0
        }
    })
}

/// Runs `work` in a child forked into PID namespace `pidns` (this thread's children's
/// namespace set to it for the fork, then put back), which ends with what `work` returns (an
/// errno, 0: done); waits for it.
fn in_child(pidns: BorrowedFd<'_>, work: impl FnOnce() -> i32) -> io::Result<()> {
    let own = nix::fcntl::open(
        "/proc/thread-self/ns/pid",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    nix::sched::setns(pidns, CloneFlags::CLONE_NEWPID)?;
    let forked = super::process::fork();
    if let Ok(Forked::Child) = forked {
        super::process::exit_child(work())
    }
    let back = nix::sched::setns(own, CloneFlags::CLONE_NEWPID);
    let Forked::Parent(pid) = forked? else {
        unreachable!("the child never returns")
    };
    let status = loop {
        match nix::sys::wait::waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => {}
            other => break other?,
        }
    };
    back?;
    match status {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        nix::sys::wait::WaitStatus::Exited(_, errno) => Err(io::Error::from_raw_os_error(errno)),
        other => Err(io::Error::other(format!("pid namespace child: {other:?}"))),
    }
}

/// The errno of the last failed call, for the child's exit status.
fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `value` in decimal into `out` (no allocation: a forked child's use); its length.
fn decimal(value: i64, out: &mut [u8; 24]) -> usize {
    let mut digits = [0u8; 20];
    let mut n = value.unsigned_abs();
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut len = 0;
    if value < 0 {
        out[0] = b'-';
        len = 1;
    }
    for d in digits[..count].iter().rev() {
        out[len] = *d;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut out = [0u8; 24];
        for (v, text) in [(0, "0"), (7, "7"), (4_194_304, "4194304"), (-1, "-1")] {
            let len = decimal(v, &mut out);
            assert_eq!(&out[..len], text.as_bytes());
        }
        let len = decimal(i64::MIN, &mut out);
        assert_eq!(&out[..len], i64::MIN.to_string().as_bytes());
    }
}
