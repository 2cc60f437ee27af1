//! A netlink socket that sends a request (or a whole nf_tables batch) and collects the
//! kernel's ACKs, one per message that asked for one.
//!
//! What the kernel sends back is read by two pure functions, [`parse_acks`] and
//! [`parse_dump_part`] (bytes of one datagram in, typed answers out, no socket), so that the
//! fuzz targets in fuzz/ can feed them anything.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, send, setsockopt, sockopt, MsgFlags, NetlinkAddr, SockProtocol,
};
use nix::sys::time::TimeVal;

use crate::nft::{self, MsgHdr, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN};
use crate::sys;

/// How long to wait for the kernel's answers before giving up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Receive buffer: large enough for any dump message the kernel builds for us.
const RECV_BUF: usize = 128 * 1024;

/// A failed exchange with the kernel, before the caller names its lock.
#[derive(Debug, PartialEq, Eq)]
pub enum NlError {
    /// A socket call failed: (the call, the kernel's answer).
    Socket(&'static str, Errno),
    /// The kernel refused message `step`.
    Kernel {
        /// The refused message, as the caller named it.
        step: String,
        /// The kernel's error.
        errno: Errno,
        /// The kernel's explanation (extended ACK), if it gave one.
        message: Option<String>,
    },
    /// No answer or a malformed one: (the step, what was wrong).
    Protocol(&'static str, String),
}

/// One NLMSG_ERROR message: the ACK (or refusal) of the request with sequence number `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The sequence number of the message it answers.
    pub seq: u32,
    /// The refusal; `None` for a plain ACK.
    pub errno: Option<Errno>,
    /// The kernel's explanation (extended ACK), if it gave one.
    pub message: Option<String>,
}

/// A bound netlink socket of one protocol.
pub(crate) struct NlSocket {
    fd: OwnedFd,
    seq: AtomicU32,
}

/// Sequence numbers reserved per request: more than the messages of any batch.
const SEQ_STRIDE: u32 = 1 << 20;

impl NlSocket {
    /// Opens and binds a socket (the kernel picks the port id), with capped and extended ACKs.
    pub(crate) fn open(protocol: SockProtocol) -> Result<NlSocket, NlError> {
        Self::open_protocol(protocol as libc::c_int)
    }

    /// The same for a protocol nix does not name (NETLINK_XFRM).
    pub(crate) fn open_protocol(protocol: libc::c_int) -> Result<NlSocket, NlError> {
        let fd =
            sys::netlink_socket(protocol).map_err(|e| NlError::Socket("open netlink socket", e))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(|e| NlError::Socket("bind netlink socket", e))?;
        sys::netlink_flag_on(fd.as_fd(), sys::NETLINK_CAP_ACK)
            .map_err(|e| NlError::Socket("setsockopt NETLINK_CAP_ACK", e))?;
        // Extended ACKs are only an explanation: an old kernel without them is fine.
        let _ = sys::netlink_flag_on(fd.as_fd(), sys::NETLINK_EXT_ACK);
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::from(libc::timeval {
                tv_sec: ANSWER_TIMEOUT.as_secs() as libc::time_t,
                tv_usec: 0,
            }),
        )
        .map_err(|e| NlError::Socket("setsockopt SO_RCVTIMEO", e))?;
        Ok(NlSocket {
            fd,
            seq: AtomicU32::new(1),
        })
    }

    /// The first of a fresh range of sequence numbers for one request or batch.
    pub(crate) fn next_seq(&self) -> u32 {
        self.seq.fetch_add(SEQ_STRIDE, Ordering::Relaxed)
    }

    /// Sends `bytes` in one datagram (one skb: a batch must not be split), growing the send
    /// buffer first if the datagram would not fit.
    fn send_all(&self, bytes: &[u8]) -> Result<(), NlError> {
        if bytes.len() > 64 * 1024 {
            let want = bytes.len() + 64 * 1024;
            // SO_SNDBUFFORCE passes wmem_max with CAP_NET_ADMIN; SO_SNDBUF is the fallback.
            if setsockopt(&self.fd, sockopt::SndBufForce, &want).is_err() {
                setsockopt(&self.fd, sockopt::SndBuf, &want)
                    .map_err(|e| NlError::Socket("setsockopt SO_SNDBUF", e))?;
            }
        }
        let n = send(self.fd.as_raw_fd(), bytes, MsgFlags::empty())
            .map_err(|e| NlError::Socket("send", e))?;
        if n != bytes.len() {
            return Err(NlError::Protocol(
                "send",
                format!("sent {n} of {} bytes", bytes.len()),
            ));
        }
        Ok(())
    }

    fn recv_some<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], NlError> {
        loop {
            match recv(self.fd.as_raw_fd(), buf, MsgFlags::empty()) {
                Ok(n) => return Ok(&buf[..n]),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    return Err(NlError::Protocol(
                        "receive",
                        format!(
                            "no answer from the kernel within {} s",
                            ANSWER_TIMEOUT.as_secs()
                        ),
                    ))
                }
                Err(e) => return Err(NlError::Socket("receive", e)),
            }
        }
    }

    /// Sends a batch (or single requests) and waits for the ACK of every step. Returns the
    /// first refusal, in message order. `batch_seq` is where batch-level errors point.
    pub(crate) fn transact(
        &self,
        bytes: &[u8],
        batch_seq: Option<u32>,
        steps: &[(u32, String)],
    ) -> Result<(), NlError> {
        self.send_all(bytes)?;
        let mut pending: HashMap<u32, usize> = steps
            .iter()
            .enumerate()
            .map(|(i, (seq, _))| (*seq, i))
            .collect();
        let mut first_err: Option<(usize, Errno, Option<String>)> = None;
        let mut buf = vec![0u8; RECV_BUF];
        while !pending.is_empty() {
            let data = self.recv_some(&mut buf)?;
            for ack in parse_acks(data)? {
                if let (Some(errno), true) = (ack.errno, Some(ack.seq) == batch_seq) {
                    // The kernel rejected the batch as a whole: no other answer will come.
                    return Err(NlError::Kernel {
                        step: "batch".into(),
                        errno,
                        message: ack.message,
                    });
                }
                let Some(i) = pending.remove(&ack.seq) else {
                    continue;
                };
                if let Some(errno) = ack.errno {
                    if first_err.as_ref().is_none_or(|(j, ..)| i < *j) {
                        first_err = Some((i, errno, ack.message));
                    }
                }
            }
        }
        match first_err {
            None => Ok(()),
            Some((i, errno, message)) => Err(NlError::Kernel {
                step: steps[i].1.clone(),
                errno,
                message,
            }),
        }
    }

    /// Sends a request that is answered by messages then an ACK (`request` asks for the ACK)
    /// and returns the payloads of the messages, with their types.
    pub(crate) fn get(&self, request: &[u8], seq: u32) -> Result<Vec<(u16, Vec<u8>)>, NlError> {
        self.send_all(request)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let data = self.recv_some(&mut buf)?;
            for (hdr, payload) in nft::messages(data) {
                if hdr.seq != seq {
                    continue;
                }
                if hdr.ty != NLMSG_ERROR {
                    out.push((hdr.ty, payload.to_vec()));
                    continue;
                }
                return match parse_error(&hdr, payload)? {
                    (None, _) => Ok(out),
                    (Some(errno), message) => Err(NlError::Kernel {
                        step: "request".into(),
                        errno,
                        message,
                    }),
                };
            }
        }
    }

    /// Sends a dump request and returns the payloads of every answer, with their types.
    pub(crate) fn dump(&self, request: &[u8], seq: u32) -> Result<Vec<(u16, Vec<u8>)>, NlError> {
        self.send_all(request)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let data = self.recv_some(&mut buf)?;
            if parse_dump_part(data, seq, &mut out)? {
                return Ok(out);
            }
        }
    }
}

/// The ACKs and refusals (NLMSG_ERROR messages) of one received datagram, in order; other
/// messages are skipped, a malformed error message is a protocol error.
pub fn parse_acks(datagram: &[u8]) -> Result<Vec<Ack>, NlError> {
    let mut acks = Vec::new();
    for (hdr, payload) in nft::messages(datagram) {
        if hdr.ty != NLMSG_ERROR {
            continue;
        }
        let (errno, message) = parse_error(&hdr, payload)?;
        acks.push(Ack {
            seq: hdr.seq,
            errno,
            message,
        });
    }
    Ok(acks)
}

/// Reads one received datagram of the answer to dump request `seq`: appends the
/// (type, payload) of each answer to `out`, and returns true once NLMSG_DONE arrived.
/// Messages of other requests are skipped; a refusal (even a plain ACK in place of DONE)
/// is an error.
pub fn parse_dump_part(
    datagram: &[u8],
    seq: u32,
    out: &mut Vec<(u16, Vec<u8>)>,
) -> Result<bool, NlError> {
    for (hdr, payload) in nft::messages(datagram) {
        if hdr.seq != seq {
            continue;
        }
        match hdr.ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let (errno, message) = parse_error(&hdr, payload)?;
                // an ACK in place of DONE is a protocol error too
                let errno = errno.unwrap_or(Errno::EPROTO);
                return Err(NlError::Kernel {
                    step: "dump".into(),
                    errno,
                    message,
                });
            }
            ty => out.push((ty, payload.to_vec())),
        }
    }
    Ok(false)
}

/// Decodes an NLMSG_ERROR payload: the error (`None` for a plain ACK) and the extended-ack
/// message.
fn parse_error(hdr: &MsgHdr, payload: &[u8]) -> Result<(Option<Errno>, Option<String>), NlError> {
    if payload.len() < 4 + NLMSG_HDRLEN {
        return Err(NlError::Protocol(
            "receive",
            format!("short error message ({} bytes)", payload.len()),
        ));
    }
    let code = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
    // saturating: a code of i32::MIN (no errno) must not overflow
    let errno = (code != 0).then(|| Errno::from_raw(code.saturating_neg()));
    let mut message = None;
    if hdr.flags & nft::NLM_F_ACK_TLVS != 0 {
        let orig = MsgHdr::parse(&payload[4..]);
        let skip = if hdr.flags & nft::NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            (orig.len as usize).next_multiple_of(4)
        };
        if let Some(tlvs) = payload.get(4 + skip..) {
            message = nft::attrs(tlvs)
                .find(|(ty, _)| *ty == nft::NLMSGERR_ATTR_MSG)
                .map(|(_, v)| {
                    String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(&[])).into_owned()
                });
        }
    }
    Ok((errno, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Native-endian u32 words; a nlmsghdr is `len, type | flags << 16, seq, pid`.
    fn words(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    #[test]
    fn acks_and_refusals_with_their_message() {
        // nlmsgerr of seq 4: -EEXIST, capped header, NLMSGERR_ATTR_MSG "no\0"
        let mut refusal = words(&[44, 2 | 0x300 << 16, 4, 0, (-17i32) as u32, 16, 0x0a00, 4, 0]);
        refusal.extend_from_slice(&[8, 0, 1, 0, b'n', b'o', 0, 0]);
        let ack = words(&[36, 2 | 0x100 << 16, 3, 0, 0, 16, 0x0a00, 3, 0]);
        let acks = parse_acks(&[ack, refusal].concat()).unwrap();
        assert_eq!(
            acks,
            [
                Ack {
                    seq: 3,
                    errno: None,
                    message: None
                },
                Ack {
                    seq: 4,
                    errno: Some(Errno::EEXIST),
                    message: Some("no".into())
                }
            ]
        );
    }

    /// Found by the netlink_acks and nft_dump fuzz targets: a code of i32::MIN overflowed.
    #[test]
    fn an_error_code_of_i32_min_is_refused_not_a_panic() {
        let msg = words(&[36, 2 | 0x100 << 16, 7, 0, 0x8000_0000, 16, 0x0a00, 7, 0]);
        assert!(parse_acks(&msg).unwrap()[0].errno.is_some());
        assert!(matches!(
            parse_dump_part(&msg, 7, &mut Vec::new()),
            Err(NlError::Kernel { .. })
        ));
    }

    #[test]
    fn a_dump_ends_at_done_and_skips_other_requests() {
        let table = words(&[20, 0x0a00 | 2 << 16, 7, 0, 1]);
        let other = words(&[20, 0x0a00 | 2 << 16, 8, 0, 1]);
        let done = words(&[20, 3 | 2 << 16, 7, 0, 0]);
        let mut out = Vec::new();
        assert!(!parse_dump_part(&[table.clone(), other].concat(), 7, &mut out).unwrap());
        assert!(parse_dump_part(&done, 7, &mut out).unwrap());
        assert_eq!(out, [(0x0a00, 1u32.to_ne_bytes().to_vec())]);
    }
}
