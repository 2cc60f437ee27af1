//! Raw system calls used by the feature probes.
//!
//! Every `unsafe` block of the check module lives here, each with its `SAFETY:` reason. The
//! functions are thin: they take and return plain values, `BorrowedFd`/`OwnedFd` and
//! `io::Result`, so the probes themselves stay in safe code. Children forked here run only
//! raw system calls (async-signal-safe) before they exit, because the caller may be a
//! multi-threaded process (a test harness, the CLI with its logger).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use libc::{c_int, c_long, c_void, pid_t};

use crate::sys::process::CloneArgs;

/// `PTRACE_SEIZE`.
const PTRACE_SEIZE: c_long = 0x4206;
/// `PTRACE_INTERRUPT`.
const PTRACE_INTERRUPT: c_long = 0x4207;
/// `PTRACE_DETACH`.
const PTRACE_DETACH: c_long = 17;
/// `PTRACE_GETREGSET`.
const PTRACE_GETREGSET: c_long = 0x4204;
/// `PTRACE_PEEKSIGINFO`.
const PTRACE_PEEKSIGINFO: c_long = 0x4209;
/// `PTRACE_GETSIGMASK`.
const PTRACE_GETSIGMASK: c_long = 0x420a;
/// `PTRACE_GET_RSEQ_CONFIGURATION`.
const PTRACE_GET_RSEQ_CONFIGURATION: c_long = 0x420f;
/// Peek the process-wide (shared) pending queue instead of the thread's.
pub const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;

/// `NT_PRSTATUS`: general purpose registers.
pub const NT_PRSTATUS: u32 = 1;
/// `NT_X86_XSTATE`: the XSAVE area (FPU, SSE, AVX, ...).
pub const NT_X86_XSTATE: u32 = 0x202;

/// `PR_SET_MM`.
const PR_SET_MM: c_int = 35;
/// `PR_SET_MM_MAP`.
const PR_SET_MM_MAP: c_long = 14;
/// `PR_SET_MM_MAP_SIZE`.
const PR_SET_MM_MAP_SIZE: c_long = 15;

/// `KCMP_FILE`.
const KCMP_FILE: c_long = 0;

/// `UFFDIO_API`: `_IOWR(0xAA, 0x3F, struct uffdio_api)`.
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
/// `UFFDIO_REGISTER`: `_IOWR(0xAA, 0x00, struct uffdio_register)`.
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
/// `UFFD_API`.
const UFFD_API: u64 = 0xAA;
/// `UFFDIO_REGISTER_MODE_WP`.
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;

/// `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;

/// `struct user_regs_struct` size on x86_64 (27 registers).
pub const USER_REGS_SIZE: usize = 27 * 8;

/// `struct prctl_mm_map` (104 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MmMap {
    /// Start of the text segment.
    pub start_code: u64,
    /// End of the text segment.
    pub end_code: u64,
    /// Start of the data segment.
    pub start_data: u64,
    /// End of the data segment.
    pub end_data: u64,
    /// Start of the heap.
    pub start_brk: u64,
    /// Current program break (filled in by the child itself).
    pub brk: u64,
    /// Start of the stack.
    pub start_stack: u64,
    /// Start of the arguments.
    pub arg_start: u64,
    /// End of the arguments.
    pub arg_end: u64,
    /// Start of the environment.
    pub env_start: u64,
    /// End of the environment.
    pub env_end: u64,
    /// Address of the auxiliary vector to install.
    pub auxv: u64,
    /// Its size in bytes.
    pub auxv_size: u32,
    /// New /proc/PID/exe, or -1 to keep it.
    pub exe_fd: u32,
}

/// `struct ptrace_peeksiginfo_args`.
#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// `struct ptrace_rseq_configuration`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct RseqConfig {
    /// Address of the registered `struct rseq`, 0 when none.
    pub rseq_abi_pointer: u64,
    /// Its registered size.
    pub rseq_abi_size: u32,
    /// The abort signature.
    pub signature: u32,
    /// Flags given at registration.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
}

/// `struct uffdio_api`.
#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

/// `struct page_region`, one answer of PAGEMAP_SCAN.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PageRegion {
    /// First address of the region.
    pub start: u64,
    /// End of the region (exclusive).
    pub end: u64,
    /// `PAGE_IS_*` bits of the region (masked by `return_mask`).
    pub categories: u64,
}

/// `struct pm_scan_arg`.
#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// Turns a `-1`-style return into the errno error.
fn check(ret: c_long) -> io::Result<c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a freshly returned fd.
fn own_fd(ret: c_long) -> io::Result<OwnedFd> {
    let fd = check(ret)? as RawFd;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One ptrace request.
fn ptrace(req: c_long, pid: pid_t, addr: usize, data: usize) -> io::Result<c_long> {
    // SAFETY: every caller passes in `addr`/`data` either plain integers or pointers to live
    // buffers of the size the request writes.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_ptrace,
            req,
            pid as c_long,
            addr as *mut c_void,
            data as *mut c_void,
        )
    };
    check(ret)
}

/// `PTRACE_SEIZE` with no options.
pub fn ptrace_seize(pid: pid_t) -> io::Result<()> {
    ptrace(PTRACE_SEIZE, pid, 0, 0).map(drop)
}

/// `PTRACE_INTERRUPT`: the seized task enters a ptrace stop.
pub fn ptrace_interrupt(pid: pid_t) -> io::Result<()> {
    ptrace(PTRACE_INTERRUPT, pid, 0, 0).map(drop)
}

/// `PTRACE_DETACH` without a signal.
pub fn ptrace_detach(pid: pid_t) -> io::Result<()> {
    ptrace(PTRACE_DETACH, pid, 0, 0).map(drop)
}

/// `PTRACE_GETREGSET`: fills `buf` and returns how many bytes the kernel wrote.
pub fn ptrace_getregset(pid: pid_t, note: u32, buf: &mut [u8]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    ptrace(
        PTRACE_GETREGSET,
        pid,
        note as usize,
        &mut iov as *mut libc::iovec as usize,
    )?;
    Ok(iov.iov_len)
}

/// `PTRACE_GETSIGMASK`: the blocked signal set as a bit mask (bit n-1 = signal n).
pub fn ptrace_getsigmask(pid: pid_t) -> io::Result<u64> {
    let mut mask = 0u64;
    ptrace(PTRACE_GETSIGMASK, pid, 8, &mut mask as *mut u64 as usize)?;
    Ok(mask)
}

/// `PTRACE_PEEKSIGINFO`: up to `out.len()` pending signals from offset 0; returns how many and
/// their signal numbers in `out`.
pub fn ptrace_peeksiginfo(pid: pid_t, flags: u32, out: &mut [i32]) -> io::Result<usize> {
    let mut infos = vec![[0u8; 128]; out.len()];
    let args = PeekSiginfoArgs {
        off: 0,
        flags,
        nr: out.len() as i32,
    };
    let n = ptrace(
        PTRACE_PEEKSIGINFO,
        pid,
        &args as *const PeekSiginfoArgs as usize,
        infos.as_mut_ptr() as usize,
    )? as usize;
    for (slot, info) in out.iter_mut().zip(infos.iter()).take(n) {
        *slot = i32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
    }
    Ok(n)
}

/// `PTRACE_GET_RSEQ_CONFIGURATION`.
pub fn ptrace_rseq_config(pid: pid_t) -> io::Result<RseqConfig> {
    let mut conf = RseqConfig::default();
    ptrace(
        PTRACE_GET_RSEQ_CONFIGURATION,
        pid,
        std::mem::size_of::<RseqConfig>(),
        &mut conf as *mut RseqConfig as usize,
    )?;
    Ok(conf)
}

/// Forks a child that blocks `SIGUSR1`, dies with its parent thread and otherwise only waits
/// for signals. Its memory and fds are copies of ours at the time of the fork.
pub fn fork_parked_child() -> io::Result<pid_t> {
    let parent = std::process::id() as pid_t;
    // SAFETY: a zeroed sigset_t is a valid empty set; sigemptyset/sigaddset only write to it.
    let mut block: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `block` is a valid sigset_t owned by this frame.
    unsafe {
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGUSR1);
    }
    // SAFETY: as above, a zeroed sigset_t is valid storage for the old mask.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // Block SIGUSR1 in this thread around the fork so the child starts with it blocked and a
    // SIGUSR1 sent right after the fork stays pending instead of killing it.
    // SAFETY: both pointers are to live sigset_t values.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: the child below only issues raw system calls (prctl, getppid, pause, exit_group),
    // all async-signal-safe, so forking a multi-threaded process is sound.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: raw system calls with integer arguments; the child never returns.
        unsafe {
            libc::syscall(
                libc::SYS_prctl,
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL,
                0,
                0,
                0,
            );
            if libc::syscall(libc::SYS_getppid) as pid_t != parent {
                libc::syscall(libc::SYS_exit_group, 1);
            }
            loop {
                libc::syscall(libc::SYS_pause);
            }
        }
    }
    let err = io::Error::last_os_error();
    // SAFETY: `old` holds the mask saved above; restoring it is always valid.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 {
        Err(err)
    } else {
        Ok(pid)
    }
}

/// `prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)`: the size of `struct prctl_mm_map` the kernel takes.
pub fn prctl_mm_map_size() -> io::Result<u32> {
    let mut size = 0u32;
    // SAFETY: the kernel writes one u32 to the live `size`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_prctl,
            PR_SET_MM as c_long,
            PR_SET_MM_MAP_SIZE,
            &mut size as *mut u32,
            0 as c_long,
            0 as c_long,
        )
    };
    check(ret)?;
    Ok(size)
}

/// Size in bytes of [`MmMap`].
pub const MM_MAP_SIZE: usize = std::mem::size_of::<MmMap>();

/// Forks a child that applies `map` (with `brk` replaced by its own current break) to itself
/// with `PR_SET_MM_MAP` and exits with 0, or with the errno of the failure.
pub fn fork_set_mm_map(map: &MmMap, auxv: &[u8]) -> io::Result<pid_t> {
    let mut map = *map;
    if !auxv.is_empty() {
        map.auxv = auxv.as_ptr() as u64;
        map.auxv_size = auxv.len() as u32;
    }
    // SAFETY: the child only issues raw system calls (brk, prctl, exit_group) and reads errno,
    // all async-signal-safe; `map` and `auxv` are copied into its address space by the fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: raw system calls; `map` points to a live struct of MM_MAP_SIZE bytes in the
        // child's copy of this stack frame, and the child never returns.
        unsafe {
            map.brk = libc::syscall(libc::SYS_brk, 0) as u64;
            let ret = libc::syscall(
                libc::SYS_prctl,
                PR_SET_MM as c_long,
                PR_SET_MM_MAP,
                &map as *const MmMap,
                MM_MAP_SIZE as c_long,
                0 as c_long,
            );
            let code = if ret == 0 {
                0
            } else {
                *libc::__errno_location()
            };
            libc::syscall(libc::SYS_exit_group, code as c_long);
            libc::_exit(code);
        }
    }
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

/// Raw `clone3` without `CLONE_VM`: a fork whose child exits at once. With `set_tid` the child
/// gets that PID; with `new_pid_ns` it is PID 1 of a new PID namespace and exits 0 only if
/// getpid() says 1. Returns the child's PID as seen from here.
pub fn clone3_exiting_child(set_tid: Option<pid_t>, new_pid_ns: bool) -> io::Result<pid_t> {
    let tids = [set_tid.unwrap_or(0)];
    let mut args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if set_tid.is_some() {
        args.set_tid = tids.as_ptr() as u64;
        args.set_tid_size = 1;
    }
    if new_pid_ns {
        args.flags |= libc::CLONE_NEWPID as u64;
    }
    // SAFETY: `args` is a valid clone_args of the size passed and `tids` outlives the call.
    // Without CLONE_VM the child runs on a copy of this address space and issues only raw
    // system calls before exit_group, which is sound even in a multi-threaded process.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret == 0 {
        // SAFETY: raw system calls in the child; it never returns.
        unsafe {
            let code = if new_pid_ns && libc::syscall(libc::SYS_getpid) != 1 {
                1
            } else {
                0
            };
            libc::syscall(libc::SYS_exit_group, code as c_long);
            libc::_exit(code);
        }
    }
    check(ret).map(|pid| pid as pid_t)
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: pid_t) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments only.
    own_fd(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as c_long, 0 as c_long) })
}

/// `pidfd_getfd(pidfd, fd, 0)`: a duplicate of the target's `fd` in this process.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments only; `pidfd` is a live fd borrowed for the call.
    own_fd(unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            pidfd.as_raw_fd() as c_long,
            fd as c_long,
            0 as c_long,
        )
    })
}

/// `kcmp(pid1, pid2, KCMP_FILE, fd1, fd2)`: 0 when both fds refer to the same open file
/// description.
pub fn kcmp_file(pid1: pid_t, pid2: pid_t, fd1: RawFd, fd2: RawFd) -> io::Result<c_long> {
    // SAFETY: integer arguments only.
    check(unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1 as c_long,
            pid2 as c_long,
            KCMP_FILE,
            fd1 as c_long,
            fd2 as c_long,
        )
    })
}

/// `setsockopt` of an int option.
pub fn setsockopt_int(fd: BorrowedFd<'_>, level: c_int, name: c_int, val: c_int) -> io::Result<()> {
    // SAFETY: `val` is a live int and its size is passed.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &val as *const c_int as *const c_void,
            std::mem::size_of::<c_int>() as libc::socklen_t,
        )
    };
    check(ret as c_long).map(drop)
}

/// `getsockopt` of an int option.
pub fn getsockopt_int(fd: BorrowedFd<'_>, level: c_int, name: c_int) -> io::Result<c_int> {
    let mut val: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are live and `len` holds the size of `val`.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &mut val as *mut c_int as *mut c_void,
            &mut len,
        )
    };
    check(ret as c_long)?;
    Ok(val)
}

/// `userfaultfd(O_CLOEXEC | O_NONBLOCK)`.
pub fn userfaultfd() -> io::Result<OwnedFd> {
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as c_long;
    // SAFETY: integer arguments only.
    own_fd(unsafe { libc::syscall(libc::SYS_userfaultfd, flags) })
}

/// `UFFDIO_API` handshake asking for `features`; returns (supported features, ioctls).
pub fn uffdio_api(uffd: BorrowedFd<'_>, features: u64) -> io::Result<(u64, u64)> {
    let mut api = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: `api` is a live struct uffdio_api, the size encoded in UFFDIO_API.
    let ret = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut api as *mut UffdioApi) };
    check(ret as c_long)?;
    Ok((api.features, api.ioctls))
}

/// `UFFDIO_REGISTER` of `[start, start + len)` in write-protect mode.
pub fn uffdio_register_wp(uffd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<u64> {
    let mut reg = UffdioRegister {
        start,
        len,
        mode: UFFDIO_REGISTER_MODE_WP,
        ioctls: 0,
    };
    // SAFETY: `reg` is a live struct uffdio_register, the size encoded in UFFDIO_REGISTER.
    let ret = unsafe {
        libc::ioctl(
            uffd.as_raw_fd(),
            UFFDIO_REGISTER,
            &mut reg as *mut UffdioRegister,
        )
    };
    check(ret as c_long)?;
    Ok(reg.ioctls)
}

/// Arguments of one PAGEMAP_SCAN call.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scan {
    /// `PM_SCAN_*` flags.
    pub flags: u64,
    /// First address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// Categories a page must have.
    pub category_mask: u64,
    /// Categories reported back.
    pub return_mask: u64,
}

/// `ioctl(pagemap, PAGEMAP_SCAN)`: fills `out` and returns the number of regions.
pub fn pagemap_scan(
    pagemap: BorrowedFd<'_>,
    scan: Scan,
    out: &mut [PageRegion],
) -> io::Result<usize> {
    let mut arg = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        flags: scan.flags,
        start: scan.start,
        end: scan.end,
        walk_end: 0,
        vec: out.as_mut_ptr() as u64,
        vec_len: out.len() as u64,
        max_pages: 0,
        category_inverted: 0,
        category_mask: scan.category_mask,
        category_anyof_mask: 0,
        return_mask: scan.return_mask,
    };
    // SAFETY: `arg` is a live pm_scan_arg whose `vec` points to `out`, `vec_len` entries long.
    let ret = unsafe {
        libc::ioctl(
            pagemap.as_raw_fd(),
            PAGEMAP_SCAN,
            &mut arg as *mut PmScanArg,
        )
    };
    Ok(check(ret as c_long)? as usize)
}

/// A private anonymous mapping owned by the probe, unmapped on drop.
pub struct AnonMap {
    addr: *mut u8,
    len: usize,
}

/// The page size (4 KiB on x86_64, asked of the kernel anyway).
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory arguments.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if ps > 0 {
        ps as usize
    } else {
        4096
    }
}

impl AnonMap {
    /// Maps `pages` fresh, untouched pages.
    pub fn new(pages: usize) -> io::Result<Self> {
        let len = pages * page_size();
        // SAFETY: a fresh anonymous mapping chosen by the kernel overlaps nothing we own.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            addr: addr.cast(),
            len,
        })
    }

    /// First address.
    pub fn start(&self) -> u64 {
        self.addr as u64
    }

    /// Length in bytes.
    pub fn byte_len(&self) -> usize {
        self.len
    }

    /// Writes one byte at the start of page `page` (faulting it in).
    pub fn touch(&self, page: usize, val: u8) {
        let off = page * page_size();
        assert!(off < self.len, "page {page} outside the mapping");
        // SAFETY: `off` is inside the read-write mapping this struct owns.
        unsafe { std::ptr::write_volatile(self.addr.add(off), val) };
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this struct created and nobody else references.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}
