//! NUMA memory policies of the VMAs (mbind), asked of the frozen process itself: a VMA with
//! a policy of its own is refused at dump (cryo restores the default policy only; the
//! thread's own policy is checked with the task's attributes, task/attrs.rs).
//!
//! ```text
//! get_mempolicy(&mode, nodes, 1025, vma.start, MPOL_F_ADDR)   one batch, in the process
//!   mode MPOL_DEFAULT: none of its own (numa_maps "default")
//!   else: refused, named as numa_maps names it ("bind:0", "interleave=static:0-1")
//! ```
//!
//! Not read from /proc/PID/numa_maps: that file walks every page of the process to count
//! them per node (as long as the smaps walk, 60 ms for 1.5 GiB on these hosts, and on the
//! same two CPUs while a migration's processes are frozen); the system call looks at the
//! VMA's policy only, as numa_maps does for its first field (the policy at the VMA's start).

use std::collections::HashMap;

use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::remote::{Remote, Scratch};
use libc::{MPOL_F_NUMA_BALANCING, MPOL_F_RELATIVE_NODES, MPOL_F_STATIC_NODES};

/// Bits of the node mask asked for: the kernel's largest (MAX_NUMNODES, 1 << NODES_SHIFT at
/// most 10), plus one (get_mempolicy copies maxnode - 1 bits; fewer than the host's node
/// ids fails EINVAL).
const MAX_NODE: u64 = 1024 + 1;
/// The mask's bytes.
const MASK_LEN: usize = 1024 / 8;
/// One answer: the mode (an int, padded) and the mask.
const ANSWER_LEN: usize = 8 + MASK_LEN;
/// get_mempolicy's flag: the policy of the VMA at an address.
const MPOL_F_ADDR: u64 = 1 << 1;

/// The policy of each VMA starting at one of `starts` that has one of its own, by start
/// address, named as numa_maps names it. `pid` is frozen with its main thread borrowed.
pub fn policies(
    pid: Pid,
    remote: &Remote,
    scratch: &Scratch,
    starts: &[u64],
) -> Result<HashMap<u64, String>> {
    let answers = scratch
        .batch_reading(remote, starts.len(), ANSWER_LEN, |i, slot| {
            (
                libc::SYS_get_mempolicy,
                [slot, slot + 8, MAX_NODE, starts[i], MPOL_F_ADDR, 0],
            )
        })
        .map_err(|e| {
            let start = starts.get(e.index).copied().unwrap_or(0);
            Error::sys(
                pid,
                format!("get_mempolicy of its mapping at {start:#x}"),
                e.error,
            )
        })?;
    Ok(starts
        .iter()
        .zip(answers.chunks_exact(ANSWER_LEN))
        .filter_map(|(&start, answer)| {
            let mode = i32::from_ne_bytes(answer[..4].try_into().expect("4 bytes"));
            (mode != libc::MPOL_DEFAULT).then(|| (start, describe(mode, &answer[8..])))
        })
        .collect())
}

/// A policy as numa_maps shows it (mm/mempolicy.c mpol_to_str): its mode, its flags after
/// "=", its nodes after ":" as a list of ranges.
fn describe(mode_and_flags: i32, mask: &[u8]) -> String {
    let flags = MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES | MPOL_F_NUMA_BALANCING;
    let mode = mode_and_flags & !flags;
    let mut text = match mode {
        libc::MPOL_PREFERRED => "prefer".to_string(),
        libc::MPOL_BIND => "bind".to_string(),
        libc::MPOL_INTERLEAVE => "interleave".to_string(),
        libc::MPOL_LOCAL => "local".to_string(),
        5 => "prefer (many)".to_string(),
        6 => "weighted interleave".to_string(),
        other => format!("mode {other}"),
    };
    if mode_and_flags & flags != 0 {
        text.push('=');
        if mode_and_flags & MPOL_F_STATIC_NODES != 0 {
            text.push_str("static");
        } else if mode_and_flags & MPOL_F_RELATIVE_NODES != 0 {
            text.push_str("relative");
        }
        if mode_and_flags & MPOL_F_NUMA_BALANCING != 0 {
            text.push_str("|balancing");
        }
    }
    let nodes = node_list(mask);
    if !nodes.is_empty() {
        text.push(':');
        text.push_str(&nodes);
    }
    text
}

/// The nodes set in `mask` as "0-1,4" (the kernel's %pbl).
fn node_list(mask: &[u8]) -> String {
    let set = |n: usize| mask[n / 8] & (1 << (n % 8)) != 0;
    let mut ranges = Vec::new();
    let mut n = 0;
    while n < mask.len() * 8 {
        if !set(n) {
            n += 1;
            continue;
        }
        let first = n;
        while n + 1 < mask.len() * 8 && set(n + 1) {
            n += 1;
        }
        ranges.push(if first == n {
            first.to_string()
        } else {
            format!("{first}-{n}")
        });
        n += 1;
    }
    ranges.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_named_as_numa_maps_names_them() {
        let mut mask = [0u8; MASK_LEN];
        mask[0] = 0b1;
        assert_eq!(describe(libc::MPOL_BIND, &mask), "bind:0");
        mask[0] = 0b1011;
        assert_eq!(
            describe(libc::MPOL_INTERLEAVE | MPOL_F_STATIC_NODES, &mask),
            "interleave=static:0-1,3"
        );
        assert_eq!(describe(libc::MPOL_LOCAL, &[0u8; MASK_LEN]), "local");
    }
}
