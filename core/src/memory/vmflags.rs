//! The kernel's flags of each VMA (the `VmFlags` line of /proc/PID/smaps): what the maps do
//! not show, such as whether a shared mapping may be made writable.

use std::collections::HashMap;

use nix::unistd::Pid;

use crate::error::Result;

/// VmFlags of every VMA of `pid`, by start address (two-letter codes: "mw", "dc"...).
pub fn read(pid: Pid) -> Result<HashMap<u64, Vec<String>>> {
    Ok(parse(&crate::proc::read(pid, "smaps")?))
}

/// The VmFlags of each VMA of an smaps text, by start address.
fn parse(smaps: &str) -> HashMap<u64, Vec<String>> {
    let mut flags = HashMap::new();
    let mut start = None;
    for line in smaps.lines() {
        if let Some(codes) = line.strip_prefix("VmFlags:") {
            if let Some(s) = start.take() {
                flags.insert(s, codes.split_whitespace().map(String::from).collect());
            }
        } else if let Some((range, _)) = line.split_once(' ') {
            // A VMA's header line starts with its range; field lines with "Name:".
            if let Some((s, _)) = range.split_once('-') {
                if let Ok(s) = u64::from_str_radix(s, 16) {
                    start = Some(s);
                }
            }
        }
    }
    flags
}

/// Whether the flags say the mapping may be made writable (VM_MAYWRITE).
pub fn may_write(flags: Option<&Vec<String>>) -> bool {
    flags.is_some_and(|f| f.iter().any(|c| c == "mw"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_vmas_flags() {
        let smaps = "\
7f00000000-7f00001000 r--s 00000000 08:01 12 /data
Size:                  4 kB
VmFlags: rd sh mr mw me ms
7f00002000-7f00003000 r--s 00000000 08:01 13 /ro
Size:                  4 kB
VmFlags: rd sh mr me ms
";
        let flags = parse(smaps);
        assert!(may_write(flags.get(&0x7f00000000)));
        assert!(!may_write(flags.get(&0x7f00002000)));
        assert!(!may_write(flags.get(&0x1000)));
    }
}
