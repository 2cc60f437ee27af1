//! A Rust application that learns it was restored: the cryo-resume listener in a poll loop
//! next to the application's own work (here a once-a-second tick).
//!
//! ```text
//! cargo run -p cryo-examples --example resume-rust
//! cryo dump -t PID -D img && cryo restore -D img     # the app prints what cryo tells it
//! ```

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listener = cryo_resume::Listener::open()?;
    println!(
        "pid {} listening on fd {}",
        std::process::id(),
        std::os::fd::AsRawFd::as_raw_fd(&listener)
    );
    let mut next_tick = Instant::now();
    let mut ticks = 0u64;
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let timeout =
            PollTimeout::try_from(wait.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        // Drain every record that arrived.
        loop {
            match listener.next_event() {
                Ok(Some(ev)) => {
                    println!(
                        "restored from {} after {} ms; {} broken connection(s)",
                        ev.checkpoint_id,
                        ev.downtime_ms,
                        ev.broken.len()
                    );
                    for b in &ev.broken {
                        // cryo already failed these sockets: a read on them errors out at once.
                        println!("  fd {} {} -> {}: {:?}", b.fd, b.local, b.remote, b.reason);
                    }
                }
                Ok(None) => break,
                Err(e) => eprintln!("{e}"),
            }
        }
        if Instant::now() >= next_tick {
            ticks += 1;
            println!("tick {ticks}");
            next_tick += Duration::from_secs(1);
        }
    }
}
