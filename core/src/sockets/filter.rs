//! Socket filters, on every family: a classic BPF program (SO_ATTACH_FILTER) is read back at
//! dump (SO_GET_FILTER) into the socket's record, one u64 per instruction
//! (`code << 48 | jt << 40 | jf << 32 | k`), and attached again at restore with its lock
//! (SO_LOCK_FILTER); an eBPF program (SO_ATTACH_BPF) cannot be read back and is refused.

use std::os::fd::{AsFd, BorrowedFd, RawFd};

use cryo_proto::image::{file_desc::Kind, FileDesc};

use super::restore_err;
use super::SocketError;
use crate::sys::sockfilter::{self, Filter};

/// A socket's filter as its record keeps it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Captured {
    /// The program, one u64 per instruction (empty: none).
    pub program: Vec<u64>,
    /// SO_LOCK_FILTER.
    pub locked: bool,
}

fn pack(f: &libc::sock_filter) -> u64 {
    (u64::from(f.code) << 48) | (u64::from(f.jt) << 40) | (u64::from(f.jf) << 32) | u64::from(f.k)
}

fn unpack(v: u64) -> libc::sock_filter {
    libc::sock_filter {
        code: (v >> 48) as u16,
        jt: (v >> 40) as u8,
        jf: (v >> 32) as u8,
        k: v as u32,
    }
}

/// Why a filter is refused, or how it could not be read.
pub(crate) enum FilterProblem {
    /// An eBPF program.
    Ebpf,
    /// getsockopt failed.
    Read(&'static str, std::io::Error),
}

/// Reads the filter of socket `dup` (`None`: it has none).
pub(crate) fn capture(dup: BorrowedFd<'_>) -> Result<Option<Captured>, FilterProblem> {
    let program = match sockfilter::get(dup).map_err(|e| FilterProblem::Read("SO_GET_FILTER", e))? {
        Filter::None => return Ok(None),
        Filter::Ebpf => return Err(FilterProblem::Ebpf),
        Filter::Classic(p) => p.iter().map(pack).collect(),
    };
    let locked = sockfilter::locked(dup).map_err(|e| FilterProblem::Read("SO_LOCK_FILTER", e))?;
    Ok(Some(Captured { program, locked }))
}

/// Attaches the filter of socket record `desc` (if any) to `fd`, then locks it if it was.
pub(crate) fn restore(desc: &FileDesc, fd: impl AsFd) -> Result<(), SocketError> {
    let Some(Kind::Socket(s)) = &desc.kind else {
        return Ok(());
    };
    if s.bpf_filter.is_empty() {
        return Ok(());
    }
    let prog: Vec<libc::sock_filter> = s.bpf_filter.iter().copied().map(unpack).collect();
    sockfilter::attach(fd.as_fd(), &prog).map_err(|e| restore_err(desc, "SO_ATTACH_FILTER", e))?;
    if s.bpf_filter_locked {
        sockfilter::lock(fd.as_fd()).map_err(|e| restore_err(desc, "SO_LOCK_FILTER", e))?;
    }
    Ok(())
}

/// Fd `fd` for messages.
pub(crate) fn ebpf_refusal(fd: RawFd) -> String {
    format!("socket fd {fd} with an eBPF filter (SO_ATTACH_BPF), which the kernel cannot give back")
}
