//! Multicast memberships of a task's datagram sockets: the candidates are the groups its
//! network namespace has joined (/proc/PID/net/igmp and igmp6: every group some socket or
//! the kernel joined, per interface); getsockopt(MCAST_MSFILTER) on the socket's duplicate
//! then says, for each, whether THIS socket is a member and with which source filter
//! (cryo-tcp-repair's multicast module). Restore joins them again on the same interface index.

use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{BorrowedFd, RawFd};

use cryo_tcp_repair::{self as repair, Membership};
use nix::unistd::Pid;

use super::SocketError;

/// (interface index, group) of every group joined in the network namespace of `pid`, IPv4
/// only unless `ipv6` (an IPv6 socket may join groups of both families).
pub(super) fn candidates(at: &str, ipv6: bool) -> Vec<(u32, IpAddr)> {
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{at}/net/igmp")) {
        out.extend(parse_igmp(&text));
    }
    if ipv6 {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{at}/net/igmp6")) {
            out.extend(parse_igmp6(&text));
        }
    }
    out
}

/// /proc/net/igmp: a line per interface ("1\tlo        :     1      V3"), then a line per
/// group ("\t\t\t\t010000E0     1 0:00000000\t\t0"; the address as the u32 of its network
/// bytes read in host order).
fn parse_igmp(text: &str) -> Vec<(u32, IpAddr)> {
    let mut out = Vec::new();
    let mut ifindex = None;
    for line in text.lines().skip(1) {
        if !line.starts_with('\t') {
            ifindex = line.split_whitespace().next().and_then(|i| i.parse().ok());
            continue;
        }
        let (Some(idx), Some(group)) = (ifindex, line.split_whitespace().next()) else {
            continue;
        };
        if let Ok(raw) = u32::from_str_radix(group, 16) {
            out.push((idx, IpAddr::from(raw.to_ne_bytes())));
        }
    }
    out
}

/// /proc/net/igmp6: "1    lo              ff020000000000000000000000000001     1 0000000C 0".
fn parse_igmp6(text: &str) -> Vec<(u32, IpAddr)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let idx = f.first()?.parse().ok()?;
            let hex = f.get(2)?;
            if hex.len() != 32 {
                return None;
            }
            let mut bytes = [0u8; 16];
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
            }
            Some((idx, IpAddr::V6(Ipv6Addr::from(bytes))))
        })
        .collect()
}

/// The memberships of socket `dup` (fd `fd` of `pid`) among `candidates`.
pub(super) fn capture(
    pid: Pid,
    fd: RawFd,
    dup: BorrowedFd<'_>,
    candidates: &[(u32, IpAddr)],
) -> Result<Vec<Membership>, SocketError> {
    let mut out = Vec::new();
    for &(ifindex, group) in candidates {
        let m =
            repair::multicast_membership(dup, group, ifindex).map_err(|e| SocketError::Sys {
                pid,
                fd,
                step: "getsockopt MCAST_MSFILTER (multicast membership)",
                source: e.into(),
            })?;
        out.extend(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_groups_of_both_tables_are_read_with_their_interface() {
        let igmp = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n\
                    1\tlo        :     2      V3\n\
                    \t\t\t\t030201EF     1 0:00000000\t\t0\n\
                    \t\t\t\t010000E0     1 0:00000000\t\t0\n\
                    4\teth0      :     1      V3\n\
                    \t\t\t\t010000E0     1 0:00000000\t\t0\n";
        let want_first: IpAddr = if cfg!(target_endian = "little") {
            "239.1.2.3".parse().unwrap()
        } else {
            "3.2.1.239".parse().unwrap()
        };
        let got = parse_igmp(igmp);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (1, want_first));
        assert_eq!(got[2].0, 4);
        let igmp6 = "1    lo              ff020000000000000000000000000001     1 0000000C 0\n";
        assert_eq!(
            parse_igmp6(igmp6),
            vec![(1, "ff02::1".parse::<IpAddr>().unwrap())]
        );
    }
}
