//! System V IPC: shared memory segments (shmget, shmat/shmdt in cryo, shmctl), and the
//! calling thread's effective ids switched for the creation of an object (its cuid/cgid).

use std::io;

use super::check;

/// shmget(2): the segment of `key` (IPC_PRIVATE: a new one), created with `flags`
/// (IPC_CREAT|IPC_EXCL|mode).
pub(crate) fn shmget(key: i32, size: u64, flags: i32) -> io::Result<i32> {
    // SAFETY: shmget takes no pointers.
    let id = unsafe { libc::shmget(key, size as libc::size_t, flags) };
    check(id as libc::c_long).map(|id| id as i32)
}

/// A segment attached in cryo's own address space, detached when dropped.
#[derive(Debug)]
pub(crate) struct Attached {
    addr: usize,
}

impl Attached {
    /// Attaches segment `id` read-write wherever the kernel chooses.
    pub(crate) fn new(id: i32) -> io::Result<Self> {
        // SAFETY: a null address lets the kernel pick a free range; nothing of cryo is
        // replaced, and the mapping is only ever reached through /proc/self/map_files.
        let addr = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if addr as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            addr: addr as usize,
        })
    }

    /// Where it is attached.
    pub(crate) fn start(&self) -> u64 {
        self.addr as u64
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // SAFETY: `addr` is the attachment made by `new`, not reached by any reference.
        unsafe { libc::shmdt(self.addr as *const libc::c_void) };
    }
}

/// shmctl(IPC_SET): the owner and permission bits of segment `id`.
pub(crate) fn shm_set_owner(id: i32, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    // SAFETY: shmid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    ds.shm_perm.uid = uid;
    ds.shm_perm.gid = gid;
    ds.shm_perm.mode = (mode & 0o777) as _;
    // SAFETY: `ds` is a valid shmid_ds the kernel reads (IPC_SET reads uid, gid, mode).
    check(unsafe { libc::shmctl(id, libc::IPC_SET, &mut ds) } as libc::c_long).map(drop)
}

/// shmctl(`cmd`) of segment `id` without a buffer: IPC_RMID, SHM_LOCK.
pub(crate) fn shm_command(id: i32, cmd: i32) -> io::Result<()> {
    // SAFETY: these commands do not read the buffer argument.
    check(unsafe { libc::shmctl(id, cmd, std::ptr::null_mut()) } as libc::c_long).map(drop)
}

/// Runs `f` with the calling thread's effective uid and gid switched to `uid`/`gid` (the
/// kernel records them as an IPC object's creator), then back to root. Raw calls: only this
/// thread changes (glibc's seteuid would change every thread of cryo).
pub(crate) fn as_creator<T>(
    uid: u32,
    gid: u32,
    f: impl FnOnce() -> io::Result<T>,
) -> io::Result<T> {
    if uid == 0 && gid == 0 {
        return f();
    }
    let keep = u64::MAX; // -1: this id unchanged
                         // SAFETY: setresgid/setresuid take no pointers; they change this thread's credentials.
    let set = |nr, id: u32| check(unsafe { libc::syscall(nr, keep, id as u64, keep) });
    set(libc::SYS_setresgid, gid)?;
    if let Err(e) = set(libc::SYS_setresuid, uid) {
        set(libc::SYS_setresgid, 0)?;
        return Err(e);
    }
    let got = f();
    // Back to root (the real and saved ids stayed 0, so the capabilities come back too).
    set(libc::SYS_setresuid, 0)?;
    set(libc::SYS_setresgid, 0)?;
    got
}
