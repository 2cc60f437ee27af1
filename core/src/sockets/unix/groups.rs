//! Unix sockets made together at restore, and the descriptions their queues carry: the two
//! ends of a pair, a listener with the clients waiting in its accept queue, a socket without
//! peer whose own queue carries descriptors in flight. Whichever task makes a group also opens
//! every description its queues carry (SCM_RIGHTS), so the refill sends them again in their
//! messages.
//!
//! ```text
//! pair      a <-> b         socketpair(); a's queue sent from b, b's from a
//! listener  L [C1 C2 ..]    bind + listen (backlog raised for the reconnects, then put back);
//!                           each client connects again, in queue order, and sends what it had
//!                           sent before being accepted (the embryo's queue)
//! single    s               no peer (or a broken one: closed, outside the dump),
//!                           descriptors in its own queue (a bound dgram socket, refilled from
//!                           itself; a broken one as `open_broken` makes it)
//! dgram     R <- S1 S2 ..   a bound dgram socket and the dgram sockets connected to it one
//!                           way (R not connected back): R bound, each sender bound to its
//!                           own name and connected to R's; R's queue refilled from itself,
//!                           a sender's from R, by name
//! in a task: every socket of every group it makes -> queues refilled (descriptors in flight
//!            taken from the task's open descriptions) -> shutdown -> options -> flags
//! ```
//!
//! Peer credentials (SO_PEERCRED, SO_PEERGROUPS): every listen(), connect() and socketpair()
//! that stamps them is issued as the dumped ones say ([`peers`]); a connected pair whose ends
//! show different peers (an accepted connection) is made by an accept from a transient
//! listener of the accepted end's path, not by socketpair(), and a listener listens again as
//! each of its clients' peer before that client connects.
//!
//! [`UnixLinks::to_open`] says what a task opens: its fds' descriptions, plus the other members
//! of the groups it makes and what their queues carry, recursively. The restore pipeline
//! ([`crate::spawn`]) uses the same closure to plan what each process inherits.
//!
//! Credentials (SCM_CREDENTIALS) go back with their message; the kernel wants their pid to
//! exist when the queue is refilled. One of a process the refilling task forks later (its
//! child) is sent by a stand-in with that pid (peers.rs refill); any other that does not
//! exist (a process not restored, or restored later in another tree) is sent with the
//! refilling task's pid instead, uid and gid kept, and a warning.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use cryo_proto::image::{file_desc::Kind, FileDesc};
use tracing::debug;

use cryo_unix_sockets as unix;

use super::{
    bind, bind_connected, finish, finish_broken, make, make_broken, peers, unix_err, UnixMessage,
    UnixSocketState,
};
use crate::files::{above, describe, FileError};
use crate::sockets::{self as sockets, Decoded, SocketState};
use crate::sys;

/// How the members of a group are made.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Pair(u32, u32),
    /// A listener, the connections accepted from it that share its abstract name (the
    /// accepted end, its client: `None` when that is closed or outside the dump) and the
    /// clients waiting in its accept queue (`None`: closed since it connected).
    Listener {
        listener: u32,
        accepted: Vec<(u32, Option<u32>)>,
        clients: Vec<Option<u32>>,
    },
    Single(u32),
    Dgram {
        receiver: u32,
        senders: Vec<u32>,
    },
}

impl Shape {
    fn members(&self) -> Vec<u32> {
        match self {
            Shape::Pair(a, b) => vec![*a, *b],
            Shape::Listener {
                listener,
                accepted,
                clients,
            } => std::iter::once(*listener)
                .chain(
                    accepted
                        .iter()
                        .flat_map(|&(a, c)| std::iter::once(a).chain(c)),
                )
                .chain(clients.iter().flatten().copied())
                .collect(),
            Shape::Single(s) => vec![*s],
            Shape::Dgram { receiver, senders } => std::iter::once(*receiver)
                .chain(senders.iter().copied())
                .collect(),
        }
    }
}

#[derive(Debug)]
struct Group {
    shape: Shape,
    /// Descriptions in flight in the queues the maker refills.
    carried: Vec<u32>,
}

/// The unix sockets of an image that are made together, and what their queues carry.
#[derive(Debug, Default)]
pub struct UnixLinks {
    groups: Vec<Group>,
    group_of: HashMap<u32, usize>,
    states: HashMap<u32, Box<UnixSocketState>>,
    /// Every description some group's queues carry.
    carried: HashSet<u32>,
    /// Sockets whose peer is closed or outside the dump (`--ext-unix-sk`): made broken.
    broken: HashSet<u32>,
}

impl UnixLinks {
    /// Groups the unix sockets of `descs`, checking every reference (peer, waiting client,
    /// description in flight).
    pub(crate) fn build(descs: &[FileDesc]) -> Result<Self, FileError> {
        let by_id: HashMap<u32, &FileDesc> = descs.iter().map(|d| (d.id, d)).collect();
        let mut states: BTreeMap<u32, (Box<UnixSocketState>, u64, u64)> = BTreeMap::new();
        let mut broken = HashSet::new();
        for desc in descs {
            if let Some(Kind::Socket(s)) = &desc.kind {
                if sockets::is_unix(s) {
                    match sockets::decode(desc, s)? {
                        Decoded::Plain(SocketState::Unix(u)) => {
                            states.insert(desc.id, (u, s.ino, s.peer_ino));
                        }
                        // Its peer closed or outside the dump, it is made alone, but with the
                        // descriptions its queue carries when it carries any.
                        Decoded::BrokenUnix(u) => {
                            broken.insert(desc.id);
                            states.insert(desc.id, (u, s.ino, 0));
                        }
                        _ => {}
                    }
                }
            }
        }
        let by_ino: HashMap<u64, u32> =
            states.iter().map(|(&id, (_, ino, _))| (*ino, id)).collect();
        let invalid = |id: u32, detail: String| FileError::Invalid { id, detail };
        let mut shapes = Vec::new();
        // Listeners bound to an abstract name, by name and type: the sockets accepted from one
        // that share its name are made by an accept from it.
        let listener_of: HashMap<(Vec<u8>, unix::SockType), u32> = states
            .iter()
            .filter(|(_, (u, _, _))| u.listening && u.name.first() == Some(&0))
            .map(|(&id, (u, _, _))| ((u.name.clone(), u.sock_type), id))
            .collect();
        let listener_of = |u: &UnixSocketState| {
            u.name_shared
                .then(|| listener_of.get(&(u.name.clone(), u.sock_type)).copied())
                .flatten()
        };
        let mut accepted: BTreeMap<u32, Vec<(u32, Option<u32>)>> = BTreeMap::new();
        let mut senders_of: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (&id, (u, ino, peer)) in &states {
            if *peer == 0 {
                if let Some(l) = listener_of(u).filter(|_| broken.contains(&id)) {
                    accepted.entry(l).or_default().push((id, None));
                }
                continue;
            }
            let &p = by_ino.get(peer).ok_or_else(|| {
                invalid(
                    id,
                    format!("its unix peer socket:[{peer}] is not in the image"),
                )
            })?;
            if states[&p].2 != *ino && u.sock_type == unix::SockType::Dgram {
                // Connected one way (the dump checked the receiver is connected to nothing).
                senders_of.entry(p).or_default().push(id);
                continue;
            }
            if states[&p].2 != *ino {
                return Err(invalid(
                    id,
                    format!("its unix peer socket:[{peer}] is not connected back to it"),
                ));
            }
            if let Some(l) = listener_of(u) {
                accepted.entry(l).or_default().push((id, Some(p)));
            } else if id < p && listener_of(&states[&p].0).is_none() {
                shapes.push(Shape::Pair(id, p));
            }
        }
        // Listeners first: their clients have no peer of their own.
        for (&id, (u, _, _)) in &states {
            let accepted = accepted.remove(&id).unwrap_or_default();
            if !u.listening || (u.pending.is_empty() && accepted.is_empty()) {
                continue;
            }
            let clients = u
                .pending
                .iter()
                .map(|p| {
                    if p.client_ino == 0 {
                        return Ok(None);
                    }
                    by_ino.get(&p.client_ino).copied().map(Some).ok_or_else(|| {
                        invalid(
                            id,
                            format!(
                                "a connection waiting in its accept queue comes from \
                                 socket:[{}], which is not in the image",
                                p.client_ino
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            shapes.insert(
                0,
                Shape::Listener {
                    listener: id,
                    accepted,
                    clients,
                },
            );
        }
        for (receiver, senders) in senders_of {
            shapes.push(Shape::Dgram { receiver, senders });
        }
        let mut links = UnixLinks::default();
        for shape in shapes {
            links.add(shape, &states)?;
        }
        for (&id, (u, _, _)) in &states {
            if !links.group_of.contains_key(&id) && u.carried().next().is_some() {
                links.add(Shape::Single(id), &states)?;
            }
        }
        // An epoll in flight is checked with the tasks' fds (files::epoll::check_in_flight).
        for &id in &links.carried {
            if by_id.get(&id).and_then(|d| d.kind.as_ref()).is_none() {
                return Err(invalid(
                    id,
                    "a unix message carries it in flight but files.img does not hold it".into(),
                ));
            }
        }
        links.states = states.into_iter().map(|(id, (u, _, _))| (id, u)).collect();
        links.broken = broken;
        Ok(links)
    }

    fn add(
        &mut self,
        shape: Shape,
        states: &BTreeMap<u32, (Box<UnixSocketState>, u64, u64)>,
    ) -> Result<(), FileError> {
        let index = self.groups.len();
        let mut carried = Vec::new();
        for m in shape.members() {
            if self.group_of.insert(m, index).is_some() {
                return Err(FileError::Invalid {
                    id: m,
                    detail: "unix socket made twice (a pair end that also waits in an accept \
                             queue, or a client in two)"
                        .into(),
                });
            }
            carried.extend(states[&m].0.carried());
        }
        self.carried.extend(carried.iter().copied());
        self.groups.push(Group { shape, carried });
        Ok(())
    }

    /// Whether unix socket `id` is made by a group (not by [`crate::sockets::open`]).
    pub(crate) fn is_member(&self, id: u32) -> bool {
        self.group_of.contains_key(&id)
    }

    /// The abstract names the restore binds: every unix socket bound to one except an
    /// accepted socket (it shares its listener's): (description id, type, name) each.
    pub(crate) fn bound_abstract_names(&self) -> Vec<(u32, unix::SockType, unix::UnixName)> {
        let mut names: Vec<_> = self
            .states
            .iter()
            .filter(|(_, u)| !u.name_shared && u.name.first() == Some(&0))
            .map(|(&id, u)| (id, u.sock_type, u.name()))
            .collect();
        names.sort_by_key(|n| n.0);
        names
    }

    /// Whether some unix message carries `id` in flight.
    pub(crate) fn is_carried(&self, id: u32) -> bool {
        self.carried.contains(&id)
    }

    /// Per group, its members and what its queues carry: descriptions whose creation must
    /// stay in one process ([`crate::files::made_together`] joins the sets that overlap).
    pub(crate) fn group_sets(&self) -> impl Iterator<Item = Vec<u32>> + '_ {
        self.groups.iter().map(|g| {
            g.shape
                .members()
                .into_iter()
                .chain(g.carried.iter().copied())
                .collect()
        })
    }

    /// The two ends of `component` when it is a connected pair and nothing else (no
    /// descriptor in flight): what cryo itself can make for two trees.
    pub(crate) fn plain_pair(&self, component: &[u32]) -> Option<(u32, u32)> {
        let &[a, b] = component else { return None };
        let g = &self.groups[*self.group_of.get(&a)?];
        let plain =
            (g.shape == Shape::Pair(a, b) || g.shape == Shape::Pair(b, a)) && g.carried.is_empty();
        plain.then_some((a, b))
    }

    /// What a task holding `held` opens: those, plus, for every group one of them belongs to
    /// and that the task makes (no member `inherited`), the other members and what the
    /// group's queues carry; recursively.
    pub(crate) fn to_open(
        &self,
        held: &BTreeSet<u32>,
        inherited: impl Fn(u32) -> bool,
    ) -> BTreeSet<u32> {
        let mut out = held.clone();
        let mut work: Vec<u32> = held.iter().copied().collect();
        while let Some(id) = work.pop() {
            let Some(&g) = self.group_of.get(&id) else {
                continue;
            };
            if inherited(id) {
                continue;
            }
            let g = &self.groups[g];
            for m in g
                .shape
                .members()
                .into_iter()
                .chain(g.carried.iter().copied())
            {
                if out.insert(m) {
                    work.push(m);
                }
            }
        }
        out
    }

    fn state(&self, desc: &FileDesc) -> Result<&UnixSocketState, FileError> {
        self.states
            .get(&desc.id)
            .map(|b| &**b)
            .ok_or_else(|| FileError::Invalid {
                id: desc.id,
                detail: "not a unix socket".into(),
            })
    }

    /// Restore side, in the task: makes every group with a member among `to_open` and none
    /// in `opened` (inherited), refills their queues with the descriptions in flight found in
    /// `opened` (an epoll in flight is made here, once the sockets are, its targets lent the
    /// files of the task's fds `fds`), then restores shutdown state, options and flags. Every
    /// socket made goes into `opened`, at or above `min_high`.
    pub(crate) fn make_all(
        &self,
        by_id: &HashMap<u32, &FileDesc>,
        to_open: &BTreeSet<u32>,
        opened: &mut HashMap<u32, OwnedFd>,
        fds: &[cryo_proto::image::FdEntry],
        min_high: RawFd,
        homes: Option<&sockets::home::Homes>,
    ) -> Result<(), FileError> {
        let mine: Vec<&Group> = self
            .groups
            .iter()
            .filter(|g| {
                let members = g.shape.members();
                members
                    .iter()
                    .any(|m| to_open.contains(m) && !opened.contains_key(m))
            })
            .collect();
        let desc = |id: u32| {
            by_id.get(&id).copied().ok_or(FileError::Invalid {
                id,
                detail: "no such description".into(),
            })
        };
        // The second ends of sockets whose peer is closed, closed once their queue is in.
        let mut closing = HashMap::new();
        // The socket files of sockets bound with their file unlinked at once, open O_PATH:
        // their peers reach them through these.
        let mut files = HashMap::new();
        for g in &mine {
            let members = g.shape.members();
            if let Some(&m) = members.iter().find(|m| opened.contains_key(m)) {
                let first = desc(members[0])?;
                return Err(FileError::Invalid {
                    id: first.id,
                    detail: format!(
                        "it is made with {}, which was inherited without it",
                        describe(desc(m)?)
                    ),
                });
            }
            // Made, refilled and finished in the network namespace its members were made in
            // (sockets/home.rs), which the dump checked is one.
            let (first, home) = self.home(g, &desc)?;
            let made = sockets::home::Homes::made_in_home(homes, first, home, || {
                self.make(g, &desc, &mut closing, &mut files)
            })?;
            for (id, fd) in made {
                let d = desc(id)?;
                opened.insert(id, above(d, fd, min_high)?);
            }
        }
        for &id in mine.iter().flat_map(|g| &g.carried) {
            let d = desc(id)?;
            if let (Some(Kind::Epoll(ep)), false) = (&d.kind, opened.contains_key(&id)) {
                let fd = crate::files::epoll::make_in_flight(d, ep, fds, opened, min_high)?;
                opened.insert(id, fd);
            }
        }
        for g in &mine {
            let (first, home) = self.home(g, &desc)?;
            sockets::home::Homes::made_in_home(homes, first, home, || {
                self.refill(g, &desc, opened, &files)
            })?;
        }
        for g in &mine {
            let (first, home) = self.home(g, &desc)?;
            sockets::home::Homes::made_in_home(homes, first, home, || {
                self.finish(g, &desc, opened, &mut closing, &files)
            })?;
        }
        Ok(())
    }

    /// The first member of group `g` and the network namespace its members were made in
    /// when not their maker's (one for all, or the image is refused).
    fn home<'a>(
        &self,
        g: &Group,
        desc: &impl Fn(u32) -> Result<&'a FileDesc, FileError>,
    ) -> Result<(&'a FileDesc, Option<sockets::home::Home>), FileError> {
        let members = g.shape.members();
        let first = desc(members[0])?;
        let home_of = |d: &FileDesc| match &d.kind {
            Some(Kind::Socket(s)) => sockets::home::Home::of(s),
            _ => None,
        };
        let home = home_of(first);
        for &m in &members[1..] {
            let d = desc(m)?;
            if home_of(d) != home {
                return Err(FileError::Invalid {
                    id: first.id,
                    detail: format!(
                        "it is made with {}, made in another network namespace at dump",
                        describe(d)
                    ),
                });
            }
        }
        Ok((first, home))
    }

    /// Creates the sockets of group `g`: (description id, fd) each; a socket whose peer is
    /// closed leaves in `closing` the end its queue goes through, one bound with its file
    /// unlinked at once leaves that file in `files`.
    fn make<'a>(
        &self,
        g: &Group,
        desc: &impl Fn(u32) -> Result<&'a FileDesc, FileError>,
        closing: &mut HashMap<u32, OwnedFd>,
        files: &mut HashMap<u32, OwnedFd>,
    ) -> Result<Vec<(u32, OwnedFd)>, FileError> {
        match &g.shape {
            Shape::Pair(a, b) => {
                let (da, db) = (desc(*a)?, desc(*b)?);
                let (ua, ub) = (self.state(da)?, self.state(db)?);
                let ty = ua.sock_type;
                if ub.sock_type != ua.sock_type {
                    return Err(FileError::Invalid {
                        id: da.id,
                        detail: format!("its unix peer {} has another type", describe(db)),
                    });
                }
                let by_accept = if ua.name_shared || ub.name_shared {
                    // One end was accepted from a listener of an abstract name that is gone:
                    // the other connects to a transient listener of that name.
                    Some(ua.name_shared)
                } else {
                    // Ends showing different peers (an accepted connection): made by an
                    // accept too, from a transient listener of the accepted end's path.
                    accepted_role(ua, ub)
                };
                if let Some(a_accepted) = by_accept {
                    let ((dacc, uacc), (dc, uc)) = if a_accepted {
                        ((da, ua), (db, ub))
                    } else {
                        ((db, ub), (da, ua))
                    };
                    let client = unix::restore::socket(ty).map_err(unix_err(dc, "socket"))?;
                    files.extend(bind_connected(dc, uc, &client)?.map(|f| (dc.id, f)));
                    // The client shows the listen() caller as its peer, the accepted end the
                    // connect() caller.
                    let mut issue = stamped(uc.peer_cred.as_ref(), uacc.peer_cred.as_ref());
                    let acc =
                        unix::restore::accepted_through(ty, &uacc.name(), &client, &mut issue)
                            .map_err(unix_err(
                                dacc,
                                "accept from a transient listener of its name",
                            ))?;
                    debug!(id = dacc.id, peer = dc.id, what = %describe(dacc), "unix connection made by an accept");
                    return Ok(vec![(dacc.id, acc), (dc.id, client)]);
                }
                if connected_by_name(ua, ub) {
                    // Datagram sockets connected to each other by name show no peer
                    // credentials (a socketpair shows its maker): bound, then connected again.
                    let (fa, file_a) = make(da, ua, 0)?;
                    let (fb, file_b) = make(db, ub, 0)?;
                    unix::restore::connect(&fa, &ub.reach(file_b.as_ref()))
                        .map_err(unix_err(da, "connect to its peer's name again"))?;
                    unix::restore::connect(&fb, &ua.reach(file_a.as_ref()))
                        .map_err(unix_err(db, "connect to its peer's name again"))?;
                    files.extend(file_a.map(|f| (*a, f)));
                    files.extend(file_b.map(|f| (*b, f)));
                    debug!(id = da.id, peer = db.id, what = %describe(da), "unix dgram sockets connected by name");
                    return Ok(vec![(*a, fa), (*b, fb)]);
                }
                // Both ends show their maker: this process, as the dumped maker's ids, or one
                // it forks later, through a stand-in.
                let maker = ua
                    .peer_cred
                    .as_ref()
                    .filter(|c| ub.peer_cred.as_ref() == Some(*c));
                let (fa, fb) =
                    peers::socketpair_of(maker, ty).map_err(unix_err(da, "socketpair"))?;
                // Each end's name (getsockname, the other's getpeername): an end of a
                // socketpair is not bound yet, and can be.
                for (d, u, fd, id) in [(da, ua, &fa, *a), (db, ub, &fb, *b)] {
                    files.extend(bind_connected(d, u, fd)?.map(|f| (id, f)));
                }
                debug!(id = da.id, peer = db.id, what = %describe(da), "unix pair made");
                Ok(vec![(*a, fa), (*b, fb)])
            }
            Shape::Listener {
                listener,
                accepted,
                clients,
            } => {
                let dl = desc(*listener)?;
                let ul = self.state(dl)?;
                // Room for every waiting connection while they connect again.
                let room = ul.backlog.max(clients.len() as u32);
                let (fd, file) = make(dl, ul, room)?;
                // The peer credentials its listen() stamps now (each client connecting copies
                // them): listened to again as a client's dumped peer where that differs.
                let mut listen_stamp = ul.peer_cred.clone();
                let to = ul.reach(file.as_ref());
                files.extend(file.map(|f| (*listener, f)));
                // The connections accepted from it before the dump, accepted again first (its
                // accept queue is still empty): each client, bound to its own name, connects,
                // and the accepted end shares the listener's name. A client closed or outside
                // the dump is a transient socket, the end that closes once the queue is in.
                let mut made = Vec::new();
                for &(a, c) in accepted {
                    let da = desc(a)?;
                    let ua = self.state(da)?;
                    let client =
                        unix::restore::socket(ua.sock_type).map_err(unix_err(da, "socket"))?;
                    if let Some(c) = c {
                        let dc = desc(c)?;
                        let uc = self.state(dc)?;
                        files.extend(bind_connected(dc, uc, &client)?.map(|f| (c, f)));
                        listen_as(&fd, room, uc, dc, &mut listen_stamp)?;
                    }
                    // The accepted end shows the connect() caller as its peer.
                    peers::issue(ua.peer_cred.as_ref(), || {
                        unix::restore::connect(&client, &to)
                    })
                    .map_err(unix_err(da, "connect to its listener again"))?;
                    let acc = unix::restore::accept(&fd)
                        .map_err(unix_err(da, "accept from its listener again"))?;
                    made.push((a, acc));
                    match c {
                        Some(c) => made.push((c, client)),
                        None => {
                            closing.insert(a, client);
                        }
                    }
                }
                let mut out = vec![(*listener, fd)];
                out.extend(made);
                for (p, &c) in ul.pending.iter().zip(clients) {
                    let Some(c) = c else {
                        // Closed since: a transient client connects, sends what it had sent
                        // (no descriptors, the dump checked) and closes.
                        let cfd = unix::restore::socket(ul.sock_type)
                            .map_err(unix_err(dl, "socket (a closed waiting client)"))?;
                        // The accepted end shows the gone client's connect() caller.
                        peers::issue(p.peer_cred.as_ref(), || unix::restore::connect(&cfd, &to))
                            .map_err(unix_err(
                                dl,
                                "connect a closed waiting client to its listener again",
                            ))?;
                        let q = queue(dl, ul, &p.queue, &HashMap::new())?;
                        peers::refill(&cfd, None, &q.messages)
                            .map_err(unix_err(dl, "refill what a closed waiting client sent"))?;
                        continue;
                    };
                    let dc = desc(c)?;
                    let uc = self.state(dc)?;
                    let cfd =
                        unix::restore::socket(uc.sock_type).map_err(unix_err(dc, "socket"))?;
                    files.extend(bind(dc, uc, &cfd)?.map(|f| (c, f)));
                    listen_as(&out[0].1, room, uc, dc, &mut listen_stamp)?;
                    // The accepted end will show the client's connect() caller.
                    peers::issue(p.peer_cred.as_ref(), || unix::restore::connect(&cfd, &to))
                        .map_err(unix_err(dc, "connect to its listener again"))?;
                    out.push((c, cfd));
                }
                if room != ul.backlog.max(1) || listen_stamp != ul.peer_cred {
                    // Its own peer credentials last (those of its dumped listen() caller).
                    peers::issue(ul.peer_cred.as_ref(), || {
                        unix::restore::listen(&out[0].1, ul.backlog.max(1))
                    })
                    .map_err(unix_err(dl, "listen"))?;
                }
                debug!(id = dl.id, waiting = clients.len(), what = %describe(dl), "unix listener made with its waiting connections");
                Ok(out)
            }
            Shape::Single(s) => {
                let ds = desc(*s)?;
                let us = self.state(ds)?;
                if self.broken.contains(s) {
                    let made = make_broken(ds, us)?;
                    closing.extend(made.closing.map(|g| (*s, g)));
                    files.extend(made.file.map(|f| (*s, f)));
                    return Ok(vec![(*s, made.fd)]);
                }
                let (fd, file) = make(ds, us, us.backlog)?;
                files.extend(file.map(|f| (*s, f)));
                Ok(vec![(*s, fd)])
            }
            Shape::Dgram { receiver, senders } => {
                let dr = desc(*receiver)?;
                let ur = self.state(dr)?;
                let (fd, file) = make(dr, ur, 0)?;
                let to = ur.reach(file.as_ref());
                files.extend(file.map(|f| (*receiver, f)));
                let mut out = vec![(*receiver, fd)];
                for &s in senders {
                    let ds = desc(s)?;
                    let (fd, file) = make(ds, self.state(ds)?, 0)?;
                    files.extend(file.map(|f| (s, f)));
                    unix::restore::connect(&fd, &to)
                        .map_err(unix_err(ds, "connect to its receiver again"))?;
                    out.push((s, fd));
                }
                debug!(id = dr.id, senders = senders.len(), what = %describe(dr), "unix dgram receiver made with the sockets connected to it");
                Ok(out)
            }
        }
    }

    /// Refills the queues of group `g` (its sockets and its descriptions in flight are in
    /// `opened`, the socket files kept of some in `files`).
    fn refill<'a>(
        &self,
        g: &Group,
        desc: &impl Fn(u32) -> Result<&'a FileDesc, FileError>,
        opened: &HashMap<u32, OwnedFd>,
        files: &HashMap<u32, OwnedFd>,
    ) -> Result<(), FileError> {
        let fd = |id: u32| borrow(opened, id);
        match &g.shape {
            Shape::Pair(a, b) => self.refill_pair(*a, *b, desc, opened)?,
            Shape::Listener {
                listener,
                accepted,
                clients,
            } => {
                // An accepted end without its client is refilled in finish, with its queue.
                for &(a, c) in accepted {
                    if let Some(c) = c {
                        self.refill_pair(a, c, desc, opened)?;
                    }
                }
                let dl = desc(*listener)?;
                let ul = self.state(dl)?;
                for (p, c) in ul.pending.iter().zip(clients) {
                    let Some(c) = *c else { continue };
                    let q = queue(dl, self.state(desc(c)?)?, &p.queue, opened)?;
                    peers::refill(fd(c)?, None, &q.messages)
                        .map_err(unix_err(dl, "refill what a waiting client had sent"))?;
                }
            }
            Shape::Single(_) => {} // with its shutdown and options, in finish
            Shape::Dgram { receiver, senders } => {
                for &s in senders {
                    let d = desc(s)?;
                    let u = self.state(d)?;
                    let q = queue(d, u, &u.queue, opened)?;
                    if !q.is_empty() {
                        let to = u.reach(files.get(&s));
                        peers::refill(fd(*receiver)?, Some(&to), &q.messages)
                            .map_err(unix_err(d, "refill the queue"))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Refills the queues of the connected pair `a`, `b`: each from the other.
    fn refill_pair<'a>(
        &self,
        a: u32,
        b: u32,
        desc: &impl Fn(u32) -> Result<&'a FileDesc, FileError>,
        opened: &HashMap<u32, OwnedFd>,
    ) -> Result<(), FileError> {
        for (to, from) in [(a, b), (b, a)] {
            let d = desc(to)?;
            let u = self.state(d)?;
            let q = queue(d, u, &u.queue, opened)?;
            peers::refill(borrow(opened, from)?, None, &q.messages)
                .map_err(unix_err(d, "refill the queue"))?;
        }
        Ok(())
    }

    /// Shutdown state, options and flags of the sockets of group `g` (a socket whose peer is
    /// closed: its queue too, through its end in `closing`, which then closes; the socket
    /// files kept of some in `files`).
    fn finish<'a>(
        &self,
        g: &Group,
        desc: &impl Fn(u32) -> Result<&'a FileDesc, FileError>,
        opened: &HashMap<u32, OwnedFd>,
        closing: &mut HashMap<u32, OwnedFd>,
        files: &HashMap<u32, OwnedFd>,
    ) -> Result<(), FileError> {
        let fd = |id: u32| borrow(opened, id);
        match &g.shape {
            Shape::Pair(a, b) => {
                let (da, db) = (desc(*a)?, desc(*b)?);
                let (ua, ub) = (self.state(da)?, self.state(db)?);
                if ua.sock_type == unix::SockType::Dgram {
                    for (d, u, id) in [(da, ua, *a), (db, ub, *b)] {
                        unix::restore::restore_shutdown(fd(id)?, u.shutdown())
                            .map_err(unix_err(d, "shutdown"))?;
                    }
                } else {
                    unix::restore::restore_pair_shutdown(
                        fd(*a)?,
                        ua.shutdown(),
                        fd(*b)?,
                        ub.shutdown(),
                    )
                    .map_err(unix_err(da, "shutdown"))?;
                }
            }
            Shape::Listener {
                accepted, clients, ..
            } => {
                for &(a, c) in accepted {
                    let da = desc(a)?;
                    let ua = self.state(da)?;
                    match c {
                        Some(c) => {
                            let uc = self.state(desc(c)?)?;
                            unix::restore::restore_pair_shutdown(
                                fd(a)?,
                                ua.shutdown(),
                                fd(c)?,
                                uc.shutdown(),
                            )
                            .map_err(unix_err(da, "shutdown"))?;
                        }
                        None => {
                            let q = queue(da, ua, &ua.queue, opened)?;
                            let owned = opened.get(&a).ok_or(FileError::Invalid {
                                id: a,
                                detail: "not made".into(),
                            })?;
                            finish_broken(da, ua, owned, files.get(&a), closing.remove(&a), &q)?;
                        }
                    }
                }
                for &c in clients.iter().flatten() {
                    let d = desc(c)?;
                    unix::restore::restore_shutdown(fd(c)?, self.state(d)?.shutdown())
                        .map_err(unix_err(d, "shutdown"))?;
                }
            }
            Shape::Single(s) => {
                let d = desc(*s)?;
                let u = self.state(d)?;
                let q = queue(d, u, &u.queue, opened)?;
                let owned = opened.get(s).ok_or(FileError::Invalid {
                    id: *s,
                    detail: "not made".into(),
                })?;
                if self.broken.contains(s) {
                    finish_broken(d, u, owned, files.get(s), closing.remove(s), &q)?;
                } else {
                    finish(d, u, owned, files.get(s), &q)?;
                }
                return Ok(sockets::set_flags(d, owned)?);
            }
            Shape::Dgram { receiver, senders } => {
                let d = desc(*receiver)?;
                let u = self.state(d)?;
                let q = queue(d, u, &u.queue, opened)?;
                let owned = opened.get(receiver).ok_or(FileError::Invalid {
                    id: *receiver,
                    detail: "not made".into(),
                })?;
                finish(d, u, owned, files.get(receiver), &q)?;
                sockets::set_flags(d, owned)?;
                for &s in senders {
                    let d = desc(s)?;
                    unix::restore::restore_shutdown(fd(s)?, self.state(d)?.shutdown())
                        .map_err(unix_err(d, "shutdown"))?;
                }
            }
        }
        for m in g.shape.members() {
            let d = desc(m)?;
            self.state(d)?.apply_options(d, fd(m)?)?;
            let owned = opened.get(&m).ok_or(FileError::Invalid {
                id: m,
                detail: "not made".into(),
            })?;
            sockets::set_flags(d, owned)?;
        }
        Ok(())
    }
}

/// Which end of a connected stream or seqpacket pair `a`, `b` (not sharing an abstract name
/// with a listener) to make as the accepted one of a connection through a transient listener,
/// so that each shows its dumped peer: `Some(true)`: `a`. Where their peers differ (an
/// accepted connection: the client shows its listener's listen() caller, the accepted end the
/// client's connect() caller; a socketpair shows its maker on both) and one of them can be
/// stamped here ([`peers::can_issue`]): an end bound to a path (bound without a file, as every
/// connected one is), which an accept gives the transient listener's name. `None`: a
/// socketpair (no end bound to a path: an abstract name would be the transient listener's,
/// held by nothing after).
fn accepted_role(a: &UnixSocketState, b: &UnixSocketState) -> Option<bool> {
    let (Some(pa), Some(pb)) = (&a.peer_cred, &b.peer_cred) else {
        return None;
    };
    if a.sock_type == unix::SockType::Dgram || pa == pb {
        return None;
    }
    if !peers::can_issue(pa) && !peers::can_issue(pb) {
        return None;
    }
    let by_path = |u: &UnixSocketState| u.unlinked && matches!(u.name(), unix::UnixName::Path(_));
    if by_path(a) {
        Some(true)
    } else if by_path(b) {
        Some(false)
    } else {
        None
    }
}

/// Whether `a` and `b`, a connected pair, are datagram sockets each connected to the other by
/// its name (connect() stamps no peer credentials on a datagram socket: each shows none, pid
/// 0 and uid and gid -1), not the ends of a socketpair (which show their maker).
fn connected_by_name(a: &UnixSocketState, b: &UnixSocketState) -> bool {
    let none = |u: &UnixSocketState| {
        u.peer_cred
            .as_ref()
            .is_some_and(|c| c.pid == 0 && c.uid == u32::MAX)
    };
    a.sock_type == unix::SockType::Dgram
        && none(a)
        && none(b)
        && a.name().is_bound()
        && b.name().is_bound()
}

/// Listens on `listener` (with `backlog`) again as the peer `client` (described by `d`)
/// showed, the client of a connection about to connect to it, when that differs from what its
/// listen() stamped last (`stamp`) and can be stamped here: the client copies it.
fn listen_as(
    listener: &OwnedFd,
    backlog: u32,
    client: &UnixSocketState,
    d: &FileDesc,
    stamp: &mut Option<unix::restore::PeerCred>,
) -> Result<(), FileError> {
    let Some(cred) = client.peer_cred.as_ref() else {
        return Ok(());
    };
    if stamp.as_ref() == Some(cred) || !peers::can_issue(cred) {
        return Ok(());
    }
    peers::issue(Some(cred), || unix::restore::listen(listener, backlog))
        .map_err(unix_err(d, "listen as its client's peer"))?;
    *stamp = Some(cred.clone());
    Ok(())
}

/// Issues the calls of [`unix::restore::accepted_through`]: its listen() as `listen` (what the
/// client shows as peer), its connect() as `connect` (what the accepted end shows).
fn stamped<'a>(
    listen: Option<&'a unix::restore::PeerCred>,
    connect: Option<&'a unix::restore::PeerCred>,
) -> impl FnMut(
    unix::restore::Stamp,
    &mut dyn FnMut() -> Result<(), unix::UnixSockError>,
) -> Result<(), unix::UnixSockError>
       + 'a {
    move |which, call| {
        let cred = match which {
            unix::restore::Stamp::Listen => listen,
            unix::restore::Stamp::Connect => connect,
        };
        peers::issue(cred, call)
    }
}

/// Description `id` among the open ones.
fn borrow(opened: &HashMap<u32, OwnedFd>, id: u32) -> Result<BorrowedFd<'_>, FileError> {
    opened
        .get(&id)
        .map(|f| f.as_fd())
        .ok_or(FileError::Invalid {
            id,
            detail: "needed by a unix socket's queue but not open in this process".into(),
        })
}

/// `messages` (a queue of `u`, described by `desc`) with their descriptors in flight: a
/// duplicate of each, closed once sent.
fn queue(
    desc: &FileDesc,
    u: &UnixSocketState,
    messages: &[UnixMessage],
    opened: &HashMap<u32, OwnedFd>,
) -> Result<unix::CapturedQueue, FileError> {
    let sock_type = u.sock_type;
    let messages = messages
        .iter()
        .map(|m| {
            let fds = m
                .fds
                .iter()
                .map(|&id| {
                    let dup = sys::fd::dup_at_least(borrow(opened, id)?, 0)
                        .map_err(unix_err(desc, "dup a descriptor in flight"))?;
                    Ok::<_, FileError>(dup)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(m.to_queued(fds))
        })
        .collect::<Result<Vec<_>, FileError>>()?;
    Ok(unix::CapturedQueue {
        sock_type,
        messages,
        pending_error: None,
    })
}
