//! NUMA memory policies of the VMAs (mbind), from /proc/PID/numa_maps: a VMA with a policy of
//! its own is refused at dump (cryo restores the default policy only; the thread's own policy
//! is checked with the task's attributes, task/attrs.rs).
//!
//! ```text
//! numa_maps  7f0000000000 bind:0 anon=1 dirty=1 N0=1 kernelpagesize_kB=4
//!            ^start        ^policy ("default": none of its own)
//! ```

use std::collections::HashMap;

use nix::unistd::Pid;

use crate::error::Result;

/// The policy of each VMA of `pid` that has one of its own, by start address.
pub fn policies(pid: Pid) -> Result<HashMap<u64, String>> {
    Ok(parse(&crate::proc::read(pid, "numa_maps")?))
}

fn parse(text: &str) -> HashMap<u64, String> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let start = u64::from_str_radix(fields.next()?, 16).ok()?;
            let policy = fields.next()?;
            (policy != "default").then(|| (start, policy.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_policies_of_their_own_are_kept() {
        let text = "\
55d353981000 default file=/usr/bin/cat mapped=2 N0=2 kernelpagesize_kB=4
7f0000000000 bind:0 anon=1 dirty=1 N0=1 kernelpagesize_kB=4
7f0000100000 interleave=static:0-1 anon=2
";
        let got = parse(text);
        assert_eq!(got.len(), 2);
        assert_eq!(got[&0x7f00_0000_0000], "bind:0");
        assert_eq!(got[&0x7f00_0010_0000], "interleave=static:0-1");
    }
}
