//! `events`: one fd of each event kind at a known number: epoll watching an eventfd, a
//! timerfd and a signalfd; a sealed memfd; inotify watches.
//!
//! ```text
//! events                     wait   -> ready <data,...> (one epoll_wait, timeout 20 ms)
//!                            count  -> <eventfd counter>    add N -> ok
//!                            timer  -> <expirations read so far> (reads the timerfd)
//!                            sig    -> <signo> | none       (reads the signalfd)
//!                            memfd  -> <contents> <seals>
//!                            touch  -> <wd>:<mask hex>,...  (writes DIR/w/watched, reads inotify)
//!                            (fd 40 epoll watching 41 eventfd (count 5, semaphore), 42
//!                            timerfd (CLOCK_MONOTONIC, every 10 ms), 43 signalfd (SIGUSR1,
//!                            blocked), data = fd number; 44 memfd "cryo-test" sealed
//!                            SHRINK|GROW; 45 inotify: wd 1 on DIR/w, wd 3 on DIR/w/watched:
//!                            not on DIR, whose control FIFOs would queue events all the
//!                            time, and a dump refuses unread events)
//! ```

use std::io;
use std::path::{Path, PathBuf};

use super::{failed, io_err, sys, unknown, Mode};

/// The fds of the `events` mode.
mod ev {
    pub const EPOLL: i32 = 40;
    pub const EVENTFD: i32 = 41;
    pub const TIMERFD: i32 = 42;
    pub const SIGNALFD: i32 = 43;
    pub const MEMFD: i32 = 44;
    pub const INOTIFY: i32 = 45;
}

/// Sets up the fds of the `events` mode.
fn setup(dir: &Path) -> io::Result<()> {
    let place = |fd: io::Result<i32>, want: i32| sys::move_fd(fd?, want);
    place(sys::epoll(), ev::EPOLL)?;
    place(
        sys::eventfd(5, libc::EFD_SEMAPHORE | libc::EFD_NONBLOCK),
        ev::EVENTFD,
    )?;
    place(sys::timerfd(10_000_000), ev::TIMERFD)?;
    sys::block_signal(libc::SIGUSR1)?;
    place(sys::signalfd(libc::SIGUSR1), ev::SIGNALFD)?;
    for fd in [ev::EVENTFD, ev::TIMERFD, ev::SIGNALFD] {
        sys::epoll_add(ev::EPOLL, fd, libc::EPOLLIN as u32, fd as u64)?;
    }
    place(sys::memfd("cryo-test"), ev::MEMFD)?;
    sys::write_all(ev::MEMFD, b"memfd-contents")?;
    sys::add_seals(ev::MEMFD, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW)?;
    place(sys::inotify(), ev::INOTIFY)?;
    let dir = &dir.join("w");
    std::fs::create_dir(dir)?;
    let watched = dir.join("watched");
    let gap = dir.join("gap");
    std::fs::write(&watched, b"")?;
    std::fs::write(&gap, b"")?;
    let mask = libc::IN_MODIFY | libc::IN_CLOSE_WRITE;
    assert_eq!(sys::add_watch(ev::INOTIFY, dir, mask)?, 1);
    let g = sys::add_watch(ev::INOTIFY, &gap, mask)?;
    sys::rm_watch(ev::INOTIFY, g)?;
    assert_eq!(sys::add_watch(ev::INOTIFY, &watched, mask)?, 3);
    // Drop the IN_IGNORED of the removed watch.
    let _ = sys::read_available(ev::INOTIFY, usize::MAX);
    Ok(())
}

struct Events {
    /// Timer expirations read so far.
    timer_total: u64,
    dir: PathBuf,
}

/// `events`
pub fn start(_args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    setup(dir).map_err(failed("events"))?;
    Ok(Box::new(Events {
        timer_total: 0,
        dir: dir.to_owned(),
    }))
}

impl Mode for Events {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let Self { timer_total, dir } = self;
        match (verb, args) {
            ("wait", []) => {
                let mut ready = sys::epoll_wait(ev::EPOLL, 20).map_err(io_err)?;
                ready.sort_unstable();
                let list: Vec<String> = ready.iter().map(u64::to_string).collect();
                Ok(format!("ready {}", list.join(",")))
            }
            ("count", []) => {
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", ev::EVENTFD))
                    .map_err(io_err)?;
                let hex = info
                    .lines()
                    .find_map(|l| l.strip_prefix("eventfd-count:"))
                    .ok_or("no eventfd-count")?;
                Ok(u64::from_str_radix(hex.trim(), 16)
                    .map_err(|e| e.to_string())?
                    .to_string())
            }
            ("add", [n]) => {
                let n: u64 = n.parse().map_err(|_| format!("bad number {n:?}"))?;
                sys::write_all(ev::EVENTFD, &n.to_ne_bytes()).map_err(io_err)?;
                Ok("ok".into())
            }
            ("timer", []) => {
                let data = sys::read_available(ev::TIMERFD, 8).map_err(io_err)?;
                if data.len() == 8 {
                    *timer_total += u64::from_ne_bytes(data.try_into().expect("8 bytes"));
                }
                Ok(timer_total.to_string())
            }
            ("sig", []) => {
                let data = sys::read_available(ev::SIGNALFD, 128).map_err(io_err)?;
                if data.len() < 4 {
                    return Ok("none".into());
                }
                Ok(u32::from_ne_bytes(data[..4].try_into().expect("4 bytes")).to_string())
            }
            ("memfd", []) => {
                let mut buf = vec![0u8; 256];
                let n = sys::pread_all(ev::MEMFD, &mut buf).map_err(io_err)?;
                let seals = sys::get_seals(ev::MEMFD).map_err(io_err)?;
                Ok(format!("{} {seals}", String::from_utf8_lossy(&buf[..n])))
            }
            ("touch", []) => {
                std::fs::write(dir.join("w/watched"), b"x").map_err(io_err)?;
                let data = sys::read_available(ev::INOTIFY, 4096).map_err(io_err)?;
                let mut out = Vec::new();
                let mut off = 0;
                while off + 16 <= data.len() {
                    let wd = i32::from_ne_bytes(data[off..off + 4].try_into().expect("4"));
                    let mask = u32::from_ne_bytes(data[off + 4..off + 8].try_into().expect("4"));
                    let len = u32::from_ne_bytes(data[off + 12..off + 16].try_into().expect("4"));
                    out.push(format!("{wd}:{mask:x}"));
                    off += 16 + len as usize;
                }
                Ok(out.join(","))
            }
            _ => unknown(verb),
        }
    }
}
