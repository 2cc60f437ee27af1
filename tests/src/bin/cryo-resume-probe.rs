//! A small application that uses cryo-resume: `cryo-resume-probe DIR [SIGNO]`.
//!
//! Opens the notification channel (and, with SIGNO, a signalfd for that signal, blocked),
//! writes `DIR/ready` as `CHANNEL_FD MARKER_FD` once both exist, then blocks in poll on them
//! and appends to `DIR/log` one line per thing it receives:
//!
//! ```text
//! event {"checkpoint_id":...}      a record read with Listener::next_event, re-encoded
//! signal SIGNO VALUE CODE          ssi_signo, ssi_int (sival_int), ssi_code
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::SigSet;
use nix::sys::signalfd::{SfdFlags, SignalFd};

fn append(log: &Path, line: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open log");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("write log");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: cryo-resume-probe DIR [SIGNO]"));
    let signo: Option<i32> = args.next().map(|s| s.parse().expect("SIGNO"));
    // Its own session, so cryo can dump it without --shell-job; failure (already a leader)
    // is harmless.
    let _ = nix::unistd::setsid();
    let sigfd = signo.map(|signo| {
        // Realtime signals are not in nix's Signal enum: build the set by number.
        let mut raw = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the sigset_t we own; sigaddset then updates it.
        let raw = unsafe {
            libc::sigemptyset(raw.as_mut_ptr());
            assert_eq!(
                libc::sigaddset(raw.as_mut_ptr(), signo),
                0,
                "signal {signo}"
            );
            raw.assume_init()
        };
        // SAFETY: `raw` was initialised by sigemptyset/sigaddset.
        let set = unsafe { SigSet::from_sigset_t_unchecked(raw) };
        set.thread_block().expect("block the signal");
        SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .expect("signalfd")
    });
    let mut listener = cryo_resume::Listener::open().expect("cryo_resume::Listener::open");
    let log = dir.join("log");
    let tmp = dir.join("ready.tmp");
    fs::write(
        &tmp,
        format!("{} {}\n", listener.as_raw_fd(), listener.marker_fd()),
    )
    .expect("write ready");
    fs::rename(&tmp, dir.join("ready")).expect("rename ready");
    loop {
        let mut fds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if let Some(sfd) = &sigfd {
            fds.push(PollFd::new(sfd.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
        loop {
            match listener.next_event() {
                Ok(Some(ev)) => append(
                    &log,
                    &format!("event {}", serde_json::to_string(&ev).expect("encode")),
                ),
                Ok(None) => break,
                Err(e) => append(&log, &format!("error {e}")),
            }
        }
        if let Some(sfd) = &sigfd {
            while let Ok(Some(info)) = sfd.read_signal() {
                append(
                    &log,
                    &format!(
                        "signal {} {} {}",
                        info.ssi_signo, info.ssi_int, info.ssi_code
                    ),
                );
            }
        }
    }
}
