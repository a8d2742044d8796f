//! Compiles `proto/` with the pure-Rust `protox` parser, so no system `protoc` is needed.
use std::{env, fs, path::PathBuf};

use protox::prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/entitlements/v1/entitlements.proto";
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile([proto], ["proto"])?;
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
