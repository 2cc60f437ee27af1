//! The process the integration tests checkpoint and restore.
//!
//! ```text
//! cryo-workload DIR MODE [ARGS...]
//! ```
//!
//! DIR is the test's control directory, holding two FIFOs the harness made:
//! `cmd` (opened O_RDWR once at start and kept: the workload then blocks in
//! read() on it, which is where a dump finds it) and `out` (opened O_WRONLY
//! for each reply, one line written, closed: no fd to the test stays open).
//! Stdin is /dev/null, stdout and stderr go to `DIR/workload.log`.
//!
//! Every mode answers `ping` (`pong`), `pid`, `ppid`, `session` (`PGID SID`), `tick` (counter += 1,
//! replies it), `get`, `fds` (`N=target` for every open fd, sorted, tab-separated), `inode N` (owner, mode,
//! times, inode flags and extended attributes fd N shows: sys::inode_line),
//! `exit CODE` (replies `bye`, then exits) and the broken-peer commands of
//! `tests/src/workload_peers.rs` (`sigwatch`, `signext`, `resume-open`, `resume-next`,
//! `reader FD`, `reader-result FD`). A command may start with `#TAG`;
//! its reply then starts with `#TAG ` too.
//!
//! Each mode is one module under `tests/src/workload/`, whose doc lists its commands;
//! [`workload::MODES`] maps the names to them:
//!
//! ```text
//! counter                    only the common commands
//! memory SIZE_MIB [SEED]     anonymous memory with a pattern, touched and verified
//! file PATH                  a regular file read one byte at a time
//! deleted-file [LEN] [SEED]  an unlinked file kept open
//! pipe [LEN] [SEED]          a pipe holding data, both ends open
//! signal                     a counting SIGUSR1 handler, SIGUSR2 blocked and pending
//! threads N                  counting threads, a mutex and a condition variable
//! timers                     an interval timer and a POSIX timer
//! tree                       a child in its own group, a grandchild, a zombie
//! orphan-groups              children in a group whose leader exited, a zombie leading a session
//! mappings                   shared, file-backed, private and PROT_NONE regions
//! unsupported KIND [FD]      an fd cryo refuses (io_uring, packet socket)
//! events                     epoll, eventfd, timerfd, signalfd, memfd, inotify
//! notify KIND                fanotify with marks of every kind (a tmpfs of its own), inotify
//! netns-home [conn]          sockets of its network namespace a child in another keeps
//! tcp ADDR                   a listener and its connections
//! udp ADDR                   a bound UDP socket
//! unix-pair TYPE             a socketpair in this process; fds in flight, credentials
//! unix-tree                  a socketpair split with a child
//! unix-listen NAME           a unix listener and a client of its own
//! pipe-split                 a pipe split with a child
//! unix-split                 a socketpair, a pipe and a file split with another tree
//! unix-ext PATH              a client of the test's unix listener
//! unix-pass                  fds in flight to a child
//! shared-memory              one memfd through several views, and a child
//! tty [ctty]                 stdio on a terminal
//! attrs SETTING...           process and thread attributes set at start, read from inside
//! job-shell MODE [ARGS...]   not a mode: a tiny shell running one as a foreground job
//! daemon [group] MODE [ARGS...]
//!                            not a mode: runs one in the session (and group) of leaders that
//!                            exited, as a daemon that forked again after setsid
//! ```
//!
//! A failed read() of the command FIFO is fatal (exit 3, logged): with only
//! SA_RESTART handlers installed it never fails, so a blocking syscall that
//! does not resume after a restore shows up as a dead workload.

#[path = "../protocol.rs"]
#[allow(dead_code)]
mod protocol;
#[path = "../workload/mod.rs"]
mod workload;
#[path = "../workload_peers.rs"]
mod workload_peers;

use std::path::Path;

use workload::control;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: cryo-workload DIR MODE [ARGS...]");
        std::process::exit(2);
    }
    let (dir, mut mode, mut mode_args) = (Path::new(&args[1]), &args[2], &args[3..]);
    // A mode a `daemon` runner started stays in the session its leaders left it.
    if mode == "daemonized" && args.len() > 3 {
        control::close_inherited();
        (mode, mode_args) = (&args[3], &args[4..]);
    } else {
        control::isolate();
    }
    if mode == "job-shell" {
        workload::job_shell::run(&args[1], mode_args);
    }
    if mode == "daemon" {
        workload::daemon::run(&args[1], mode_args);
    }
    let cmd_fd = control::open_commands(dir);
    let mode = match workload::start(mode, mode_args, dir) {
        Ok(m) => m,
        Err(e) => control::fatal(&format!("mode {mode}: {e}")),
    };
    control::serve(dir, cmd_fd, mode)
}
