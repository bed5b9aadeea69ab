//! Compiles the `stateservice.v1` protos (the state API, the admin API and the
//! backup entries) into Rust (prost + tonic) and one file descriptor set for
//! gRPC reflection. Uses the vendored `protoc` so that a
//! fresh machine needs nothing but cargo.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: [&str; 3] = [
        "proto/stateservice/v1/state.proto",
        "proto/stateservice/v1/admin.proto",
        "proto/stateservice/v1/backup.proto",
    ];
    // Written by hand so cargo reruns only when the API changes, not on every
    // source edit (the default for build scripts without rerun lines).
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let wkt_include = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the env.
    unsafe { env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        // Decode errors are INVALID_ARGUMENT, not tonic's INTERNAL.
        .codec_path("crate::api::codec::ProstCodec")
        .file_descriptor_set_path(out_dir.join("stateservice_descriptor.bin"))
        .compile_protos(
            &PROTOS,
            &[
                "proto",
                wkt_include.to_str().ok_or("non-UTF-8 include path")?,
            ],
        )?;
    Ok(())
}
