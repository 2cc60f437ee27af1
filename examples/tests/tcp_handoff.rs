//! Runs the built `tcp-handoff` example and checks that the client never
//! noticed the handoff.

use std::path::PathBuf;
use std::process::Command;

fn example_binary() -> PathBuf {
    // target/<profile>/deps/tcp_handoff-<hash> -> target/<profile>/examples/tcp-handoff
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join("examples").join("tcp-handoff")
}

#[test]
fn tcp_handoff_example_succeeds() {
    let bin = example_binary();
    if !bin.exists() {
        // `cargo test` builds examples of the package under test; say so if not.
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "cryo-examples", "--example", "tcp-handoff"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let out = Command::new(&bin).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("tcp-handoff: OK"), "{stdout}");
    assert!(stderr.contains("no reset"), "{stderr}");
}
