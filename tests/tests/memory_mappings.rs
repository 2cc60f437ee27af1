//! A shared file mapping comes back backed by its file opened as the process had it: a
//! read-only mapping of a file opened for writing can still be made writable with mprotect
//! (and writes reach the file), one of a file opened read-only still cannot. Checked by the
//! restored process itself.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, Workload};

#[test]
fn mprotect_write_on_a_shared_file_mapping_works_exactly_when_it_did() {
    cryo_bin();
    // What the kernel does before any dump.
    let w = Workload::spawn("mapping-access", &[]);
    assert_eq!(w.cmd("protect rw"), "ok");
    assert_eq!(w.cmd("protect ro"), "EACCES");
    drop(w);

    let mut w = Workload::spawn("mapping-access", &[]);
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_background(&img);
    assert_eq!(w.cmd("protect rw"), "ok", "the file opened for writing");
    assert_eq!(w.cmd("write rw 10 77"), "ok");
    let data = std::fs::read(w.path("rw.dat")).expect("rw.dat");
    assert_eq!(data[10], 77, "the write did not reach the file");
    assert_eq!(w.cmd("protect ro"), "EACCES", "the file opened read-only");
    w.kill_restored();
}
