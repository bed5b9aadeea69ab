//! The proto compiles into stubs other languages can use as they are: the
//! Python stubs grpcio-tools generates import without a single warning, even
//! under `python -W error` (a proto comment with a backslash once made them
//! warn `invalid escape sequence`, an error under -W error).

mod common;

use std::process::Command;

use common::venv_tool;

#[test]
fn generated_python_stubs_import_with_warnings_as_errors() {
    let out = tempfile::tempdir().unwrap();
    let repo = env!("CARGO_MANIFEST_DIR");
    let python = venv_tool("python");
    let protoc = Command::new(&python)
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{repo}/proto"))
        .arg(format!("--python_out={}", out.path().display()))
        .arg(format!("--grpc_python_out={}", out.path().display()))
        .arg(format!("{repo}/proto/stateservice/v1/state.proto"))
        .output()
        .expect("python with grpcio-tools (scripts/test.sh installs it into .venv)");
    assert!(
        protoc.status.success(),
        "protoc failed: {}",
        String::from_utf8_lossy(&protoc.stderr)
    );
    let import = Command::new(&python)
        .args([
            "-W",
            "error",
            "-c",
            "import stateservice.v1.state_pb2, stateservice.v1.state_pb2_grpc",
        ])
        .current_dir(out.path())
        .output()
        .unwrap();
    assert!(
        import.status.success() && import.stderr.is_empty(),
        "the generated stubs warn or fail: {}",
        String::from_utf8_lossy(&import.stderr)
    );
}
