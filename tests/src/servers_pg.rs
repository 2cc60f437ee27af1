//! A PostgreSQL server of a test's own (initdb'd in its temp dir, run as the `postgres`
//! user on an ephemeral port) and a minimal client of the PostgreSQL wire protocol.
//!
//! ```text
//! test (root)                               postgres user
//!  initdb -D DIR/data -A trust        --->  the cluster
//!  postgres -D DIR/data -p PORT -k DIR ---> postmaster (session leader, the test's child)
//!  inotify on DIR/data, pidfd               +- checkpointer, background writer, walwriter,
//!   until postmaster.pid says "ready"       |  autovacuum launcher, logical replication
//!  PgClient::connect(PORT) over TCP  ---->  +- one backend per client
//! ```
//!
//! [`PgServer`] kills every process of the cluster when dropped (on a panic too): the
//! postmaster named by its pid file and every child of it, whether the postmaster is still
//! the test's child or a restored one adopted by init. It then removes the shared memory a
//! killed cluster leaves behind (its SysV segment and POSIX segments under /dev/shm).
//! Nothing here sleeps: readiness comes from inotify on the data directory, exits from
//! pidfds.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{control_dir, Pidfd, TempDir};

/// How long initdb, a start, a stop or one query may take.
pub const PG_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory of Debian's PostgreSQL binaries (`/usr/lib/postgresql/N/bin`, the newest
/// major installed); panics saying how to install them when there is none.
pub fn pg_bin_dir() -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server under /usr/lib/postgresql/*/bin: \
             install Debian's postgresql package (apt-get install postgresql)"
        )
    })
}

/// The uid and gid of the `postgres` user; panics when it does not exist.
fn postgres_user() -> (u32, u32) {
    let user = nix::unistd::User::from_name("postgres")
        .expect("look up the postgres user")
        .unwrap_or_else(|| {
            panic!("no postgres user: install Debian's postgresql package, which creates it")
        });
    (user.uid.as_raw(), user.gid.as_raw())
}

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
fn ephemeral_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// One PostgreSQL cluster of a test, with its postmaster running.
pub struct PgServer {
    dir: TempDir,
    bin: PathBuf,
    uid: u32,
    gid: u32,
    port: u16,
    /// The postmaster as the test's child, until reaped.
    postmaster: Option<Child>,
    pid: i32,
    /// POSIX shared memory segments the cluster had mapped (/dev/shm/PostgreSQL.N).
    posix_shm: Vec<PathBuf>,
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "postgres pid {} port {} in {}",
            self.pid,
            self.port,
            self.dir.path().display()
        )
    }
}

impl PgServer {
    /// initdb in a fresh temp dir, then starts the postmaster and waits until its pid file
    /// says "ready".
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`PgServer::start`], with more `-c NAME=VALUE` settings for the postmaster.
    pub fn start_with(settings: &[&str]) -> Self {
        let bin = pg_bin_dir();
        let (uid, gid) = postgres_user();
        let dir = control_dir();
        chown(dir.path(), uid, gid);
        let mut server = Self {
            dir,
            bin,
            uid,
            gid,
            port: ephemeral_port(),
            postmaster: None,
            pid: 0,
            posix_shm: Vec::new(),
        };
        let initdb = server.run_as_postgres(
            "initdb",
            &[
                "-D".as_ref(),
                server.data_dir().as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        assert!(
            initdb.status.success(),
            "initdb failed: {}\n{}",
            initdb.status,
            String::from_utf8_lossy(&initdb.stderr)
        );
        server.spawn_postmaster(settings);
        server
    }

    fn spawn_postmaster(&mut self, settings: &[&str]) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("server log");
        // A restore reopens the log with the server's own credentials.
        chown(&self.log_path(), self.uid, self.gid);
        let data = self.data_dir();
        let watch = DirWatch::new(&data);
        let mut command = Command::new(self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(settings.iter().flat_map(|s| ["-c", s]))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .uid(self.uid)
            .gid(self.gid);
        // SAFETY: setsid is async-signal-safe; the postmaster leads its own session, as
        // pg_ctl and systemd start it.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn postgres");
        self.pid = child.id() as i32;
        let pidfd = Pidfd::open(self.pid).expect("pidfd of the postmaster");
        self.postmaster = Some(child);
        let deadline = Instant::now() + PG_TIMEOUT;
        while !self.pid_file_says_ready() {
            match watch.wait(&pidfd, deadline) {
                Wake::Changed => {}
                Wake::Exited => panic!("postgres exited while starting:\n{}", self.log()),
                Wake::Timeout => {
                    panic!("postgres not ready within {PG_TIMEOUT:?}:\n{}", self.log())
                }
            }
        }
        self.posix_shm = self.posix_shm_of(self.pid);
    }

    fn pid_file_says_ready(&self) -> bool {
        let Ok(text) = fs::read_to_string(self.data_dir().join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = text.lines().collect();
        // Line 1 the pid, line 8 the status (PM_STATUS_READY is "ready   ").
        lines.first().and_then(|p| p.trim().parse::<i32>().ok()) == Some(self.pid)
            && lines.get(7).map(|s| s.trim()) == Some("ready")
    }

    fn posix_shm_of(&self, pid: i32) -> Vec<PathBuf> {
        let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let mut found: Vec<PathBuf> = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter(|p| p.starts_with("/dev/shm/PostgreSQL."))
            .map(PathBuf::from)
            .collect();
        found.sort();
        found.dedup();
        found
    }

    /// Runs `BIN/tool ARGS` as the postgres user (stdout and stderr captured).
    pub fn run_as_postgres(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Output {
        Command::new(self.bin.join(tool))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .uid(self.uid)
            .gid(self.gid)
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }

    /// The postmaster's pid (the restored one keeps it).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The test's temp dir (also the unix socket directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Where a logging collector writes (`log_directory`'s default, `log` in the data
    /// directory), when a test turns it on.
    pub fn collector_dir(&self) -> PathBuf {
        self.data_dir().join("log")
    }

    /// The server log so far: the postmaster's stderr, then the logging collector's files.
    pub fn log(&self) -> String {
        let mut files = vec![self.log_path()];
        let mut collected: Vec<PathBuf> = fs::read_dir(self.collector_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        collected.sort();
        files.extend(collected);
        files
            .iter()
            .filter_map(|f| fs::read(f).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }

    /// The lines of the log at ERROR, FATAL or PANIC that contain none of `expected`, and
    /// every line about a failed system call ("could not ...", "shmdt").
    pub fn unexpected_log_lines(&self, expected: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                let bad_level = ["ERROR:", "FATAL:", "PANIC:"].iter().any(|s| l.contains(s));
                let failed_call = l.contains("could not") || l.contains("shmdt");
                (bad_level && !expected.iter().any(|e| l.contains(e))) || failed_call
            })
            .map(str::to_string)
            .collect()
    }

    /// The postmaster and its children now (zombies left out), postmaster first.
    pub fn processes(&self) -> Vec<i32> {
        let mut pids = vec![self.pid];
        pids.extend(children_of(self.pid));
        pids.retain(|&p| crate::status_field(p, "State").is_some_and(|s| !s.starts_with('Z')));
        pids
    }

    /// Waits for the postmaster to end after a dump killed it (reaped, while it is the
    /// test's child: its status then), and for its children to be gone.
    pub fn reap_killed(&mut self, children: &[i32]) -> Option<ExitStatus> {
        let status = match self.postmaster.take() {
            Some(mut child) => Some(child.wait().expect("wait for the postmaster")),
            None => {
                if let Ok(p) = Pidfd::open(self.pid) {
                    assert!(
                        p.wait_exit(PG_TIMEOUT),
                        "the postmaster still runs after the dump"
                    );
                }
                None
            }
        };
        for &pid in children {
            if let Ok(p) = Pidfd::open(pid) {
                assert!(
                    p.wait_exit(PG_TIMEOUT),
                    "postgres child {pid} still runs after the dump"
                );
            }
        }
        status
    }

    /// The path of the unix socket the postmaster listens on.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join(format!(".s.PGSQL.{}", self.port))
    }

    /// Opens a new client connection over TCP.
    pub fn connect(&self) -> PgClient {
        PgClient::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)))
            .unwrap_or_else(|e| panic!("connect to {self:?}: {e}\n{}", self.log()))
    }

    /// `pg_ctl stop -m fast`, which waits until the postmaster has removed its pid file;
    /// panics with its output and the log when it fails.
    pub fn stop_fast(&mut self) {
        let data = self.data_dir();
        let out = self.run_as_postgres(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                PG_TIMEOUT.as_secs().to_string().as_ref(),
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop -m fast failed: {}\n{}{}\n--- server log\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        if let Ok(p) = Pidfd::open(self.pid) {
            assert!(
                p.wait_exit(PG_TIMEOUT),
                "the postmaster outlived pg_ctl stop"
            );
        }
    }

    /// Whether `pid` runs postgres out of this cluster (the postmaster names the data dir in
    /// its command line, its children are its children).
    fn is_ours(&self, pid: i32) -> bool {
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let data = self.data_dir();
        let data = data.as_os_str().as_bytes();
        cmdline.windows(data.len()).any(|w| w == data)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let mut shm = self.posix_shm.clone();
        if self.is_ours(self.pid) {
            // The segments made since start are mapped by the backends using them.
            for pid in self.processes() {
                shm.extend(self.posix_shm_of(pid));
            }
            // Children first: a child of a killed postmaster lives on until it notices.
            for pid in children_of(self.pid) {
                if let Ok(p) = Pidfd::open(pid) {
                    let _ = p.signal(libc::SIGKILL);
                }
            }
            if let Ok(p) = Pidfd::open(self.pid) {
                let _ = p.signal(libc::SIGKILL);
                let _ = p.wait_exit(PG_TIMEOUT);
            }
        }
        if let Some(mut child) = self.postmaster.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        crate::release_network_locks_under(self.dir());
        // The SysV segment a killed postmaster leaves: its key and id are on line 7 of the
        // pid file, which a clean stop removes.
        if let Ok(text) = fs::read_to_string(self.data_dir().join("postmaster.pid")) {
            let shmid = text
                .lines()
                .nth(6)
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|id| id.parse::<i32>().ok());
            if let Some(id) = shmid {
                // SAFETY: IPC_RMID takes no buffer.
                unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
            }
        }
        for path in shm {
            let _ = fs::remove_file(path);
        }
    }
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// The pids whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// What ended a wait on a [`DirWatch`].
enum Wake {
    Changed,
    Exited,
    Timeout,
}

/// inotify on a directory: wakes when a file in it is written or moved in.
struct DirWatch {
    fd: OwnedFd,
}

impl DirWatch {
    fn new(dir: &Path) -> Self {
        // SAFETY: no pointers; the fd returned is ours alone.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        assert!(fd >= 0, "inotify_init1: {}", io::Error::last_os_error());
        // SAFETY: the kernel just returned this fd and nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = CString::new(dir.as_os_str().as_bytes()).expect("no NUL in paths");
        let mask = libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE;
        // SAFETY: path is NUL-terminated and outlives the call.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
        assert!(
            wd >= 0,
            "inotify_add_watch {}: {}",
            dir.display(),
            io::Error::last_os_error()
        );
        Self { fd }
    }

    /// Waits for a change in the directory, the exit of `pidfd`'s process, or `deadline`.
    fn wait(&self, pidfd: &Pidfd, deadline: Instant) -> Wake {
        loop {
            let ms = deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32;
            let mut fds = [
                libc::pollfd {
                    fd: self.fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: pidfd.fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: fds is a valid array of two pollfds.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
            if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            assert!(r >= 0, "poll: {}", io::Error::last_os_error());
            if fds[0].revents != 0 {
                let mut buf = [0u8; 4096];
                // Drain the events: the caller looks at the files again.
                // SAFETY: buf is writable for its length.
                while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }
                    > 0
                {}
                return Wake::Changed;
            }
            if fds[1].revents != 0 {
                return Wake::Exited;
            }
            if r == 0 {
                return Wake::Timeout;
            }
        }
    }
}

/// What the server answered to one simple query.
#[derive(Debug, Default)]
pub struct Reply {
    /// The rows of the last result, every value as text (None for NULL).
    pub rows: Vec<Vec<Option<String>>>,
    /// The command tags (`INSERT 0 1`, `COMMIT`...), one per statement.
    pub tags: Vec<String>,
    /// The transaction status ReadyForQuery reported: `I` idle, `T` in a transaction,
    /// `E` in a failed transaction.
    pub status: char,
}

impl Reply {
    /// The single value of a one-row, one-column result.
    #[track_caller]
    pub fn value(&self) -> &str {
        assert_eq!(self.rows.len(), 1, "one row expected: {self:?}");
        assert_eq!(self.rows[0].len(), 1, "one column expected: {self:?}");
        self.rows[0][0].as_deref().expect("a value, not NULL")
    }
}

/// A client of the PostgreSQL wire protocol (version 3, trust authentication, simple
/// queries only): one TCP connection, kept for its whole life.
#[derive(Debug)]
pub struct PgClient {
    stream: Stream,
    /// The backend's pid from BackendKeyData.
    pub backend_pid: i32,
}

/// A connection to the server, over TCP or its unix socket.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl PgClient {
    /// Connects over TCP as user postgres to database postgres, and waits for ReadyForQuery.
    pub fn connect(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_read_timeout(Some(PG_TIMEOUT)).ok();
        stream.set_write_timeout(Some(PG_TIMEOUT)).ok();
        Self::start(Stream::Tcp(stream))
    }

    /// As [`PgClient::connect`], over the unix socket at `path`.
    pub fn connect_unix(path: &Path) -> Result<Self, String> {
        let stream =
            UnixStream::connect(path).map_err(|e| format!("connect {}: {e}", path.display()))?;
        stream.set_read_timeout(Some(PG_TIMEOUT)).ok();
        stream.set_write_timeout(Some(PG_TIMEOUT)).ok();
        Self::start(Stream::Unix(stream))
    }

    fn start(stream: Stream) -> Result<Self, String> {
        let mut c = Self {
            stream,
            backend_pid: 0,
        };
        let mut body = Vec::new();
        body.extend_from_slice(&196608i32.to_be_bytes()); // protocol 3.0
        for s in ["user", "postgres", "database", "postgres", ""] {
            body.extend_from_slice(s.as_bytes());
            body.push(0);
        }
        let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        c.stream
            .write_all(&msg)
            .map_err(|e| format!("send startup: {e}"))?;
        c.read_until_ready().map(|_| c)
    }

    /// The local address of a TCP connection (the same socket across a restore of the
    /// server).
    pub fn local_addr(&self) -> SocketAddr {
        match &self.stream {
            Stream::Tcp(s) => s.local_addr().expect("local address"),
            Stream::Unix(_) => panic!("a unix connection has no TCP address"),
        }
    }

    /// The server's name for a unix connection (getpeername: the name its listener was
    /// bound to).
    pub fn unix_peer(&self) -> Option<PathBuf> {
        match &self.stream {
            Stream::Unix(s) => s.peer_addr().ok()?.as_pathname().map(Path::to_path_buf),
            Stream::Tcp(_) => None,
        }
    }

    /// Sends one simple query and reads the reply up to ReadyForQuery; an ErrorResponse
    /// comes back as Err with its severity, code and message.
    pub fn query(&mut self, sql: &str) -> Result<Reply, String> {
        self.send(sql)?;
        self.receive().map_err(|e| format!("query {sql:?}: {e}"))
    }

    /// Sends one simple query without waiting for its reply (a query in flight).
    pub fn send(&mut self, sql: &str) -> Result<(), String> {
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
        msg.extend_from_slice(sql.as_bytes());
        msg.push(0);
        self.stream
            .write_all(&msg)
            .map_err(|e| format!("send query {sql:?}: {e}"))
    }

    /// Reads the reply to the query sent last, up to ReadyForQuery.
    pub fn receive(&mut self) -> Result<Reply, String> {
        self.read_until_ready()
    }

    /// As [`PgClient::query`], panicking on an error.
    #[track_caller]
    pub fn ok(&mut self, sql: &str) -> Reply {
        self.query(sql).unwrap_or_else(|e| panic!("{e}"))
    }

    fn read_message(&mut self) -> Result<(u8, Vec<u8>), String> {
        let mut head = [0u8; 5];
        self.stream
            .read_exact(&mut head)
            .map_err(|e| format!("read message header: {e}"))?;
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if !(4..=1 << 24).contains(&len) {
            return Err(format!("bad message length {len}"));
        }
        let mut body = vec![0u8; len as usize - 4];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| format!("read message body: {e}"))?;
        Ok((head[0], body))
    }

    fn read_until_ready(&mut self) -> Result<Reply, String> {
        let mut reply = Reply::default();
        let mut error = None;
        loop {
            let (kind, body) = self.read_message()?;
            match kind {
                b'R' => {
                    let code = body
                        .get(..4)
                        .map(|b| i32::from_be_bytes(b.try_into().unwrap()));
                    if code != Some(0) {
                        return Err(format!("authentication {code:?} asked: trust expected"));
                    }
                }
                b'K' if body.len() >= 4 => {
                    self.backend_pid = i32::from_be_bytes(body[..4].try_into().unwrap())
                }
                b'T' => reply.rows.clear(),
                b'D' => reply.rows.push(data_row(&body)?),
                b'C' => reply.tags.push(cstring(&body)),
                b'E' => error = Some(error_fields(&body)),
                b'Z' => {
                    reply.status = body.first().map(|&b| b as char).unwrap_or('?');
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(reply),
                    };
                }
                // ParameterStatus, NoticeResponse, EmptyQueryResponse...
                _ => {}
            }
        }
    }
}

impl PgClient {
    /// Says Terminate, reads to EOF and waits until the backend has exited, so a shutdown
    /// right after finds no session to terminate (and logs no FATAL for it).
    pub fn close(mut self) {
        self.terminate();
        let mut rest = Vec::new();
        let _ = self.stream.read_to_end(&mut rest);
        if let Ok(p) = Pidfd::open(self.backend_pid) {
            assert!(
                p.wait_exit(PG_TIMEOUT),
                "backend {} outlived its client's Terminate",
                self.backend_pid
            );
        }
    }

    fn terminate(&mut self) {
        let _ = self.stream.write_all(&[b'X', 0, 0, 0, 4]);
    }
}

impl Drop for PgClient {
    fn drop(&mut self) {
        // Terminate, so the server logs no "unexpected EOF on client connection".
        self.terminate();
    }
}

fn cstring(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

fn data_row(body: &[u8]) -> Result<Vec<Option<String>>, String> {
    let bad = || "malformed DataRow".to_string();
    let n = i16::from_be_bytes(body.get(..2).ok_or_else(bad)?.try_into().unwrap());
    let mut at = 2;
    let mut row = Vec::new();
    for _ in 0..n {
        let len = i32::from_be_bytes(body.get(at..at + 4).ok_or_else(bad)?.try_into().unwrap());
        at += 4;
        if len < 0 {
            row.push(None);
        } else {
            let v = body.get(at..at + len as usize).ok_or_else(bad)?;
            row.push(Some(String::from_utf8_lossy(v).into_owned()));
            at += len as usize;
        }
    }
    Ok(row)
}

fn error_fields(body: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let value = cstring(tail);
        rest = &tail[(value.len() + 1).min(tail.len())..];
        if matches!(code, b'S' | b'C' | b'M') {
            parts.push(value);
        }
    }
    parts.join(" ")
}
