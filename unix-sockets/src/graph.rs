//! The graph of connected unix sockets across every dumped process.
//!
//! Input: each socket fd found in the dumped processes ([`DumpedSocket`]:
//! pid, fd, inode) and the unix_diag dump of the namespace. Output
//! ([`SocketGraph`]): what the restorer creates together and in which
//! order, and what it cannot, sorted by inode so the same dump always
//! restores in the same order.
//!
//! ```text
//!   pair:      A <-> B            both dumped, each the other's peer
//!                                  -> socketpair (creator = lower inode),
//!                                     or connect+accept when one end was
//!                                     accepted from a dumped listener
//!   pending:   L [C1 C2]          listener L, its accept queue named by the
//!                                  clients (C1 dumped: connect a fresh socket
//!                                  to L at restore)
//!   dgram:     S -> R              S connected to R (R bound, maybe shared
//!                                  by several senders)
//!   external:  X -> ?              peer not in the dump: refuse, or treat as
//!                                  external (--ext-unix-sk)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::diag::{SockState, SockType, UnixName, UnixSockInfo};

/// A socket descriptor found in a dumped process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DumpedSocket {
    /// Process id.
    pub pid: i32,
    /// Descriptor number in that process.
    pub fd: i32,
    /// Socket inode (`socket:[INODE]`).
    pub inode: u32,
}

/// Who holds one socket: every (pid, fd), sorted; the first is the one
/// that creates it at restore (the others inherit or receive it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The socket inode.
    pub inode: u32,
    /// (pid, fd) of every holder, sorted.
    pub holders: Vec<(i32, i32)>,
    /// What unix_diag said.
    pub info: UnixSockInfo,
    /// How the socket got its name.
    pub binding: Binding,
}

/// How a socket got the name unix_diag shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Not bound.
    None,
    /// bind(2) on this socket: the restorer binds it.
    Own,
    /// Accepted from a listener: the name is the listener's; it comes back
    /// only through accept() on that listener.
    Inherited {
        /// The listener whose name it shows.
        listener: u32,
    },
}

/// How the restorer makes a connected pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairMethod {
    /// `socketpair()`; `creator` makes it and hands the other end over.
    SocketPair,
    /// The accepted end shows a dumped listener's name: connect a fresh
    /// socket (the `connector`) to the listener and accept().
    ViaListener {
        /// The listener to connect to and accept from.
        listener: u32,
        /// The end that accept() returns.
        accepted: u32,
        /// The end that connects.
        connector: u32,
    },
}

/// Two dumped sockets, each the other's peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The lower inode: the end whose holder creates the pair.
    pub creator: u32,
    /// The other end.
    pub other: u32,
    /// Type of both.
    pub sock_type: SockType,
    /// How to make it.
    pub method: PairMethod,
}

/// One connection waiting in a dumped listener's accept queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The client socket (unix_diag names accept queue entries by their
    /// client; the embryo itself has no inode).
    pub client: u32,
    /// Whether the client is in the dump (if not, it is an external client
    /// and also listed in [`SocketGraph::external`]).
    pub client_dumped: bool,
    /// Bytes the client sent that wait in the embryo's queue (the client's
    /// send queue; not capturable: no fd reaches the embryo).
    pub embryo_queued: u32,
}

/// A dumped listener and its accept queue, in queue order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The listener.
    pub inode: u32,
    /// Its name.
    pub name: UnixName,
    /// The backlog given to listen().
    pub backlog: u32,
    /// Pending connections, in queue order.
    pub pending: Vec<Pending>,
}

/// A dgram socket connected to another dgram socket that is not connected
/// back to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DgramLink {
    /// The connected sender (dumped).
    pub sender: u32,
    /// Its destination.
    pub receiver: u32,
    /// The receiver's name (what the sender connects to at restore).
    pub receiver_name: UnixName,
    /// Whether the receiver is in the dump.
    pub receiver_dumped: bool,
}

/// Which way the relation to the outside goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// The dumped socket's peer is outside.
    Outgoing,
    /// A socket outside has the dumped socket as its peer (a connected
    /// dgram sender, or a client waiting in a dumped listener's queue).
    Incoming,
}

/// A dumped socket connected to a socket outside the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalPeer {
    /// The first holder's pid.
    pub pid: i32,
    /// The first holder's fd.
    pub fd: i32,
    /// The dumped socket.
    pub inode: u32,
    /// Type of the dumped socket.
    pub sock_type: SockType,
    /// The socket outside.
    pub peer: u32,
    /// Its name, as far as unix_diag knows (`Unnamed` if it is gone).
    pub peer_name: UnixName,
    /// Which way.
    pub direction: Direction,
}

impl std::fmt::Display for ExternalPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = match self.direction {
            Direction::Outgoing => "connected to",
            Direction::Incoming => "has a connection from",
        };
        write!(
            f,
            "unix socket {} (pid {} fd {}) {dir} socket {} {} outside the dump",
            self.inode, self.pid, self.fd, self.peer, self.peer_name
        )
    }
}

/// Something the restorer cannot do right, with the socket named.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// A dumped inode unix_diag does not know (another network namespace,
    /// or closed since).
    NoDiag {
        /// The socket inode.
        inode: u32,
    },
    /// A stream/seqpacket socket whose peer does not point back at it and
    /// is no embryo of a listener in the dump.
    OneWayStream {
        /// The socket.
        inode: u32,
        /// Its peer.
        peer: u32,
    },
    /// A client sent data before being accepted: it is in the embryo's
    /// queue and cannot be captured.
    EmbryoData {
        /// The listener.
        listener: u32,
        /// The client.
        client: u32,
        /// Bytes waiting.
        bytes: u32,
    },
}

/// The graph of the dumped unix sockets.
#[derive(Debug, Clone, Default)]
pub struct SocketGraph {
    /// Every dumped socket known to unix_diag, by inode.
    pub nodes: BTreeMap<u32, Node>,
    /// Connected pairs with both ends dumped.
    pub pairs: Vec<Pair>,
    /// Dumped listeners with their accept queues.
    pub listeners: Vec<Listener>,
    /// One-way dgram connections from dumped senders.
    pub dgram_links: Vec<DgramLink>,
    /// Relations with sockets outside the dump.
    pub external: Vec<ExternalPeer>,
    /// What cannot be restored exactly.
    pub problems: Vec<Problem>,
    /// Dumped sockets bound by name (own binding), to find the socket to
    /// send a captured dgram from by its sender name.
    pub by_name: BTreeMap<UnixName, u32>,
}

impl SocketGraph {
    /// Builds the graph. `dumped` may list one inode several times (shared
    /// descriptors); `diag` is [`crate::diag::dump_all`]'s answer.
    pub fn build(dumped: &[DumpedSocket], diag: &HashMap<u32, UnixSockInfo>) -> Self {
        let mut g = SocketGraph::default();
        let mut holders: BTreeMap<u32, BTreeSet<(i32, i32)>> = BTreeMap::new();
        for d in dumped {
            holders.entry(d.inode).or_default().insert((d.pid, d.fd));
        }
        // Who points at whom, across the whole namespace.
        let mut pointed_by: HashMap<u32, Vec<u32>> = HashMap::new();
        for info in diag.values() {
            if let Some(p) = info.peer {
                pointed_by.entry(p).or_default().push(info.inode);
            }
        }
        for v in pointed_by.values_mut() {
            v.sort_unstable();
        }
        // Names held by listeners (accepted sockets show the same name).
        let mut listener_names: HashMap<&UnixName, u32> = HashMap::new();
        for info in diag.values() {
            if info.state == SockState::Listen && info.name.is_bound() {
                listener_names.insert(&info.name, info.inode);
            }
        }

        for (&inode, h) in &holders {
            let Some(info) = diag.get(&inode) else {
                g.problems.push(Problem::NoDiag { inode });
                continue;
            };
            let binding = binding_of(info, &listener_names);
            if binding == Binding::Own {
                g.by_name.insert(info.name.clone(), inode);
            }
            g.nodes.insert(
                inode,
                Node {
                    inode,
                    holders: h.iter().copied().collect(),
                    info: info.clone(),
                    binding,
                },
            );
        }

        // Clients waiting in any listener's accept queue -> that listener.
        let mut waiting_in: HashMap<u32, u32> = HashMap::new();
        for info in diag.values() {
            if info.state == SockState::Listen {
                for &c in &info.pending {
                    waiting_in.insert(c, info.inode);
                }
            }
        }

        let first = |n: &Node| n.holders[0];
        for node in g.nodes.values() {
            let info = &node.info;
            let (pid, fd) = first(node);
            let name_of = |inode| diag.get(&inode).map(|p| p.name.clone()).unwrap_or_default();
            // This socket, connected to or from `peer` outside the dump.
            let external = |peer, peer_name, direction| ExternalPeer {
                pid,
                fd,
                inode: info.inode,
                sock_type: info.sock_type,
                peer,
                peer_name,
                direction,
            };
            if let Some(peer) = info.peer {
                match g.nodes.get(&peer) {
                    Some(pn) if pn.info.peer == Some(info.inode) => {
                        if info.inode < peer {
                            g.pairs.push(Pair {
                                creator: info.inode,
                                other: peer,
                                sock_type: info.sock_type,
                                method: match pair_method(node, pn) {
                                    // The listener is not restored: its
                                    // name cannot come back on this end.
                                    PairMethod::ViaListener { listener, .. }
                                        if !holders.contains_key(&listener) =>
                                    {
                                        PairMethod::SocketPair
                                    }
                                    m => m,
                                },
                            });
                        }
                    }
                    Some(pn) => {
                        if info.sock_type == SockType::Dgram {
                            g.dgram_links.push(DgramLink {
                                sender: info.inode,
                                receiver: peer,
                                receiver_name: pn.info.name.clone(),
                                receiver_dumped: true,
                            });
                        } else {
                            g.problems.push(Problem::OneWayStream {
                                inode: info.inode,
                                peer,
                            });
                        }
                    }
                    None => {
                        let peer_name = name_of(peer);
                        if info.sock_type == SockType::Dgram {
                            g.dgram_links.push(DgramLink {
                                sender: info.inode,
                                receiver: peer,
                                receiver_name: peer_name.clone(),
                                receiver_dumped: false,
                            });
                        }
                        g.external
                            .push(external(peer, peer_name, Direction::Outgoing));
                    }
                }
            }
            // A client waiting in the accept queue of a listener outside.
            if info.peer.is_none() {
                if let Some(&l) = waiting_in.get(&info.inode) {
                    if !g.nodes.contains_key(&l) {
                        g.external
                            .push(external(l, name_of(l), Direction::Outgoing));
                    }
                }
            }
            // Connected dgram senders outside the dump.
            if info.sock_type == SockType::Dgram {
                for &s in pointed_by
                    .get(&info.inode)
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                {
                    if s != info.inode && !g.nodes.contains_key(&s) && info.peer != Some(s) {
                        g.external
                            .push(external(s, name_of(s), Direction::Incoming));
                    }
                }
            }
            if info.state == SockState::Listen {
                let mut pending = Vec::new();
                for &c in &info.pending {
                    let client_dumped = g.nodes.contains_key(&c);
                    let embryo_queued = diag.get(&c).map_or(0, |d| d.wqueue);
                    if embryo_queued > 0 {
                        g.problems.push(Problem::EmbryoData {
                            listener: info.inode,
                            client: c,
                            bytes: embryo_queued,
                        });
                    }
                    if !client_dumped {
                        g.external.push(ExternalPeer {
                            pid,
                            fd,
                            inode: info.inode,
                            sock_type: info.sock_type,
                            peer: c,
                            peer_name: diag.get(&c).map(|p| p.name.clone()).unwrap_or_default(),
                            direction: Direction::Incoming,
                        });
                    }
                    pending.push(Pending {
                        client: c,
                        client_dumped,
                        embryo_queued,
                    });
                }
                g.listeners.push(Listener {
                    inode: info.inode,
                    name: info.name.clone(),
                    backlog: info.wqueue,
                    pending,
                });
            }
        }
        g.pairs.sort_by_key(|p| (p.creator, p.other));
        g.listeners.sort_by_key(|l| l.inode);
        g.dgram_links.sort_by_key(|l| (l.receiver, l.sender));
        g.external
            .sort_by_key(|e| (e.inode, e.direction, e.peer, e.pid, e.fd));
        g.problems.sort();
        g
    }

    /// Order in which to create the dumped sockets: first those bound by
    /// name that others connect to (listeners, then other bound sockets),
    /// then everything else; inode order within each rank.
    pub fn restore_order(&self) -> Vec<u32> {
        let rank = |n: &Node| match (n.info.state, n.binding) {
            (SockState::Listen, _) => 0,
            (_, Binding::Own) => 1,
            _ => 2,
        };
        let mut v: Vec<(u8, u32)> = self.nodes.values().map(|n| (rank(n), n.inode)).collect();
        v.sort_unstable();
        v.into_iter().map(|(_, i)| i).collect()
    }

    /// The pair an inode belongs to, if any.
    pub fn pair_of(&self, inode: u32) -> Option<&Pair> {
        self.pairs
            .iter()
            .find(|p| p.creator == inode || p.other == inode)
    }
}

fn binding_of(info: &UnixSockInfo, listener_names: &HashMap<&UnixName, u32>) -> Binding {
    if !info.name.is_bound() {
        return Binding::None;
    }
    if info.state != SockState::Listen && info.sock_type != SockType::Dgram {
        if let Some(&l) = listener_names.get(&info.name) {
            // An accepted socket shares the listener's address; for a path
            // it has no UNIX_DIAG_VFS (only the binder holds the dentry).
            let path_inherited = matches!(info.name, UnixName::Path(_)) && info.vfs.is_none();
            let abstract_inherited = matches!(info.name, UnixName::Abstract(_));
            if l != info.inode && (path_inherited || abstract_inherited) {
                return Binding::Inherited { listener: l };
            }
        }
    }
    Binding::Own
}

fn pair_method(a: &Node, b: &Node) -> PairMethod {
    for (acc, con) in [(a, b), (b, a)] {
        if let Binding::Inherited { listener } = acc.binding {
            return PairMethod::ViaListener {
                listener,
                accepted: acc.inode,
                connector: con.inode,
            };
        }
    }
    PairMethod::SocketPair
}
