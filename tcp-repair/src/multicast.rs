//! Multicast memberships of a datagram socket (IP_ADD_MEMBERSHIP, MCAST_JOIN_GROUP,
//! MCAST_JOIN_SOURCE_GROUP...), with their source filters.
//!
//! No call lists a socket's memberships. The caller names the candidates (every group its
//! network namespace has joined on some interface: /proc/net/igmp and igmp6), and
//! `getsockopt(MCAST_MSFILTER)` on each answers for this socket alone: its filter mode and
//! sources, or EADDRNOTAVAIL when it is not a member. Restore joins each group again on the
//! same interface index (MCAST_JOIN_GROUP) and sets the source filter (MCAST_MSFILTER).
//!
//! ```text
//! struct group_filter      offset
//!   u32 gf_interface         0
//!   sockaddr_storage group   8
//!   u32 gf_fmode           136   MCAST_EXCLUDE 0 | MCAST_INCLUDE 1
//!   u32 gf_numsrc          140
//!   sockaddr_storage[] src 144   (GROUP_FILTER_SIZE(n) = 144 + 128 n)
//! ```

use std::net::IpAddr;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::sys;

/// One group a socket joined on one interface, with its source filter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The group (IPv4 or IPv6).
    pub group: IpAddr,
    /// The interface index it was joined on.
    pub ifindex: u32,
    /// Filter mode: `true` receives only from `sources` (MCAST_INCLUDE), `false` from every
    /// source but them (MCAST_EXCLUDE; a plain join is EXCLUDE with no source).
    pub include: bool,
    /// The sources of the filter.
    pub sources: Vec<IpAddr>,
}

const HEAD: usize = 144;
const STORAGE: usize = 128;
const MCAST_INCLUDE: u32 = 1;
/// Sources read in one getsockopt (the kernel's default limit is 10: igmp_max_msf).
const FIRST_TRY: usize = 64;

fn level(group: IpAddr) -> i32 {
    match group {
        IpAddr::V4(_) => libc::SOL_IP,
        IpAddr::V6(_) => libc::SOL_IPV6,
    }
}

/// `a` as a sockaddr_in / sockaddr_in6 (port 0) in `out` (128 bytes).
fn put_addr(out: &mut [u8], a: IpAddr) {
    match a {
        IpAddr::V4(v4) => {
            out[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            out[4..8].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            out[8..24].copy_from_slice(&v6.octets());
        }
    }
}

/// The address in a sockaddr_storage, `None` for another family.
fn get_addr(raw: &[u8]) -> Option<IpAddr> {
    let family = i32::from(u16::from_ne_bytes([raw[0], raw[1]]));
    match family {
        libc::AF_INET => Some(IpAddr::from(<[u8; 4]>::try_from(&raw[4..8]).ok()?)),
        libc::AF_INET6 => Some(IpAddr::from(<[u8; 16]>::try_from(&raw[8..24]).ok()?)),
        _ => None,
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// A group_filter for `m` with room for `room` sources (the sources of `m` written in).
fn group_filter(m: &Membership, room: usize) -> Vec<u8> {
    let mut buf = vec![0u8; HEAD + STORAGE * room.max(m.sources.len())];
    buf[..4].copy_from_slice(&m.ifindex.to_ne_bytes());
    put_addr(&mut buf[8..8 + STORAGE], m.group);
    let mode = if m.include { MCAST_INCLUDE } else { 0 };
    buf[136..140].copy_from_slice(&mode.to_ne_bytes());
    let n = room.max(m.sources.len()) as u32;
    buf[140..144].copy_from_slice(&n.to_ne_bytes());
    for (i, s) in m.sources.iter().enumerate() {
        put_addr(&mut buf[HEAD + i * STORAGE..HEAD + (i + 1) * STORAGE], *s);
    }
    buf
}

/// Whether socket `fd` is a member of `group` on interface `ifindex`, and with which filter:
/// `None` when it is not (or its family cannot join groups of that family).
pub fn membership(
    fd: BorrowedFd<'_>,
    group: IpAddr,
    ifindex: u32,
) -> Result<Option<Membership>, Errno> {
    let mut m = Membership {
        group,
        ifindex,
        include: false,
        sources: Vec::new(),
    };
    let mut room = FIRST_TRY;
    loop {
        let mut buf = group_filter(&m, room);
        match sys::get_bytes(fd, level(group), libc::MCAST_MSFILTER, &mut buf) {
            Ok(_) => {}
            Err(Errno::EADDRNOTAVAIL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP) => return Ok(None),
            Err(e) => return Err(e),
        }
        let count = u32_at(&buf, 140) as usize;
        if count > room {
            room = count;
            continue;
        }
        m.include = u32_at(&buf, 136) == MCAST_INCLUDE;
        m.sources = (0..count)
            .filter_map(|i| get_addr(&buf[HEAD + i * STORAGE..HEAD + (i + 1) * STORAGE]))
            .collect();
        return Ok(Some(m));
    }
}

/// Joins `m` on `fd` again: MCAST_JOIN_GROUP on its interface index, then its source filter
/// unless it is a plain join (EXCLUDE, no source).
pub fn join(fd: BorrowedFd<'_>, m: &Membership) -> Result<(), Errno> {
    // struct group_req: u32 gr_interface, then a sockaddr_storage at offset 8.
    let mut req = vec![0u8; 8 + STORAGE];
    req[..4].copy_from_slice(&m.ifindex.to_ne_bytes());
    put_addr(&mut req[8..], m.group);
    sys::set_bytes(fd, level(m.group), libc::MCAST_JOIN_GROUP, &req)?;
    if m.include || !m.sources.is_empty() {
        let buf = group_filter(m, m.sources.len());
        sys::set_bytes(fd, level(m.group), libc::MCAST_MSFILTER, &buf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_join_with_a_source_filter_reads_back_as_it_was_made() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let lo: u32 = std::fs::read_to_string("/sys/class/net/lo/ifindex")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let group: IpAddr = "239.7.7.7".parse().unwrap();
        assert_eq!(membership(s.as_fd(), group, lo).unwrap(), None);
        let m = Membership {
            group,
            ifindex: lo,
            include: true,
            sources: vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()],
        };
        join(s.as_fd(), &m).unwrap();
        let mut back = membership(s.as_fd(), group, lo).unwrap().unwrap();
        back.sources.sort();
        assert_eq!(back, m);
    }
}
