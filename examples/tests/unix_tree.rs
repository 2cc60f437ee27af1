//! Runs the built `bench-unix-tree` example with fewer pairs: 100 processes whose unix pairs
//! link siblings, cousins and parents, restored with every queued byte and still connected.

use std::path::PathBuf;
use std::process::Command;

fn example_binary() -> PathBuf {
    // target/<profile>/deps/unix_tree-<hash> -> target/<profile>/examples/bench-unix-tree
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join("examples").join("bench-unix-tree")
}

#[test]
fn a_tree_of_100_processes_linked_by_unix_pairs_comes_back_connected() {
    let bin = example_binary();
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "cryo-examples",
                "--example",
                "bench-unix-tree",
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let out = Command::new(&bin).arg("200").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("all 100 processes read their queued bytes and still talk"),
        "{stdout}"
    );
}
