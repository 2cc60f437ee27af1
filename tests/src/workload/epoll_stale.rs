//! `epoll-stale`: an epoll (fd 70) whose registrations outlived the fd numbers they were made
//! under: the kernel keeps a registration while its file lives, whatever became of the number.
//!
//! ```text
//! epoll-stale closed   pipe A (read 50, write 51): 60 = dup(50), ADD 60 (data 0xa60),
//!                      close 60: fd 60 is not open, the pipe is registered as 60
//! epoll-stale reused   pipe B (52, 53): 61 = dup(52), ADD 61 (data 0xb61), close 61;
//!                      pipe C (54, 55): 61 = dup(54), ADD 61 (data 0xc61): two files
//!                      registered as 61; pipe D (56, 57): 62 = dup(56), ADD 62 (data
//!                      0xd62), close 62, an eventfd (count 7) opened at 62, not registered
//! epoll-stale elsewhere pipe E (58, 59): 63 = dup(58), ADD 63 (data 0xe63), then a child
//!                      keeps 58 (and nothing of the epoll) and this process closes 58
//!                      and 63: the registered file is held by the child only
//! epoll-stale in-flight pipe E as above, its read end sent on a unix socketpair (64, 65)
//!                      to itself, never received, then 58 and 63 closed: the
//!                      registered file is only in flight
//! epoll-stale proc-elsewhere /proc/self/mountinfo opened at 58, 63 = dup(58), ADD 63 (data
//!                      0xe63), close 63, then a child keeps 58 (and nothing of the epoll)
//!                      and this process closes 58: the registered file is a /proc file
//!                      held by the child only
//! epoll-stale kept-by-parent pipe F (66, 67): 68 = dup(66), ADD 68 (data 0xf68), close 68,
//!                      then a child keeps the epoll and closes 66 and 67 (an eventfd,
//!                      count 3, opened at 68 there) and this process closes the epoll: the
//!                      registered file is held by the parent only (66)
//! epoll-stale sent      pipe A registered as 60 (kept open), pipe B as 61 (closed: its
//!                      file is 52's), then the epoll sent on a unix socketpair (64, 65)
//!                      to itself and closed: the epoll is only in flight
//! epoll-stale sent-elsewhere pipe E registered as 63 (closed), a child keeps 58 (and
//!                      nothing of the epoll), this process closes 58, sends the epoll on
//!                      a socketpair (64, 65) to itself and closes it: in flight, its
//!                      target held by another process
//!   recv        -> ok  (the epoll received from 65, moved to fd 70)
//!   wait        -> ready <data hex,...> (one epoll_wait, timeout 20 ms)
//!   fill P      -> ok  (one byte into pipe P: a, b, c or d)
//!   drain P     -> ok  (reads it back)
//!   fd N        -> <link of fd N> | closed
//!   kids        -> <pid of the child of kept-by-parent>
//!   kid MSG     -> what that child answers to MSG (wait, fd N)
//! ```

use std::io;
use std::path::Path;

use super::kids::{answer_each, exit_child, fork_asked, ChildPipes};
use super::{failed, io_err, sys, unknown, Mode};

const EPOLL: i32 = 70;

/// The pipes by letter: (read end, write end, registered number, data).
const PIPES: [(char, i32, i32, i32, u64); 6] = [
    ('a', 50, 51, 60, 0xa60),
    ('b', 52, 53, 61, 0xb61),
    ('c', 54, 55, 61, 0xc61),
    ('d', 56, 57, 62, 0xd62),
    ('e', 58, 59, 63, 0xe63),
    ('f', 66, 67, 68, 0xf68),
];

/// Opens pipe `letter` at its numbers and registers its read end under its number.
fn register(letter: char) -> io::Result<()> {
    let &(_, read, write, tfd, data) = PIPES.iter().find(|p| p.0 == letter).expect("a pipe");
    let (r, w) = sys::pipe()?;
    sys::move_fd(r, read)?;
    sys::move_fd(w, write)?;
    sys::dup_to(read, tfd)?;
    sys::epoll_add(EPOLL, tfd, libc::EPOLLIN as u32, data)
}

/// Pipe E registered as 63, then 63 closed and its read end (58) kept only by a child that
/// holds nothing of the epoll.
fn register_e_held_by_a_child() -> io::Result<()> {
    register('e')?;
    sys::close(63);
    // The child says when it has closed its copy of the epoll: until then a dump would find
    // the epoll held by two processes.
    let (ready_r, ready_w) = sys::pipe()?;
    // The workload is single-threaded here; the child only makes syscalls.
    if sys::fork()? == 0 {
        sys::close(59);
        sys::close(ready_r);
        sys::close(EPOLL);
        sys::close(ready_w);
        loop {
            // SAFETY: pause takes no arguments; the child waits to be killed.
            unsafe { libc::pause() };
        }
    }
    sys::close(58);
    sys::close(ready_w);
    // End of file once the child closed its end, after the epoll.
    let mut byte = [0u8; 1];
    while sys::read(ready_r, &mut byte)? != 0 {}
    sys::close(ready_r);
    Ok(())
}

/// The shape `shape` made; the child of `kept-by-parent` with its pipes.
fn setup(shape: &str) -> io::Result<Option<(libc::pid_t, ChildPipes)>> {
    sys::move_fd(sys::epoll()?, EPOLL)?;
    match shape {
        "closed" => {
            register('a')?;
            sys::close(60);
        }
        "elsewhere" => {
            register_e_held_by_a_child()?;
        }
        "in-flight" => {
            register('e')?;
            sys::close(63);
            let (a, b) = super::unix::socketpair(libc::SOCK_STREAM)?;
            sys::move_fd(a, 64)?;
            sys::move_fd(b, 65)?;
            super::unix_msg::sendmsg(64, b"e", &[58], None)?;
            sys::close(58);
        }
        "sent" | "sent-elsewhere" => {
            if shape == "sent" {
                register('a')?;
                register('b')?;
                sys::close(61);
            } else {
                register_e_held_by_a_child()?;
            }
            // Not unix::socketpair: its numbers are pipe A's.
            let mut sv = [0i32; 2];
            // SAFETY: socketpair fills our two-int array.
            if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) } < 0
            {
                return Err(io::Error::last_os_error());
            }
            sys::move_fd(sv[0], 64)?;
            sys::move_fd(sv[1], 65)?;
            super::unix_msg::sendmsg(64, b"p", &[EPOLL], None)?;
            sys::close(EPOLL);
        }
        "proc-elsewhere" => {
            let info = sys::open(
                Path::new("/proc/self/mountinfo"),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )?;
            sys::move_fd(info, 58)?;
            sys::dup_to(58, 63)?;
            sys::epoll_add(EPOLL, 63, libc::EPOLLIN as u32, 0xe63)?;
            sys::close(63);
            super::kids::fork_holding(EPOLL, 58, |_| loop {
                // SAFETY: pause takes no arguments; the child waits to be killed.
                unsafe { libc::pause() };
            })?;
        }
        "kept-by-parent" => {
            register('f')?;
            sys::close(68);
            let kid = fork_asked(|questions, answers| {
                sys::close(66);
                sys::close(67);
                let reused = sys::eventfd(3, libc::EFD_CLOEXEC).and_then(|e| sys::move_fd(e, 68));
                if let Err(e) = reused {
                    exit_child("epoll-stale child", Err(e));
                }
                answer_each(questions, answers, |msg| {
                    let words: Vec<&str> = msg.split_whitespace().collect();
                    match words.split_first() {
                        Some((verb, args)) => answer(verb, args).unwrap_or_else(|e| e),
                        None => "empty question".into(),
                    }
                });
                exit_child("epoll-stale child", Ok(()))
            })?;
            sys::close(EPOLL);
            return Ok(Some(kid));
        }
        _ => {
            register('b')?;
            sys::close(61);
            register('c')?;
            register('d')?;
            sys::close(62);
            sys::move_fd(sys::eventfd(7, libc::EFD_CLOEXEC)?, 62)?;
        }
    }
    Ok(None)
}

struct EpollStale {
    /// The child of `kept-by-parent`, asked over its pipes.
    kid: Option<(libc::pid_t, ChildPipes)>,
}

const SHAPES: [&str; 8] = [
    "closed",
    "reused",
    "elsewhere",
    "in-flight",
    "sent",
    "sent-elsewhere",
    "proc-elsewhere",
    "kept-by-parent",
];

/// `epoll-stale closed|reused|elsewhere|in-flight|proc-elsewhere|kept-by-parent`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    match args {
        [shape] if SHAPES.contains(&shape.as_str()) => {
            let kid = setup(shape).map_err(failed("epoll-stale"))?;
            Ok(Box::new(EpollStale { kid }))
        }
        _ => Err(format!("usage: epoll-stale {}", SHAPES.join("|"))),
    }
}

/// What the process holding the epoll answers: `wait` and `fd N`.
fn answer(verb: &str, args: &[&str]) -> Result<String, String> {
    match (verb, args) {
        ("wait", []) => {
            let mut ready = sys::epoll_wait(EPOLL, 20).map_err(io_err)?;
            ready.sort_unstable();
            let list: Vec<String> = ready.iter().map(|d| format!("{d:x}")).collect();
            Ok(format!("ready {}", list.join(",")))
        }
        ("fd", [n]) => {
            let n: i32 = n.parse().map_err(|_| format!("bad fd {n:?}"))?;
            Ok(std::fs::read_link(format!("/proc/self/fd/{n}"))
                .map_or_else(|_| "closed".into(), |l| l.display().to_string()))
        }
        _ => unknown(verb),
    }
}

/// The write end of pipe `letter`.
fn pipe_of(letter: &str) -> Result<(i32, i32), String> {
    PIPES
        .iter()
        .find(|p| p.0.to_string() == letter)
        .map(|p| (p.1, p.2))
        .ok_or_else(|| format!("no pipe {letter:?}"))
}

impl Mode for EpollStale {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("fill", [p]) => {
                sys::write_all(pipe_of(p)?.1, b"x").map_err(io_err)?;
                Ok("ok".into())
            }
            ("drain", [p]) => {
                let mut b = [0u8; 1];
                sys::read(pipe_of(p)?.0, &mut b).map_err(io_err)?;
                Ok("ok".into())
            }
            ("recv", []) => {
                let (_, fds, _) = super::unix_msg::recvmsg(65).map_err(io_err)?;
                let [fd] = fds[..] else {
                    return Err(format!("received {} fds, not one", fds.len()));
                };
                sys::move_fd(fd, EPOLL).map_err(io_err)?;
                Ok("ok".into())
            }
            ("kids", []) => match &self.kid {
                Some((pid, _)) => Ok(pid.to_string()),
                None => Err("no child in this shape".into()),
            },
            ("kid", [_, ..]) => match &self.kid {
                Some((_, pipes)) => pipes.ask(&args.join(" ")).map_err(io_err),
                None => Err("no child in this shape".into()),
            },
            _ => answer(verb, args),
        }
    }
}
