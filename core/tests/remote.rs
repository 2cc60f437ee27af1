//! Remote calls in a real stopped process (run as root): single calls and batches, one that
//! fails in the middle of a batch, batches larger than one stop's table, batches that write
//! into memory.

use std::io::Read;
use std::process::{Command, Stdio};

use cryo_core::freeze::FrozenTask;
use cryo_core::remote::{BatchCall, Remote, Scratch};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::Pid;

fn call(nr: i64, args: &[u64]) -> BatchCall {
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    (nr, a)
}

#[test]
fn batches_run_in_order_stop_at_a_failure_and_fill_their_own_slots() {
    let mut child = Command::new("sleep")
        .arg("60")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sleep");
    let mut out = child.stdout.take().expect("stdout pipe");
    fcntl(&out, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("non-blocking");
    let pid = Pid::from_raw(child.id() as i32);

    let frozen = FrozenTask::freeze(pid).expect("freeze");
    let mut remote = Remote::borrow(pid).expect("borrow");
    let scratch = Scratch::map(&mut remote).expect("scratch page");
    let site = scratch.batch_site();

    // The byte written is the first of the table: entry 0's syscall number.
    let write_one = call(libc::SYS_write, &[1, site.table, 1]);
    let calls = [
        call(libc::SYS_getpid, &[]),
        write_one,
        call(libc::SYS_close, &[9999]),
        write_one,
    ];
    let err = remote.batch(site, &calls).expect_err("close(9999) fails");
    assert_eq!(err.index, 2, "{err:?}");
    assert_eq!(err.error.raw_os_error(), Some(libc::EBADF), "{err:?}");
    assert_eq!(err.results, vec![pid.as_raw() as u64, 1]);

    // More calls than one stop's table holds: every result, in order.
    let many: Vec<BatchCall> = (0..150).map(|_| call(libc::SYS_getpid, &[])).collect();
    let results = remote.batch(site, &many).expect("150 getpid");
    assert_eq!(results, vec![pid.as_raw() as u64; 150]);
    // Calls writing memory, more than one stop's worth: each its own slot, in order.
    let clocks = scratch
        .batch_reading(&remote, 120, 16, |_, slot| {
            call(
                libc::SYS_clock_gettime,
                &[libc::CLOCK_MONOTONIC as u64, slot],
            )
        })
        .expect("120 clock_gettime");
    let ns: Vec<u128> = clocks
        .chunks_exact(16)
        .map(|t| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes")) as u128;
            word(&t[..8]) * 1_000_000_000 + word(&t[8..])
        })
        .collect();
    assert_eq!(ns.len(), 120);
    assert!(ns[0] > 0 && ns.windows(2).all(|w| w[0] <= w[1]), "{ns:?}");
    assert_eq!(
        remote
            .call(libc::SYS_getppid, &[])
            .expect("a single call after batches"),
        std::process::id() as u64
    );

    scratch.unmap(&remote).expect("unmap scratch");
    remote.release().expect("release");
    drop(frozen);

    let mut got = Vec::new();
    let _ = out.read_to_end(&mut got);
    assert_eq!(
        got,
        vec![libc::SYS_getpid as u8],
        "one write ran, the one after the failure did not"
    );
    // Put back as it was: still sleeping, not killed by our calls.
    assert!(child.try_wait().expect("try_wait").is_none());
    child.kill().expect("kill");
    child.wait().expect("reap");
}
