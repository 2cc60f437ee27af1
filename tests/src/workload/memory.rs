//! `memory SIZE_MIB [SEED]`: anonymous memory filled with a pattern derived from each word's
//! address (holes left unwritten), rewritten in part and verified word by word.
//!
//! ```text
//! memory SIZE_MIB [SEED]     verify -> ok <checksum> <pages> | bad <offset> <found> <want>
//!                            touch  -> touched <pages>      addr -> <hex address>
//!                            zero-read MIB -> read <pages> rss <VmRSS kB>  (a second area of
//!                            MIB MiB, each page only read: the kernel's zero page)
//!                            zero-check -> zeros <yes|no> rss <VmRSS kB>  (that area, read again)
//! ```

use std::path::Path;

use super::{arg, failed, seed_arg, sys, unknown, Mode, PAGE};
use crate::protocol::{self, TOUCH_STRIDE};

/// `memory SIZE_MIB [SEED]`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let mib: usize = arg(args, 0, 16)?;
    let seed = seed_arg(args, 1)?;
    Ok(Box::new(
        Memory::new(mib << 20, seed).map_err(failed("mmap"))?,
    ))
}

impl Mode for Memory {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("verify", []) => Ok(self.verify()),
            ("touch", []) => Ok(format!("touched {}", self.touch())),
            ("addr", []) => Ok(format!("{:#x}", self.base as usize)),
            ("zero-read", [mib]) => {
                let len = mib.parse::<usize>().map_err(|e| e.to_string())? << 20;
                let at = sys::mmap_anon(len).map_err(|e| e.to_string())?;
                self.read_only = Some((at, len));
                let zeros = all_zero(at, len);
                Ok(format!(
                    "read {} rss {}",
                    len / PAGE * usize::from(zeros),
                    rss_kib()
                ))
            }
            ("zero-check", []) => {
                let (at, len) = self.read_only.ok_or("no zero-read area")?;
                let zeros = if all_zero(at, len) { "yes" } else { "no" };
                Ok(format!("zeros {zeros} rss {}", rss_kib()))
            }
            _ => unknown(verb),
        }
    }
}

/// Anonymous memory filled with a pattern derived from each word's address.
struct Memory {
    base: *mut u64,
    len: usize,
    seed: u64,
    /// Times each page was written: 0 for a hole (never written, reads zero).
    generations: Vec<u32>,
    /// The area `zero-read` made: address and length.
    read_only: Option<(*mut u8, usize)>,
}

/// Reads every byte of `len` bytes at `at` (a mapping of ours): whether all are zero.
fn all_zero(at: *mut u8, len: usize) -> bool {
    (0..len).step_by(64).all(|i| {
        // SAFETY: `at` is a live mapping of `len` bytes; i < len.
        unsafe { std::ptr::read_volatile(at.add(i)) == 0 }
    })
}

/// This process's VmRSS in kB (/proc/self/status).
fn rss_kib() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(|v| v.trim().trim_end_matches(" kB").to_string())
        })
        .unwrap_or_default()
}

impl Memory {
    fn new(len: usize, seed: u64) -> std::io::Result<Self> {
        let base = sys::mmap_anon(len)?.cast::<u64>();
        let pages = len / PAGE;
        let mut m = Self {
            base,
            len,
            seed,
            generations: vec![0; pages],
            read_only: None,
        };
        for page in 0..pages {
            if !protocol::memory_page_is_hole(page) {
                m.write_page(page, 1);
            }
        }
        Ok(m)
    }

    fn page_words(&mut self, page: usize) -> &mut [u64] {
        let words = PAGE / 8;
        assert!((page + 1) * PAGE <= self.len);
        // SAFETY: base is a live private mapping of len bytes, page-aligned,
        // owned by this struct; the assert keeps the page inside it.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(page * words), words) }
    }

    fn write_page(&mut self, page: usize, generation: u32) {
        self.generations[page] = generation;
        let seed = self.seed;
        let words = self.page_words(page);
        for w in words.iter_mut() {
            let addr = std::ptr::from_mut(w) as u64;
            *w = protocol::memory_word(addr, seed, generation);
        }
    }

    /// Rewrites one page in TOUCH_STRIDE (holes stay holes); returns how many.
    fn touch(&mut self) -> usize {
        let mut n = 0;
        for page in (0..self.generations.len()).step_by(TOUCH_STRIDE) {
            let g = self.generations[page];
            if g != 0 {
                self.write_page(page, g + 1);
                n += 1;
            }
        }
        n
    }

    /// Checks every word; replies `ok <checksum> <pages>` or the first bad one.
    fn verify(&mut self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let seed = self.seed;
        for page in 0..self.generations.len() {
            let g = self.generations[page];
            let base = self.base as usize;
            for w in self.page_words(page).iter() {
                let addr = std::ptr::from_ref(w) as u64;
                let want = if g == 0 {
                    0
                } else {
                    protocol::memory_word(addr, seed, g)
                };
                if *w != want {
                    return format!(
                        "bad {:#x} {:#018x} {:#018x}",
                        addr as usize - base,
                        *w,
                        want
                    );
                }
                h = (h ^ *w).wrapping_mul(0x100_0000_01b3);
            }
        }
        format!("ok {h:016x} {}", self.generations.len())
    }
}
