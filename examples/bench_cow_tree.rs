//! A pre-fork server checkpointed and restored: a parent fills MIB MiB of private memory and
//! forks WORKERS workers that share it copy-on-write (every third writes 4 pages). Prints
//! dump and restore times, the image size and the tree's Pss (the sum over its processes)
//! before the dump and after the restore, for this build's `cryo` and, beside it, for the
//! `cryo` binary named by `CRYO_BASE` (a build of an older commit), images in /dev/shm.
//!
//! `CRYO_BASE=/path/to/old/cryo cargo run -p cryo-examples --example bench-cow-tree
//!  [-- MIB WORKERS ROUNDS]`

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

const PAGE: usize = 4096;

/// Forks the server: it fills `mib` MiB, forks `workers` workers, and says their pids (and
/// its own) on a pipe once every worker wrote its pages. Returns the tree's pids, root first.
fn spawn_tree(mib: usize, workers: usize) -> Vec<Pid> {
    let (rd, wr): (OwnedFd, OwnedFd) = nix::unistd::pipe().expect("pipe");
    // SAFETY: this example is single-threaded; the child only maps memory, forks, writes to
    // pipes and pauses.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(rd);
            // A session of its own: a dump refuses a process whose session leader it lacks.
            let _ = nix::unistd::setsid();
            let mut mem = vec![0u8; mib << 20];
            for (i, word) in mem.chunks_exact_mut(8).enumerate() {
                word.copy_from_slice(&(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_ne_bytes());
            }
            let mut pids = vec![std::process::id().to_string()];
            for k in 0..workers {
                let (ready_rd, ready_wr): (OwnedFd, OwnedFd) = nix::unistd::pipe().expect("pipe");
                // SAFETY: as above, single-threaded.
                match unsafe { fork() }.expect("fork") {
                    ForkResult::Child => {
                        if k.is_multiple_of(3) {
                            let pages = mem.len() / PAGE;
                            for j in 0..4 {
                                mem[((k * 131 + j * 4099 + 7) % pages) * PAGE] = 0xc0;
                            }
                        }
                        drop(ready_wr);
                        loop {
                            nix::unistd::pause();
                            std::hint::black_box(&mem);
                        }
                    }
                    ForkResult::Parent { child } => {
                        drop(ready_wr);
                        // EOF once the worker is past its writes (its end closed).
                        let _ = std::fs::File::from(ready_rd).read(&mut [0u8; 1]);
                        pids.push(child.to_string());
                    }
                }
            }
            let mut w = std::fs::File::from(wr);
            let _ = w.write_all(format!("{}\n", pids.join(" ")).as_bytes());
            drop(w);
            loop {
                nix::unistd::pause();
                std::hint::black_box(&mem);
            }
        }
        ForkResult::Parent { .. } => {
            drop(wr);
            // Up to the newline: the workers hold the pipe's other end too, so no EOF comes.
            let mut text = Vec::new();
            let mut pipe = std::fs::File::from(rd);
            let mut byte = [0u8; 1];
            while text.last() != Some(&b'\n') {
                pipe.read_exact(&mut byte).expect("tree ready");
                text.push(byte[0]);
            }
            String::from_utf8_lossy(&text)
                .trim_end()
                .split(' ')
                .map(|p| Pid::from_raw(p.parse().expect("pid")))
                .collect()
        }
    }
}

/// The tree's Pss in MiB.
fn pss_mib(pids: &[Pid]) -> f64 {
    let kib: u64 = pids
        .iter()
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
                .expect("smaps_rollup")
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .expect("Pss")
        })
        .sum();
    kib as f64 / 1024.0
}

/// Kills the tree and reaps every process of it (this process is their subreaper).
fn kill_tree(pids: &[Pid]) {
    for &p in pids {
        let _ = kill(p, Signal::SIGKILL);
    }
    while waitpid(None, None).is_ok() {}
}

fn run(cryo: &Path, args: &[&str]) -> Duration {
    let started = Instant::now();
    let out = Command::new(cryo).args(args).output().expect("run cryo");
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        cryo.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

fn dir_mib(dir: &Path) -> f64 {
    let bytes: u64 = std::fs::read_dir(dir)
        .expect("image dir")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    bytes as f64 / (1 << 20) as f64
}

struct Figures {
    dump: Duration,
    restore: Duration,
    image_mib: f64,
    pss_before: f64,
    pss_after: f64,
}

fn round(cryo: &Path, mib: usize, workers: usize) -> Figures {
    let pids = spawn_tree(mib, workers);
    let pss_before = pss_mib(&pids);
    let dir = tempfile::Builder::new()
        .prefix("cryo-bench-cow-")
        .tempdir_in("/dev/shm")
        .expect("image dir");
    let d = dir.path().to_str().expect("path");
    let root = pids[0].to_string();
    let dump = run(cryo, &["dump", "-t", &root, "-D", d]);
    while waitpid(None, None).is_ok() {}
    let image_mib = dir_mib(dir.path());
    let restore = run(cryo, &["restore", "-D", d, "--detach"]);
    let pss_after = pss_mib(&pids);
    kill_tree(&pids);
    Figures {
        dump,
        restore,
        image_mib,
        pss_before,
        pss_after,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num =
        |i: usize, default: usize| args.get(i).map_or(default, |a| a.parse().expect("number"));
    let (mib, workers, rounds) = (num(1, 256), num(2, 8), num(3, 3));
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let this = std::env::var_os("CRYO")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("own path");
            exe.parent()
                .and_then(Path::parent)
                .expect("target dir")
                .join("cryo")
        });
    let mut builds = vec![("this", this)];
    if let Some(base) = std::env::var_os("CRYO_BASE") {
        builds.push(("base", PathBuf::from(base)));
    }
    println!(
        "pre-fork server: {mib} MiB shared copy-on-write by 1 + {workers} processes, \
         best of {rounds} (ms, MiB)"
    );
    println!("build  dump   restore  image   Pss before  Pss after");
    for (name, cryo) in &builds {
        let figures: Vec<Figures> = (0..rounds).map(|_| round(cryo, mib, workers)).collect();
        let best = |f: fn(&Figures) -> Duration| {
            figures
                .iter()
                .map(f)
                .min()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3
        };
        let last = figures.last().expect("one round");
        println!(
            "{name:5}  {:5.0}  {:7.0}  {:6.0}  {:10.1}  {:9.1}",
            best(|f| f.dump),
            best(|f| f.restore),
            last.image_mib,
            last.pss_before,
            last.pss_after
        );
    }
}
