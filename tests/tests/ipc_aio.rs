//! AIO contexts (io_setup) come back at their addresses, in their slots, with the
//! completions the process had not reaped still in the ring; the restored process submits and
//! reaps on its old context ids. Refused at dump, naming the pid and the ring, the process
//! running on as before: a ring a child inherited across fork (it has no context), and a ring
//! that took a completion while the dump ran (a request was in flight).
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::os::unix::fs::PermissionsExt;

use cryo_tests::{cryo_bin, Workload};

/// Contexts in slots 0 and 2 (slot 1's context destroyed before the dump; slot 2's ring two
/// pages long, made read-only by the process) come back at their ids with their ring headers, and work: a read submitted
/// and reaped on each.
#[test]
fn aio_contexts_come_back_at_their_addresses_in_their_slots_and_work() {
    cryo_bin();
    let mut w = Workload::spawn("aio", &[]);
    assert_eq!(w.cmd("setup"), "1");
    assert_eq!(w.cmd("setup 100"), "2");
    assert_eq!(w.cmd("read 2"), "4096");
    assert_eq!(w.cmd("destroy 1"), "ok");
    assert_eq!(w.cmd("protect 2"), "ok");
    assert_eq!(w.cmd("perms 2"), "r--s");
    let ctx = [w.cmd("ctx 0"), w.cmd("ctx 2")];
    let ring = [w.cmd("ring 0"), w.cmd("ring 2")];
    assert!(
        ring[1].starts_with("2 255 "),
        "slot and size of context 2: {}",
        ring[1]
    );
    w.dump_and_restore();
    assert_eq!([w.cmd("ctx 0"), w.cmd("ctx 2")], ctx);
    assert_eq!(
        [w.cmd("ring 0"), w.cmd("ring 2")],
        ring,
        "ring headers (id nr head tail)"
    );
    assert_eq!(
        [w.cmd("perms 0"), w.cmd("perms 2")],
        ["rw-s", "r--s"],
        "the rings' protections"
    );
    assert_eq!(w.cmd("read 0"), "4096", "a read on the old context id");
    assert_eq!(w.cmd("read 2"), "4096", "a read on the old context id");
    // A context made after the restore takes the free slot 1, as it would have before.
    assert_eq!(w.cmd("setup"), "3");
    assert!(w.cmd("ring 3").starts_with("1 "), "{}", w.cmd("ring 3"));
    assert_eq!(w.cmd("read 3"), "4096");
}

/// Completions not reaped at dump, in a ring whose tail has wrapped past its end, come back
/// in order with their data and results; a --leave-running dump before leaves the original
/// context exactly as it was.
#[test]
fn completions_not_reaped_come_back_in_the_ring_in_order() {
    cryo_bin();
    let mut w = Workload::spawn("aio", &[]);
    // 127 events in the ring: after 1 + 124 reads reaped and 5 pending, head 125, tail 3.
    assert_eq!(w.cmd("spin 124"), "ok");
    assert_eq!(w.cmd("pending 5"), "5");
    let ring = w.cmd("ring");
    assert_eq!(ring, "0 127 125 3");

    let kept = w.path("kept");
    w.dump(&kept, &["--leave-running"]).assert_success();
    assert_eq!(w.cmd("ring"), ring, "--leave-running changed the ring");
    let shown = w.show(&kept, false);
    shown.assert_success();
    let ctx = w.cmd("ctx");
    assert!(
        shown.stdout.contains(&format!(
            "aio context {ctx}: slot 0, 127 events, head 125, tail 3 (5 not reaped)"
        )),
        "{shown}"
    );

    w.dump_and_restore();
    assert_eq!(w.cmd("ring"), ring, "ring header after restore");
    assert_eq!(
        w.cmd("reap 5"),
        "100:4096 101:4096 102:4096 103:4096 104:4096",
        "the completions not reaped at dump"
    );
    assert_eq!(w.cmd("ring"), "0 127 3 3");
    // The slots they held are free again: a full ring's worth of reads goes through.
    assert_eq!(w.cmd("spin 130"), "ok");
    assert_eq!(w.cmd("read"), "4096");
}

/// A forked child has its parent's ring mapped but no context: refused naming the child and
/// the ring; both processes run on, the parent's context working.
#[test]
fn a_ring_inherited_across_fork_is_refused_by_name_and_the_processes_kept() {
    cryo_bin();
    let mut w = Workload::spawn("aio", &[]);
    let ctx = w.cmd("ctx");
    let kid: i32 = w.cmd("fork").parse().expect("a pid");
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {kid}"))
        .assert_stderr_mentions(&format!("AIO ring at {ctx}"))
        .assert_stderr_mentions("no AIO context");
    w.assert_untouched();
    assert!(cryo_tests::pid_exists(kid), "the child is gone");
    assert_eq!(
        w.cmd("read"),
        "4096",
        "the context works after the refused dump"
    );
    w.kill_original();
}

/// A poll request completes while the dump runs (an action script writes to its pipe after
/// the images are written): refused naming the pid, the ring and the count; the process runs
/// on and reaps that completion.
#[test]
fn a_completion_during_the_dump_is_refused_and_the_process_keeps_it() {
    cryo_bin();
    let mut w = Workload::spawn("aio", &[]);
    let ctx = w.cmd("ctx");
    let wr = w.cmd("poll");
    let script = w.path("wake.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$CRYO_HOOK_STAGE\" = post-dump ] && echo x > /proc/{}/fd/{wr}\nexit 0\n",
            w.pid()
        ),
    )
    .expect("write the script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = w.dump(
        &w.path("img"),
        &["--action-script", script.to_str().unwrap()],
    );
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {}", w.pid()))
        .assert_stderr_mentions(&format!("ring at {ctx}"))
        .assert_stderr_mentions("1 request(s) completed while the dump ran");
    w.assert_untouched();
    assert_eq!(
        w.cmd("reap 1"),
        format!("9:{}", libc::POLLIN | libc::POLLRDNORM),
        "the poll's completion"
    );
    assert_eq!(w.cmd("read"), "4096");
    w.kill_original();
}

/// A ring as full as the kernel lets it be (reads until io_submit says EAGAIN), its tail
/// wrapped past its end, comes back whole: the restored process reaps every completion in
/// order, then submits on.
#[test]
fn a_full_ring_comes_back_whole() {
    cryo_bin();
    let mut w = Workload::spawn("aio", &[]);
    assert_eq!(w.cmd("spin 60"), "ok");
    let held: u64 = w.cmd("pending 200").parse().expect("a count");
    assert!((100..127).contains(&held), "{held} reads held");
    let ring = w.cmd("ring");
    w.dump_and_restore();
    assert_eq!(w.cmd("ring"), ring, "ring header after restore");
    let all: Vec<String> = (0..held).map(|k| format!("{}:4096", 100 + k)).collect();
    assert_eq!(w.cmd(&format!("reap {held}")), all.join(" "));
    assert_eq!(w.cmd("spin 130"), "ok");
}
