//! Signal system calls on the calling process, in the kernel's own layouts (the restore
//! child installs handlers that point into the image, not into cryo).

use std::io;

/// The kernel's struct sigaction on x86_64.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelSigaction {
    /// Handler address, SIG_DFL (0) or SIG_IGN (1).
    pub handler: u64,
    /// SA_* flags.
    pub flags: u64,
    /// The sa_restorer trampoline.
    pub restorer: u64,
    /// Signals blocked while the handler runs.
    pub mask: u64,
}

/// The size of the kernel's struct siginfo.
pub const SIGINFO_LEN: usize = 128;
/// Where si_pid lies in a siginfo: after si_signo, si_errno and si_code, in the union
/// aligned to 8 bytes.
pub const SIGINFO_PID_OFFSET: usize = 16;

fn cvt(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Installs `act` for `signo` in the calling process.
pub fn set_action(signo: u32, act: &KernelSigaction) -> io::Result<()> {
    // SAFETY: rt_sigaction reads one struct of the kernel's layout from `act`, which lives for
    // the call; the handler address is only used when a signal is delivered, and the caller
    // keeps every signal blocked until the image it points into is in place.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            signo as libc::c_long,
            act as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            8usize,
        )
    })
}

/// Sets the calling thread's blocked mask, returning the old one.
pub fn set_mask(mask: u64) -> io::Result<u64> {
    let mut old = 0u64;
    // SAFETY: rt_sigprocmask reads and writes one 8-byte mask in our locals.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask as *const u64,
            &mut old as *mut u64,
            8usize,
        )
    })?;
    Ok(old)
}

/// Queues the raw siginfo `info` to the calling process (`thread`: to the calling thread only).
pub fn queue_to_self(info: &[u8; 128], thread: bool) -> io::Result<()> {
    let signo = i32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
    // SAFETY: getpid/gettid take nothing; the siginfo buffer is 128 bytes as the kernel reads.
    cvt(unsafe {
        let pid = libc::getpid();
        if thread {
            libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                pid,
                libc::gettid(),
                signo,
                info.as_ptr(),
            )
        } else {
            libc::syscall(libc::SYS_rt_sigqueueinfo, pid, signo, info.as_ptr())
        }
    })
}

/// Discards every pending instance of `signo` (blocked in the calling thread).
pub fn drain(signo: i32) -> io::Result<()> {
    let mut set: u64 = 1 << (signo - 1);
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: rt_sigtimedwait reads the 8-byte set and the timespec, both locals; no
        // siginfo is wanted.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigtimedwait,
                &mut set as *mut u64,
                std::ptr::null_mut::<libc::siginfo_t>(),
                &zero as *const libc::timespec,
                8usize,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::EAGAIN) {
                Ok(())
            } else {
                Err(e)
            };
        }
    }
}

/// Sends `signo` to thread `tid` of process `pid` alone (tgkill(2): to its own set).
pub fn tgkill(pid: nix::unistd::Pid, tid: nix::unistd::Pid, signo: i32) -> io::Result<()> {
    // SAFETY: tgkill takes plain values.
    cvt(unsafe { libc::syscall(libc::SYS_tgkill, pid.as_raw(), tid.as_raw(), signo) })
}

/// Queues `signo` with the int payload `value` to process `pid` (sigqueue(3)).
pub fn sigqueue(pid: nix::unistd::Pid, signo: i32, value: i32) -> io::Result<()> {
    // sival_int and sival_ptr share their low bytes (x86_64 is little-endian).
    let val = libc::sigval {
        sival_ptr: value as u32 as usize as *mut libc::c_void,
    };
    // SAFETY: sigqueue takes plain values; the pointer in `val` is never dereferenced.
    if unsafe { libc::sigqueue(pid.as_raw(), signo, val) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
