//! Generates the stateservice.v1 client stubs from the repository's proto
//! (the single source of truth for the API) with the vendored `protoc`, so a
//! fresh machine needs nothing but cargo. Only the client is generated: this
//! crate must not carry server code.

use std::env;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "../../proto/stateservice/v1/state.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=build.rs");

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let wkt_include = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the env.
    unsafe { env::set_var("PROTOC", protoc) };

    tonic_prost_build::configure()
        .build_server(false)
        .emit_rerun_if_changed(false)
        .compile_protos(
            &[PROTO],
            &[
                "../../proto",
                wkt_include.to_str().ok_or("non-UTF-8 include path")?,
            ],
        )?;
    Ok(())
}
