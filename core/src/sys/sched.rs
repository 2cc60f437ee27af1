//! Scheduling attributes of one thread, read and set from outside by its tid: policy and
//! parameters (`sched_getattr`/`sched_setattr`), nice, CPU affinity, I/O priority. A tid of 0
//! means the calling thread.

use std::io;

use nix::unistd::Pid;

use super::check;

/// `IOPRIO_WHO_PROCESS`: the I/O priority of one thread.
const IOPRIO_WHO_PROCESS: libc::c_long = 1;
/// `SCHED_ATTR_SIZE_VER1`: `struct sched_attr` with the utilisation clamps.
const SCHED_ATTR_SIZE: u32 = 56;
/// Words of CPU mask read: 1024 CPUs.
const AFFINITY_WORDS: usize = 16;

/// `struct sched_attr` (linux/sched/types.h), version 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedAttr {
    /// Size of the struct, filled in by the calls.
    pub size: u32,
    /// SCHED_OTHER, FIFO, RR, BATCH, IDLE, DEADLINE.
    pub policy: u32,
    /// SCHED_FLAG_* (RESET_ON_FORK, the utilisation clamp flags...).
    pub flags: u64,
    /// The nice value of a fair policy.
    pub nice: i32,
    /// The real-time priority.
    pub priority: u32,
    /// The custom slice of a fair policy, or SCHED_DEADLINE's runtime (ns).
    pub runtime: u64,
    /// SCHED_DEADLINE's deadline (ns).
    pub deadline: u64,
    /// SCHED_DEADLINE's period (ns).
    pub period: u64,
    /// The utilisation clamps.
    pub util_min: u32,
    /// The utilisation clamps.
    pub util_max: u32,
}

/// `sched_getattr(tid)`.
pub fn get_attr(tid: Pid) -> io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: the kernel writes at most SCHED_ATTR_SIZE bytes into the live `attr`, which is
    // that large.
    check(unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid.as_raw(),
            &mut attr as *mut SchedAttr,
            SCHED_ATTR_SIZE,
            0,
        )
    })?;
    Ok(attr)
}

/// `sched_setattr(tid, attr)`.
pub fn set_attr(tid: Pid, attr: &SchedAttr) -> io::Result<()> {
    let attr = SchedAttr {
        size: SCHED_ATTR_SIZE,
        ..*attr
    };
    // SAFETY: the kernel reads `size` bytes of the live `attr`, which is that large.
    check(unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            tid.as_raw(),
            &attr as *const SchedAttr,
            0,
        )
    })?;
    Ok(())
}

/// The nice value of thread `tid` (`getpriority(PRIO_PROCESS, tid)`).
pub fn get_nice(tid: Pid) -> io::Result<i32> {
    // SAFETY: no pointers. The raw call returns 20 - nice, never negative.
    let r = check(unsafe {
        libc::syscall(
            libc::SYS_getpriority,
            libc::PRIO_PROCESS,
            tid.as_raw() as libc::c_long,
        )
    })?;
    Ok(20 - r as i32)
}

/// Sets the nice value of thread `tid` (`setpriority(PRIO_PROCESS, tid)`).
pub fn set_nice(tid: Pid, nice: i32) -> io::Result<()> {
    // SAFETY: no pointers.
    check(unsafe {
        libc::syscall(
            libc::SYS_setpriority,
            libc::PRIO_PROCESS,
            tid.as_raw() as libc::c_long,
            nice as libc::c_long,
        )
    })?;
    Ok(())
}

/// The CPU mask of thread `tid`, 64 CPUs a word, as many words as the kernel has CPU ids.
pub fn get_affinity(tid: Pid) -> io::Result<Vec<u64>> {
    let mut mask = [0u64; AFFINITY_WORDS];
    // SAFETY: the kernel writes at most the given length into the live `mask`.
    let len = check(unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            tid.as_raw(),
            std::mem::size_of_val(&mask),
            mask.as_mut_ptr(),
        )
    })? as usize;
    Ok(mask[..len.div_ceil(8).min(AFFINITY_WORDS)].to_vec())
}

/// Sets the CPU mask of thread `tid` (the kernel narrows it to the CPUs its cpuset allows).
pub fn set_affinity(tid: Pid, mask: &[u64]) -> io::Result<()> {
    // SAFETY: the kernel reads the given length of the live `mask`.
    check(unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            tid.as_raw(),
            std::mem::size_of_val(mask),
            mask.as_ptr(),
        )
    })?;
    Ok(())
}

/// `ioprio_get(IOPRIO_WHO_PROCESS, tid)`: class << 13 | level.
pub fn get_ioprio(tid: Pid) -> io::Result<u32> {
    // SAFETY: no pointers.
    let r = check(unsafe {
        libc::syscall(
            libc::SYS_ioprio_get,
            IOPRIO_WHO_PROCESS,
            tid.as_raw() as libc::c_long,
        )
    })?;
    Ok(r as u32)
}

/// `ioprio_set(IOPRIO_WHO_PROCESS, tid, ioprio)`.
pub fn set_ioprio(tid: Pid, ioprio: u32) -> io::Result<()> {
    // SAFETY: no pointers.
    check(unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid.as_raw() as libc::c_long,
            ioprio as libc::c_long,
        )
    })?;
    Ok(())
}

/// The calling thread kept on the CPU it runs on until dropped, when its CPU mask is put back:
/// while cryo and the processes it restores hand control back and forth (ptrace stops), each
/// wakeup of another CPU that sleeps costs a trip through the hypervisor on a VM (the small
/// restore takes 8 ms instead of 2 on an idle machine). The processes forked meanwhile
/// inherit the one-CPU mask: each of their threads must get its own back before it runs.
///
/// A process forked meanwhile that is not one of the restored ones (the init of a new PID
/// namespace) takes the saved mask back with [`unpin_forked`].
#[derive(Debug)]
pub struct Colocated {
    saved: Vec<u64>,
}

/// The mask of the thread a [`Colocated`] pinned, while it is (None otherwise).
static SAVED: std::sync::Mutex<Option<Vec<u64>>> = std::sync::Mutex::new(None);

impl Colocated {
    /// Pins the calling thread to its current CPU; None when that cannot be done (nothing
    /// changed then).
    pub fn here() -> Option<Self> {
        let me = Pid::from_raw(0);
        let saved = get_affinity(me).ok()?;
        // SAFETY: sched_getcpu takes no arguments and only returns a number.
        let cpu = unsafe { libc::sched_getcpu() };
        let cpu = usize::try_from(cpu)
            .ok()
            .filter(|&c| c < AFFINITY_WORDS * 64)?;
        let mut one = vec![0u64; cpu / 64 + 1];
        one[cpu / 64] = 1 << (cpu % 64);
        set_affinity(me, &one).ok()?;
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(saved.clone());
        Some(Self { saved })
    }
}

impl Drop for Colocated {
    fn drop(&mut self) {
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let _ = set_affinity(Pid::from_raw(0), &self.saved);
    }
}

/// In a process just forked by a pinned cryo that is none of the restored ones: the mask
/// cryo had before it was pinned (nothing when it is not pinned). Single-threaded callers
/// only: the lock was free when they were forked.
pub fn unpin_forked() {
    let saved = SAVED.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(mask) = saved {
        let _ = set_affinity(Pid::from_raw(0), &mask);
    }
}
