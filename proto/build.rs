//! Compiles the image schema with protox (pure Rust), so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/image.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new()
        .type_attribute(".", "#[derive(serde::Serialize)]")
        // Generated values for the round-trip property tests (src/round_trip.rs).
        .type_attribute(".", "#[cfg_attr(test, derive(proptest_derive::Arbitrary))]")
        // Repeated fields nested three deep (a process's memberships, their cgroups, their
        // files) kept short: the default of up to 100 at each level makes millions of values.
        .field_attribute(
            ".cryo.image.CgroupMembership.settings",
            "#[cfg_attr(test, proptest(strategy = \"proptest::collection::vec(\
             proptest::arbitrary::any::<CgroupSettings>(), 0..3)\"))]",
        )
        .field_attribute(
            ".cryo.image.CgroupSettings.files",
            "#[cfg_attr(test, proptest(strategy = \"proptest::collection::vec(\
             proptest::arbitrary::any::<CgroupFile>(), 0..4)\"))]",
        )
        .field_attribute(
            ".cryo.image.CgroupSettings.owners",
            "#[cfg_attr(test, proptest(strategy = \"proptest::collection::vec(\
             proptest::arbitrary::any::<CgroupFileOwner>(), 0..4)\"))]",
        )
        .field_attribute(
            ".cryo.image.CgroupMembership.descendants",
            "#[cfg_attr(test, proptest(strategy = \"proptest::collection::vec(\
             proptest::arbitrary::any::<String>(), 0..3)\"))]",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
