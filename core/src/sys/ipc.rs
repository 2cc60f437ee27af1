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

/// semget(2): the semaphore set of `key` with `nsems` semaphores, created with `flags`.
pub(crate) fn semget(key: i32, nsems: usize, flags: i32) -> io::Result<i32> {
    // SAFETY: semget takes no pointers.
    let id = unsafe { libc::semget(key, nsems as libc::c_int, flags) };
    check(id as libc::c_long).map(|id| id as i32)
}

/// semctl(GETALL): the value of each of the `nsems` semaphores of set `id`.
pub(crate) fn sem_values(id: i32, nsems: usize) -> io::Result<Vec<u16>> {
    let mut values = vec![0u16; nsems];
    // SAFETY: GETALL writes `nsems` unsigned shorts through the array member of union semun,
    // passed as the variadic argument; `values` holds exactly that many.
    let r = unsafe { libc::semctl(id, 0, libc::GETALL, values.as_mut_ptr()) };
    check(r as libc::c_long)?;
    Ok(values)
}

/// semctl(SETALL): the value of every semaphore of set `id`.
pub(crate) fn sem_set_values(id: i32, values: &[u16]) -> io::Result<()> {
    // SAFETY: SETALL reads as many unsigned shorts as the set has semaphores through the
    // pointer; the caller made the set with `values.len()` of them.
    let r = unsafe { libc::semctl(id, 0, libc::SETALL, values.as_ptr()) };
    check(r as libc::c_long).map(drop)
}

/// semctl(IPC_SET): the owner and permission bits of set `id`.
pub(crate) fn sem_set_owner(id: i32, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    // SAFETY: semid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    ds.sem_perm.uid = uid;
    ds.sem_perm.gid = gid;
    ds.sem_perm.mode = (mode & 0o777) as _;
    // SAFETY: IPC_SET reads one semid_ds through the buf member of union semun.
    let r = unsafe { libc::semctl(id, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds) };
    check(r as libc::c_long).map(drop)
}

/// semctl(IPC_RMID) of set `id`.
pub(crate) fn sem_remove(id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID reads no argument.
    check(unsafe { libc::semctl(id, 0, libc::IPC_RMID) } as libc::c_long).map(drop)
}

/// msgget(2): the queue of `key`, created with `flags`.
pub(crate) fn msgget(key: i32, flags: i32) -> io::Result<i32> {
    // SAFETY: msgget takes no pointers.
    check(unsafe { libc::msgget(key, flags) } as libc::c_long).map(|id| id as i32)
}

/// MSG_COPY from linux/msg.h: msgrcv copies the message at an index, leaving it queued.
const MSG_COPY: i32 = 0o40000;

/// The message at `index` (0: the oldest) of queue `id`, left where it is: its type and
/// text, or None past the last. `max` bounds the text.
pub(crate) fn msg_peek(id: i32, index: usize, max: usize) -> io::Result<Option<(i64, Vec<u8>)>> {
    let head = std::mem::size_of::<libc::c_long>();
    let mut buf = vec![0u8; head + max];
    // SAFETY: msgrcv writes a long and at most `max` bytes of text into `buf`, which holds
    // both; MSG_COPY leaves the queue as it is.
    let n = unsafe {
        libc::msgrcv(
            id,
            buf.as_mut_ptr().cast(),
            max,
            index as libc::c_long,
            libc::IPC_NOWAIT | MSG_COPY,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOMSG) => Ok(None),
            _ => Err(e),
        };
    }
    let mtype = libc::c_long::from_ne_bytes(buf[..head].try_into().expect("a long"));
    buf.drain(..head);
    buf.truncate(n as usize);
    Ok(Some((mtype, buf)))
}

/// msgsnd(2) without waiting: a message of type `mtype` with `text` at the end of queue `id`.
pub(crate) fn msg_send(id: i32, mtype: i64, text: &[u8]) -> io::Result<()> {
    let mut buf = (mtype as libc::c_long).to_ne_bytes().to_vec();
    buf.extend_from_slice(text);
    // SAFETY: `buf` holds a long then `text.len()` bytes, as msgsnd reads them.
    let r = unsafe { libc::msgsnd(id, buf.as_ptr().cast(), text.len(), libc::IPC_NOWAIT) };
    check(r as libc::c_long).map(drop)
}

/// msgctl(IPC_SET): the owner, permission bits and size limit of queue `id`.
pub(crate) fn msg_set(id: i32, uid: u32, gid: u32, mode: u32, qbytes: u64) -> io::Result<()> {
    // SAFETY: msqid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    ds.msg_perm.uid = uid;
    ds.msg_perm.gid = gid;
    ds.msg_perm.mode = (mode & 0o777) as _;
    ds.msg_qbytes = qbytes as _;
    // SAFETY: `ds` is a valid msqid_ds the kernel reads.
    check(unsafe { libc::msgctl(id, libc::IPC_SET, &mut ds) } as libc::c_long).map(drop)
}

/// msgctl(IPC_STAT): the queue's size limit (msg_qbytes).
pub(crate) fn msg_qbytes(id: i32) -> io::Result<u64> {
    // SAFETY: msqid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT fills `ds`.
    check(unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) } as libc::c_long)?;
    Ok(ds.msg_qbytes as u64)
}

/// msgctl(IPC_RMID) of queue `id`.
pub(crate) fn msg_remove(id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID reads no buffer.
    check(unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) } as libc::c_long)
        .map(drop)
}

/// semctl(GETPID): the pid of the last process that changed semaphore `num` of set `id`.
pub(crate) fn sem_last_pid(id: i32, num: usize) -> io::Result<i32> {
    // SAFETY: GETPID reads no argument.
    let r = unsafe { libc::semctl(id, num as libc::c_int, libc::GETPID) };
    check(r as libc::c_long).map(|p| p as i32)
}

/// The mqueue file system of the calling thread's IPC namespace mounted detached (fsopen,
/// fsmount: in no mount table, so no process sees it), let go when the fd is dropped.
pub(crate) fn mqueue_mount() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    const FSOPEN_CLOEXEC: libc::c_ulong = 1;
    const FSCONFIG_CMD_CREATE: libc::c_ulong = 6;
    const FSMOUNT_CLOEXEC: libc::c_ulong = 1;
    let name = c"mqueue";
    // SAFETY: `name` is a NUL-terminated string alive for the call; the kernel copies it.
    let fs =
        super::owned_fd(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: FSCONFIG_CMD_CREATE reads neither key nor value (both null).
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fsmount takes no pointers; it returns a new fd of a detached mount.
    super::owned_fd(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })
}

/// The names of the POSIX message queues of the calling thread's IPC namespace: its mqueue
/// file system read through [`mqueue_mount`].
pub(crate) fn mqueue_names() -> io::Result<Vec<String>> {
    use std::os::fd::AsRawFd;
    let mnt = mqueue_mount()?;
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/self/fd/{}", mnt.as_raw_fd()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    names.sort();
    Ok(names)
}

/// The attributes of a POSIX message queue that mq_getattr reports and mq_open takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MqAttr {
    /// mq_flags: O_NONBLOCK of the description.
    pub flags: i64,
    /// mq_maxmsg.
    pub maxmsg: i64,
    /// mq_msgsize.
    pub msgsize: i64,
    /// mq_curmsgs.
    pub curmsgs: i64,
}

/// mq_open(2) of queue `name` (without the leading '/') with `oflag`; with O_CREAT, made with
/// `mode` and the sizes of `attr`.
pub(crate) fn mq_open(
    name: &str,
    oflag: i32,
    mode: u32,
    attr: Option<MqAttr>,
) -> io::Result<std::os::fd::OwnedFd> {
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: mq_attr is plain data; all-zero is a valid value.
    let mut raw: libc::mq_attr = unsafe { std::mem::zeroed() };
    let ptr = match attr {
        Some(a) => {
            raw.mq_maxmsg = a.maxmsg as _;
            raw.mq_msgsize = a.msgsize as _;
            &raw as *const libc::mq_attr
        }
        None => std::ptr::null(),
    };
    // SAFETY: `name` is NUL-terminated and `ptr` null or pointing to `raw`, both alive for
    // the call; the kernel copies them.
    super::owned_fd(unsafe {
        libc::syscall(
            libc::SYS_mq_open,
            name.as_ptr(),
            (oflag | libc::O_CLOEXEC) as libc::c_long,
            mode as libc::c_long,
            ptr,
        )
    })
}

/// mq_getattr(3) (mq_getsetattr(2) without a new value) of the queue open at `fd`.
pub(crate) fn mq_getattr(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<MqAttr> {
    use std::os::fd::AsRawFd;
    // SAFETY: mq_attr is plain data; all-zero is a valid value.
    let mut old: libc::mq_attr = unsafe { std::mem::zeroed() };
    // SAFETY: a null new value changes nothing; `old` is a writable mq_attr alive for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mq_getsetattr,
            fd.as_raw_fd(),
            std::ptr::null::<libc::mq_attr>(),
            &mut old as *mut libc::mq_attr,
        )
    })?;
    Ok(MqAttr {
        flags: old.mq_flags as i64,
        maxmsg: old.mq_maxmsg as i64,
        msgsize: old.mq_msgsize as i64,
        curmsgs: old.mq_curmsgs as i64,
    })
}

/// mq_timedreceive(2) of the oldest message of highest priority into `buf` (at least
/// mq_msgsize long), without a timeout: (length, priority). EAGAIN on an empty queue when the
/// description is O_NONBLOCK.
pub(crate) fn mq_receive(
    fd: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, u32)> {
    use std::os::fd::AsRawFd;
    let mut prio: libc::c_uint = 0;
    // SAFETY: `buf` is writable for its length and `prio` for a c_uint, both alive for the
    // call; a null timeout is allowed.
    let n = check(unsafe {
        libc::syscall(
            libc::SYS_mq_timedreceive,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut prio as *mut libc::c_uint,
            std::ptr::null::<libc::timespec>(),
        )
    })?;
    Ok((n as usize, prio))
}

/// mq_timedsend(2) of message `data` with priority `prio`, without a timeout.
pub(crate) fn mq_send(fd: std::os::fd::BorrowedFd<'_>, data: &[u8], prio: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `data` is readable for its length during the call; a null timeout is allowed.
    check(unsafe {
        libc::syscall(
            libc::SYS_mq_timedsend,
            fd.as_raw_fd(),
            data.as_ptr(),
            data.len(),
            prio as libc::c_uint,
            std::ptr::null::<libc::timespec>(),
        )
    })
    .map(drop)
}

/// mq_unlink(2) of queue `name` (without the leading '/').
pub(crate) fn mq_unlink(name: &str) -> io::Result<()> {
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `name` is NUL-terminated and alive for the call.
    check(unsafe { libc::syscall(libc::SYS_mq_unlink, name.as_ptr()) }).map(drop)
}
