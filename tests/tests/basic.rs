//! Dump and restore of a simple process: state, pid, exit status, --leave-running,
//! --detach, repeated restores, the image directory itself.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::os::unix::fs::PermissionsExt;

use cryo_tests::{cryo_bin, has_word, parse_fds, Workload};

#[test]
fn counter_continues_from_the_same_value() {
    cryo_bin();
    let mut w = Workload::spawn("counter", &[]);
    for i in 1..=3 {
        assert_eq!(w.cmd("tick"), i.to_string());
    }
    let fds = parse_fds(&w.cmd("fds"));
    w.dump_and_restore();
    // The restored process was blocked in read() of its command FIFO: that
    // this answers at all means the read resumed.
    assert_eq!(w.cmd("get"), "3");
    assert_eq!(w.cmd("tick"), "4");
    assert_eq!(w.cmd("pid"), w.pid().to_string());
    let cryo_pid = w.restore_cryo_pid().unwrap();
    assert_eq!(
        w.cmd("ppid"),
        cryo_pid.to_string(),
        "without --detach the restored process is cryo's child"
    );
    assert_eq!(
        parse_fds(&w.cmd("fds")),
        fds,
        "the same fds at the same numbers"
    );
    assert_eq!(w.status("TracerPid"), "0");
    w.kill_restored();
}

#[test]
fn restore_exits_with_the_restored_status() {
    cryo_bin();
    let mut w = Workload::spawn("counter", &[]);
    w.cmd("tick");
    w.dump_and_restore();
    assert_eq!(w.cmd("exit 7"), "bye");
    let status = w.wait_restore();
    assert_eq!(
        status.code(),
        Some(7),
        "cryo restore exits with its process's status"
    );
}

#[test]
fn leave_running_keeps_the_original_and_the_image_restores() {
    cryo_bin();
    let mut w = Workload::spawn("counter", &[]);
    w.cmd("tick");
    w.cmd("tick");
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert!(w.original_alive(), "--leave-running killed the target");
    w.assert_untouched();
    assert_eq!(w.cmd("tick"), "3", "the original goes on from where it was");
    w.kill_original();
    w.restore_background(&img);
    assert_eq!(w.cmd("tick"), "3", "the image holds the value at dump time");
    w.kill_restored();
}

#[test]
fn the_same_image_restores_twice_in_a_row() {
    cryo_bin();
    let mut w = Workload::spawn("counter", &[]);
    w.cmd("tick");
    let img = w.path("img");
    w.dump_ok(&img);
    for round in 0..2 {
        w.restore_background(&img);
        assert_eq!(w.cmd("tick"), "2", "round {round}");
        assert_eq!(w.cmd("tick"), "3", "round {round}");
        w.kill_restored();
    }
}

#[test]
fn detached_restore_returns_and_the_process_runs_on() {
    cryo_bin();
    let mut w = Workload::spawn("counter", &[]);
    w.cmd("tick");
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_detached(&img);
    assert_eq!(w.cmd("tick"), "2");
    let ppid: i32 = w.cmd("ppid").parse().unwrap();
    assert_ne!(ppid, std::process::id() as i32);
    assert_ne!(ppid, 0);
    assert_eq!(w.status("TracerPid"), "0");
    w.kill_restored();
}

#[test]
fn a_restored_process_dumps_and_restores_again() {
    cryo_bin();
    let mut w = Workload::spawn("counter", &[]);
    w.cmd("tick");
    let img1 = w.path("img1");
    w.dump_ok(&img1);
    w.restore_background(&img1);
    assert_eq!(w.cmd("tick"), "2");
    let img2 = w.path("img2");
    w.dump_ok(&img2);
    w.restore_background(&img2);
    assert_eq!(w.cmd("tick"), "3");
    w.kill_restored();
}

#[test]
fn image_dir_is_private_and_complete() {
    cryo_bin();
    let mut w = Workload::spawn("counter", &[]);
    let img = w.path("img");
    assert!(!img.exists());
    let pid = w.pid();
    w.dump_ok(&img);
    let mode = std::fs::metadata(&img).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "image dir mode {mode:o}");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&img).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(meta.is_file(), "{name} is not a regular file");
        let mode = meta.permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
        names.push(name);
    }
    for want in [
        "inventory.img".to_string(),
        "pstree.img".to_string(),
        "files.img".to_string(),
        format!("core-{pid}.img"),
        format!("mm-{pid}.img"),
        format!("pages-{pid}.img"),
    ] {
        assert!(names.contains(&want), "no {want} among {names:?}");
    }
    let pages = std::fs::metadata(img.join(format!("pages-{pid}.img"))).unwrap();
    assert_eq!(pages.len() % 4096, 0, "pages image is page-aligned");
    for name in ["inventory.img", "pstree.img", "files.img"] {
        let head = std::fs::read(img.join(name)).unwrap();
        assert_eq!(&head[..8], b"CRYOIMG\0", "{name} magic");
    }
}

#[test]
fn show_describes_the_image() {
    cryo_bin();
    let mut w = Workload::spawn("counter", &[]);
    let img = w.path("img");
    let pid = w.pid().to_string();
    w.dump_ok(&img);
    let text = w.show(&img, false);
    text.assert_success();
    assert!(has_word(&text.stdout, &pid), "show names the pid:\n{text}");
    let head = std::fs::read(img.join("inventory.img")).unwrap();
    let version = format!(
        "{}.{}",
        u16::from_le_bytes([head[8], head[9]]),
        u16::from_le_bytes([head[10], head[11]])
    );
    assert!(
        text.stdout.contains(&version),
        "show prints the format version {version}:\n{text}"
    );
    let json = w.show(&img, true);
    json.assert_success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|e| panic!("show --json is not JSON: {e}\n{json}"));
    assert!(
        has_word(&v.to_string(), &pid),
        "show --json names the pid:\n{json}"
    );
    // Showing changes nothing: the image still restores.
    w.restore_background(&img);
    assert_eq!(w.cmd("tick"), "1");
    w.kill_restored();
}
