//! An AIO context (io_setup, its ring mapped as "/[aio]") is refused at dump with the pid and
//! the ring named and what to do, and the process runs on and uses its context; it is not
//! restored yet (issue 13).
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, Workload};

#[test]
fn an_aio_context_is_refused_by_name_and_the_process_kept() {
    cryo_bin();
    let mut w = Workload::spawn("aio", &[]);
    let ctx = w.cmd("ctx");
    assert_eq!(w.cmd("read"), "4096");
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {}", w.pid()))
        .assert_stderr_mentions(&format!("AIO context (io_setup, its ring at {ctx})"));
    assert!(w.original_alive(), "a refused dump killed the process");
    assert_eq!(
        w.cmd("read"),
        "4096",
        "the context works after the refused dump"
    );
    w.kill_original();
}
