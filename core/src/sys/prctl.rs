//! prctl calls of the engine that nix does not wrap: the size of `struct prctl_mm_map` the
//! kernel takes (PR_SET_MM_MAP itself runs in the restored task, through a remote call).

use std::io;

use super::check;

/// `PR_SET_MM_MAP_SIZE` from linux/prctl.h.
const PR_SET_MM_MAP_SIZE: libc::c_ulong = 15;

/// The length of `struct prctl_mm_map` as the engine writes it: 12 addresses, the auxv size
/// and the exe fd.
pub const MM_MAP_LEN: usize = 12 * 8 + 4 + 4;

/// `prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)`: the size of `struct prctl_mm_map` this kernel takes.
pub fn mm_map_size() -> io::Result<u32> {
    let mut size = 0u32;
    // SAFETY: the kernel writes one u32 to the live `size`.
    check(unsafe {
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_MM as libc::c_ulong,
            PR_SET_MM_MAP_SIZE,
            &mut size as *mut u32,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })?;
    Ok(size)
}

/// `prctl(option, arg2, arg3, 0, 0)` on the calling thread (or its process, for the options
/// kept per process): the setters a restored process runs on itself before it is reshaped.
pub fn set_own(option: libc::c_int, arg2: u64, arg3: u64) -> io::Result<()> {
    // SAFETY: the options passed here take integers, no pointers.
    check(unsafe {
        libc::syscall(
            libc::SYS_prctl,
            option as libc::c_ulong,
            arg2 as libc::c_ulong,
            arg3 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })?;
    Ok(())
}

/// `prctl(option, arg2, 0, 0, 0)` on the calling thread, for the getters that answer in their
/// return value (PR_GET_SPECULATION_CTRL).
pub fn get_own(option: libc::c_int, arg2: u64) -> io::Result<i64> {
    // SAFETY: the options passed here take integers, no pointers.
    check(unsafe {
        libc::syscall(
            libc::SYS_prctl,
            option as libc::c_ulong,
            arg2 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })
}
