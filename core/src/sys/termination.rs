//! SIGINT and SIGTERM held pending while a dump or restore runs, so that it stops between
//! two steps and rolls back in order instead of dying in the middle of one.

use std::io;

/// The signals held: SIGINT and SIGTERM.
pub const HELD: [i32; 2] = [libc::SIGINT, libc::SIGTERM];

fn held_set() -> u64 {
    HELD.iter().fold(0, |set, &s| set | 1 << (s - 1))
}

/// Blocks SIGINT and SIGTERM in the calling thread (threads it starts later inherit the
/// mask); returns the mask it had.
pub fn hold() -> io::Result<u64> {
    let set = held_set();
    let mut old = 0u64;
    // SAFETY: rt_sigprocmask reads and writes one 8-byte mask in our locals.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            &set as *const u64,
            &mut old as *mut u64,
            8usize,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

/// The first held signal pending for the calling thread or its process, if any.
pub fn pending() -> io::Result<Option<i32>> {
    let mut set = 0u64;
    // SAFETY: rt_sigpending writes one 8-byte set into our local.
    let r = unsafe { libc::syscall(libc::SYS_rt_sigpending, &mut set as *mut u64, 8usize) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(HELD.into_iter().find(|&s| set & (1 << (s - 1)) != 0))
}

/// Discards the held signals still pending and puts back the mask `old`.
pub fn release(old: u64) -> io::Result<()> {
    for s in HELD {
        super::signal::drain(s)?;
    }
    super::signal::set_mask(old).map(drop)
}
