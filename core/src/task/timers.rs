//! Interval timers (setitimer) and POSIX timers (timer_create): read from /proc and by
//! remote calls in the frozen task, recreated in the restored one with the same ids
//! (PR_TIMER_CREATE_RESTORE_IDS) and the time they had left.

use std::io;

use cryo_proto::image::{ITimer, PosixTimer};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::remote::{Remote, Scratch};
use crate::restore::error::RestoreError;
use crate::sys::ptrace as pt;

const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
const SIGEV_SIGNAL: i32 = 0;
const SIGEV_NONE: i32 = 1;
const SIGEV_THREAD_ID: i32 = 4;

fn words(raw: &[u8]) -> Vec<u64> {
    raw.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

/// The three interval timers that are armed, asked of the task itself (in one stop).
pub fn dump_itimers(pid: Pid, remote: &Remote, scratch: &Scratch) -> Result<Vec<ITimer>> {
    // struct itimerval: it_interval {sec, usec}, it_value {sec, usec}.
    const ITIMERVAL_LEN: usize = 32;
    let raw = scratch
        .batch_reading(remote, 3, ITIMERVAL_LEN, |which, slot| {
            (libc::SYS_getitimer, [which as u64, slot, 0, 0, 0, 0])
        })
        .map_err(|e| Error::sys(pid, format!("getitimer({})", e.index), e.error))?;
    let mut out = Vec::new();
    for (which, raw) in (0..).zip(raw.chunks_exact(ITIMERVAL_LEN)) {
        let w = words(raw);
        let interval_us = w[0] * 1_000_000 + w[1];
        let value_us = w[2] * 1_000_000 + w[3];
        if value_us != 0 || interval_us != 0 {
            out.push(ITimer {
                which,
                value_us,
                interval_us,
            });
        }
    }
    Ok(out)
}

/// Every POSIX timer of the task: /proc/PID/timers for how it was made, timer_gettime in the
/// task for where it stands (all in one stop).
pub fn dump_posix(pid: Pid, remote: &Remote, scratch: &Scratch) -> Result<Vec<PosixTimer>> {
    let text = std::fs::read_to_string(crate::proc::dir(pid).join("timers"))
        .map_err(|e| Error::sys(pid, "read /proc/PID/timers", e))?;
    let mut timers = parse_proc_timers(&text)
        .ok_or_else(|| Error::target(pid, format!("cannot parse /proc/{pid}/timers")))?;
    refuse_gone_targets(pid, &timers)?;
    // struct itimerspec: it_interval {sec, nsec}, it_value {sec, nsec}.
    const ITIMERSPEC_LEN: usize = 32;
    let raw = scratch
        .batch_reading(remote, timers.len(), ITIMERSPEC_LEN, |i, slot| {
            (
                libc::SYS_timer_gettime,
                [timers[i].id as u64, slot, 0, 0, 0, 0],
            )
        })
        .map_err(|e| {
            let id = timers.get(e.index).map_or(-1, |t| t.id);
            Error::sys(pid, format!("timer_gettime({id})"), e.error)
        })?;
    for (t, raw) in timers.iter_mut().zip(raw.chunks_exact(ITIMERSPEC_LEN)) {
        let w = words(raw);
        t.interval_ns = w[0] * 1_000_000_000 + w[1];
        t.value_ns = w[2] * 1_000_000_000 + w[3];
    }
    Ok(timers)
}

/// Refuses a timer a restore could not make again (timer_create: EINVAL): one notifying a
/// thread of the process that has ended (SIGEV_THREAD_ID), one on the CPU-time clock of a
/// process or thread that has ended (clock_getcpuclockid of a child reaped since). The pids
/// are checked where the process's PID namespace is cryo's.
fn refuse_gone_targets(pid: Pid, timers: &[PosixTimer]) -> Result<()> {
    let dir = crate::proc::dir(pid);
    use std::os::unix::fs::MetadataExt;
    let in_cryos_pid_namespace = std::fs::metadata(dir.join("ns/pid"))
        .ok()
        .zip(std::fs::metadata("/proc/self/ns/pid").ok())
        .is_some_and(|(theirs, ours)| theirs.ino() == ours.ino());
    for t in timers {
        if t.notify == SIGEV_THREAD_ID && !dir.join(format!("task/{}", t.notify_tid)).exists() {
            return Err(Error::target(
                pid,
                format!(
                    "POSIX timer {} notifies thread {}, which has ended: a restore could not \
                     make it again (timer_create: EINVAL)",
                    t.id, t.notify_tid
                ),
            ));
        }
        // A CPU-time clock of pid P: ~P << 3 | per-thread bit (4) | kind (the kernel's
        // CPUCLOCK_*); negative.
        if t.clockid < 0 && in_cryos_pid_namespace {
            let of = !(t.clockid >> 3);
            let thread = t.clockid & 4 != 0;
            let there = if thread {
                std::path::Path::new(&format!("/proc/{of}/task/{of}")).exists()
                    || dir.join(format!("task/{of}")).exists()
            } else {
                crate::proc::dir(Pid::from_raw(of)).exists()
            };
            if of != 0 && !there {
                return Err(Error::target(
                    pid,
                    format!(
                        "POSIX timer {} is on the CPU-time clock of {} {of}, which has ended: a \
                         restore could not make it again (timer_create: EINVAL)",
                        t.id,
                        if thread { "thread" } else { "process" }
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn parse_proc_timers(text: &str) -> Option<Vec<PosixTimer>> {
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in text.lines() {
        let (key, value) = line.split_once(':')?;
        let value = value.trim();
        match key {
            "ID" => out.push(PosixTimer {
                id: value.parse().ok()?,
                ..Default::default()
            }),
            "signal" => {
                let t = out.last_mut()?;
                let (signo, sigval) = value.split_once('/')?;
                t.signo = signo.parse().ok()?;
                t.sigev_value = u64::from_str_radix(sigval, 16).ok()?;
            }
            "notify" => {
                let t = out.last_mut()?;
                // `HOW/pid.N` or, for SIGEV_THREAD_ID (which the kernel prints as
                // `signal/tid.N`: SIGEV_SIGNAL | SIGEV_THREAD_ID), `HOW/tid.N`.
                let (how, who) = value.split_once('/')?;
                let (target, id) = who.split_once('.')?;
                t.notify = match how {
                    _ if target == "tid" => SIGEV_THREAD_ID,
                    "thread" => SIGEV_THREAD_ID,
                    "signal" => SIGEV_SIGNAL,
                    "none" => SIGEV_NONE,
                    _ => return None,
                };
                t.notify_tid = id.parse().ok()?;
            }
            "ClockID" => out.last_mut()?.clockid = value.parse().ok()?,
            _ => {}
        }
    }
    Some(out)
}

/// Recreates the timers in the restored task (every thread exists already: SIGEV_THREAD_ID
/// timers name one), by calls in its main thread.
pub fn restore(
    remote: &Remote,
    scratch: u64,
    itimers: &[ITimer],
    posix: &[PosixTimer],
) -> Result<()> {
    let pid = remote.tid();
    let sys = |op: String| move |e: io::Error| Error::sys(pid, op, e);
    let split = |ns: u64, unit: u64| [ns / unit, ns % unit];
    // A zero time left would disarm a periodic timer: let it fire at once instead.
    let left = |value: u64, interval: u64| if value == 0 { interval.max(1) } else { value };
    for t in itimers {
        let mut raw = Vec::with_capacity(32);
        for w in split(t.interval_us, 1_000_000)
            .into_iter()
            .chain(split(left(t.value_us, t.interval_us), 1_000_000))
        {
            raw.extend_from_slice(&w.to_ne_bytes());
        }
        pt::write_mem(pid, scratch, &raw).map_err(sys("setitimer".into()))?;
        remote
            .call(libc::SYS_setitimer, &[t.which as u64, scratch, 0])
            .map_err(sys(format!("setitimer({})", t.which)))?;
    }
    if posix.is_empty() {
        return Ok(());
    }
    remote
        .call(libc::SYS_prctl, &[PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0])
        .map_err(sys("prctl(PR_TIMER_CREATE_RESTORE_IDS)".into()))?;
    let mut sorted: Vec<&PosixTimer> = posix.iter().collect();
    sorted.sort_by_key(|t| t.id);
    for t in sorted {
        // struct sigevent (64 bytes): sigev_value, sigev_signo, sigev_notify, thread id.
        let mut ev = vec![0u8; 64];
        ev[0..8].copy_from_slice(&t.sigev_value.to_ne_bytes());
        ev[8..12].copy_from_slice(&t.signo.to_ne_bytes());
        ev[12..16].copy_from_slice(&t.notify.to_ne_bytes());
        ev[16..20].copy_from_slice(&t.notify_tid.to_ne_bytes());
        pt::write_mem(pid, scratch, &ev).map_err(sys("timer_create".into()))?;
        pt::write_mem(pid, scratch + 64, &t.id.to_ne_bytes())
            .map_err(sys("timer_create".into()))?;
        remote
            .call(
                libc::SYS_timer_create,
                &[t.clockid as i64 as u64, scratch, scratch + 64],
            )
            .map_err(sys(format!("timer_create (id {})", t.id)))?;
        let mut got = [0u8; 4];
        pt::read_mem(pid, scratch + 64, &mut got).map_err(sys("timer_create".into()))?;
        if i32::from_ne_bytes(got) != t.id {
            return Err(RestoreError::TimerId {
                pid,
                id: t.id,
                got: i32::from_ne_bytes(got),
            }
            .into());
        }
        let mut its = Vec::with_capacity(32);
        let value = if t.value_ns == 0 && t.interval_ns == 0 {
            0
        } else {
            left(t.value_ns, t.interval_ns)
        };
        for w in split(t.interval_ns, 1_000_000_000)
            .into_iter()
            .chain(split(value, 1_000_000_000))
        {
            its.extend_from_slice(&w.to_ne_bytes());
        }
        pt::write_mem(pid, scratch + 128, &its).map_err(sys("timer_settime".into()))?;
        remote
            .call(libc::SYS_timer_settime, &[t.id as u64, 0, scratch + 128, 0])
            .map_err(sys(format!("timer_settime({})", t.id)))?;
    }
    remote
        .call(libc::SYS_prctl, &[PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0])
        .map_err(sys("prctl(PR_TIMER_CREATE_RESTORE_IDS)".into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_timers() {
        let text = "ID: 0\nsignal: 14/00000000deadbeef\nnotify: signal/pid.42\nClockID: 1\n\
                    ID: 3\nsignal: 34/0000000000000000\nnotify: thread/tid.43\nClockID: 0\n\
                    ID: 4\nsignal: 12/0000000000000000\nnotify: signal/tid.44\nClockID: 1\n";
        let t = parse_proc_timers(text).unwrap();
        assert_eq!(t.len(), 3);
        // What this kernel prints for SIGEV_THREAD_ID (SIGEV_SIGNAL | SIGEV_THREAD_ID).
        assert_eq!(
            (t[2].id, t[2].notify, t[2].notify_tid),
            (4, SIGEV_THREAD_ID, 44)
        );
        assert_eq!((t[0].id, t[0].signo, t[0].sigev_value), (0, 14, 0xdeadbeef));
        assert_eq!(
            (t[0].notify, t[0].notify_tid, t[0].clockid),
            (SIGEV_SIGNAL, 42, 1)
        );
        assert_eq!(
            (t[1].id, t[1].notify, t[1].notify_tid),
            (3, SIGEV_THREAD_ID, 43)
        );
    }
}
