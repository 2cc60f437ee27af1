//! The client's three requests: store an image on a receiver and wait for its confirmation
//! (`cryo dump --to`), fetch one back (`cryo restore --from`), have the receiver restore one.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use cryo_core::ImageDir;
use tracing::info;

use crate::auth::Psk;
use crate::conn::{unexpected, Conn, VERSIONS};
use crate::error::StreamError;
use crate::frame::FrameType;
use crate::msg::{self, Manifest, Purpose};
use crate::{manifest, transfer};

/// Whether the peer sent something (or closed), without reading it.
fn readable(tcp: &TcpStream) -> bool {
    crate::conn::readable_within(tcp, Duration::ZERO)
}

/// The Failed or Refuse the peer sent before the connection broke, if it did (read within a
/// second: it is already here or never comes).
fn last_word(conn: &mut Conn<TcpStream>) -> Option<StreamError> {
    conn.get_ref()
        .set_read_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    let step = "stream the image";
    let f = conn.recv(step).ok()?;
    match f.kind {
        FrameType::Failed | FrameType::Refuse => Some(unexpected(&f, step, "nothing")),
        _ => None,
    }
}

/// How the client reaches a receiver.
#[derive(Debug, Clone)]
pub struct Peer {
    /// `ADDR:PORT` (a host name resolves; the first address is used).
    pub addr: String,
    /// The key both sides hold.
    pub psk: Psk,
    /// How long a connection waits for a byte to come or go before giving up.
    pub timeout: Duration,
}

/// The default of [`Peer::timeout`] (and the receiver's).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl Peer {
    fn connect(&self) -> Result<Conn<TcpStream>, StreamError> {
        let step = format!("connect to {}", self.addr);
        let addr: SocketAddr = self
            .addr
            .to_socket_addrs()
            .map_err(|e| StreamError::io(&step, e, 0))?
            .next()
            .ok_or_else(|| StreamError::protocol(&step, "the name has no address"))?;
        let secs = self.timeout.as_secs().max(1);
        let tcp = TcpStream::connect_timeout(&addr, self.timeout.min(Duration::from_secs(10)))
            .map_err(|e| StreamError::io(&step, e, secs))?;
        let set = |r: std::io::Result<()>| r.map_err(|e| StreamError::io(&step, e, secs));
        set(tcp.set_read_timeout(Some(self.timeout)))?;
        set(tcp.set_write_timeout(Some(self.timeout)))?;
        set(tcp.set_nodelay(true))?;
        let mut conn = Conn::new(tcp, addr.to_string(), secs);
        conn.client_handshake(&self.psk)?;
        Ok(conn)
    }

    /// Connects, authenticates and asks for `purpose` on image `name`; returns once accepted.
    pub(crate) fn start(
        &self,
        purpose: Purpose,
        name: &str,
        checkpoint_id: &str,
    ) -> Result<Conn<TcpStream>, StreamError> {
        Ok(self.start_accepted(purpose, name, checkpoint_id)?.0)
    }

    /// [`Peer::start`], with the receiver's Accept.
    pub(crate) fn start_accepted(
        &self,
        purpose: Purpose,
        name: &str,
        checkpoint_id: &str,
    ) -> Result<(Conn<TcpStream>, msg::Accept), StreamError> {
        transfer::check_name(name).map_err(|e| StreamError::protocol("image name", e))?;
        let mut conn = self.connect()?;
        let step = format!(
            "ask {} to {} image {name:?}",
            self.addr,
            purpose.as_str_name()
        );
        conn.send_msg(
            FrameType::Start,
            &msg::Start {
                version: VERSIONS[VERSIONS.len() - 1],
                checkpoint_id: checkpoint_id.into(),
                name: name.into(),
                purpose: purpose as i32,
            },
            &step,
        )?;
        let accept = conn.expect::<msg::Accept>(FrameType::Accept, &step)?;
        Ok((conn, accept))
    }

    /// Streams the image directory `images` to the receiver as `name` and returns once the
    /// receiver confirmed it complete and durable, with the manifest hash it answered (the
    /// same as ours, checked). Any other end is an error naming the step.
    pub fn store(
        &self,
        images: &ImageDir,
        name: &str,
        checkpoint_id: &str,
    ) -> Result<String, StreamError> {
        self.open_store(name, checkpoint_id)?.finish(images)
    }

    /// Starts storing an image as `name` whose files are sent as they come
    /// ([`Store::send_file`]: the rounds of a pre-copy, while the processes run), the rest at
    /// [`Store::finish`].
    pub fn open_store(&self, name: &str, checkpoint_id: &str) -> Result<Store, StreamError> {
        let conn = self.start(Purpose::Store, name, checkpoint_id)?;
        let watch = conn
            .get_ref()
            .try_clone()
            .map_err(|e| StreamError::io("watch the connection", e, 0))?;
        Ok(Store {
            conn,
            watch,
            addr: self.addr.clone(),
            name: name.into(),
            manifest: Manifest {
                checkpoint_id: checkpoint_id.into(),
                files: Vec::new(),
            },
        })
    }
}

/// An image being stored on a receiver: files sent one by one, then the End and the wait for
/// the receiver's "committed". Dropped before that, the connection closes and the receiver
/// discards what came.
pub struct Store {
    conn: Conn<TcpStream>,
    watch: TcpStream,
    addr: String,
    name: String,
    manifest: Manifest,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .finish()
    }
}

impl Store {
    /// Sends file `name` of the image now: `size` bytes read from `contents`.
    pub fn send_file(
        &mut self,
        name: &str,
        size: u64,
        contents: &mut dyn std::io::Read,
    ) -> Result<(), StreamError> {
        send_early(
            &mut self.conn,
            &self.watch,
            &mut self.manifest,
            name,
            size,
            contents,
        )
    }

    /// Sends every file of `images` and the End with the manifest of everything sent, and
    /// returns once the receiver confirmed it complete and durable, with the manifest hash
    /// it answered (the same as ours, checked). Any other end is an error naming the step.
    pub fn finish(mut self, images: &ImageDir) -> Result<String, StreamError> {
        finish_image(
            &mut self.conn,
            &self.watch,
            images,
            &mut self.manifest,
            &self.name,
            &self.addr,
        )
    }
}

/// Sends file `name` of an image before the rest (a pre-copy round, while the processes run):
/// `size` bytes read from `contents`, listed in `manifest`; `watch` is a duplicate of the
/// connection's socket, for [`keep_going`].
pub(crate) fn send_early(
    conn: &mut Conn<TcpStream>,
    watch: &TcpStream,
    manifest: &mut Manifest,
    name: &str,
    size: u64,
    contents: &mut dyn std::io::Read,
) -> Result<(), StreamError> {
    transfer::check_name(name).map_err(|e| StreamError::protocol("send a file", e))?;
    match transfer::send_file(conn, name, size, 0o600, contents, &|step| {
        keep_going(watch, step)
    }) {
        Ok(entry) => {
            manifest.files.push(entry);
            Ok(())
        }
        // The receiver's own reason, when it gave one, says more than a broken pipe.
        Err(e) => Err(last_word(conn).unwrap_or(e)),
    }
}

/// Between frames: a pending SIGINT stops the transfer, and so does a word from the receiver
/// (it only speaks before the End to say it failed; `watch` is a duplicate of its socket).
pub(crate) fn keep_going(watch: &TcpStream, step: &str) -> Result<(), StreamError> {
    cryo_core::interrupt::check("").map_err(|_| StreamError::Interrupted { step: step.into() })?;
    if readable(watch) {
        return Err(StreamError::protocol(
            step,
            "the receiver spoke before the end",
        ));
    }
    Ok(())
}

/// Sends the files of `images` (after those `manifest` lists as sent already) and the End
/// with the manifest of everything sent, and returns once the receiver at `addr` confirmed
/// image `name` complete and durable, with the manifest hash it answered (the same as ours,
/// checked): the one way an image leaves a dump (`dump --to`, `migrate`). Any other end is
/// an error naming the step.
pub(crate) fn finish_image(
    conn: &mut Conn<TcpStream>,
    watch: &TcpStream,
    images: &ImageDir,
    manifest: &mut Manifest,
    name: &str,
    addr: &str,
) -> Result<String, StreamError> {
    let sent = transfer::send_dir_files(conn, images, &mut manifest.files, &|step| {
        keep_going(watch, step)
    })
    .and_then(|()| transfer::send_end(conn, manifest));
    if let Err(e) = sent {
        // The receiver's own reason, when it gave one, says more than a broken pipe.
        return Err(last_word(conn).unwrap_or(e));
    }
    let ours = manifest::hash(manifest);
    let step = format!("wait for {addr} to commit image {name:?}");
    let committed: msg::Committed = conn.expect(FrameType::Committed, &step)?;
    if committed.manifest_hash != ours {
        return Err(StreamError::protocol(
            &step,
            format!(
                "the receiver committed manifest {}, we sent {ours}",
                committed.manifest_hash
            ),
        ));
    }
    let bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
    info!(name, files = manifest.files.len(), bytes, hash = %ours, "committed by the receiver");
    Ok(ours)
}

impl Peer {
    /// Fetches image `name` from the receiver into `into` (a new, private directory),
    /// verified against its manifest; tells the receiver it arrived whole.
    pub fn fetch(&self, name: &str, into: &ImageDir) -> Result<Manifest, StreamError> {
        let mut conn = self.start(Purpose::Fetch, name, "")?;
        match transfer::receive_image(&mut conn, into, None) {
            Ok(m) => {
                conn.send_msg(
                    FrameType::Committed,
                    &msg::Committed {
                        manifest_hash: manifest::hash(&m),
                    },
                    "confirm the image",
                )?;
                Ok(m)
            }
            Err(e) => {
                conn.send_failed(&e.to_string());
                Err(e)
            }
        }
    }

    /// Has the receiver restore image `name` itself; returns the root pids it restored.
    pub fn restore_there(&self, name: &str) -> Result<Vec<i32>, StreamError> {
        let mut conn = self.start(Purpose::Restore, name, "")?;
        let step = format!("restore of {name:?} on {}", self.addr);
        let f = conn.recv(&step)?;
        match f.kind {
            FrameType::Restored => Ok(f.decode::<msg::Restored>(&step)?.pids),
            _ => Err(unexpected(&f, &step, "Restored")),
        }
    }
}
