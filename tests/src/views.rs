//! Byte reads and writes through the views of the shared memory workloads (`shared-memory`,
//! `sysv-shm`): by the workload itself ([`ME`]) or by its child ([`KID`]).

use crate::Workload;

/// Commands to the workload itself.
pub const ME: &str = "";
/// Commands to the workload's child.
pub const KID: &str = "kid ";

/// `who` writes `byte` at offset `off` of view `view`.
#[track_caller]
pub fn write(w: &Workload, who: &str, view: &str, off: usize, byte: u8) {
    assert_eq!(
        w.cmd(&format!("{who}w {view} {off} {byte}")),
        "ok",
        "{who}w {view} {off}"
    );
}

/// The byte `who` reads at offset `off` of view `view`.
#[track_caller]
pub fn read(w: &Workload, who: &str, view: &str, off: usize) -> u8 {
    let reply = w.cmd(&format!("{who}r {view} {off}"));
    reply
        .parse()
        .unwrap_or_else(|_| panic!("{who}r {view} {off}: {reply}"))
}
