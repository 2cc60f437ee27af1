//! Three hosts on one machine for a migration: network namespaces A (the source), B (the
//! destination) and C (the clients), joined by veths. The service address sits on `lo` of A
//! and B; C routes it to A until a migration's action script flips the route to B.
//!
//! ```text
//!            10.1.1.0/24            10.1.2.0/24
//!   A  ac ---------------- ca  C  cb ---------------- bc  B
//!   lo 10.99.0.1                                          lo 10.99.0.1
//!   ab ------------------------ 10.1.3.0/24 ------------- ba (cryo serve: 10.1.3.2)
//! ```
//!
//! Needs `ip` (iproute2). Used by the migration tests and by the bench-migrate example.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{control_dir, Workload};

/// The service address, on `lo` of A and B.
pub const SERVICE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The destination's address on the A-B link, where `cryo serve` listens.
pub const B_LISTEN: &str = "10.1.3.2";

/// Tells apart the hosts of one process.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// `ip ARGS`, which must succeed.
#[track_caller]
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The three hosts (their namespaces' names); every namespace (and with it every veth)
/// deleted on drop, also when a test fails half-way.
pub struct Hosts {
    /// The source.
    pub a: String,
    /// The destination.
    pub b: String,
    /// The clients.
    pub c: String,
}

impl Hosts {
    /// New namespaces named `PREFIX-PID-N-{a,b,c}`, linked and addressed as the module doc
    /// draws them.
    pub fn new(prefix: &str) -> Self {
        let base = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let h = Hosts {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
            c: format!("{base}-c"),
        };
        for ns in [&h.a, &h.b, &h.c] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        for (one, ns1, other, ns2) in [
            ("ac", &h.a, "ca", &h.c),
            ("bc", &h.b, "cb", &h.c),
            ("ab", &h.a, "ba", &h.b),
        ] {
            ip(&[
                "link", "add", one, "netns", ns1, "type", "veth", "peer", "name", other, "netns",
                ns2,
            ]);
        }
        for (ns, dev, addr) in [
            (&h.a, "ac", "10.1.1.2/24"),
            (&h.c, "ca", "10.1.1.1/24"),
            (&h.b, "bc", "10.1.2.2/24"),
            (&h.c, "cb", "10.1.2.1/24"),
            (&h.a, "ab", "10.1.3.1/24"),
            (&h.b, "ba", "10.1.3.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        let service = SERVICE.to_string();
        for ns in [&h.a, &h.b] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{service}/32"),
                "dev",
                "lo",
            ]);
        }
        // C reaches the service on A; B answers C's clients (their addresses are on the A
        // side of C) through C.
        ip(&["-n", &h.c, "route", "add", &service, "via", "10.1.1.2"]);
        ip(&["-n", &h.b, "route", "add", "10.1.1.0/24", "via", "10.1.2.1"]);
        h
    }

    /// A handle on namespace `ns`.
    fn netns(ns: &str) -> File {
        File::open(format!("/run/netns/{ns}")).expect("netns handle")
    }

    /// Runs `f` on a thread of its own inside namespace `ns` (sockets it makes stay there).
    pub fn spawn_thread<T: Send + 'static>(
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let handle = Self::netns(ns);
        std::thread::spawn(move || {
            nix::sched::setns(handle.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }

    /// As [`Hosts::spawn_thread`], waiting for `f`'s result.
    pub fn inside<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        Self::spawn_thread(ns, f)
            .join()
            .expect("thread in the namespace")
    }

    /// A workload started in namespace `ns`.
    pub fn spawn(ns: &str, mode: &str, args: &[&str]) -> Workload {
        Self::spawn_in(ns, control_dir(), mode, args)
    }

    /// As [`Hosts::spawn`], in a control dir the caller prepared.
    pub fn spawn_in(ns: &str, dir: tempfile::TempDir, mode: &str, args: &[&str]) -> Workload {
        Workload::spawn_configured(dir, mode, args, |cmd| Self::enter(cmd, ns))
    }

    /// Makes `cmd` run in network namespace `ns`, in this mount namespace: the workloads and
    /// the cryo that dumps them see the same mounts (`ip netns exec` would give each its own
    /// /sys, and a dump refuses a process whose mounts are not cryo's).
    pub fn enter(cmd: &mut Command, ns: &str) {
        let handle = Self::netns(ns);
        // SAFETY: setns is async-signal-safe and the closure touches nothing else (the
        // handle was opened before the fork).
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(handle.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
    }

    /// Where C sends the service's packets now: "A" or "B".
    pub fn route(&self) -> &'static str {
        let out = Command::new("ip")
            .args(["-n", &self.c, "route", "get", &SERVICE.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("10.1.2.2") {
            "B"
        } else {
            "A"
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b, &self.c] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
