//! Compiles `proto/` with the pure-Rust `protox` parser, so no system `protoc` is needed.
use std::{env, fs, path::PathBuf};

use protox::prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Ours, and flagd's evaluation protocol (OpenFeature), served next to it.
    let protos = ["proto/entitlements/v1/entitlements.proto", "proto/flagd/evaluation/v1/evaluation.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // The descriptor set also feeds gRPC server reflection.
    fs::write(out.join("entitlements_descriptor.bin"), fds.encode_to_vec())?;
    // Our codec answers INVALID_ARGUMENT for a request that does not decode (src/grpc/codec.rs).
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::grpc::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}
