//! Injection of one bare TCP segment "from the peer" into a restored socket,
//! through a raw socket (needs CAP_NET_RAW). Used to put back the peer's FIN
//! (CLOSE_WAIT, LAST_ACK, CLOSING), the peer's ACK of our FIN (FIN_WAIT2) and the peer's
//! reset of a connection whose error the process had not read, which no socket call can
//! recreate.
//!
//! The raw socket marks its packets with [`INJECT_MARK`]: an engine that holds the
//! connection's packets back (cryo's network lock drops its 4-tuple both ways until the
//! restore is over) lets the marked ones through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{Ctx, Result};
use crate::sys;

/// TCP flag FIN.
pub const FIN: u8 = 0x01;
/// TCP flag RST.
pub const RST: u8 = 0x04;
/// TCP flag ACK.
pub const ACK: u8 = 0x10;

/// `SO_MARK` of the injected segments (needs CAP_NET_ADMIN), CRIU's `SOCCR_MARK`: a
/// firewall that holds a restored connection's packets back lets these through.
pub const INJECT_MARK: u32 = 0xC114;

/// One segment without payload or options.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        acc += word as u32;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn tcp_header(seg: &Segment, pseudo: &[u8]) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0..2].copy_from_slice(&seg.src.port().to_be_bytes());
    h[2..4].copy_from_slice(&seg.dst.port().to_be_bytes());
    h[4..8].copy_from_slice(&seg.seq.to_be_bytes());
    h[8..12].copy_from_slice(&seg.ack.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = seg.flags;
    h[14..16].copy_from_slice(&seg.window.to_be_bytes());
    let csum = fold(sum16(&h, sum16(pseudo, 0)));
    h[16..18].copy_from_slice(&csum.to_be_bytes());
    h
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn v4_packet(seg: &Segment, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8, 0, 20]);
    let tcp = tcp_header(seg, &pseudo);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = libc::IPPROTO_TCP as u8;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let csum = fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let mut p = ip.to_vec();
    p.extend_from_slice(&tcp);
    p
}

fn v6_packet(seg: &Segment, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, libc::IPPROTO_TCP as u8]);
    let tcp = tcp_header(seg, &pseudo);
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&20u16.to_be_bytes());
    ip[6] = libc::IPPROTO_TCP as u8;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    let mut p = ip.to_vec();
    p.extend_from_slice(&tcp);
    p
}

/// Sends `seg` through a raw socket with a hand-built IP header.
pub fn send(seg: &Segment, ctx: Ctx) -> Result<()> {
    let (packet, domain, dst) = match (unmap(seg.src.ip()), unmap(seg.dst.ip())) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (
            v4_packet(seg, s, d),
            Domain::IPV4,
            SockAddr::from(SocketAddr::new(IpAddr::V4(d), 0)),
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => (
            v6_packet(seg, s, d),
            Domain::IPV6,
            SockAddr::from(SocketAddr::new(IpAddr::V6(d), 0)),
        ),
        _ => return Err(ctx.invalid("inject segment", "mixed address families")),
    };
    let raw = Socket::new(domain, Type::RAW.cloexec(), Some(Protocol::TCP))
        .map_err(ctx.io("socket(SOCK_RAW) for FIN/ACK injection"))?;
    let (level, name) = if domain == Domain::IPV4 {
        (libc::SOL_IP, libc::IP_HDRINCL)
    } else {
        (libc::SOL_IPV6, libc::IPV6_HDRINCL)
    };
    sys::set_int(raw.as_fd(), level, name, 1).map_err(ctx.sys("setsockopt IP_HDRINCL"))?;
    sys::set_int(
        raw.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_MARK,
        INJECT_MARK as i32,
    )
    .map_err(ctx.sys("setsockopt SO_MARK (FIN/ACK injection)"))?;
    let n = raw
        .send_to(&packet, &dst)
        .map_err(ctx.io("sendto (FIN/ACK injection)"))?;
    if n != packet.len() {
        return Err(ctx.invalid("sendto (FIN/ACK injection)", "short write"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_header_verifies() {
        let seg = Segment {
            src: "10.0.0.1:80".parse().unwrap(),
            dst: "10.0.0.2:1234".parse().unwrap(),
            seq: 1,
            ack: 2,
            flags: FIN | ACK,
            window: 512,
        };
        let p = v4_packet(
            &seg,
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
        );
        // A correct IP header sums to 0xffff (folded complement 0).
        assert_eq!(fold(sum16(&p[..20], 0)), 0);
        let mut pseudo = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 20];
        pseudo.extend_from_slice(&p[20..]);
        assert_eq!(fold(sum16(&pseudo, 0)), 0);
    }
}
