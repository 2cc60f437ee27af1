//! Checks shared by the tests of the `socks` workload (sockets_inet.rs, sockets_udp.rs): a
//! shutdown state that must survive a dump and restore, whatever the kind of socket.

use crate::Workload;

/// Shuts connected socket `s` of `w` for writing, then checks a send fails with EPIPE before
/// and after a dump and restore. Kills the restored workload.
#[track_caller]
pub fn shut_for_writing_survives_restore(w: &mut Workload, s: &str) {
    assert_eq!(w.cmd(&format!("shut {s} wr")), "ok");
    assert!(
        w.cmd(&format!("send {s} x")).contains("os error 32"),
        "EPIPE before"
    );
    w.dump_and_restore();
    assert!(
        w.cmd(&format!("send {s} x")).contains("os error 32"),
        "EPIPE after the restore"
    );
    w.kill_restored();
}

/// Shuts unconnected socket `s` of `w` for reading (ENOTCONN, but the shutdown takes effect),
/// then checks poll reports it the same way after a dump and restore. Kills the restored
/// workload.
#[track_caller]
pub fn shut_for_reading_survives_restore(w: &mut Workload, s: &str) {
    assert!(w.cmd(&format!("shut {s} rd")).contains("os error 107"));
    let polled = w.cmd(&format!("poll {s}"));
    assert!(polled.contains("rdhup"), "{polled}");
    w.dump_and_restore();
    assert_eq!(
        w.cmd(&format!("poll {s}")),
        polled,
        "still shut for reading"
    );
    w.kill_restored();
}
