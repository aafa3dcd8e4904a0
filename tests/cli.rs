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

/// `adstream train` builds a live version from a logged history whose clicks depend on
/// country x campaign (which the logged per-campaign pCTR cannot see), and refuses a history
/// with a bad line, naming it.
#[test]
fn train_builds_a_live_version_from_history() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = common::pipeline_file(
        dir.path(),
        "127.0.0.1:9",
        "\n[model]\ndevice = \"cpu\"\nbatch_size = 64\nlearning_rate = 0.01\n\n[model.guards]\nmin_examples = 1500\n",
    );
    let mut history = String::new();
    let countries = ["US", "FR", "DE", "JP"];
    for i in 0..16_000usize {
        let (country, campaign) = (i % 4, (i / 4) % 4);
        let rate = if country == campaign { 200 } else { 30 };
        let clicked = common::per_mille_draw(i) < rate;
        history.push_str(&format!(
            r#"{{"request_id":"r{i}","imp_id":"1","ts":{},"campaign_id":"k{campaign}","advertiser_id":"a{campaign}","ad_id":"k{campaign}-ad","billing":"cpm","charge_micros":2000,"price_ecpm_micros":2000000,"pctr":0.0725,"pcvr":0.05,"model_version":"prior","user_id":"u{}","country":"{}","device":"desktop","interests":[],"tag_id":null,"click":{clicked}}}"#,
            1_796_000_000_000i64 + i as i64 * 50,
            i % 997,
            countries[country],
        ));
        history.push('\n');
    }
    let path = dir.path().join("history.jsonl");
    std::fs::write(&path, &history).unwrap();
    let state = dir.path().join("state");
    let train = || {
        adstream()
            .args(["train"])
            .arg(&pipeline)
            .arg("--examples")
            .arg(&path)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap()
    };
    let out = train();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("version v1: live"), "{stdout}");
    let auc = common::number_following(&stdout, "\"auc\":").unwrap_or_else(|| panic!("{stdout}"));
    assert!(auc > 0.6, "progressive click AUC {auc}: {stdout}");
    assert!(state.join("models").is_dir());

    std::fs::write(
        &path,
        format!(
            "{}{{\"click\":true}}\n",
            &history[..history.find('\n').unwrap() + 1]
        ),
    )
    .unwrap();
    let out = train();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
}
