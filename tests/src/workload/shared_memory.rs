//! `shared-memory`: one memory object seen through several views (fd, shared and private
//! maps, an orphan memfd mapped twice, shared anonymous memory), and a child seeing them too.
//!
//! ```text
//! shared-memory              one object seen through several views, and a child seeing them too:
//!                            memfd fd 60 (4 pages, sealed SHRINK|GROW) as `fd` (pread/pwrite),
//!                            `a` (shared map of all of it), `b` (shared map of pages 1-3: b[0] is
//!                            a[4096]), `p` (private map, page 3 written after mapping); `o1`, `o2`
//!                            (two shared maps of a 2-page memfd whose fd was closed, sealed
//!                            FUTURE_WRITE after mapping); `anon` (4 pages MAP_SHARED|MAP_ANONYMOUS).
//!                            The child (forked last, fd 60 closed) answers `kid ...` over pipes.
//!                            w VIEW OFF BYTE -> ok   r VIEW OFF -> <byte>   addr VIEW -> <hex>
//!                            kid w|r|addr ... -> the child's answer   kid pid -> <child pid>
//!                            seals -> <F_GET_SEALS of fd 60>   size -> <st_size of fd 60>
//! ```

use std::io;
use std::path::Path;

use super::kids::{answer_each, ChildPipes};
use super::{failed, io_err, sys, Mode, PAGE};
use crate::protocol;

/// `shared-memory`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    Ok(Box::new(
        SharedMemory::start().map_err(failed("shared-memory"))?,
    ))
}

impl Mode for SharedMemory {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("kid", rest) => self.pipes.ask(&rest.join(" ")).map_err(io_err),
            ("seals", []) => Ok(sys::get_seals(SHM_FD).map_err(io_err)?.to_string()),
            ("size", []) => Ok(sys::fd_size(SHM_FD).map_err(io_err)?.to_string()),
            _ => Ok(self.answer(verb, args)),
        }
    }
}

/// The fd of the `shared-memory` mode's memfd, its length and the orphan memfd's.
const SHM_FD: i32 = 60;
/// The memfd's length.
const SHM_LEN: usize = 4 * PAGE;
/// The orphan memfd's length.
const ORPHAN_LEN: usize = 2 * PAGE;

/// The `shared-memory` mode (see the module doc).
struct SharedMemory {
    views: Vec<(&'static str, *mut u8, usize)>,
    pipes: ChildPipes,
}

impl SharedMemory {
    fn start() -> io::Result<Self> {
        let fd = sys::move_fd(sys::memfd("cryo-shm")?, SHM_FD)?;
        sys::write_all(fd, &protocol::pattern(SHM_LEN, 11))?;
        sys::add_seals(fd, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW)?;
        let a = sys::map_at(SHM_LEN, libc::MAP_SHARED, fd, 0)?;
        let b = sys::map_at(SHM_LEN - PAGE, libc::MAP_SHARED, fd, PAGE)?;
        let p = sys::map_at(SHM_LEN, libc::MAP_PRIVATE, fd, 0)?;
        p[3 * PAGE] = 0xee;
        let orphan = sys::memfd("cryo-orphan")?;
        sys::write_all(orphan, &protocol::pattern(ORPHAN_LEN, 12))?;
        let o1 = sys::map_at(ORPHAN_LEN, libc::MAP_SHARED, orphan, 0)?;
        let o2 = sys::map_at(ORPHAN_LEN, libc::MAP_SHARED, orphan, 0)?;
        // After the mappings: they stay writable, new writable ones are refused.
        sys::add_seals(orphan, libc::F_SEAL_FUTURE_WRITE)?;
        sys::close(orphan);
        let anon = sys::map(SHM_LEN, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1)?;
        anon.copy_from_slice(&protocol::pattern(SHM_LEN, 13));
        let mut views = Vec::new();
        for (name, v) in [
            ("a", a),
            ("b", b),
            ("p", p),
            ("o1", o1),
            ("o2", o2),
            ("anon", anon),
        ] {
            views.push((name, v.as_mut_ptr(), v.len()));
        }
        let (a_rd, a_wr) = sys::pipe()?;
        let (b_rd, b_wr) = sys::pipe()?;
        // the workload is single-threaded here; the child only makes syscalls.
        let kid = sys::fork()?;
        let me = Self {
            views,
            pipes: ChildPipes {
                to_child: a_wr,
                from_child: b_rd,
            },
        };
        if kid == 0 {
            sys::close(SHM_FD);
            me.child(a_rd, b_wr);
        }
        // The child's ends stay open here too (as in `tree`): a pipe whose ends are split
        // between a parent and its child is not restored as one pipe yet.
        Ok(me)
    }

    /// The child: answers `w`, `r` and `addr` through the mappings it inherited, forever.
    fn child(&self, rd: i32, wr: i32) -> ! {
        answer_each(rd, wr, |msg| {
            let words: Vec<&str> = msg.split_whitespace().collect();
            match words.split_first() {
                // SAFETY: getpid takes no arguments.
                Some((&"pid", [])) => unsafe { libc::getpid() }.to_string(),
                Some((verb, args)) => self.answer(verb, args),
                None => "err empty".into(),
            }
        });
        std::process::exit(3)
    }

    /// `w VIEW OFF BYTE`, `r VIEW OFF`, `addr VIEW`, in this process.
    fn answer(&self, verb: &str, args: &[&str]) -> String {
        let view = |name: &str| self.views.iter().find(|v| v.0 == name).copied();
        let off = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| format!("err bad offset {s:?}"))
        };
        let result = match (verb, args) {
            ("addr", [name]) => view(name)
                .map(|v| format!("{:#x}", v.1 as usize))
                .ok_or_else(|| format!("err no view {name}")),
            ("w", ["fd", o, b]) => off(o).and_then(|o| {
                let byte: u8 = b.parse().map_err(|_| format!("err bad byte {b:?}"))?;
                sys::pwrite_at(SHM_FD, &[byte], o)
                    .map(|()| "ok".to_string())
                    .map_err(|e| format!("err pwrite: {e}"))
            }),
            ("r", ["fd", o]) => off(o).and_then(|o| {
                let mut byte = [0u8; 1];
                sys::pread_at(SHM_FD, &mut byte, o)
                    .map(|()| byte[0].to_string())
                    .map_err(|e| format!("err pread: {e}"))
            }),
            ("w" | "r", [name, o, ..]) => {
                let v = view(name).ok_or_else(|| format!("err no view {name}"));
                v.and_then(|v| Ok((v, off(o)?)))
                    .and_then(|((_, ptr, len), o)| {
                        if o >= len {
                            return Err(format!("err offset {o} beyond {len}"));
                        }
                        // SAFETY: ptr..ptr+len is a live read-write mapping of this process and
                        // o < len; volatile, since another process writes the same memory.
                        unsafe {
                            match args {
                                [_, _, b] => {
                                    let byte: u8 =
                                        b.parse().map_err(|_| format!("err bad byte {b:?}"))?;
                                    std::ptr::write_volatile(ptr.add(o), byte);
                                    Ok("ok".to_string())
                                }
                                _ => Ok(std::ptr::read_volatile(ptr.add(o)).to_string()),
                            }
                        }
                    })
            }
            _ => Err(format!("err unknown command {verb:?}")),
        };
        result.unwrap_or_else(|e| e)
    }
}
