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
        .compile_fds(descriptors)?;
    Ok(())
}
