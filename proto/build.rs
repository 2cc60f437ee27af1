//! Compiles the image schema with protox (pure Rust), so no system protoc is needed.

/// Repeated fields whose generated values stay short: (message.field, its item type, the
/// number of items they stay below).
const SHORT_REPEATED: &[(&str, &str, usize)] = &[
    ("CgroupMembership.settings", "CgroupSettings", 3),
    ("CgroupMembership.descendants", "String", 3),
    ("CgroupSettings.files", "CgroupFile", 4),
    ("CgroupSettings.owners", "CgroupFileOwner", 4),
    ("TaskCore.threads", "ThreadCore", 3),
    ("TaskCore.cgroups", "CgroupMembership", 3),
    ("ThreadCore.cgroups", "CgroupMembership", 3),
    ("MountNamespace.mounts", "NamespaceMount", 4),
    ("NamespaceMount.files", "TreeEntry", 4),
    ("SysvIpc.namespaces", "IpcNamespace", 3),
    ("IpcNamespace.segments", "SysvShm", 3),
    ("IpcNamespace.sems", "SysvSem", 3),
    ("IpcNamespace.queues", "SysvMsgQueue", 3),
    ("SysvMsgQueue.messages", "SysvMessage", 4),
    ("NetNamespace.links", "NetLink", 4),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/image.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let mut config = prost_build::Config::new();
    config
        .type_attribute(".", "#[derive(serde::Serialize)]")
        // Generated values for the round-trip property tests (src/round_trip.rs).
        .type_attribute(".", "#[cfg_attr(test, derive(proptest_derive::Arbitrary))]");
    // Repeated fields nested two or three deep kept short: the default of up to 100 at each
    // level makes millions of values (a TaskCore's threads, their cgroups, their files; a
    // mount namespace's mounts and their files; an IPC namespace's queues and their
    // messages), and the round trips of the messages holding them took minutes.
    for (field, item, most) in SHORT_REPEATED {
        config.field_attribute(
            format!(".cryo.image.{field}"),
            format!(
                "#[cfg_attr(test, proptest(strategy = \"proptest::collection::vec(\
                 proptest::arbitrary::any::<{item}>(), 0..{most})\"))]"
            ),
        );
    }
    config.compile_fds(descriptors)?;
    Ok(())
}
