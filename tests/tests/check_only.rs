//! Pre-migration checks: `cryo dump --check-only` leaves the process running untouched and
//! writes a small image without pages; `cryo restore --check-only` judges this host against
//! it (exit 0 ok, 2 temporary findings only, 3 a permanent one), naming what stands in the way.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::net::TcpListener;
use std::path::Path;

use cryo_proto::image::{CheckedId, MigrationCheck};
use cryo_proto::ImageKind;
use cryo_tests::{cryo_bin, CryoOutput, Workload};

/// `cryo dump --check-only` of the workload into `img`, which must succeed.
#[track_caller]
fn check_dump(w: &Workload, img: &Path) -> CryoOutput {
    let out = w.dump(img, &["--check-only"]);
    out.assert_success();
    out
}

/// `cryo restore --check-only -D img --json`, with the findings parsed.
fn judge(w: &Workload, img: &Path) -> (CryoOutput, Vec<serde_json::Value>) {
    judge_with(w, img, &[])
}

/// [`judge`] with more flags (`--pidns`, `--netns`).
fn judge_with(w: &Workload, img: &Path, extra: &[&str]) -> (CryoOutput, Vec<serde_json::Value>) {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "restore".as_ref(),
        "--check-only".as_ref(),
        "--json".as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let out = w.cryo(&args);
    let verdict: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("the verdict is not JSON ({e}):\n{out}"));
    let findings = verdict["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings array:\n{out}"))
        .clone();
    (out, findings)
}

/// The finding of `kind` about `what` whose subject is `subject`.
fn finding<'a>(
    findings: &'a [serde_json::Value],
    kind: &str,
    what: &str,
    subject: &str,
) -> Option<&'a serde_json::Value> {
    findings
        .iter()
        .find(|f| f["kind"] == kind && f["what"] == what && f["subject"] == subject)
}

/// Rewrites the check record of `img` with `edit` (through the image framing).
fn edit_check(img: &Path, edit: impl FnOnce(&mut MigrationCheck)) {
    let path = img.join("check.img");
    let mut check: MigrationCheck =
        cryo_proto::frame::read_single(&path, ImageKind::MigrationCheck).unwrap();
    edit(&mut check);
    std::fs::remove_file(&path).unwrap();
    cryo_proto::frame::write_image(&path, ImageKind::MigrationCheck, &[check]).unwrap();
}

#[test]
fn check_dump_leaves_the_process_untouched_and_writes_no_pages() {
    cryo_bin();
    let w = Workload::spawn("memory", &["64", "0xc4ec"]);
    let before = w.cmd("verify");
    assert!(before.starts_with("ok "), "{before}");
    let img = w.path("img");
    let out = check_dump(&w, &img);
    assert!(out.stderr.contains("(left running)"), "{out}");
    // Running as before, every word of its memory the same.
    w.assert_untouched();
    assert_eq!(w.cmd("verify"), before);
    let mut total = 0;
    for entry in std::fs::read_dir(&img).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with("pages-"),
            "a check image holds no pages: {name}"
        );
        total += entry.metadata().unwrap().len();
    }
    // 64 MiB of memory: the image is a few dozen KiB.
    assert!(total < 256 << 10, "check image of {total} bytes");
    let check: MigrationCheck =
        cryo_proto::frame::read_single(&img.join("check.img"), ImageKind::MigrationCheck).unwrap();
    assert!(
        check.memory_bytes >= 60 << 20,
        "memory {}",
        check.memory_bytes
    );
    assert!(check.processes.iter().any(|p| p.pid == w.pid()));
    let exe = check
        .files
        .iter()
        .find(|f| f.used_as == "exe")
        .expect("the executable is recorded");
    assert_eq!(exe.sha256.len(), 32, "{exe:?}");
    // Linked here with a GNU build-id note (readelf -n).
    assert_eq!(exe.build_id.len(), 20, "{exe:?}");
    assert!(
        !check.cpu_flags.is_empty() && check.xcr0 & 3 == 3,
        "{check:?}"
    );
    assert!(check.kernel_features.iter().any(|k| k == "ptrace"));
    // A restore refuses a check image.
    let restore = w.cryo(&["restore".as_ref(), "-D".as_ref(), img.as_os_str()]);
    restore
        .assert_refused()
        .assert_stderr_mentions("check image");
    w.assert_untouched();
}

#[test]
fn the_same_host_is_ok_once_the_original_is_gone_and_its_pid_taken_while_it_runs() {
    cryo_bin();
    let mut w = Workload::spawn("memory", &["4"]);
    let img = w.path("img");
    check_dump(&w, &img);
    // The original still runs: its pid is taken, a temporary finding.
    let (out, findings) = judge(&w, &img);
    assert_eq!(out.status.code(), Some(2), "{out}");
    let pid = w.pid().to_string();
    let f = finding(&findings, "temporary", "pid", &pid)
        .unwrap_or_else(|| panic!("no finding naming pid {pid}:\n{out}"));
    assert!(f["reason"].as_str().unwrap().contains(&pid), "{f}");
    assert!(findings.iter().all(|f| f["kind"] == "temporary"), "{out}");
    // Restored into a PID namespace of its own, no pid can be taken.
    let (out, _) = judge_with(&w, &img, &["--pidns"]);
    assert_eq!(out.status.code(), Some(0), "{out}");
    w.kill_original();
    let (out, findings) = judge(&w, &img);
    assert_eq!(out.status.code(), Some(0), "{out}");
    assert!(findings.is_empty(), "{out}");
    assert!(out.stderr.contains("can restore it"), "{out}");
}

#[test]
fn a_busy_port_is_temporary() {
    cryo_bin();
    // A loopback address of this test's own: once the squatter is gone, another test's
    // connection (from 127.0.0.1) may take the same port number as its ephemeral port,
    // which would hold it on 127.0.0.1, not here.
    let me = std::process::id();
    let ip = format!(
        "127.{}.{}.{}",
        100 + me % 100,
        (me >> 8) % 250 + 1,
        me % 250 + 1
    );
    let mut w = Workload::spawn("tcp", &[&format!("{ip}:0")]);
    let port: u16 = w.cmd("port").parse().unwrap();
    let img = w.path("img");
    check_dump(&w, &img);
    w.kill_original();
    // Someone else took the port meanwhile.
    let squatter = TcpListener::bind((ip.as_str(), port)).expect("take the port");
    let (out, findings) = judge(&w, &img);
    assert_eq!(out.status.code(), Some(2), "{out}");
    let subject = format!("tcp {ip}:{port}");
    finding(&findings, "temporary", "port", &subject)
        .unwrap_or_else(|| panic!("no finding naming {subject}:\n{out}"));
    // Restored into a network namespace of its own, no port can be busy.
    let (out, _) = judge_with(&w, &img, &["--netns"]);
    assert_eq!(out.status.code(), Some(0), "{out}");
    drop(squatter);
    let (out, _) = judge(&w, &img);
    assert_eq!(out.status.code(), Some(0), "{out}");
}

#[test]
fn a_mapped_file_rewritten_since_is_permanent() {
    cryo_bin();
    let mut w = Workload::spawn("mappings", &[]);
    assert_eq!(w.cmd("check"), "ok");
    let img = w.path("img");
    check_dump(&w, &img);
    // Its shared anonymous memory is measured, not copied: record files only.
    let raw: Vec<String> = std::fs::read_dir(&img)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            ![
                "inventory",
                "pstree",
                "files",
                "ipc",
                "check",
                "core-",
                "mm-",
            ]
            .iter()
            .any(|p| n.starts_with(p))
        })
        .collect();
    assert!(
        raw.is_empty(),
        "contents copied into a check image: {raw:?}"
    );
    assert_eq!(w.cmd("check"), "ok");
    w.kill_original();
    let private = w.path("private.dat");
    let (out, _) = judge(&w, &img);
    assert_eq!(out.status.code(), Some(0), "{out}");
    // Another version of the file: same size, other bytes.
    let mut data = std::fs::read(&private).unwrap();
    data[100] ^= 0xff;
    std::fs::write(&private, &data).unwrap();
    let (out, findings) = judge(&w, &img);
    assert_eq!(out.status.code(), Some(3), "{out}");
    let path = private.to_string_lossy();
    let f = finding(&findings, "permanent", "file", &path)
        .unwrap_or_else(|| panic!("no finding naming {path}:\n{out}"));
    assert!(f["reason"].as_str().unwrap().contains("sha256"), "{f}");
    // A restore with --accept-changed-files would use it anyway.
    let (out, _) = judge_with(&w, &img, &["--accept-changed-files"]);
    assert_eq!(out.status.code(), Some(0), "{out}");
    // And gone altogether.
    std::fs::remove_file(&private).unwrap();
    let (out, findings) = judge(&w, &img);
    assert_eq!(out.status.code(), Some(3), "{out}");
    let f = finding(&findings, "permanent", "file", &path).expect("the missing file");
    assert!(f["reason"].as_str().unwrap().contains("missing"), "{f}");
}

#[test]
fn a_cpu_feature_missing_here_is_permanent() {
    cryo_bin();
    let mut w = Workload::spawn("memory", &["4"]);
    let img = w.path("img");
    check_dump(&w, &img);
    w.kill_original();
    // As if dumped on a host whose CPU has a feature this one lacks.
    edit_check(&img, |c| c.cpu_flags.push("avx_cryo_fake".into()));
    let (out, findings) = judge(&w, &img);
    assert_eq!(out.status.code(), Some(3), "{out}");
    finding(&findings, "permanent", "cpu", "avx_cryo_fake")
        .unwrap_or_else(|| panic!("no finding naming the flag:\n{out}"));
    // An XSAVE component enabled there and not here (bit 62: no CPU has it).
    edit_check(&img, |c| {
        c.cpu_flags.retain(|f| f != "avx_cryo_fake");
        c.xcr0 |= 1 << 62;
    });
    let (out, findings) = judge(&w, &img);
    assert_eq!(out.status.code(), Some(3), "{out}");
    finding(&findings, "permanent", "cpu", "xsave bit62")
        .unwrap_or_else(|| panic!("no finding naming the XSAVE feature:\n{out}"));
}

/// hugetlb memory of a huge page size this host lacks altogether (4 MiB: no x86_64 host has
/// it) is permanent, naming the pages and the size.
#[test]
fn a_huge_page_size_missing_here_is_permanent() {
    cryo_bin();
    let mut w = Workload::spawn("memory", &["4"]);
    let img = w.path("img");
    check_dump(&w, &img);
    w.kill_original();
    edit_check(&img, |c| {
        c.huge_pages.push(cryo_proto::image::CheckedHugePages {
            page_size: 4 << 20,
            pages: 3,
        })
    });
    let (out, findings) = judge(&w, &img);
    assert_eq!(out.status.code(), Some(3), "{out}");
    finding(
        &findings,
        "permanent",
        "huge pages",
        "3 huge pages of 4096 kB",
    )
    .unwrap_or_else(|| panic!("no finding naming the huge pages:\n{out}"));
}

/// An AIO context is listed with its ring's size; this host makes rings of that size (no
/// finding), but not of one it could not make (as a host with more possible CPUs would not
/// make a small one): permanent, naming the pid and the ring.
#[test]
fn an_aio_ring_this_host_cannot_make_is_permanent() {
    cryo_bin();
    let mut w = Workload::spawn("aio", &[]);
    let ctx = w.cmd("ctx");
    let img = w.path("img");
    check_dump(&w, &img);
    w.kill_original();
    let check: MigrationCheck =
        cryo_proto::frame::read_single(&img.join("check.img"), ImageKind::MigrationCheck).unwrap();
    let ring = check.aio_rings.first().expect("the ring is listed");
    assert_eq!(
        (ring.pid, format!("{:#x}", ring.start), ring.nr),
        (w.pid(), ctx.clone(), 127)
    );
    let (out, findings) = judge(&w, &img);
    assert_eq!(out.status.code(), Some(0), "{out}");
    assert!(findings.is_empty(), "{out}");
    edit_check(&img, |c| c.aio_rings[0].nr = 63);
    let (out, findings) = judge(&w, &img);
    assert_eq!(out.status.code(), Some(3), "{out}");
    let subject = format!("pid {} AIO ring at {ctx}", w.pid());
    finding(&findings, "permanent", "aio", &subject)
        .unwrap_or_else(|| panic!("no finding naming the ring:\n{out}"));
}

#[test]
fn a_user_or_group_missing_here_is_permanent() {
    cryo_bin();
    let mut w = Workload::spawn("memory", &["4"]);
    let img = w.path("img");
    check_dump(&w, &img);
    w.kill_original();
    let check: MigrationCheck =
        cryo_proto::frame::read_single(&img.join("check.img"), ImageKind::MigrationCheck).unwrap();
    // Run as root: uid 0 named on this host.
    assert!(
        check.uids.iter().any(|u| u.id == 0 && u.name == "root"),
        "{check:?}"
    );
    edit_check(&img, |c| {
        c.uids.push(CheckedId {
            id: 4_242_421,
            name: "cryo-ghost".into(),
        });
        c.gids.push(CheckedId {
            id: 0,
            name: "wheel-elsewhere".into(),
        });
    });
    let (out, findings) = judge(&w, &img);
    assert_eq!(out.status.code(), Some(3), "{out}");
    let f = finding(&findings, "permanent", "user", "4242421")
        .unwrap_or_else(|| panic!("no finding naming the uid:\n{out}"));
    assert!(f["reason"].as_str().unwrap().contains("cryo-ghost"), "{f}");
    finding(&findings, "permanent", "group", "0")
        .unwrap_or_else(|| panic!("no finding naming the renamed gid:\n{out}"));
}

#[test]
fn unread_netlink_data_at_check_time_is_temporary() {
    cryo_bin();
    // A network namespace of the test's own, so the link event is ours alone.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare CLONE_NEWNET");
    let w = Workload::spawn("socks", &[]);
    let fd = w.cmd("socket netlink raw 0");
    assert_eq!(w.cmd(&format!("bind-netlink {fd} 0 1")), "ok");
    let ip = std::process::Command::new("ip")
        .args(["link", "add", "cryochk1", "type", "bridge"])
        .status()
        .expect("run ip");
    assert!(ip.success());
    let img = w.path("img");
    let out = w.dump(&img, &["--check-only"]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    out.assert_stderr_mentions("temporary")
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_has_word(&fd)
        .assert_stderr_mentions("unread netlink messages");
    w.assert_untouched();
    let heard = w.cmd(&format!("frames {fd}"));
    assert!(
        heard.contains("cryochk1"),
        "the message is still there: {heard}"
    );
}

#[test]
fn memory_short_here_is_temporary_and_a_kernel_feature_missing_permanent() {
    cryo_bin();
    let mut w = Workload::spawn("memory", &["4"]);
    let img = w.path("img");
    check_dump(&w, &img);
    w.kill_original();
    // As if the processes held more memory than this host has available now.
    edit_check(&img, |c| c.memory_bytes = 1 << 50);
    let (out, findings) = judge(&w, &img);
    assert_eq!(out.status.code(), Some(2), "{out}");
    let f = findings
        .iter()
        .find(|f| f["kind"] == "temporary" && f["what"] == "memory")
        .unwrap_or_else(|| panic!("no memory finding:\n{out}"));
    assert!(f["reason"].as_str().unwrap().contains("available"), "{f}");
    // A feature the dumping cryo needed that this one cannot find.
    edit_check(&img, |c| {
        c.memory_bytes = 4 << 20;
        c.kernel_features.push("cryo_fake_feature".into());
    });
    let (out, findings) = judge(&w, &img);
    assert_eq!(out.status.code(), Some(3), "{out}");
    finding(&findings, "permanent", "kernel", "cryo_fake_feature")
        .unwrap_or_else(|| panic!("no finding naming the feature:\n{out}"));
}

#[test]
fn show_prints_what_a_check_image_holds() {
    cryo_bin();
    let w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    let port: u16 = w.cmd("port").parse().unwrap();
    let img = w.path("img");
    check_dump(&w, &img);
    let exe = std::fs::read_link(format!("/proc/{}/exe", w.pid())).unwrap();
    let text = w.show(&img, false);
    text.assert_success();
    assert!(text.stdout.contains("\ncheck: "), "{}", text.stdout);
    let exe_line = format!("  file {}  ", exe.display());
    let line = text
        .stdout
        .lines()
        .find(|l| l.starts_with(&exe_line))
        .unwrap_or_else(|| panic!("no line for the executable:\n{}", text.stdout));
    assert!(
        line.contains("  sha256 ") && line.ends_with("exe)"),
        "{line}"
    );
    assert!(
        text.stdout
            .contains(&format!("  port tcp 127.0.0.1:{port} (pid {})", w.pid())),
        "{}",
        text.stdout
    );
    let json = w.show(&img, true);
    json.assert_success();
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let files = value["check"]["files"].as_array().expect("check.files");
    let exe_entry = files
        .iter()
        .find(|f| f["path"] == exe.display().to_string())
        .expect("the executable in check.files");
    assert_eq!(exe_entry["sha256"]["len"], 32, "{exe_entry}");
    assert_eq!(value["check"]["ports"][0]["port"], port, "{value}");
}

/// A process without a session keyring of its own, judged by a `cryo restore --check-only`
/// that has one: the restore would refuse it (the process would inherit cryo's keyring), so
/// the judge says so, as a temporary finding naming the pid (exit 2); from a cryo without
/// one, nothing.
#[test]
fn a_restore_from_a_session_keyring_is_judged_temporary_for_a_process_without_one() {
    cryo_tests::cryo_bin();
    let w = Workload::spawn("counter", &[]);
    let img = w.path("img");
    check_dump(&w, &img);
    let args = [
        "restore",
        "--check-only",
        "--json",
        "-D",
        img.to_str().unwrap(),
    ];
    let out = cryo_tests::run_cryo_in_a_session_keyring(&w.path(""), "judge-keyring", &args);
    assert_eq!(out.status.code(), Some(2), "{out}");
    let verdict: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON verdict");
    let findings = verdict["findings"].as_array().expect("findings").clone();
    let pid = w.pid().to_string();
    let f = finding(&findings, "temporary", "session keyring", &pid)
        .unwrap_or_else(|| panic!("no session keyring finding:\n{out}"));
    assert!(
        f["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no session keyring of its own"),
        "{f}"
    );
    let (_, findings) = judge(&w, &img);
    assert!(finding(&findings, "temporary", "session keyring", &pid).is_none());
}

/// An abstract unix name the image binds, held here (by the running original itself): a
/// temporary finding naming it, as the restore would refuse it; none with `--netns`.
#[test]
fn an_abstract_name_held_here_is_a_temporary_finding() {
    cryo_bin();
    let tag = format!("{}-check", std::process::id());
    let w = Workload::spawn("unix-cycle", &[&tag]);
    let img = w.path("img");
    check_dump(&w, &img);
    let (_, findings) = judge(&w, &img);
    let name = format!("@cryo-cycle-{tag}-0");
    let f = finding(&findings, "temporary", "unix name", &name)
        .unwrap_or_else(|| panic!("no finding for {name}: {findings:?}"));
    assert!(f.to_string().contains("held here by another socket"), "{f}");
    let (_, findings) = judge_with(&w, &img, &["--netns"]);
    assert!(
        finding(&findings, "temporary", "unix name", &name).is_none(),
        "{findings:?}"
    );
}

/// A mount namespace of the image whose bind source this host lacks: a permanent finding
/// naming the path (the restore would fail making the namespace). Before, the check said
/// nothing and the restore failed.
#[test]
fn a_bind_source_missing_here_is_a_permanent_mount_finding() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &[]);
    let img = w.path("img");
    check_dump(&w, &img);
    w.kill_original();
    let (out, findings) = judge(&w, &img);
    assert!(findings.is_empty(), "nothing is missing yet:\n{out}");
    let (src, away) = (w.path("src"), w.path("src-away"));
    std::fs::rename(&src, &away).unwrap();
    let (out, findings) = judge(&w, &img);
    std::fs::rename(&away, &src).unwrap();
    assert_eq!(out.status.code(), Some(3), "{out}");
    let f = finding(&findings, "permanent", "mount", src.to_str().unwrap())
        .unwrap_or_else(|| panic!("no finding naming the bind source:\n{out}"));
    assert!(
        f["reason"].as_str().unwrap().contains("no such path here"),
        "{f}"
    );
}

/// `cryo check --feature NAME` (CRIU's, which zdtm asks before choosing what to run): a
/// feature cryo has answers yes and exits 0 (userns: a process in a user namespace of its own
/// with the namespaces it made there), an unknown name exits 1 naming it.
#[test]
fn check_feature_answers_criu_names() {
    let run = |name: &str| {
        std::process::Command::new(cryo_bin())
            .args(["check", "--feature", name])
            .output()
            .expect("run cryo check")
    };
    let userns = run("userns");
    assert!(userns.status.success(), "{userns:?}");
    assert_eq!(
        String::from_utf8_lossy(&userns.stdout).trim(),
        "userns: yes"
    );
    let unknown = run("cryo-no-such-feature");
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("\"cryo-no-such-feature\""),
        "{unknown:?}"
    );
}
