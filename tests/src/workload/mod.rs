//! The modes of `cryo-workload`, one module each, and the table from a mode's name to its
//! `start`.
//!
//! A mode sets up what the tests checkpoint (memory, files, sockets, children...) once, at
//! start, then answers its own commands; the commands every mode answers are the control
//! loop's ([`control`]). Adding a mode = a module with `start` returning a [`Mode`], and one
//! line in [`MODES`].
//!
//! ```text
//! control    the command FIFO, the replies, the common commands
//! sys        every raw call, wrapped once
//! kids       forked helpers: a child holding one fd, its exit, asking it over two pipes
//! unix       the unix modes' socketpair at fds 50/51, send, receive all, wait
//! unix_msg   SCM_RIGHTS and SCM_CREDENTIALS messages (unix-pair and unix-pass)
//! <mode>     one per mode (see the table)
//! ```

pub mod control;
pub mod daemon;
pub mod job_shell;
mod kids;
mod sys;
mod unix;
mod unix_msg;

mod advised;
mod aio;
mod attrs;
mod bpf;
mod churn;
mod counter;
mod cow_file;
mod cow_tree;
mod deleted_file;
mod deleted_sparse;
mod epoll_edges;
mod epoll_stale;
mod events;
mod file;
mod file_locks;
mod held;
mod hugetlb;
mod kin;
mod mapping_access;
mod mappings;
mod memory;
mod mount_ns;
mod mqueue;
mod netns;
mod netns_home;
mod notify;
mod orphan_groups;
mod page_state;
mod pid_ns;
mod pipe;
mod pipe_split;
mod places;
mod proc_files;
mod pty_pair;
mod pty_shell;
mod rings;
mod rseq;
mod setsid_after_fork;
mod shared_memory;
mod shared_task;
mod signal;
mod sigtrap;
mod socks;
mod special_maps;
mod sqlite;
mod sysv_ipc;
mod sysv_ns;
mod sysv_shm;
mod tcp;
mod tcp_opts;
mod threads;
mod timerfds;
mod timers;
mod tree;
mod tty;
mod udp;
mod unix_cycle;
mod unix_ext;
mod unix_listen;
mod unix_pair;
mod unix_pass;
mod unix_peers;
mod unix_split;
mod unix_tree;
mod unsupported;
mod user_ns;
mod waits;
mod write_hints;
mod writer;
mod zombie_leader;

use std::io;
use std::path::Path;

use crate::protocol::DEFAULT_SEED;

/// The page size the modes lay their memory out in.
const PAGE: usize = 4096;

/// A running mode: answers the commands of its own.
pub trait Mode {
    /// Answers `verb args...` (the common commands never get here); `Err` is sent as
    /// `err MESSAGE`.
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String>;
}

/// Sets a mode up from its arguments, in the control directory `dir`.
pub type Start = fn(args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String>;

/// Every mode, by the name given on the command line.
pub const MODES: &[(&str, Start)] = &[
    ("counter", counter::start),
    ("memory", memory::start),
    ("file", file::start),
    ("deleted-file", deleted_file::start),
    ("deleted-sparse", deleted_sparse::start),
    ("held", held::start),
    ("pipe", pipe::start),
    ("signal", signal::start),
    ("sigtrap", sigtrap::start),
    ("rseq", rseq::start),
    ("churn", churn::start),
    ("unsupported", unsupported::start),
    ("tree", tree::start),
    ("kin", kin::start),
    ("orphan-groups", orphan_groups::start),
    ("setsid-after-fork", setsid_after_fork::start),
    ("zombie-leader", zombie_leader::start),
    ("pid-ns", pid_ns::start),
    ("timers", timers::start),
    ("waits", waits::start),
    ("timerfds", timerfds::start),
    ("write-hints", write_hints::start),
    ("threads", threads::start),
    ("mappings", mappings::start),
    ("events", events::start),
    ("epoll-edges", epoll_edges::start),
    ("epoll-stale", epoll_stale::start),
    ("notify", notify::start),
    ("tcp", tcp::start),
    ("udp", udp::start),
    ("unix-pair", unix_pair::start),
    ("unix-tree", unix_tree::start),
    ("unix-peers", unix_peers::start),
    ("pipe-split", pipe_split::start),
    ("unix-split", unix_split::start),
    ("unix-listen", unix_listen::start),
    ("unix-pass", unix_pass::start),
    ("unix-cycle", unix_cycle::start),
    ("unix-ext", unix_ext::start),
    ("shared-memory", shared_memory::start),
    ("share", shared_task::start),
    ("tty", tty::start),
    ("attrs", attrs::start),
    ("sysv-shm", sysv_shm::start),
    ("sysv-ipc", sysv_ipc::start),
    ("mqueue", mqueue::start),
    ("bpf", bpf::start),
    ("sysv-ns", sysv_ns::start),
    ("netns", netns::start),
    ("netns-home", netns_home::start),
    ("aio", aio::start),
    ("cow-tree", cow_tree::start),
    ("cow-file", cow_file::start),
    ("mapping-access", mapping_access::start),
    ("locks", file_locks::start),
    ("sigio", file_locks::start_sigio),
    ("sqlite", sqlite::start),
    ("places", places::start),
    ("proc-files", proc_files::start),
    ("socks", socks::start),
    ("pty-pair", pty_pair::start),
    ("pty-shell", pty_shell::start),
    ("advised", advised::start),
    ("special-maps", special_maps::start),
    ("page-state", page_state::start),
    ("writer", writer::start),
    ("hugetlb", hugetlb::start),
    ("hugetlb-file", hugetlb::start_file),
    ("mount-ns", mount_ns::start),
    ("user-ns", user_ns::start),
];

/// Starts the mode called `name`.
pub fn start(name: &str, args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let (_, start) = MODES
        .iter()
        .find(|(mode, _)| *mode == name)
        .ok_or_else(|| format!("unknown mode {name:?}"))?;
    start(args, dir)
}

/// The reply to a command the mode does not know.
fn unknown(verb: &str) -> Result<String, String> {
    Err(format!("unknown command {verb:?}"))
}

/// The answer to `wait N` of a mode counting something a thread of its own does: waits
/// (up to 20 s) until `count` reaches the N of `arg`, then answers `report`.
fn wait_for_count(
    arg: &str,
    count: impl Fn() -> u64,
    report: impl Fn() -> String,
) -> Result<String, String> {
    let n: u64 = arg.parse().map_err(|_| format!("bad count {arg:?}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while count() < n {
        if std::time::Instant::now() > deadline {
            return Err(format!("only {} after 20 s: {}", count(), report()));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(report())
}

/// An `io::Error` as a reply's error text.
fn io_err(err: io::Error) -> String {
    err.to_string()
}

/// An `io::Error` as a setup error naming what failed: `WHAT: ERROR`.
fn failed(what: &str) -> impl Fn(io::Error) -> String + '_ {
    move |err| format!("{what}: {err}")
}

/// Argument `i`, or `default` if there is none.
fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> Result<T, String> {
    match args.get(i) {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| format!("bad argument {s:?}")),
    }
}

/// Argument `i` as a seed (decimal or 0x hex), or [`DEFAULT_SEED`].
fn seed_arg(args: &[String], i: usize) -> Result<u64, String> {
    match args.get(i) {
        None => Ok(DEFAULT_SEED),
        Some(s) => parse_u64(s),
    }
}

/// A number, decimal or 0x hex.
fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("bad number {s:?}"))
}

/// A count or a size in a command.
fn count(s: &str) -> Result<usize, String> {
    s.parse().map_err(|_| format!("bad count {s:?}"))
}
