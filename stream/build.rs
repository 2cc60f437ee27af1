//! Compiles the protocol's control messages with protox (pure Rust), so no system protoc is
//! needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/stream.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
