//! The receiver (`cryo serve`): keeps images under its root, serves them back, restores them.
//!
//! ```text
//! ROOT/                  0700, owned by root or the user running cryo (image rules)
//!   NAME/                a committed image: only ever a complete, verified, fsync'd one
//!   .NAME.partial-XXXX/  an image being received: renamed to NAME on commit, removed on
//!                        any failure (and, left by a killed receiver, at the next start)
//! ```
//!
//! One connection at a time, on the calling thread: a restore forks, and forking from a
//! process that runs other threads is not safe (shared/DESIGN.md, choice 5).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cryo_core::ImageDir;
use cryo_proto::image::Inventory;
use cryo_proto::ImageKind;
use tracing::{debug, info, warn};

use crate::auth::Psk;
use crate::conn::{unexpected, Conn, VERSIONS};
use crate::error::StreamError;
use crate::frame::FrameType;
use crate::msg::{self, Purpose};
use crate::{manifest, transfer};

/// What `cryo serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The address to listen on (`ADDR:PORT`; port 0 picks one, printed).
    pub listen: String,
    /// Where images are kept (created 0700 if absent).
    pub root: PathBuf,
    /// Handle one connection, then exit with its outcome.
    pub once: bool,
    /// The key clients must prove they hold.
    pub psk: Psk,
    /// How long a connection may stay silent.
    pub timeout: Duration,
    /// The protocol versions spoken ([`VERSIONS`]; tests pretend to be another version).
    pub versions: Vec<u32>,
    /// The script run at each stage of the restores of migrations (`--action-script`).
    pub action_script: Option<cryo_core::ActionScript>,
}

/// How one connection ended well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An image was stored and confirmed.
    Committed {
        /// Its name.
        name: String,
        /// Its manifest hash.
        hash: String,
        /// Its size.
        bytes: u64,
    },
    /// An image was sent back and the client confirmed it whole.
    Served {
        /// Its name.
        name: String,
    },
    /// A migration ended here: its processes run.
    Migrated {
        /// The migration's name.
        name: String,
        /// The root pids.
        pids: Vec<i32>,
        /// Whether the source said it heard that they run (else it may ask again).
        heard: bool,
    },
    /// A source was told how its migration ended here.
    Told {
        /// The migration's name.
        name: String,
        /// Whether its processes run here.
        running: bool,
        /// Whether the source said it heard it.
        heard: bool,
    },
    /// An image was restored here.
    Restored {
        /// Its name.
        name: String,
        /// The root pids.
        pids: Vec<i32>,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Committed { name, hash, bytes } => {
                write!(f, "committed image {name} ({bytes} bytes, manifest {hash})")
            }
            Self::Served { name } => write!(f, "served image {name}"),
            Self::Restored { name, pids } => write!(f, "restored image {name}: pids {pids:?}"),
            Self::Migrated { name, pids, .. } => {
                write!(f, "migration {name} done: pids {pids:?} run here")
            }
            Self::Told { name, running, .. } => write!(
                f,
                "told the source how migration {name} ended: {}",
                if *running {
                    "running here"
                } else {
                    "killed here"
                }
            ),
        }
    }
}

/// A receiver bound to its address, its root checked.
#[derive(Debug)]
pub struct Server {
    opts: ServeOptions,
    listener: TcpListener,
    root: ImageDir,
    /// The network locks failed migrations left installed here (their source went silent:
    /// its clients may have been routed here), removed when the next migration starts.
    kept_locks: RefCell<Vec<String>>,
    /// How each migration ended here, by name (the last of a name): its root pids running,
    /// or why its processes were killed. Asked for by a source that lost its connection
    /// after the Go (purpose OUTCOME).
    outcomes: RefCell<HashMap<String, Result<Vec<i32>, String>>>,
}

impl Server {
    /// Prepares the root (created 0700 if absent; then owned by root or us and writable by
    /// no one else, as an image directory), removes partial images a killed receiver left,
    /// and binds.
    pub fn bind(opts: ServeOptions) -> Result<Self, StreamError> {
        let step = format!("images root {}", opts.root.display());
        if !opts.root.exists() {
            let mut b = std::fs::DirBuilder::new();
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(&opts.root)
                .map_err(|e| StreamError::io(format!("{step}: create"), e, 0))?;
        }
        let root = ImageDir::open(&opts.root).map_err(|e| StreamError::images(&step, e))?;
        for entry in std::fs::read_dir(&opts.root).map_err(|e| StreamError::io(&step, e, 0))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".partial-") {
                warn!(partial = %name, "removing an incomplete image a previous receiver left");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        crate::scratch::sweep(crate::migrate::SCRATCH_PREFIX);
        let listener = TcpListener::bind(&opts.listen)
            .map_err(|e| StreamError::io(format!("listen on {}", opts.listen), e, 0))?;
        Ok(Self {
            opts,
            listener,
            root,
            kept_locks: RefCell::new(Vec::new()),
            outcomes: RefCell::new(HashMap::new()),
        })
    }

    /// The bound address (the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> Result<SocketAddr, StreamError> {
        self.listener
            .local_addr()
            .map_err(|e| StreamError::io("local address", e, 0))
    }

    /// Serves connections one by one; with `once`, returns the first one's outcome.
    pub fn run(&self) -> Result<Outcome, StreamError> {
        loop {
            let (tcp, peer) = match self.listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StreamError::io("accept", e, 0)),
            };
            let result = self.handle(tcp, peer, None);
            reap_children();
            match &result {
                Ok(outcome) => info!(%peer, "{outcome}"),
                Err(e) => warn!(%peer, "{e}"),
            }
            if self.opts.once {
                if let Ok(Outcome::Migrated {
                    name, heard: false, ..
                }) = &result
                {
                    self.answer_until_heard(name);
                }
                return result;
            }
        }
    }

    /// After a migration whose processes run here but whose source did not say it heard so
    /// (the answer lost on the way): stays to tell it how migration `name` ended, answering
    /// nothing else, until it says it heard or the stream timeout passes without a question.
    /// Gone at once, it would leave the source to take silence for a failure and thaw its
    /// originals beside the processes running here.
    fn answer_until_heard(&self, name: &str) {
        let wait = self.opts.timeout;
        warn!(
            migration = %name,
            "the source did not say it heard the processes run here: answering how the migration ended for up to {} s",
            wait.as_secs()
        );
        loop {
            if !crate::conn::readable_within(&self.listener, wait) {
                warn!(migration = %name, "no question from the source: leaving");
                return;
            }
            let (tcp, peer) = match self.listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(migration = %name, "accept: {e}: leaving");
                    return;
                }
            };
            match self.handle(tcp, peer, Some(name)) {
                Ok(outcome @ Outcome::Told { heard: true, .. }) => {
                    info!(%peer, "{outcome}");
                    return;
                }
                Ok(outcome) => info!(%peer, "{outcome}"),
                Err(e) => warn!(%peer, "{e}"),
            }
        }
    }

    /// Serves one connection; with `only`, nothing but the question how that migration ended.
    fn handle(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        only: Option<&str>,
    ) -> Result<Outcome, StreamError> {
        let secs = self.opts.timeout.as_secs().max(1);
        let step = format!("connection from {peer}");
        let set = |r: std::io::Result<()>| r.map_err(|e| StreamError::io(&step, e, secs));
        set(tcp.set_read_timeout(Some(self.opts.timeout)))?;
        set(tcp.set_write_timeout(Some(self.opts.timeout)))?;
        set(tcp.set_nodelay(true))?;
        let mut conn = Conn::new(tcp, peer.to_string(), secs);
        conn.server_handshake(&self.opts.psk, &self.opts.versions)?;
        let start: msg::Start = conn.expect(FrameType::Start, "receive the request")?;
        let refuse = |conn: &mut Conn<TcpStream>, reason: String| {
            let _ = conn.send_msg(
                FrameType::Refuse,
                &msg::Refuse {
                    reason: reason.clone(),
                },
                "refuse",
            );
            StreamError::Refused {
                step: format!("request of {peer} for image {:?}", start.name),
                reason,
            }
        };
        if !self.opts.versions.contains(&start.version) {
            return Err(refuse(
                &mut conn,
                format!("protocol version {} in the start message", start.version),
            ));
        }
        if let Err(e) = transfer::check_name(&start.name) {
            return Err(refuse(&mut conn, format!("image name: {e}")));
        }
        if let Some(name) = only {
            if start.purpose != Purpose::Outcome as i32 || start.name != name {
                return Err(refuse(
                    &mut conn,
                    format!("this receiver (--once) is done; it answers only how migration {name:?} ended"),
                ));
            }
        }
        match Purpose::try_from(start.purpose) {
            Ok(Purpose::Store) => self.store(&mut conn, &start, refuse),
            Ok(Purpose::Fetch) => self.serve_back(&mut conn, &start, refuse),
            Ok(Purpose::Restore) => self.restore_here(&mut conn, &start, refuse),
            Ok(Purpose::Migrate) => {
                // A new migration: the source of a failed one has rolled back long since.
                for id in self.kept_locks.borrow_mut().drain(..) {
                    match cryo_netns::NetworkLock::release_by_id(&id) {
                        Ok(_) => info!(lock = id, "network lock of a failed migration removed"),
                        Err(e) => warn!(lock = id, "network lock of a failed migration: {e}"),
                    }
                }
                let ended = crate::migrate::serve(
                    conn,
                    &start,
                    self.opts.action_script.as_ref(),
                    &mut self.kept_locks.borrow_mut(),
                );
                let outcome = match &ended {
                    Ok(Outcome::Migrated { pids, .. }) => Ok(pids.clone()),
                    Ok(other) => Err(format!("ended as {other}")),
                    Err(e) => Err(e.to_string()),
                };
                self.outcomes
                    .borrow_mut()
                    .insert(start.name.clone(), outcome);
                ended
            }
            Ok(Purpose::Outcome) => self.tell_outcome(&mut conn, &start, refuse),
            _ => Err(refuse(
                &mut conn,
                format!("unknown purpose {}", start.purpose),
            )),
        }
    }

    /// Tells how migration NAME ended here: Running with its pids, or Failed with why.
    fn tell_outcome(
        &self,
        conn: &mut Conn<TcpStream>,
        start: &msg::Start,
        refuse: impl Fn(&mut Conn<TcpStream>, String) -> StreamError,
    ) -> Result<Outcome, StreamError> {
        let name = &start.name;
        let Some(outcome) = self.outcomes.borrow().get(name).cloned() else {
            return Err(refuse(
                conn,
                format!("no migration named {name:?} ended on this receiver"),
            ));
        };
        conn.send_msg(FrameType::Accept, &msg::Accept::default(), "accept")?;
        match &outcome {
            Ok(pids) => conn.send_msg(
                FrameType::Running,
                &msg::Running { pids: pids.clone() },
                "tell the migration's outcome",
            )?,
            Err(why) => conn.send_failed(why),
        }
        let heard = outcome.is_ok() && crate::migrate::source_heard(conn);
        Ok(Outcome::Told {
            name: name.clone(),
            running: outcome.is_ok(),
            heard,
        })
    }

    /// Receives an image into a partial directory; renames it into place only once whole.
    fn store(
        &self,
        conn: &mut Conn<TcpStream>,
        start: &msg::Start,
        refuse: impl Fn(&mut Conn<TcpStream>, String) -> StreamError,
    ) -> Result<Outcome, StreamError> {
        let name = &start.name;
        let target = self.opts.root.join(name);
        if target.symlink_metadata().is_ok() {
            return Err(refuse(
                conn,
                format!("an image named {name:?} exists on the receiver already"),
            ));
        }
        let suffix = crate::auth::nonce()
            .map(|n| {
                n[..4]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            })
            .map_err(|e| StreamError::io("random suffix", e, 0))?;
        let partial = self.opts.root.join(format!(".{name}.partial-{suffix}"));
        let images = match ImageDir::create(&partial) {
            Ok(i) => i,
            Err(e) => return Err(refuse(conn, format!("cannot make room for the image: {e}"))),
        };
        conn.send_msg(FrameType::Accept, &msg::Accept::default(), "accept")?;
        let mut appended = cryo_core::PreCopyAppended::default();
        let received = transfer::receive_image_with(
            conn,
            &images,
            Some(&start.checkpoint_id),
            &mut |name| append_round(&mut appended, &images, name).map(|()| false),
        )
        .and_then(|m| {
            // From the End to the commit: with pre-copy rounds, part of the downtime.
            let end = std::time::Instant::now();
            merge_rounds(&images, &m, &appended)?;
            commit(&self.root, &partial, name)?;
            debug!(us = end.elapsed().as_micros() as u64, image = %name, "committed after the End");
            Ok(m)
        });
        let m = match received {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&partial);
                warn!(image = %name, "incomplete image discarded: {e}");
                conn.send_failed(&format!("{e}: the image was discarded"));
                linger(conn.get_ref());
                return Err(e);
            }
        };
        let hash = manifest::hash(&m);
        conn.send_msg(
            FrameType::Committed,
            &msg::Committed {
                manifest_hash: hash.clone(),
            },
            "confirm the commit",
        )?;
        Ok(Outcome::Committed {
            name: name.clone(),
            hash,
            bytes: m.files.iter().map(|f| f.size).sum(),
        })
    }

    /// Sends image NAME back, read by the image rules.
    fn serve_back(
        &self,
        conn: &mut Conn<TcpStream>,
        start: &msg::Start,
        refuse: impl Fn(&mut Conn<TcpStream>, String) -> StreamError,
    ) -> Result<Outcome, StreamError> {
        let name = &start.name;
        let opened = ImageDir::open(&self.opts.root.join(name)).and_then(|images| {
            let inv: Inventory = images.read_single("inventory.img", ImageKind::Inventory)?;
            Ok((images, inv))
        });
        let (images, inventory) = match opened {
            Ok(x) => x,
            Err(e) => return Err(refuse(conn, format!("image {name:?}: {e}"))),
        };
        conn.send_msg(FrameType::Accept, &msg::Accept::default(), "accept")?;
        let sent = match transfer::send_image(conn, &images, &inventory.checkpoint_id, &|_| Ok(()))
        {
            Ok(m) => m,
            Err(e) => {
                // A file of the image refused by the image rules, say: the client is told.
                conn.send_failed(&e.to_string());
                return Err(e);
            }
        };
        let step = format!("wait for {} to confirm image {name:?}", conn.peer());
        let f = conn.recv(&step)?;
        if f.kind != FrameType::Committed {
            return Err(unexpected(&f, &step, "Committed"));
        }
        let c: msg::Committed = f.decode(&step)?;
        if c.manifest_hash != manifest::hash(&sent) {
            return Err(StreamError::protocol(
                &step,
                "the client confirmed another manifest",
            ));
        }
        Ok(Outcome::Served { name: name.clone() })
    }

    /// Restores image NAME here (its processes become this receiver's children).
    fn restore_here(
        &self,
        conn: &mut Conn<TcpStream>,
        start: &msg::Start,
        refuse: impl Fn(&mut Conn<TcpStream>, String) -> StreamError,
    ) -> Result<Outcome, StreamError> {
        let name = &start.name;
        let dir = self.opts.root.join(name);
        if let Err(e) = ImageDir::open(&dir) {
            return Err(refuse(conn, format!("image {name:?}: {e}")));
        }
        conn.send_msg(FrameType::Accept, &msg::Accept::default(), "accept")?;
        let mut opts = cryo_core::RestoreOptions::new(&dir);
        opts.detach = true;
        match cryo_core::restore(&opts) {
            Ok(restored) => {
                let pids: Vec<i32> = restored.roots.iter().map(|p| p.as_raw()).collect();
                conn.send_msg(
                    FrameType::Restored,
                    &msg::Restored { pids: pids.clone() },
                    "report the restore",
                )?;
                Ok(Outcome::Restored {
                    name: name.clone(),
                    pids,
                })
            }
            Err(e) => {
                let why = chain(&e);
                conn.send_failed(&format!("restore: {why}"));
                Err(StreamError::PeerFailed {
                    step: format!("restore of image {name:?}"),
                    why,
                })
            }
        }
    }
}

/// Makes a received image durable under its name: the partial directory fsync'd (its files
/// are already), renamed to `name` without replacing anything, and the root fsync'd.
fn commit(root: &ImageDir, partial: &Path, name: &str) -> Result<(), StreamError> {
    transfer::sync_dir(partial)?;
    let step = format!("commit image {name:?}");
    let dir = std::fs::File::open(root.path()).map_err(|e| StreamError::io(&step, e, 0))?;
    let from = partial
        .file_name()
        .ok_or_else(|| StreamError::protocol(&step, "partial directory without a name"))?;
    nix::fcntl::renameat2(
        dir.as_fd(),
        from,
        dir.as_fd(),
        name,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(|e| StreamError::io(&step, e.into(), 0))?;
    dir.sync_all().map_err(|e| StreamError::io(&step, e, 0))
}

/// After a Failed: no more from us, and what the sender still had in flight is read and
/// dropped (for up to two seconds) until it stops, so that closing does not reset the
/// connection under our Failed before the sender read it.
fn linger(tcp: &TcpStream) {
    use std::io::Read;
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(200)));
    let until = std::time::Instant::now() + Duration::from_secs(2);
    let mut buf = vec![0u8; 64 << 10];
    let mut tcp = tcp;
    while std::time::Instant::now() < until {
        match tcp.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// An error and its sources, as one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Reaps restored processes that ended (they are this receiver's children).
fn reap_children() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// The default of [`ServeOptions::versions`].
pub fn versions() -> Vec<u32> {
    VERSIONS.to_vec()
}

/// A file of an image being received arrived: a pre-copy round's pages are appended to its
/// process's first round now, while the processes run, not at the merge.
pub(crate) fn append_round(
    appended: &mut cryo_core::PreCopyAppended,
    images: &ImageDir,
    name: &str,
) -> Result<(), StreamError> {
    appended
        .received(images, name)
        .map_err(|e| StreamError::protocol("append a pre-copy round", e.to_string()))
}

/// Merges the pre-copy rounds of a received image (`m` its manifest) into an ordinary image
/// before it is committed or restored; nothing to do without rounds.
pub(crate) fn merge_rounds(
    images: &ImageDir,
    m: &crate::msg::Manifest,
    appended: &cryo_core::PreCopyAppended,
) -> Result<(), StreamError> {
    let crc_of = |name: &str| m.files.iter().find(|f| f.name == name).map(|f| f.crc32c);
    let merged = cryo_core::merge_pre_copy_with(images, &crc_of, appended)
        .map_err(|e| StreamError::protocol("merge the pre-copy rounds", e.to_string()))?;
    if merged {
        transfer::sync_dir(images.path())?;
    }
    Ok(())
}
