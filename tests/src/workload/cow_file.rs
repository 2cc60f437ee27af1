//! `cow-file`: a parent and its forked child sharing the written pages of a private file
//! mapping copy-on-write. The parent maps a file of its own (8 pages) privately, writes pages
//! 0-2, and forks a child; then the child writes pages 1 and 4, and page 6 with the file's own
//! bytes (a copy equal to the file's page, still its copy), and the parent writes pages 2
//! and 5. Page 0 stays shared; 3 and 7 are the file's in both; 5 is the file's in the child
//! and 4 and 6 in the parent. Before the fork the parent also fills a page of anonymous
//! memory it makes executable too (read-write-execute, as a JIT's), shared with the child.
//!
//! ```text
//! cow-file          kids -> <child pid>   addr -> <hex start of the mapping>
//!                   check -> ok (the parent checks its view of every page, then asks the
//!                   child to check its own: its copy where it wrote, else the file's page as
//!                   the file holds it now, read with pread)
//!                   write WHO P -> ok (WHO, parent or child, writes a new pattern on page P)
//! ```

use std::io;
use std::path::Path;

use super::kids::{answer_each, exit_child, fork_asked, ChildPipes};
use super::{failed, io_err, sys, unknown, Mode, PAGE};

/// Pages of the file and of its mapping.
const PAGES: usize = 8;

/// `cow-file`
pub fn start(_args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    Ok(Box::new(CowFile::start(dir).map_err(failed("cow-file"))?))
}

/// What a process expects on each page: its own copy, or the file's page (None).
type Expected = [Option<Vec<u8>>; PAGES];

/// The `cow-file` mode.
struct CowFile {
    fd: i32,
    map: &'static mut [u8],
    mine: Expected,
    child: (i32, ChildPipes),
}

/// A page filled with words derived from `seed`.
fn pattern(seed: u64) -> Vec<u8> {
    (0..PAGE / 8)
        .flat_map(|w| {
            let word = (w as u64 ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
            word.to_ne_bytes()
        })
        .collect()
}

/// Writes `bytes` on page `p` of `map` and records it as this process's copy.
fn write_page(map: &mut [u8], mine: &mut Expected, p: usize, bytes: Vec<u8>) {
    map[p * PAGE..(p + 1) * PAGE].copy_from_slice(&bytes);
    mine[p] = Some(bytes);
}

/// Checks every page of `map` against `mine`, reading the file's pages from `fd`.
fn verify(fd: i32, map: &[u8], mine: &Expected) -> Result<(), String> {
    for (p, want) in mine.iter().enumerate() {
        let file_page;
        let want = match want {
            Some(copy) => copy,
            None => {
                let mut buf = vec![0u8; PAGE];
                sys::pread_at(fd, &mut buf, p * PAGE).map_err(io_err)?;
                file_page = buf;
                &file_page
            }
        };
        if &map[p * PAGE..(p + 1) * PAGE] != want.as_slice() {
            let whose = if mine[p].is_some() {
                "its copy"
            } else {
                "the file's"
            };
            return Err(format!("page {p} is not {whose}"));
        }
    }
    Ok(())
}

/// A new pattern seed for a write asked for after the setup: different for every call and
/// every process.
fn next_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0x1000);
    NEXT.fetch_add(1, Ordering::Relaxed) ^ (u64::from(std::process::id()) << 32)
}

impl CowFile {
    fn start(dir: &Path) -> io::Result<Self> {
        let path = dir.join("cow-file.data");
        let fd = sys::open_mode(&path, libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC, 0o600)?;
        for p in 0..PAGES {
            sys::pwrite_at(fd, &pattern(0xf11e_0000 + p as u64), p * PAGE)?;
        }
        let map = sys::map(PAGES * PAGE, libc::MAP_PRIVATE, fd)?;
        let code = sys::mmap_anon(PAGE)?;
        // SAFETY: the fresh read-write page above, of ours.
        unsafe { std::ptr::write_bytes(code, 0xc3, PAGE) };
        let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
        sys::protect(code, PAGE, rwx)?;
        let mut mine: Expected = Default::default();
        for p in 0..3 {
            write_page(map, &mut mine, p, pattern(0xa0 + p as u64));
        }
        let child = fork_asked(|questions, answers| {
            Self::child(fd, map, mine.clone(), questions, answers)
        })?;
        write_page(map, &mut mine, 2, pattern(0xb2));
        write_page(map, &mut mine, 5, pattern(0xb5));
        let tree = Self {
            fd,
            map,
            mine,
            child,
        };
        // The child has written its pages once it answers.
        tree.check().map_err(io::Error::other)?;
        Ok(tree)
    }

    /// The child: writes its pages, then answers `check` and `write P` until the parent goes.
    fn child(fd: i32, map: &mut [u8], mut mine: Expected, questions: i32, answers: i32) -> ! {
        write_page(map, &mut mine, 1, pattern(0xc1));
        write_page(map, &mut mine, 4, pattern(0xc4));
        let file_page = map[6 * PAGE..7 * PAGE].to_vec();
        write_page(map, &mut mine, 6, file_page);
        answer_each(questions, answers, |question| {
            match question.split(' ').collect::<Vec<_>>()[..] {
                ["check"] => match verify(fd, map, &mine) {
                    Ok(()) => "ok".into(),
                    Err(e) => format!("child: {e}"),
                },
                ["write", p] => match p.parse::<usize>() {
                    Ok(p) if p < PAGES => {
                        write_page(map, &mut mine, p, pattern(next_seed()));
                        "ok".into()
                    }
                    _ => format!("child: bad page {p:?}"),
                },
                _ => format!("child: unknown {question:?}"),
            }
        });
        exit_child("cow-file child", Ok(()))
    }

    /// The parent's view, then the child's.
    fn check(&self) -> Result<String, String> {
        verify(self.fd, self.map, &self.mine).map_err(|e| format!("parent: {e}"))?;
        let reply = self.child.1.ask("check").map_err(io_err)?;
        if reply != "ok" {
            return Err(reply);
        }
        Ok("ok".into())
    }
}

impl Mode for CowFile {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("kids", []) => Ok(self.child.0.to_string()),
            ("addr", []) => Ok(format!("{:#x}", self.map.as_ptr() as usize)),
            ("check", []) => self.check(),
            ("write", ["parent", p]) => {
                let p: usize = p.parse().map_err(|_| format!("bad page {p:?}"))?;
                if p >= PAGES {
                    return Err(format!("no page {p}"));
                }
                write_page(self.map, &mut self.mine, p, pattern(next_seed()));
                Ok("ok".into())
            }
            ("write", ["child", p]) => {
                let reply = self.child.1.ask(&format!("write {p}")).map_err(io_err)?;
                if reply != "ok" {
                    return Err(reply);
                }
                Ok("ok".into())
            }
            _ => unknown(verb),
        }
    }
}
