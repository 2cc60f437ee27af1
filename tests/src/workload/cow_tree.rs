//! `cow-tree`: a pre-fork server whose workers share its private memory copy-on-write: the
//! parent fills MIB MiB of private anonymous memory, then forks WORKERS workers that only
//! read it, but every third one writes a handful of pages of its own.
//!
//! ```text
//! cow-tree MIB WORKERS       kids -> <pid>...   addr -> <hex start of the region>
//!                            check -> ok (the parent checks its region, then asks every
//!                            worker to check its own view: the parent's data, and its
//!                            own writes where it wrote)   pages -> <region length in pages>
//!                            poke K V -> <byte K of the shared page, read by the parent after
//!                            worker K wrote V there>   peek K -> <byte K of the shared page>
//!                            (one page of MAP_SHARED|MAP_ANONYMOUS memory, mapped before the
//!                            forks: one object for the whole tree)
//! ```

use std::io;
use std::path::Path;

use super::kids::{exit_child, fork_asked, ChildPipes};
use super::{arg, failed, io_err, sys, unknown, Mode, PAGE};

/// `cow-tree MIB WORKERS`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let mib: usize = arg(args, 0, 16)?;
    let workers: usize = arg(args, 1, 2)?;
    Ok(Box::new(
        CowTree::start(mib << 20, workers).map_err(failed("cow-tree"))?,
    ))
}

impl Mode for CowTree {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("kids", []) => Ok(self
                .workers
                .iter()
                .map(|(pid, _)| pid.to_string())
                .collect::<Vec<_>>()
                .join(" ")),
            ("addr", []) => Ok(format!("{:#x}", self.region.as_ptr() as usize)),
            ("pages", []) => Ok((self.region.len() / PAGE).to_string()),
            ("check", []) => self.check(),
            ("poke", [k, v]) => {
                let k: usize = k.parse().map_err(|_| format!("bad worker {k:?}"))?;
                let (_, pipes) = self.workers.get(k).ok_or("no such worker")?;
                let reply = pipes.ask(&format!("poke {v}")).map_err(io_err)?;
                if reply != "ok" {
                    return Err(reply);
                }
                Ok(self.shared[k].to_string())
            }
            ("peek", [k]) => {
                let k: usize = k.parse().map_err(|_| format!("bad index {k:?}"))?;
                Ok(self.shared.get(k).ok_or("out of the page")?.to_string())
            }
            _ => unknown(verb),
        }
    }
}

/// The `cow-tree` mode: the region and each worker (pid, pipes).
struct CowTree {
    region: &'static mut [u8],
    shared: &'static mut [u8],
    workers: Vec<(i32, ChildPipes)>,
}

/// The value of word `i` of the region as the parent wrote it.
fn word(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed
}

/// Pages worker `k` wrote (none unless `k` is a multiple of three), with the first word of
/// each page set to a marker of its own.
fn written(k: usize, pages: usize) -> Vec<(usize, u64)> {
    if !k.is_multiple_of(3) {
        return Vec::new();
    }
    (0..4)
        .map(|j| {
            (
                (k * 131 + j * 4099 + 7) % pages,
                0xc0de_0000 + (k * 16 + j) as u64,
            )
        })
        .collect()
}

/// Checks `region` word by word against the parent's data with `writes` over it.
fn verify(region: &[u8], writes: &[(usize, u64)]) -> Result<(), String> {
    let words = PAGE / 8;
    for (i, chunk) in region.chunks_exact(8).enumerate() {
        let got = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
        let want = match writes.iter().find(|(p, _)| p * words == i) {
            Some(&(_, marker)) => marker,
            None => word(i),
        };
        if got != want {
            return Err(format!("word {i} is {got:#x}, want {want:#x}"));
        }
    }
    Ok(())
}

impl CowTree {
    fn start(len: usize, workers: usize) -> io::Result<Self> {
        let region = sys::map(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)?;
        for (i, chunk) in region.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&word(i).to_ne_bytes());
        }
        let shared = sys::map(PAGE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1)?;
        let mut kids = Vec::with_capacity(workers);
        for k in 0..workers {
            let elders: &[(i32, ChildPipes)] = &kids;
            let kid = fork_asked(|questions, answers| {
                for (_, pipes) in elders {
                    sys::close(pipes.to_child);
                    sys::close(pipes.from_child);
                }
                Self::worker(region, shared, k, questions, answers)
            })?;
            kids.push(kid);
        }
        // Every worker has written its pages: ask once so the tree is settled when the
        // mode answers its first command.
        let tree = Self {
            region,
            shared,
            workers: kids,
        };
        tree.check().map_err(io::Error::other)?;
        Ok(tree)
    }

    /// A worker: writes its pages, then answers `check` until the parent goes.
    fn worker(region: &mut [u8], shared: &mut [u8], k: usize, questions: i32, answers: i32) -> ! {
        let pages = region.len() / PAGE;
        let writes = written(k, pages);
        for &(p, marker) in &writes {
            region[p * PAGE..p * PAGE + 8].copy_from_slice(&marker.to_ne_bytes());
        }
        let result = (|| -> io::Result<()> {
            let mut buf = [0u8; 64];
            loop {
                let n = sys::read(questions, &mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                let question = String::from_utf8_lossy(&buf[..n]).into_owned();
                let reply = match question.split(' ').collect::<Vec<_>>()[..] {
                    ["check"] => match verify(region, &writes) {
                        Ok(()) => "ok".to_string(),
                        Err(e) => format!("worker {k}: {e}"),
                    },
                    ["poke", v] => match v.parse() {
                        Ok(v) => {
                            shared[k] = v;
                            "ok".to_string()
                        }
                        Err(_) => format!("worker {k}: bad value {v:?}"),
                    },
                    _ => format!("worker {k}: unknown {question:?}"),
                };
                sys::write_all(answers, reply.as_bytes())?;
            }
        })();
        exit_child("cow-tree worker", result)
    }

    /// The parent's region, then every worker's view.
    fn check(&self) -> Result<String, String> {
        verify(self.region, &[]).map_err(|e| format!("parent: {e}"))?;
        for (_, pipes) in &self.workers {
            let reply = pipes.ask("check").map_err(io_err)?;
            if reply != "ok" {
                return Err(reply);
            }
        }
        Ok("ok".into())
    }
}
