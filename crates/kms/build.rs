//! Generates the KMS gRPC code from the .proto files in `proto/`, with a pure-Rust protobuf
//! compiler: no protoc and no network at build time.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/v2.proto", "proto/v1beta1.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
