//! The command line: every pipeline file validates (golden), bad files and flags fail clearly.

#![allow(clippy::unwrap_used)]

mod common;

use common::adstream;

#[test]
fn every_shipped_pipeline_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = adstream().arg("validate").arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            seen += 1;
        }
    }
    assert!(seen >= 1);
}

#[test]
fn a_bad_pipeline_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[pipeline]\nname = \"x\"\nsecret = \"0123456789\"\nworkers = 0\n\n[kafka]\nbrokers = \"localhost:9092\"\n").unwrap();
    let out = adstream().arg("validate").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4:"), "{err}");
    assert!(err.contains("pipeline.workers"), "{err}");

    std::fs::write(&path, "[pipeline]\nname = \"x\"\nsecret = \"0123456789\"\ncolour = \"red\"\n[kafka]\nbrokers = \"h:1\"\n").unwrap();
    let err = String::from_utf8_lossy(
        &adstream()
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap()
            .stderr,
    )
    .into_owned();
    assert!(
        err.contains("bad.toml:4:") && err.contains("colour"),
        "{err}"
    );

    let missing = adstream()
        .arg("validate")
        .arg(dir.path().join("nope.toml"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.toml"));
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    let pipeline = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/ads.toml");
    let out = adstream()
        .arg("run")
        .arg(&pipeline)
        .args(["--workers", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--workers"));
    let out = adstream()
        .arg("run")
        .arg(&pipeline)
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    let out = adstream()
        .arg("run")
        .arg(&pipeline)
        .args(["--process", "3", "--processes", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--process"));
}
