//! What the workload and the tests agree on: file names in the control
//! directory, and the deterministic data both sides compute.
//!
//! Shared by the harness (as `cryo_tests::protocol`) and by the workload
//! binary (included with `#[path]`, so the workload stays std + libc).

/// The command FIFO: the workload holds it open O_RDWR and reads one line per command.
pub const CMD_FIFO: &str = "cmd";
/// The reply FIFO: the workload opens it O_WRONLY per reply, writes one line, closes it.
pub const OUT_FIFO: &str = "out";
/// The workload's stdout and stderr.
pub const LOG_FILE: &str = "workload.log";
/// The file the `deleted-file` mode creates, fills, keeps open and unlinks.
pub const DELETED_FILE: &str = "deleted-file";

/// splitmix64: a cheap, well-mixed function of one word.
pub fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` bytes derived from `seed`: the contents the file, deleted-file and pipe modes use.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(&mix64(seed ^ i.wrapping_mul(0x100_0000_01b3)).to_le_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// FNV-1a 64 of `data`, the checksum replies carry (printed as 16 hex digits).
pub fn checksum(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The reply a `read`, `drain` or `take` command gives for `data`: `"<len> <checksum>"`.
pub fn len_and_checksum(data: &[u8]) -> String {
    format!("{} {:016x}", data.len(), checksum(data))
}

/// Seed of the file/deleted-file/pipe contents when the test gives none.
pub const DEFAULT_SEED: u64 = 0x00c0_ffee;

/// The word the memory mode stores at address `addr` of a page written `generation` times.
pub fn memory_word(addr: u64, seed: u64, generation: u32) -> u64 {
    mix64(addr ^ seed.rotate_left(17) ^ (u64::from(generation) << 48))
}

/// Pages the memory mode never writes (they must read back as zeros).
pub fn memory_page_is_hole(page: usize) -> bool {
    page % 61 == 7
}

/// The memory mode rewrites one page in this many on `touch`.
pub const TOUCH_STRIDE: usize = 16;

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the machine, so a time the
/// workload reports compares with the test's.
pub fn monotonic_ns() -> u128 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into our local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}
