//! `writer SIZE_MIB PAGES_PER_MS [nr] [no-last]`: anonymous memory that a thread keeps rewriting while
//! the process runs (pre-copy's target): write number g rewrites page (g * STEP) mod pages
//! whole with words derived from (page, g), then stores g in the process's counter, then in
//! the shared file `last` of the control dir (which outlives the process: the test reads it).
//! From the counter alone every page's expected contents follow, so `verify` checks EVERY
//! word of the memory against the state at the last write. With `nr` that memory is mapped
//! MAP_NORESERVE (as jemalloc maps its arenas). Beside it, HOLES pages of ordinary private
//! anonymous memory, filled once; `zap` drops every other one of them (MADV_DONTNEED: zero
//! again), which `verify` checks too. With `no-last` the last write's number stays in the
//! process (a file written all the time would differ on another host: a migration's check
//! refuses it).
//!
//! ```text
//! writer SIZE_MIB PAGES_PER_MS [nr]  verify -> ok <counter> <last> | bad <why>   (pauses the writer)
//!                                    count  -> <counter>       uffd -> <fd> (a userfaultfd of its own)
//!                                    zap    -> ok              areas -> <memory addr> <holes addr>
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::{arg, failed, sys, unknown, Mode, PAGE};

/// Odd: g -> (g * STEP) mod pages visits every page of a power-of-two count once per sweep.
const STEP: u64 = 0x9E37_79B9;

/// The counter: in the process's own (private, tracked) memory.
static COUNTER: AtomicU64 = AtomicU64::new(0);
/// Whether `zap` dropped the even pages of the holes area.
static ZAPPED: AtomicBool = AtomicBool::new(false);
/// Pages of the holes area.
const HOLES: u64 = 64;

/// Word `w` of page `p` as write number `g` (0: the initial fill) leaves it.
fn word(p: u64, g: u64, w: u64) -> u64 {
    (p << 40) ^ g.wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ (w << 1) ^ 1
}

fn page_of(g: u64, pages: u64) -> u64 {
    g.wrapping_mul(STEP) % pages
}

/// A raw pointer the writer thread may hold (the mapping lives as long as the process).
#[derive(Clone, Copy)]
struct Mem(*mut u64);
// SAFETY: the mapping is never unmapped; the thread and `verify` never touch it at once
// (verify pauses the writer first).
unsafe impl Send for Mem {}

struct Writer {
    mem: Mem,
    holes: Mem,
    pages: u64,
    last: Mem,
    pause: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
}

/// `writer SIZE_MIB PAGES_PER_MS`
pub fn start(args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let mib: usize = arg(args, 0, 16)?;
    let rate: u64 = arg(args, 1, 1)?;
    let len = mib << 20;
    let pages = (len / PAGE) as u64;
    if !pages.is_power_of_two() {
        return Err("SIZE_MIB must be a power of two".into());
    }
    let noreserve = args.iter().skip(2).any(|a| a == "nr");
    let keep_last = !args.iter().skip(2).any(|a| a == "no-last");
    let mem = Mem(map(len, noreserve)?.cast());
    let holes = Mem(map((HOLES * PAGE as u64) as usize, false)?.cast());
    for p in 0..HOLES {
        for w in 0..(PAGE / 8) as u64 {
            // SAFETY: inside the fresh holes mapping.
            unsafe { holes.0.add((p * 512 + w) as usize).write(!word(p, 0, w)) };
        }
    }
    for p in 0..pages {
        for w in 0..(PAGE / 8) as u64 {
            // SAFETY: inside the fresh mapping of `len` bytes.
            unsafe { mem.0.add((p * 512 + w) as usize).write(word(p, 0, w)) };
        }
    }
    let last = if keep_last {
        let fd = sys::open_mode(
            &dir.join("last"),
            libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o600,
        )
        .map_err(failed("open last"))?;
        // SAFETY: ftruncate on our fd, then a fresh shared mapping of it.
        let last = unsafe {
            libc::ftruncate(fd, PAGE as i64);
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if last == libc::MAP_FAILED {
            return Err(format!("mmap last: {}", std::io::Error::last_os_error()));
        }
        sys::close(fd);
        last
    } else {
        map(PAGE, false)?
    };
    let last = Mem(last.cast());
    let pause = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(AtomicBool::new(false));
    let (p2, d2) = (pause.clone(), paused.clone());
    std::thread::spawn(move || {
        let (mem, last) = (mem, last);
        loop {
            if p2.load(Ordering::SeqCst) {
                d2.store(true, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
            d2.store(false, Ordering::SeqCst);
            for _ in 0..rate {
                let g = COUNTER.load(Ordering::SeqCst) + 1;
                let p = page_of(g, pages);
                for w in 0..(PAGE / 8) as u64 {
                    // SAFETY: page p < pages of the mapping.
                    unsafe {
                        mem.0
                            .add((p * 512 + w) as usize)
                            .write_volatile(word(p, g, w))
                    };
                }
                COUNTER.store(g, Ordering::SeqCst);
                // SAFETY: the shared page mapped above.
                unsafe { last.0.write_volatile(g) };
            }
            // The write rate, not a synchronisation.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    Ok(Box::new(Writer {
        mem,
        holes,
        pages,
        last,
        pause,
        paused,
    }))
}

/// `len` bytes of private anonymous memory, MAP_NORESERVE if `noreserve`.
fn map(len: usize, noreserve: bool) -> Result<*mut libc::c_void, String> {
    let flags =
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if noreserve { libc::MAP_NORESERVE } else { 0 };
    let m = sys::map(len, flags, -1).map_err(failed("mmap"))?;
    Ok(m.as_mut_ptr().cast())
}

impl Writer {
    /// Pauses the writer, checks every word against the counter, and lets it go on.
    fn verify(&mut self) -> String {
        self.pause.store(true, Ordering::SeqCst);
        while !self.paused.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let reply = self.check();
        self.pause.store(false, Ordering::SeqCst);
        reply
    }

    fn check(&self) -> String {
        let zapped = ZAPPED.load(Ordering::SeqCst);
        for p in 0..HOLES {
            for w in 0..(PAGE / 8) as u64 {
                // SAFETY: inside the holes mapping.
                let found = unsafe { self.holes.0.add((p * 512 + w) as usize).read_volatile() };
                let want = if zapped && p % 2 == 0 {
                    0
                } else {
                    !word(p, 0, w)
                };
                if found != want {
                    return format!("bad hole page {p} word {w}: {found:#x}, want {want:#x}");
                }
            }
        }
        let c = COUNTER.load(Ordering::SeqCst);
        // SAFETY: the shared page mapped at start.
        let last = unsafe { self.last.0.read_volatile() };
        // Stored after the counter: equal, or one behind if frozen in between.
        if last != c && last + 1 != c {
            return format!("bad counter {c} but the last write stored is {last}");
        }
        // Each page's last write number at counter c (0: only the initial fill).
        let mut expected = vec![0u64; self.pages as usize];
        let mut seen = vec![false; self.pages as usize];
        let mut g = c;
        let mut left = self.pages;
        while g > 0 && left > 0 {
            let p = page_of(g, self.pages) as usize;
            if !seen[p] {
                seen[p] = true;
                expected[p] = g;
                left -= 1;
            }
            g -= 1;
        }
        // Write c + 1 may have been under way at the freeze: its page may hold some of its
        // words.
        let inflight = page_of(c + 1, self.pages);
        for p in 0..self.pages {
            for w in 0..(PAGE / 8) as u64 {
                // SAFETY: inside the mapping; the writer is paused.
                let found = unsafe { self.mem.0.add((p * 512 + w) as usize).read_volatile() };
                let want = word(p, expected[p as usize], w);
                if found != want && !(p == inflight && found == word(p, c + 1, w)) {
                    return format!(
                        "bad page {p} word {w}: {found:#x}, want {want:#x} (write {} of counter \
                         {c})",
                        expected[p as usize]
                    );
                }
            }
        }
        format!("ok {c} {last}")
    }
}

impl Mode for Writer {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("verify", []) => Ok(self.verify()),
            ("count", []) => Ok(COUNTER.load(Ordering::SeqCst).to_string()),
            ("zap", []) => {
                for p in (0..HOLES).step_by(2) {
                    // SAFETY: a page of the holes mapping, which nothing else touches.
                    let r = unsafe {
                        libc::madvise(
                            self.holes.0.add((p * 512) as usize).cast(),
                            PAGE,
                            libc::MADV_DONTNEED,
                        )
                    };
                    if r != 0 {
                        return Err(format!("madvise: {}", std::io::Error::last_os_error()));
                    }
                }
                ZAPPED.store(true, Ordering::SeqCst);
                Ok("ok".into())
            }
            ("areas", []) => Ok(format!("{} {}", self.mem.0 as u64, self.holes.0 as u64)),
            ("uffd", []) => {
                // SAFETY: userfaultfd takes flags only; UFFD_USER_MODE_ONLY (1).
                let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | 1) };
                if fd < 0 {
                    return Err(format!("userfaultfd: {}", std::io::Error::last_os_error()));
                }
                Ok(fd.to_string())
            }
            _ => unknown(verb),
        }
    }
}
