//! A migration on the wire (`cryo migrate` to a `cryo serve`): the check judged by the
//! destination, then the image, restored there with its connections locked, and a two-phase
//! commit that lets exactly one side run.
//!
//! ```text
//! source (cryo migrate)                         destination (cryo serve)
//!   handshake; Start{MIGRATE, name}       ---->
//!                                          <----  Accept
//! 1 check dump (--check-only: target frozen for a moment, left running)
//!   FileOpen/Data/FileClose... End        ---->   into a private dir on /dev/shm
//!                                                 `restore --check-only` logic run here
//!                                          <----  Verdict{findings}
//!   a permanent finding: Failed{why}, exit 3, the target never frozen
//! 2 Accept (the image follows); the dump: pre-dump, freeze, lock (network-lock), images,
//!   post-dump; then the dump's commit hook:
//!   FileOpen/Data/FileClose... End        ---->   into a private dir on /dev/shm, checked
//!                                          <----  Committed{manifest hash}
//! 3a                                              restore: lock installed here over the
//!                                                 image's connections, pre-restore, every
//!                                                 process made, stopped (post-restore)
//!                                          <----  Restored{pids}
//! 3b action script: migrate-restored
//!    (the originals still frozen: the
//!    operator moves the service address)
//!   Go                                    ---->
//! 3c                                              lock released (network-unlock), the
//!                                                 broken-peer probes sent (to the moved
//!                                                 address), the processes run (post-resume)
//!                                          <----  Running{pids}
//! 3d the commit hook returns: the originals
//!    killed, the source's lock removed,
//!    migrate-done, exit 0
//! ```
//!
//! Until 3d, any failure on either side undoes the migration: the source's dump rolls back
//! (the originals thawed, connections out of repair mode, its lock removed), its script runs
//! at migrate-rollback (the address moved back), and only then it tells the destination
//! (Failed), which meanwhile kept its lock (the clients' packets, already routed to it, are
//! dropped rather than reset). The destination kills what it restored when it hears Failed
//! (then removes its lock), or when the connection ends or no Go comes within its stream
//! timeout (then it keeps its lock: told nothing, it cannot know whether the address points
//! at it already, and a reset would end connections the source still holds); either way it
//! runs its script at migrate-rollback. A source killed once it is sending Go leaves the
//! destination running and its dump guardian killing the originals (armed just before the
//! Go): exactly one side runs. A Go the destination answers with Failed disarms it and rolls
//! back, as above. A Go whose answer is lost (the connection ends or goes silent after it)
//! leaves the source in doubt: it asks the destination again on new connections (purpose
//! OUTCOME; the receiver remembers how each migration ended) for as long as its stream
//! timeout, and commits if the processes run there; killed there, or no answer in that time
//! (the destination gone: it said nothing that it runs them), it rolls back.
//!
//! ```text
//!   Go                                    ---->   (runs the processes)
//!                                          <-X-   Running (lost)
//!   new connection: Start{OUTCOME, name}  ---->
//!                                          <----  Accept, Running{pids} | Failed{why}
//! ```

use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cryo_core::ImageDir;
use tracing::{debug, info, warn};

use crate::client::{finish_image, send_early, Peer};
use crate::conn::{unexpected, Conn};
use crate::error::StreamError;
use crate::frame::FrameType;
use crate::msg::{self, Purpose};
use crate::scratch::ScratchDir;
use crate::server::Outcome;
use crate::{manifest, transfer};

/// The source's side of one migration: a connection to the destination, accepted.
pub struct Migration {
    conn: Conn<TcpStream>,
    addr: String,
    /// The destination, asked again how the migration ended when the answer to the Go is
    /// lost.
    peer: Peer,
    /// The migration's name there.
    name: String,
    /// Whether the image was announced (Accept): by the first pre-copy round, or the dump.
    announced: bool,
    /// The files of the image sent so far (the pre-copy rounds).
    sent: msg::Manifest,
    /// The destination acknowledges each pre-copy round once it absorbed it (its Accept).
    acks_rounds: bool,
}

impl std::fmt::Debug for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Migration to {}", self.addr)
    }
}

impl Peer {
    /// Connects, authenticates and asks the receiver to take a migration named `name` (a
    /// name for its logs: nothing is kept under its root).
    pub fn migrate(&self, name: &str) -> Result<Migration, StreamError> {
        let (conn, accept) = self.start_accepted(Purpose::Migrate, name, "")?;
        Ok(Migration {
            conn,
            acks_rounds: accept.acks_rounds,
            addr: self.addr.clone(),
            peer: self.clone(),
            name: name.into(),
            announced: false,
            sent: msg::Manifest::default(),
        })
    }
}

impl Migration {
    /// Calls `f` with the bytes of image data sent so far, as they go (a progress display).
    pub fn on_data_sent(&mut self, f: impl FnMut(u64) + Send + 'static) {
        self.conn.on_data_sent(f);
    }

    /// Sends the check image `images` and returns the destination's verdict on it.
    pub fn check(
        &mut self,
        images: &ImageDir,
        checkpoint_id: &str,
    ) -> Result<msg::Verdict, StreamError> {
        transfer::send_image(&mut self.conn, images, checkpoint_id, &|_| Ok(()))?;
        let step = format!("wait for {} to judge the check image", self.addr);
        self.conn.expect(FrameType::Verdict, &step)
    }

    /// Tells the destination the image follows (after its verdict), once.
    fn announce(&mut self) -> Result<(), StreamError> {
        if !self.announced {
            self.conn.send_msg(
                FrameType::Accept,
                &msg::Accept::default(),
                "announce the image",
            )?;
            self.announced = true;
        }
        Ok(())
    }

    /// A watch on the connection for [`keep_going`].
    fn watch(&self) -> Result<TcpStream, StreamError> {
        self.conn
            .get_ref()
            .try_clone()
            .map_err(|e| StreamError::io("watch the connection", e, 0))
    }

    /// Sends file `name` of the image now (a pre-copy round, while the processes run):
    /// `size` bytes read from `contents`.
    pub fn send_file(
        &mut self,
        name: &str,
        size: u64,
        contents: &mut dyn std::io::Read,
    ) -> Result<(), StreamError> {
        self.announce()?;
        let watch = self.watch()?;
        send_early(&mut self.conn, &watch, &mut self.sent, name, size, contents)?;
        if self.acks_rounds && cryo_core::precopy_round_of(name).is_some() {
            let step = format!("wait for {} to absorb {name}", self.addr);
            let absorbed: msg::Absorbed = self.conn.expect(FrameType::Absorbed, &step)?;
            if absorbed.name != name {
                return Err(StreamError::protocol(
                    step,
                    format!("it absorbed {:?}", absorbed.name),
                ));
            }
        }
        Ok(())
    }

    /// Streams the rest of the image `images` (the dump's own path, as `dump --to`) and
    /// returns once the destination committed it (rounds merged).
    pub fn send(&mut self, images: &ImageDir, checkpoint_id: &str) -> Result<String, StreamError> {
        self.announce()?;
        let watch = self.watch()?;
        self.sent.checkpoint_id = checkpoint_id.into();
        let addr = self.addr.clone();
        finish_image(
            &mut self.conn,
            &watch,
            images,
            &mut self.sent,
            "migration",
            &addr,
        )
    }

    /// Waits until the destination restored every process, stopped, its connections locked;
    /// returns the root pids there.
    pub fn wait_restored(&mut self) -> Result<Vec<i32>, StreamError> {
        let step = format!("wait for {} to restore the processes", self.addr);
        Ok(self
            .conn
            .expect::<msg::Restored>(FrameType::Restored, &step)?
            .pids)
    }

    /// Tells the destination to let its processes run; returns once they do, with their
    /// pids there. When the answer is lost (the connection ends or goes silent after the
    /// Go), the destination may run them or not: it is asked again on a new connection
    /// ([`Self::ask_outcome`]).
    pub fn go(&mut self) -> Result<Vec<i32>, StreamError> {
        self.conn.send_msg(FrameType::Go, &msg::Go {}, "send go")?;
        cryo_core::interrupt::pause_point("go-sent");
        let step = format!("wait for {} to run the processes", self.addr);
        match self.conn.expect::<msg::Running>(FrameType::Running, &step) {
            Ok(running) => {
                say_heard(&mut self.conn);
                Ok(running.pids)
            }
            // The destination said it failed: it killed what it restored.
            Err(e @ (StreamError::PeerFailed { .. } | StreamError::Refused { .. })) => Err(e),
            Err(lost) => self.ask_outcome(lost),
        }
    }

    /// Asks the destination how the migration ended, after the answer to the Go was lost
    /// (`lost`): on new connections, for as long as the stream timeout (the destination
    /// answers once it is through with the migration: at once if it ran the processes, after
    /// its own timeout if the Go never reached it). Its processes run: their pids. It
    /// killed them, or cannot be asked: an error, and the source rolls back.
    fn ask_outcome(&self, lost: StreamError) -> Result<Vec<i32>, StreamError> {
        warn!(to = %self.addr, "no answer to the go ({lost}): asking how the migration ended");
        let deadline = Instant::now() + self.peer.timeout;
        let step = format!("ask {} how migration {:?} ended", self.addr, self.name);
        loop {
            let asked = self
                .peer
                .start(Purpose::Outcome, &self.name, "")
                .and_then(|mut conn| {
                    let running = conn.expect::<msg::Running>(FrameType::Running, &step)?;
                    say_heard(&mut conn);
                    Ok(running)
                });
            match asked {
                Ok(running) => {
                    warn!(
                        to = %self.addr,
                        pids = ?running.pids,
                        "the processes run there (the answer to the go was lost)"
                    );
                    return Ok(running.pids);
                }
                Err(StreamError::PeerFailed { why, .. }) => {
                    return Err(StreamError::PeerFailed {
                        step: format!("{lost}; then {step}"),
                        why,
                    })
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(StreamError::protocol(
                        format!("{lost}; then {step}"),
                        format!("no answer ({e}): taken as never run there"),
                    ))
                }
                Err(e) => {
                    info!(to = %self.addr, "no outcome yet: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
        }
    }

    /// Tells the destination the migration is off (best effort: it may be gone already).
    pub fn abort(mut self, why: &str) {
        self.conn.send_failed(why);
    }
}

/// Tells the destination its Running was heard, so that a `serve --once` need not stay to be
/// asked again (best effort: without it, it stays for its stream timeout).
fn say_heard(conn: &mut Conn<TcpStream>) {
    let _ = conn.send_msg(
        FrameType::Heard,
        &msg::Heard {},
        "say the running was heard",
    );
}

/// After Running was sent on `conn`: whether the source says it heard it (within the stream
/// timeout; a source that lost it asks again, purpose OUTCOME).
pub(crate) fn source_heard(conn: &mut Conn<TcpStream>) -> bool {
    conn.expect::<msg::Heard>(FrameType::Heard, "wait for the source to hear it")
        .is_ok()
}

/// The prefix of a receiver's scratch directories (crate::scratch: swept when one starts).
pub(crate) const SCRATCH_PREFIX: &str = "cryo-serve-";

/// A receiver's scratch directory for an image passing through ([`ScratchDir`]).
struct Scratch(ScratchDir);

impl Scratch {
    fn new(what: &str) -> Result<(Self, ImageDir), StreamError> {
        let dir = ScratchDir::new(&format!("{SCRATCH_PREFIX}{what}-"))
            .map_err(|e| StreamError::io("make a scratch directory", e, 0))?;
        let images = ImageDir::create(dir.path())
            .map_err(|e| StreamError::images(format!("make {}", dir.path().display()), e))?;
        Ok((Self(dir), images))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

/// The destination's side of a migration accepted on `conn` (steps 1 to 3c above), with
/// `script` run at the restore's stages and at migrate-rollback; the id of a network lock a
/// failure leaves installed goes into `kept`.
pub(crate) fn serve(
    mut conn: Conn<TcpStream>,
    start: &msg::Start,
    script: Option<&cryo_core::ActionScript>,
    kept: &mut Vec<String>,
) -> Result<Outcome, StreamError> {
    let name = start.name.clone();
    let peer = conn.peer().to_string();
    conn.send_msg(
        FrameType::Accept,
        &msg::Accept { acks_rounds: true },
        "accept",
    )?;
    // 1. The check image, judged here.
    let verdict = {
        let (_dir, images) = Scratch::new("check")?;
        let judged = transfer::receive_image(&mut conn, &images, None).and_then(|_| {
            cryo_core::precheck::check_only(images.path(), Default::default()).map_err(|e| {
                StreamError::PeerFailed {
                    step: "judge the check image".into(),
                    why: e.to_string(),
                }
            })
        });
        match judged {
            Ok(v) => v,
            Err(e) => {
                conn.send_failed(&e.to_string());
                return Err(e);
            }
        }
    };
    let permanent = verdict.exit_code() == 3;
    conn.send_msg(
        FrameType::Verdict,
        &msg::Verdict {
            checkpoint_id: verdict.checkpoint_id.clone(),
            findings: verdict
                .findings
                .iter()
                .map(|f| msg::Finding {
                    kind: match f.kind {
                        cryo_core::precheck::FindingKind::Temporary => "temporary".into(),
                        cryo_core::precheck::FindingKind::Permanent => "permanent".into(),
                    },
                    what: f.what.into(),
                    subject: f.subject.clone(),
                    reason: f.reason.clone(),
                    action: f.action.clone(),
                })
                .collect(),
        },
        "send the verdict",
    )?;
    info!(%peer, migration = %name, findings = verdict.findings.len(), permanent, "check judged");
    // The source goes on (Accept) or gives up (Failed, or closes).
    let step = format!("wait for {peer} to send the image");
    let f = conn.recv(&step)?;
    if f.kind != FrameType::Accept {
        return Err(unexpected(&f, &step, "Accept"));
    }
    // 2. The image, checked as any received image, into memory.
    let (dir, images) = Scratch::new("image")?;
    let mut appended = cryo_core::PreCopyAppended::default();
    // A pre-copy's pages also go into memory here as they arrive, for the processes to
    // inherit (memory/warm.rs); the image on disk stays whole.
    let mut warm = cryo_core::WarmMemory::new();
    let received = match transfer::receive_image_with(&mut conn, &images, None, &mut |name| {
        warm.received(&images, name);
        crate::server::append_round(&mut appended, &images, name)?;
        // Acknowledged once in place: the source waits for it before its next round.
        Ok(cryo_core::precopy_round_of(name).is_some())
    })
    .and_then(|m| {
        let t0 = Instant::now();
        let bytes = warm.finish(&images);
        debug!(
            bytes,
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "final pages written warm"
        );
        crate::server::merge_rounds(&images, &m, &appended).map(|()| m)
    }) {
        Ok(m) => m,
        Err(e) => {
            warn!(migration = %name, "incomplete image discarded: {e}");
            conn.send_failed(&format!("{e}: the image was discarded"));
            return Err(e);
        }
    };
    cryo_core::interrupt::pause_point("migrate-received");
    conn.send_msg(
        FrameType::Committed,
        &msg::Committed {
            manifest_hash: manifest::hash(&received),
        },
        "confirm the image",
    )?;
    let received_at = Instant::now();
    // 3a-3c. Restored locked, the go awaited in the restore's gate, then unlocked and run.
    let conn = Arc::new(Mutex::new(conn));
    let gate_conn = Arc::clone(&conn);
    let gate_peer = peer.clone();
    let mut ropts = cryo_core::RestoreOptions::new(dir.path());
    ropts.detach = true;
    ropts.lock_here = true;
    // Each file's checksum was checked as it arrived; the merge computed the pages image's
    // from those: read again, 1 GiB of pages would cost the frozen processes 0.3 s.
    ropts.raw_checked = true;
    // Without warm memory (no rounds) the pages image is read in ahead for the copy.
    ropts.warm = (!warm.is_empty()).then(|| Arc::new(warm));
    ropts.action_script = script.cloned();
    ropts.gate = Some(cryo_core::RestoreGate::new(move |pids| {
        let mut conn = gate_conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.send_msg(
            FrameType::Restored,
            &msg::Restored {
                pids: pids.iter().map(|p| p.as_raw()).collect(),
            },
            "report the restore",
        )?;
        let step = format!("wait for {gate_peer} to say go");
        // No word from the source (silent, gone): the address may point here already, so
        // the lock stays and the clients' packets are dropped, not reset, until the source
        // (rolled back) has them again.
        let f = conn.recv(&step).map_err(|e| {
            cryo_core::KeepLock(Box::new(match e {
                StreamError::TimedOut { step, secs } => {
                    StreamError::protocol(step, format!("no go within {secs} s (--stream-timeout)"))
                }
                e => e,
            }))
        })?;
        match f.kind {
            FrameType::Go => Ok(()),
            _ => Err(unexpected(&f, &step, "Go").into()),
        }
    }));
    let restored = cryo_core::restore(&ropts);
    drop(ropts);
    let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
    match restored {
        Ok(r) => {
            let pids: Vec<i32> = r.roots.iter().map(|p| p.as_raw()).collect();
            cryo_core::interrupt::pause_point("migrate-running");
            // They run whether or not the source hears it: it asks again (OUTCOME).
            let heard = match conn.send_msg(
                FrameType::Running,
                &msg::Running { pids: pids.clone() },
                "report the processes running",
            ) {
                Ok(()) => source_heard(&mut conn),
                Err(e) => {
                    warn!(migration = %name, "the processes run here, but the source was not told: {e}");
                    false
                }
            };
            info!(
                migration = %name,
                ?pids,
                ms = received_at.elapsed().as_secs_f64() * 1e3,
                "migrated here: running"
            );
            Ok(Outcome::Migrated { name, pids, heard })
        }
        Err(e) => {
            let why = crate::server::chain(&e);
            warn!(migration = %name, "every process restored here killed: {why}");
            if let Some(id) = cryo_core::network_lock_installed(dir.path()) {
                warn!(
                    migration = %name,
                    lock = id,
                    "network lock kept until the next migration to this receiver starts"
                );
                kept.push(id);
            }
            let hooks = cryo_core::Hooks::new(script, dir.path());
            if let Err(h) = hooks.run(cryo_core::Stage::MigrateRollback, &[]) {
                warn!(migration = %name, "{h}");
            }
            conn.send_failed(&why);
            Err(StreamError::PeerFailed {
                step: format!("migration {name:?} from {peer}"),
                why: format!("{why} (every process restored here killed)"),
            })
        }
    }
}
