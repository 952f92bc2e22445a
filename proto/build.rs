//! Compiles the `.proto` files with protox (no system protoc) and generates prost/tonic code.
//! The encoded file descriptor set is written to `OUT_DIR/proxbalance_descriptor.bin` for
//! gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proxbalance/v1/snapshot.proto",
    "proxbalance/v1/recommendation.proto",
    "proxbalance/v1/events.proto",
    "proxbalance/v1/recommender.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["."])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;
    std::fs::write(
        out_dir.join("proxbalance_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
