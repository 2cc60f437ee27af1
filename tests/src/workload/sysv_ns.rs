//! `sysv-ns KEY`: the SysV objects of `sysv-shm KEY` and `sysv-ipc KEY` (its child attaching
//! the segment too), made in an IPC namespace of its own, with a sysctl of it changed and a
//! segment no process attaches.
//!
//! ```text
//! sysv-ns KEY     unshare(CLONE_NEWIPC); kernel.msgmax 12345 there; segment `u` (key
//!                 KEY+2, one page, mode 0600) filled with pattern 23 and detached; then
//!                 sysv-shm KEY (forks its child, in the same namespace) and sysv-ipc KEY
//!                 shm VERB...   -> sysv-shm's answer (`shm kid ...`: its child's)
//!                 ipc VERB...   -> sysv-ipc's answer
//!                 sysctl NAME   -> /proc/sys/NAME (kernel/msgmax)
//!                 ns            -> /proc/self/ns/ipc
//!                 u             -> id key size same|differs (segment `u` against its pattern)
//!                 mq NAME       -> ok (a POSIX message queue /NAME made and closed)
//! ```

use std::io;
use std::path::Path;

use super::{failed, sys, Mode, PAGE};
use crate::protocol;

/// `sysv-ns KEY`
pub fn start(args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let key: i32 = args
        .first()
        .and_then(|k| k.parse().ok())
        .ok_or("sysv-ns: KEY expected")?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC)
        .map_err(|e| failed("sysv-ns: unshare")(e.into()))?;
    std::fs::write("/proc/sys/kernel/msgmax", "12345").map_err(failed("sysv-ns: msgmax"))?;
    let u = make_u(key + 2).map_err(failed("sysv-ns: segment u"))?;
    let shm = super::sysv_shm::start(args, dir)?;
    let ipc = super::sysv_ipc::start(args, dir)?;
    Ok(Box::new(SysvNs { shm, ipc, u }))
}

/// Segment `u`: made, filled, detached.
fn make_u(key: i32) -> io::Result<i32> {
    // SAFETY: shmget takes no pointers.
    let id =
        sys::cvt(unsafe { libc::shmget(key, PAGE, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) })?;
    let view = Attached::new(id, 0)?;
    // SAFETY: view.0..view.0+PAGE is the read-write attachment just made.
    unsafe { std::slice::from_raw_parts_mut(view.0 as *mut u8, PAGE) }
        .copy_from_slice(&protocol::pattern(PAGE, 23));
    Ok(id)
}

/// A segment attached for a moment.
struct Attached(usize);

impl Attached {
    fn new(id: i32, flags: i32) -> io::Result<Self> {
        // SAFETY: a null address lets the kernel choose where.
        let p = unsafe { libc::shmat(id, std::ptr::null(), flags) };
        if p as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(p as usize))
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // SAFETY: the attachment made by `new`, no reference left into it.
        unsafe { libc::shmdt(self.0 as *const libc::c_void) };
    }
}

/// The `sysv-ns` mode (see the module doc).
struct SysvNs {
    shm: Box<dyn Mode>,
    ipc: Box<dyn Mode>,
    u: i32,
}

impl SysvNs {
    fn u(&self) -> io::Result<String> {
        // SAFETY: zeroed shmid_ds is valid; IPC_STAT fills it.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: `ds` is a valid buffer.
        sys::cvt(unsafe { libc::shmctl(self.u, libc::IPC_STAT, &mut ds) })?;
        let view = Attached::new(self.u, libc::SHM_RDONLY)?;
        // SAFETY: view.0..view.0+PAGE is the attachment just made.
        let bytes = unsafe { std::slice::from_raw_parts(view.0 as *const u8, PAGE) };
        let same = bytes == &protocol::pattern(PAGE, 23)[..PAGE];
        Ok(format!(
            "{} {} {} {}",
            self.u,
            ds.shm_perm.__key,
            ds.shm_segsz,
            if same { "same" } else { "differs" }
        ))
    }
}

impl Mode for SysvNs {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let text = |e: io::Error| e.to_string();
        match (verb, args) {
            ("shm", [verb, rest @ ..]) => self.shm.command(verb, rest),
            ("ipc", [verb, rest @ ..]) => self.ipc.command(verb, rest),
            ("sysctl", [name]) => std::fs::read_to_string(format!("/proc/sys/{name}"))
                .map(|v| v.trim().to_string())
                .map_err(text),
            ("ns", []) => std::fs::read_link("/proc/self/ns/ipc")
                .map(|l| l.to_string_lossy().into_owned())
                .map_err(text),
            ("u", []) => self.u().map_err(text),
            ("mq", [name]) => {
                let name = std::ffi::CString::new(format!("/{name}")).map_err(|e| e.to_string())?;
                // SAFETY: `name` is a NUL-terminated string; a null attr takes the defaults.
                let q = unsafe {
                    libc::mq_open(
                        name.as_ptr(),
                        libc::O_CREAT | libc::O_RDWR,
                        0o600,
                        std::ptr::null_mut::<libc::mq_attr>(),
                    )
                };
                sys::cvt(q).map_err(text)?;
                // SAFETY: `q` is the queue just opened.
                unsafe { libc::mq_close(q) };
                Ok("ok".into())
            }
            _ => Err(format!("unknown command {verb:?}")),
        }
    }
}
