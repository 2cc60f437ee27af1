//! `sysv-shm KEY`: System V shared memory segments, attached by this process and a child.
//!
//! ```text
//! sysv-shm KEY    segment `s` (key KEY, 3 pages + 100 bytes) made as uid 1000 gid 100
//!                 (its cuid/cgid), then IPC_SET uid 1001 gid 101 mode 0640; attached
//!                 read-write as view `a` and read-only (SHM_RDONLY) as view `ro`, filled
//!                 with a pattern; segment `d` (IPC_PRIVATE, 1 page) attached as view `d`
//!                 and marked destroyed (IPC_RMID) while attached. Then a child is forked
//!                 (it inherits `a`, `ro`, `d`) that attaches `s` again as its view `a2`.
//!                 w VIEW OFF BYTE -> ok      r VIEW OFF -> <byte>
//!                 stat s|d -> key id mode uid gid cuid cgid size nattch (IPC_STAT)
//!                 dt VIEW -> ok (shmdt)      rmid s|d -> ok (IPC_RMID)
//!                 pid -> <pid>    kid ... -> the child's answer to the same commands
//!                 mprotect VIEW PAGE r|rw|none -> ok | ERRNO (one page of the view)
//!                 prots VIEW -> PAGE:PERMS:OFFSET,... (the view's VMAs in /proc/self/maps)
//!                 map-private VIEW -> <address> (the view's segment mapped again MAP_PRIVATE
//!                 through /proc/self/map_files)
//! ```

use std::io;
use std::path::Path;

use super::kids::{answer_each, ChildPipes};
use super::{failed, io_err, sys, Mode, PAGE};
use crate::protocol;

/// `sysv-shm KEY`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let key: i32 = args
        .first()
        .and_then(|k| k.parse().ok())
        .ok_or("sysv-shm: KEY expected")?;
    Ok(Box::new(SysvShm::start(key).map_err(failed("sysv-shm"))?))
}

/// The keyed segment's size: not a page multiple.
const S_LEN: usize = 3 * PAGE + 100;

/// The `sysv-shm` mode (see the module doc).
struct SysvShm {
    s: i32,
    d: i32,
    views: Vec<(&'static str, usize, usize)>,
    pipes: Option<ChildPipes>,
}

fn cvt_ptr(p: *mut libc::c_void) -> io::Result<usize> {
    if p as isize == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(p as usize)
    }
}

fn attach(id: i32, flags: i32) -> io::Result<usize> {
    // SAFETY: a null address lets the kernel choose where.
    cvt_ptr(unsafe { libc::shmat(id, std::ptr::null(), flags) })
}

impl SysvShm {
    fn start(key: i32) -> io::Result<Self> {
        // Made as another user: its cuid/cgid are 1000/100.
        // SAFETY: plain id changes of this single-threaded process; the saved ids stay 0.
        sys::cvt(unsafe { libc::setegid(100) })?;
        // SAFETY: as above.
        sys::cvt(unsafe { libc::seteuid(1000) })?;
        // SAFETY: shmget takes no pointers.
        let made =
            sys::cvt(unsafe { libc::shmget(key, S_LEN, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) });
        let set = made.and_then(|s| {
            // SAFETY: zeroed shmid_ds is valid; IPC_SET reads uid, gid, mode.
            let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
            ds.shm_perm.uid = 1001;
            ds.shm_perm.gid = 101;
            ds.shm_perm.mode = 0o640;
            // SAFETY: `ds` is a valid buffer.
            sys::cvt(unsafe { libc::shmctl(s, libc::IPC_SET, &mut ds) }).map(|_| s)
        });
        // SAFETY: back to root (the saved uid is 0).
        sys::cvt(unsafe { libc::seteuid(0) })?;
        // SAFETY: as above.
        sys::cvt(unsafe { libc::setegid(0) })?;
        let s = set?;
        let a = attach(s, 0)?;
        let ro = attach(s, libc::SHM_RDONLY)?;
        // SAFETY: a..a+S_LEN is the read-write attachment just made.
        let bytes = unsafe { std::slice::from_raw_parts_mut(a as *mut u8, S_LEN) };
        bytes.copy_from_slice(&protocol::pattern(S_LEN, 21));
        // SAFETY: shmget takes no pointers.
        let d = sys::cvt(unsafe { libc::shmget(libc::IPC_PRIVATE, PAGE, 0o600) })?;
        let dv = attach(d, 0)?;
        // SAFETY: dv..dv+PAGE is the attachment just made.
        unsafe { std::slice::from_raw_parts_mut(dv as *mut u8, PAGE) }
            .copy_from_slice(&protocol::pattern(PAGE, 22));
        // SAFETY: IPC_RMID reads no buffer.
        sys::cvt(unsafe { libc::shmctl(d, libc::IPC_RMID, std::ptr::null_mut()) })?;
        let mut me = Self {
            s,
            d,
            views: vec![("a", a, S_LEN), ("ro", ro, S_LEN), ("d", dv, PAGE)],
            pipes: None,
        };
        let (a_rd, a_wr) = sys::pipe()?;
        let (b_rd, b_wr) = sys::pipe()?;
        // the workload is single-threaded here; the child only makes syscalls.
        let kid = sys::fork()?;
        if kid == 0 {
            match attach(s, 0) {
                Ok(a2) => me.views.push(("a2", a2, S_LEN)),
                Err(e) => {
                    eprintln!("sysv-shm child: shmat: {e}");
                    // SAFETY: ends the forked process.
                    unsafe { libc::_exit(3) };
                }
            }
            me.child(a_rd, b_wr);
        }
        let pipes = ChildPipes {
            to_child: a_wr,
            from_child: b_rd,
        };
        // Ready once the child has attached its own view.
        pipes.ask("pid")?;
        me.pipes = Some(pipes);
        Ok(me)
    }

    /// The child: answers the same commands, forever.
    fn child(&mut self, rd: i32, wr: i32) -> ! {
        answer_each(rd, wr, |msg| {
            let words: Vec<&str> = msg.split_whitespace().collect();
            match words.split_first() {
                Some((verb, args)) => self.answer(verb, args).unwrap_or_else(|e| e),
                None => "err empty".into(),
            }
        });
        std::process::exit(3)
    }

    fn view(&self, name: &str) -> Result<(usize, usize), String> {
        self.views
            .iter()
            .find(|v| v.0 == name)
            .map(|v| (v.1, v.2))
            .ok_or_else(|| format!("err no view {name}"))
    }

    fn segment(&self, name: &str) -> Result<i32, String> {
        match name {
            "s" => Ok(self.s),
            "d" => Ok(self.d),
            _ => Err(format!("err no segment {name}")),
        }
    }

    fn answer(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let off = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| format!("err bad offset {s:?}"))
        };
        match (verb, args) {
            ("w", [v, o, b]) => {
                let (addr, len) = self.view(v)?;
                let o = off(o)?;
                let byte: u8 = b.parse().map_err(|_| format!("err bad byte {b:?}"))?;
                if o >= len {
                    return Err(format!("err offset {o} beyond {len}"));
                }
                // SAFETY: addr..addr+len is an attachment of this process and o < len;
                // volatile, since another process writes the same memory.
                unsafe { std::ptr::write_volatile((addr + o) as *mut u8, byte) };
                Ok("ok".into())
            }
            ("r", [v, o]) => {
                let (addr, len) = self.view(v)?;
                let o = off(o)?;
                if o >= len {
                    return Err(format!("err offset {o} beyond {len}"));
                }
                // SAFETY: as for `w`.
                Ok(unsafe { std::ptr::read_volatile((addr + o) as *const u8) }.to_string())
            }
            // SAFETY: getpid takes no arguments.
            ("pid", []) => Ok(unsafe { libc::getpid() }.to_string()),
            ("stat", [seg]) => {
                let id = self.segment(seg)?;
                // SAFETY: zeroed shmid_ds is valid; IPC_STAT fills it.
                let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
                // SAFETY: `ds` is a valid buffer.
                sys::cvt(unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) })
                    .map_err(|e| format!("err IPC_STAT: {e}"))?;
                let p = &ds.shm_perm;
                Ok(format!(
                    "{} {id} {:o} {} {} {} {} {} {}",
                    p.__key, p.mode, p.uid, p.gid, p.cuid, p.cgid, ds.shm_segsz, ds.shm_nattch
                ))
            }
            ("dt", [v]) => {
                let (addr, _) = self.view(v)?;
                // SAFETY: `addr` is an attachment of this process no reference points into.
                sys::cvt(unsafe { libc::shmdt(addr as *const libc::c_void) })
                    .map_err(|e| format!("err shmdt: {e}"))?;
                self.views.retain(|x| x.0 != *v);
                Ok("ok".into())
            }
            ("map-private", [v]) => {
                // The view's segment mapped again, privately, through its map_files entry.
                let (addr, len) = self.view(v)?;
                let end = addr + len.div_ceil(PAGE) * PAGE;
                let path = format!("/proc/self/map_files/{addr:x}-{end:x}");
                let file = std::fs::File::open(&path).map_err(io_err)?;
                // SAFETY: a new private mapping of the file, at an address the kernel picks.
                let at = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        end - addr,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE,
                        std::os::fd::AsRawFd::as_raw_fd(&file),
                        0,
                    )
                };
                cvt_ptr(at).map(|at| format!("{at:#x}")).map_err(io_err)
            }
            ("mprotect", [v, page, prot]) => {
                let (addr, _) = self.view(v)?;
                let page = off(page)?;
                let prot = match *prot {
                    "r" => libc::PROT_READ,
                    "rw" => libc::PROT_READ | libc::PROT_WRITE,
                    "none" => libc::PROT_NONE,
                    other => return Err(format!("err bad protection {other:?}")),
                };
                // SAFETY: a page of an attachment of this process; no reference points into it.
                let r = unsafe {
                    libc::mprotect((addr + page * 4096) as *mut libc::c_void, 4096, prot)
                };
                match sys::cvt(r) {
                    Ok(_) => Ok("ok".into()),
                    Err(e) if e.raw_os_error() == Some(libc::EACCES) => Ok("EACCES".into()),
                    Err(e) => Ok(format!("err {e}")),
                }
            }
            ("prots", [v]) => {
                let (addr, len) = self.view(v)?;
                let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
                let pieces: Vec<String> = maps
                    .lines()
                    .filter_map(|l| {
                        let mut f = l.split_whitespace();
                        let range = f.next()?;
                        let (a, _) = range.split_once('-')?;
                        let a = usize::from_str_radix(a, 16).ok()?;
                        (a >= addr && a < addr + len).then(|| {
                            let perms = f.next().unwrap_or("");
                            let offset = f.next().unwrap_or("");
                            format!("{}:{perms}:{offset}", (a - addr) / 4096)
                        })
                    })
                    .collect();
                Ok(pieces.join(","))
            }
            ("rmid", [seg]) => {
                let id = self.segment(seg)?;
                // SAFETY: IPC_RMID reads no buffer.
                sys::cvt(unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) })
                    .map_err(|e| format!("err IPC_RMID: {e}"))?;
                Ok("ok".into())
            }
            _ => Err(format!("err unknown command {verb:?}")),
        }
    }
}

impl Mode for SysvShm {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, &self.pipes) {
            ("kid", Some(p)) => p.ask(&args.join(" ")).map_err(io_err),
            _ => self
                .answer(verb, args)
                .map_err(|e| e.trim_start_matches("err ").to_string()),
        }
    }
}
