//! sock_diag dumps of the families cryo-unix-sockets does not cover (packet_diag and
//! netlink_diag): one request, the answers split into their fixed header and attributes.
//!
//! ```text
//!  request: nlmsghdr { SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP } | FAMILY_diag_req
//!  answer:  nlmsghdr | FAMILY_diag_msg | nlattr { len, type } value (aligned to 4) ...
//!           ... NLMSG_DONE (or NLMSG_ERROR: the errno)
//! ```
//!
//! Both families list the sockets of the network namespace of the asking socket (cryo's),
//! with no filter by inode: the caller picks its socket out of the dump.

use std::io;
use std::os::fd::AsRawFd;

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};

/// `SOCK_DIAG_BY_FAMILY`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLMSG_ERROR`, `NLMSG_DONE`.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST | NLM_F_DUMP`.
const DUMP_FLAGS: u16 = 0x1 | 0x300;
/// The netlink message header's length.
const NLMSG_HDRLEN: usize = 16;

/// One answer of a dump: the family's fixed message, then its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Answer {
    /// The `FAMILY_diag_msg` bytes.
    pub head: Vec<u8>,
    /// (type, value) of every attribute, in order (the nested flag bit cleared).
    pub attrs: Vec<(u16, Vec<u8>)>,
}

impl Answer {
    /// The value of attribute `ty`, if present.
    pub fn attr(&self, ty: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(t, _)| *t == ty)
            .map(|(_, v)| v.as_slice())
    }
}

/// A little-endian (native) u32 at `at` of `b`.
pub(super) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A native u16 at `at` of `b`.
pub(super) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("sock_diag answer: {what}"),
    )
}

/// Dumps with request `req` (the `FAMILY_diag_req` bytes); each answer's fixed message is
/// `head_len` bytes long.
pub(super) fn dump(req: &[u8], head_len: usize) -> io::Result<Vec<Answer>> {
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let mut msg = Vec::with_capacity(NLMSG_HDRLEN + req.len());
    msg.extend_from_slice(&((NLMSG_HDRLEN + req.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&DUMP_FLAGS.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(req);
    socket::send(fd.as_raw_fd(), &msg, MsgFlags::empty())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        if n == 0 {
            return Err(bad("end of stream before NLMSG_DONE"));
        }
        if parse(&buf[..n], head_len, &mut out)? {
            return Ok(out);
        }
    }
}

/// Parses one datagram of answers into `out`; true once NLMSG_DONE is met.
pub(super) fn parse(mut b: &[u8], head_len: usize, out: &mut Vec<Answer>) -> io::Result<bool> {
    while b.len() >= NLMSG_HDRLEN {
        let len = u32_at(b, 0).ok_or_else(|| bad("short header"))? as usize;
        let ty = u16_at(b, 4).ok_or_else(|| bad("short header"))?;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(bad("message length out of range"));
        }
        let body = &b[NLMSG_HDRLEN..len];
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = u32_at(body, 0).ok_or_else(|| bad("short error"))? as i32;
                return Err(io::Error::from_raw_os_error(
                    code.checked_neg().unwrap_or(0),
                ));
            }
            _ => {
                let head = body
                    .get(..head_len)
                    .ok_or_else(|| bad("short message"))?
                    .to_vec();
                let attrs = attributes(&body[head_len..])?;
                out.push(Answer { head, attrs });
            }
        }
        let next = (len + 3) & !3;
        b = b.get(next..).unwrap_or(&[]);
    }
    Ok(false)
}

/// The attributes of `b`, each (type, value).
fn attributes(mut b: &[u8]) -> io::Result<Vec<(u16, Vec<u8>)>> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = usize::from(u16_at(b, 0).ok_or_else(|| bad("short attribute"))?);
        let ty = u16_at(b, 2).ok_or_else(|| bad("short attribute"))? & 0x3fff;
        if len < 4 || len > b.len() {
            return Err(bad("attribute length out of range"));
        }
        out.push((ty, b[4..len].to_vec()));
        let next = (len + 3) & !3;
        b = b.get(next..).unwrap_or(&[]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn answers_attributes_and_done_are_parsed() {
        let mut body = vec![7u8; 4];
        // An attribute of type 2 (nested flag set) with 5 bytes, padded.
        body.extend_from_slice(&9u16.to_ne_bytes());
        body.extend_from_slice(&(2u16 | 0x8000).to_ne_bytes());
        body.extend_from_slice(&[1, 2, 3, 4, 5, 0, 0, 0]);
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&4u16.to_ne_bytes());
        body.extend_from_slice(&[9, 9, 9, 9]);
        let mut dgram = message(20, &body);
        dgram.extend(message(NLMSG_DONE, &[0; 4]));
        let mut out = Vec::new();
        assert!(parse(&dgram, 4, &mut out).unwrap());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].head, vec![7u8; 4]);
        assert_eq!(out[0].attr(2), Some(&[1u8, 2, 3, 4, 5][..]));
        assert_eq!(out[0].attr(4), Some(&[9u8, 9, 9, 9][..]));
    }

    #[test]
    fn errors_and_broken_lengths_are_refused() {
        let err = message(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        let e = parse(&err, 4, &mut Vec::new()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        let mut broken = message(20, &[0; 8]);
        broken[0] = 200;
        assert!(parse(&broken, 4, &mut Vec::new()).is_err());
        let attr = message(20, &[0, 0, 0, 0, 99, 0, 1, 0]);
        assert!(parse(&attr, 4, &mut Vec::new()).is_err());
    }
}
