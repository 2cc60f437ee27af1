//! The socket kind in the file registry: sockets as one [`FileKind`] (captured by the socket
//! pass before the fds are dumped; re-created in the child before any fd is placed).

use std::collections::HashMap;

use cryo_proto::image::{file_desc::Kind, FileDesc, Socket};
use tracing::debug;

use crate::files::inspect::OpenFd;
use crate::files::kind::Opening;
use crate::files::kind::{Checking, Dumping, FileKind, KindState, Opened, Seen};
use crate::files::FileError;
use crate::sockets;

/// TCP, UDP and unix sockets.
pub(crate) struct Sockets;

/// The socket records the socket passes captured, by inode.
#[derive(Debug, Default)]
struct Known(HashMap<u64, Socket>);

/// Makes the sockets captured by `dump` known to the dump of the fds.
pub(crate) fn add_known(state: &mut KindState, dump: &sockets::SocketDump) {
    let known = &mut state.get::<Known>().0;
    for (ino, rec) in dump.records() {
        known.insert(ino, rec.clone());
    }
}

/// The record of socket `ino` behind fd `open`, captured by the socket pass.
pub(crate) fn known(state: &mut KindState, open: &OpenFd, ino: u64) -> Result<Kind, FileError> {
    match state.get::<Known>().0.get(&ino) {
        Some(rec) => Ok(Kind::Socket(rec.clone())),
        None => Err(open.refuse("socket", true)),
    }
}

/// Replaces the record of socket `rec.ino`, in the descriptions already dumped too.
pub(crate) fn update(state: &mut KindState, descs: &mut [FileDesc], rec: &Socket) {
    state.get::<Known>().0.insert(rec.ino, rec.clone());
    for d in descs {
        if let Some(Kind::Socket(s)) = &mut d.kind {
            if s.ino == rec.ino {
                *s = rec.clone();
            }
        }
    }
}

/// Marks the unix sockets of `descs` whose peer is outside the dump: restored broken.
pub(crate) fn mark_external_peers(descs: &mut [FileDesc], external: &[sockets::ExternalPeer]) {
    if external.is_empty() {
        return;
    }
    let by_ino: HashMap<u64, &str> = external
        .iter()
        .map(|e| (e.ino, e.peer_name.as_str()))
        .collect();
    for desc in descs {
        if let Some(Kind::Socket(s)) = &mut desc.kind {
            if let Some(name) = by_ino.get(&s.ino) {
                s.external_peer = true;
                s.peer_name = (*name).to_string();
            }
        }
    }
}

impl FileKind for Sockets {
    type Record = Socket;

    fn record(kind: &Kind) -> Option<&Socket> {
        match kind {
            Kind::Socket(s) => Some(s),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        matches!(fd.seen, Seen::Socket { .. })
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        let Seen::Socket { ino } = fd.seen else {
            return Err(fd.open.refuse("not a socket", false));
        };
        known(fd.state, fd.open, ino)
    }

    fn validate(
        &self,
        desc: &FileDesc,
        s: &Socket,
        _cx: &mut Checking<'_>,
    ) -> Result<(), FileError> {
        // Unix sockets are decoded (and checked) by UnixLinks::build.
        if !sockets::is_unix(s) {
            sockets::decode(desc, s)?;
        }
        Ok(())
    }

    fn open(
        &self,
        desc: &FileDesc,
        _s: &Socket,
        cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError> {
        if cx.links.is_member(desc.id) {
            // A unix socket made with its group (place.rs: UnixLinks::make_all).
            return Ok(Opened::Elsewhere);
        }
        Ok(Opened::Together)
    }

    /// Listeners, then connections, then UDP sockets; each put at its number at once when
    /// one fd uses it and the number is free.
    fn open_together(&self, descs: &[&FileDesc], cx: &mut Opening<'_>) -> Result<(), FileError> {
        let mut decoded = Vec::with_capacity(descs.len());
        for desc in descs {
            if let Some(s) = desc.kind.as_ref().and_then(Self::record) {
                decoded.push((*desc, sockets::decode(desc, s)?));
            }
        }
        decoded.sort_by_key(|(_, d)| d.order());
        for (desc, d) in &decoded {
            let Some(s) = desc.kind.as_ref().and_then(Self::record) else {
                continue;
            };
            let homes = cx.opts.homes.as_deref();
            let fd = sockets::home::Homes::made_in(homes, desc, s, || {
                sockets::open(desc, d, cx.opts.tcp_close)
            })?;
            cx.place_or_hold(desc, fd)?;
        }
        if !decoded.is_empty() {
            debug!(
                sockets = decoded.len(),
                placed = cx.placed(),
                "sockets restored"
            );
        }
        Ok(())
    }

    fn describe(&self, _desc: &FileDesc, s: &Socket) -> String {
        sockets::describe(s)
    }
}
