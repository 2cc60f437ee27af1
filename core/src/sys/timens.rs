//! Time namespaces: the offsets of a process's namespace, and a new one entered by the
//! calling process with given clock values.

use std::io;
use std::os::fd::AsFd;

use nix::sched::CloneFlags;

use super::timerfd::clock_now_ns;

/// CLOCK_MONOTONIC and CLOCK_BOOTTIME now, in ns, as the caller's namespace reads them.
pub(crate) fn clocks_now() -> io::Result<(i64, i64)> {
    let ns = |id| clock_now_ns(id).map(|t| t as i64);
    Ok((ns(libc::CLOCK_MONOTONIC)?, ns(libc::CLOCK_BOOTTIME)?))
}

/// The monotonic and boot clock offsets of `/proc/PID/timens_offsets` (`text`), in ns.
pub(crate) fn parse_offsets(text: &str) -> io::Result<(i64, i64)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("timens_offsets {text:?}"),
        )
    };
    let (mut monotonic, mut boottime) = (None, None);
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(clock), Some(sec), Some(nsec)) = (words.next(), words.next(), words.next())
        else {
            return Err(bad());
        };
        let sec: i64 = sec.parse().map_err(|_| bad())?;
        let nsec: i64 = nsec.parse().map_err(|_| bad())?;
        let value = Some(sec * 1_000_000_000 + nsec);
        match clock {
            "monotonic" => monotonic = value,
            "boottime" => boottime = value,
            _ => {}
        }
    }
    monotonic.zip(boottime).ok_or_else(bad)
}

/// Splits `ns` into whole seconds and the nanoseconds in 0..1e9 the kernel wants.
fn sec_nsec(ns: i64) -> (i64, i64) {
    (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// Makes a new time namespace for the calling process's children (unshare: it stays in its
/// own), whose monotonic and boot clocks read `monotonic_ns` and `boottime_ns` now.
pub(crate) fn make_for_children(monotonic_ns: i64, boottime_ns: i64) -> io::Result<()> {
    // Its offsets can be set until a task enters it.
    nix::sched::unshare(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))?;
    let (host_mono, host_boot) = clocks_now()?;
    let (mono_sec, mono_nsec) = sec_nsec(monotonic_ns - host_mono);
    let (boot_sec, boot_nsec) = sec_nsec(boottime_ns - host_boot);
    std::fs::write(
        "/proc/self/timens_offsets",
        format!("monotonic {mono_sec} {mono_nsec}\nboottime {boot_sec} {boot_nsec}\n"),
    )
}

/// Moves the calling process (single-threaded) into a new time namespace whose monotonic and
/// boot clocks read `monotonic_ns` and `boottime_ns` now.
pub(crate) fn enter_new(monotonic_ns: i64, boottime_ns: i64) -> io::Result<()> {
    let flag = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
    make_for_children(monotonic_ns, boottime_ns)?;
    let ns = std::fs::File::open("/proc/self/ns/time_for_children")?;
    // setns into a time namespace moves the caller too (and its vdso's clock page).
    nix::sched::setns(ns.as_fd(), flag)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_read_and_split() {
        let text = "monotonic           86400         5\nboottime         -3         999999999\n";
        assert_eq!(
            parse_offsets(text).unwrap(),
            (86_400_000_000_005, -2_000_000_001)
        );
        assert!(parse_offsets("monotonic 1 0\n").is_err());
        assert_eq!(sec_nsec(-2_000_000_001), (-3, 999_999_999));
        assert_eq!(sec_nsec(1_500_000_000), (1, 500_000_000));
    }
}
