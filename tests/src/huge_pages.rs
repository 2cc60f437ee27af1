//! The host's pool of 2 MiB huge pages, for the hugetlb tests: raised to what they need
//! (never lowered: tests run in parallel, and others may use it), read, and held.

use std::fs;
use std::io;

/// The huge page size the tests use (the x86_64 default).
pub const HUGE: u64 = 2 << 20;

const POOL: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

fn read(name: &str) -> u64 {
    let path = format!("{POOL}/{name}");
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The tests that use huge pages, one at a time: they read the host's counters (taken, in
/// use) and one holds every free huge page for a while, so no other may take or give back
/// any meanwhile (they run in one test binary, on one pool).
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for this test's turn with the pool ([`TURN`]), then makes it at least `needed` pages
/// ([`ensure`]); the turn lasts as long as the guard.
pub fn turn(needed: u64) -> std::sync::MutexGuard<'static, ()> {
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    ensure(needed);
    turn
}

/// Makes the pool at least `needed` pages: reads nr_hugepages and writes the larger of it and
/// `needed` (never lowering it); panics if the kernel could not allocate them.
pub fn ensure(needed: u64) {
    let current = read("nr_hugepages");
    if current < needed {
        let path = format!("{POOL}/nr_hugepages");
        fs::write(&path, needed.to_string()).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let now = read("nr_hugepages");
    assert!(
        now >= needed,
        "the kernel gave {now} huge pages of 2 MiB, {needed} needed"
    );
}

/// Huge pages free and not promised to a mapping: what a new reservation may take.
pub fn available() -> u64 {
    read("free_hugepages").saturating_sub(read("resv_hugepages"))
}

/// Huge pages in use: holding data (or zeros) for a process or a file.
pub fn in_use() -> u64 {
    read("nr_hugepages") - read("free_hugepages")
}

/// Huge pages in use or reserved: what the processes on the host take.
pub fn taken() -> u64 {
    read("nr_hugepages") - read("free_hugepages") + read("resv_hugepages")
}

/// Huge pages reserved by a mapping of this process (MAP_SHARED|MAP_ANONYMOUS|MAP_HUGETLB),
/// given back on drop.
pub struct Held {
    addr: *mut libc::c_void,
    len: usize,
}

impl Held {
    /// Reserves `pages` huge pages (none: holds nothing).
    pub fn reserve(pages: u64) -> io::Result<Self> {
        let len = (pages * HUGE) as usize;
        if len == 0 {
            return Ok(Self {
                addr: std::ptr::null_mut(),
                len,
            });
        }
        let flags = libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB;
        // SAFETY: a fresh mapping at an address the kernel picks; only this value refers to it.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { addr, len })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: unmapping exactly the mapping this value made; nothing else refers to it.
            unsafe { libc::munmap(self.addr, self.len) };
        }
    }
}
