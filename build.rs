//! Generates the protobuf types of `proto/trackhub.proto` (prost). `protoc` comes from the
//! `protoc-bin-vendored` crate so a fresh machine needs no system package.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/trackhub.proto");
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    prost_build::Config::new().compile_protos(&["proto/trackhub.proto"], &["proto"])?;
    Ok(())
}
