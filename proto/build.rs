//! Compiles `proto/keel/v1/*.proto` with protox (pure Rust, no system `protoc`) and hands the
//! descriptor set to tonic-prost-build, which writes the prost messages and the tonic clients and
//! servers into `OUT_DIR`. The encoded descriptor set (with source comments) is written next to
//! them as `keel_v1_descriptor.bin`; `lib.rs` exposes it for gRPC reflection and for the tests
//! that check the contract's documentation.

use std::error::Error;
use std::path::{Path, PathBuf};

const PROTO_ROOT: &str = "proto";
const PROTO_DIR: &str = "proto/keel/v1";

fn main() -> Result<(), Box<dyn Error>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(PROTO_DIR)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    files.sort();

    println!("cargo:rerun-if-changed={PROTO_DIR}");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(&files)?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        Path::new(&out_dir).join("keel_v1_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Every `bytes` field becomes `bytes::Bytes`: record batches are sliced, not copied.
        .bytes(".")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
