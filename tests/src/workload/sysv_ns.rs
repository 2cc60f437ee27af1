//! `sysv-ns KEY [kidns|kidback]`: the SysV objects of `sysv-shm KEY` and `sysv-ipc KEY` (its child
//! attaching the segment too), made in an IPC namespace of its own, with a sysctl of it
//! changed and a segment no process attaches; with `kidns`, a child in yet another one.
//!
//! ```text
//! sysv-ns KEY [keepu|kidns|kidback]
//!                 unshare(CLONE_NEWIPC); kernel.msgmax 12345, kernel.sem "250 32000 32
//!                 128", fs.mqueue.queues_max 77 there; segment `u` (key
//!                 KEY+2, one page, mode 0600) filled with pattern 23 and detached; then
//!                 sysv-shm KEY (forks its child, in the same namespace) and sysv-ipc KEY
//!                 shm VERB...   -> sysv-shm's answer (`shm kid ...`: its child's)
//!                 ipc VERB...   -> sysv-ipc's answer
//!                 sysctl NAME   -> /proc/sys/NAME (kernel/msgmax)
//!                 set NAME VALUE -> ok (VALUE written to /proc/sys/NAME)
//!                 ns            -> /proc/self/ns/ipc
//!                 u             -> id key size same|differs (segment `u` against its pattern)
//!                 mq NAME       -> ok (a POSIX message queue /NAME made and closed)
//! keepu           segment `u` (the namespace's first: id 0) kept attached:
//!                 u-dt -> ok | <error> (shmdt of that attachment: it is a SysV one)
//! kidns           first a child (before sysv-shm: it attaches nothing of this namespace) that
//!                 unshares an IPC namespace of its own (the same sysctls but) kernel.msgmax
//!                 23456 there, a private segment, its segment `u` (same key, pattern 24,
//!                 id 1 as the parent's `s`) kept attached, and
//!                 sysv-ipc KEY's objects (same keys again); `nskid VERB...` -> its answer to
//!                 ipc, sysctl, ns, u
//! kidback         first a child that goes back to the namespace the workload started in
//!                 (setns) and makes nothing: `nskid ns` -> its namespace
//! ```

use std::io;
use std::path::Path;

use super::kids::{answer_each, ChildPipes};
use super::{failed, sys, Mode, PAGE};
use crate::protocol;

/// `sysv-ns KEY [keepu|kidns|kidback]`
pub fn start(args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let key: i32 = args
        .first()
        .and_then(|k| k.parse().ok())
        .ok_or("sysv-ns: KEY expected")?;
    let mode = args.get(1).map(String::as_str);
    // The namespace it starts in, for a `kidback` child to go back to.
    let first = std::fs::File::open("/proc/self/ns/ipc").map_err(failed("sysv-ns: ns"))?;
    let mut me = SysvNs::in_new_namespace(key, 12345, 23, mode == Some("keepu"), false)?;
    if matches!(mode, Some("kidns" | "kidback")) {
        let (a_rd, a_wr) = sys::pipe().map_err(failed("sysv-ns: pipe"))?;
        let (b_rd, b_wr) = sys::pipe().map_err(failed("sysv-ns: pipe"))?;
        // the workload is single-threaded here; the child only makes syscalls.
        let kid = sys::fork().map_err(failed("sysv-ns: fork"))?;
        if kid == 0 {
            let made = if mode == Some("kidback") {
                nix::sched::setns(&first, nix::sched::CloneFlags::CLONE_NEWIPC)
                    .map_err(|e| failed("sysv-ns: setns")(e.into()))
                    .map(|()| SysvNs {
                        shm: None,
                        ipc: None,
                        u: -1,
                        seed: 0,
                        _kept: None,
                        kid: None,
                    })
            } else {
                SysvNs::in_new_namespace(key, 23456, 24, true, true).and_then(|mut k| {
                    k.ipc = Some(super::sysv_ipc::start(&args[..1], dir)?);
                    Ok(k)
                })
            };
            // No namespace handle kept: a dump refuses an nsfs fd.
            drop(first);
            let mut k = match made {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("sysv-ns child: {e}");
                    // SAFETY: ends the forked process.
                    unsafe { libc::_exit(3) };
                }
            };
            answer_each(a_rd, b_wr, |msg| {
                let words: Vec<&str> = msg.split_whitespace().collect();
                match words.split_first() {
                    Some((verb, args)) => {
                        k.command(verb, args).unwrap_or_else(|e| format!("err {e}"))
                    }
                    None => "err empty".into(),
                }
            });
            std::process::exit(3)
        }
        let pipes = ChildPipes {
            to_child: a_wr,
            from_child: b_rd,
        };
        // Ready once the child has made its namespace.
        pipes.ask("ns").map_err(failed("sysv-ns: the child"))?;
        me.kid = Some(pipes);
    }
    drop(first);
    // After the fork: the child holds no attachment of this namespace.
    me.shm = Some(super::sysv_shm::start(&args[..1], dir)?);
    me.ipc = Some(super::sysv_ipc::start(&args[..1], dir)?);
    Ok(Box::new(me))
}

/// Segment `u` of key `key` filled with pattern `seed`: detached, or kept attached (`keep`).
fn make_u(key: i32, seed: u64, keep: bool) -> io::Result<(i32, Option<Attached>)> {
    // SAFETY: shmget takes no pointers.
    let id =
        sys::cvt(unsafe { libc::shmget(key, PAGE, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) })?;
    let view = Attached::new(id, 0)?;
    // SAFETY: view.0..view.0+PAGE is the read-write attachment just made.
    unsafe { std::slice::from_raw_parts_mut(view.0 as *mut u8, PAGE) }
        .copy_from_slice(&protocol::pattern(PAGE, seed));
    Ok((id, keep.then_some(view)))
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

/// The `sysv-ns` mode (see the module doc), and its `kidns` child.
struct SysvNs {
    shm: Option<Box<dyn Mode>>,
    ipc: Option<Box<dyn Mode>>,
    u: i32,
    seed: u64,
    /// The child's segment `u`, attached for good.
    _kept: Option<Attached>,
    kid: Option<ChildPipes>,
}

/// kernel.sem of the namespace: SEMMSL SEMMNS SEMOPM SEMMNI.
pub const SEM_LIMITS: &str = "839246125 755136150 1604938492 16922";

impl SysvNs {
    /// This process in a new IPC namespace with kernel.msgmax `msgmax` and segment `u`
    /// (attached for good: `keep`; made second, after a private one: `second`).
    fn in_new_namespace(
        key: i32,
        msgmax: u32,
        seed: u64,
        keep: bool,
        second: bool,
    ) -> Result<Self, String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC)
            .map_err(|e| failed("sysv-ns: unshare")(e.into()))?;
        for (name, value) in [
            ("kernel/msgmax", msgmax.to_string()),
            // Longer than 32 bytes: read in pieces, its last digits were lost.
            ("kernel/sem", SEM_LIMITS.into()),
            ("fs/mqueue/queues_max", "77".into()),
        ] {
            std::fs::write(format!("/proc/sys/{name}"), value).map_err(failed(name))?;
        }
        if second {
            // Segment ids start again in every namespace: one made first gives `u` the id of
            // the parent's `s` (1), so the two namespaces' attached segments share an id.
            // SAFETY: shmget takes no pointers.
            sys::cvt(unsafe { libc::shmget(libc::IPC_PRIVATE, PAGE, 0o600) })
                .map_err(failed("sysv-ns: a first segment"))?;
        }
        let (u, kept) = make_u(key + 2, seed, keep).map_err(failed("sysv-ns: segment u"))?;
        Ok(Self {
            shm: None,
            ipc: None,
            u,
            seed,
            _kept: kept,
            kid: None,
        })
    }

    fn u(&self) -> io::Result<String> {
        // SAFETY: zeroed shmid_ds is valid; IPC_STAT fills it.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: `ds` is a valid buffer.
        sys::cvt(unsafe { libc::shmctl(self.u, libc::IPC_STAT, &mut ds) })?;
        let view = Attached::new(self.u, libc::SHM_RDONLY)?;
        // SAFETY: view.0..view.0+PAGE is the attachment just made.
        let bytes = unsafe { std::slice::from_raw_parts(view.0 as *const u8, PAGE) };
        let same = bytes == &protocol::pattern(PAGE, self.seed)[..PAGE];
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
            ("shm", [verb, rest @ ..]) => match &mut self.shm {
                Some(m) => m.command(verb, rest),
                None => Err("no sysv-shm here".into()),
            },
            ("ipc", [verb, rest @ ..]) => match &mut self.ipc {
                Some(m) => m.command(verb, rest),
                None => Err("no sysv-ipc here".into()),
            },
            ("nskid", _) => match &self.kid {
                Some(p) => p.ask(&args.join(" ")).map_err(text),
                None => Err("no kidns child".into()),
            },
            // One read: a sysctl of numbers read in pieces comes back cut.
            ("sysctl", [name]) => std::fs::File::open(format!("/proc/sys/{name}"))
                .and_then(|mut f| {
                    let mut buf = vec![0u8; 4096];
                    let n = std::io::Read::read(&mut f, &mut buf)?;
                    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
                })
                .map_err(text),
            ("set", [name, value]) => std::fs::write(format!("/proc/sys/{name}"), value)
                .map(|()| "ok".into())
                .map_err(text),
            ("ns", []) => std::fs::read_link("/proc/self/ns/ipc")
                .map(|l| l.to_string_lossy().into_owned())
                .map_err(text),
            ("u", []) => self.u().map_err(text),
            ("u-dt", []) => {
                let kept = self._kept.take().ok_or("segment u is not kept attached")?;
                let at = kept.0 as *const libc::c_void;
                std::mem::forget(kept);
                // SAFETY: the attachment `kept` made; nothing refers into it any more.
                sys::cvt(unsafe { libc::shmdt(at) })
                    .map(|_| "ok".into())
                    .map_err(text)
            }
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
