//! End-to-end test of `adstream demo`: the embedded cluster, the default pipeline and the
//! simulator run together; requests must be served, spend charged, and the ledger's spend must
//! equal the simulator's ground truth (the demo checks it to the micro and exits non-zero if
//! not; this test also reads the truth files it wrote).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::BufRead;

fn number_after(text: &str, label: &str) -> u64 {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in output:\n{text}"));
    text[at + label.len()..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {label:?} in output:\n{text}"))
}

#[test]
fn demo_serves_charges_and_matches_the_ground_truth() {
    let truth = tempfile::tempdir().unwrap();
    let out = common::adstream()
        .args([
            "demo",
            "--duration",
            "20s",
            "--listen",
            "127.0.0.1:0",
            "--rate",
            "150",
            "--day",
            "2m",
            "--every",
            "2s",
            // More bad input than by default, so every kind shows up in a short run.
            "--duplicates",
            "0.05",
            "--late",
            "0.03",
            "--malformed",
            "0.01",
            "--forged",
            "0.01",
            "--truth",
        ])
        .arg(truth.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    // It served a model trained on simulated history from its start, not the prior.
    assert!(
        stdout.contains("served ads of simulated history") && stdout.contains("): live"),
        "{stdout}"
    );
    assert!(stdout.contains("| model v1"), "{stdout}");
    // Live summaries were printed while it ran.
    assert!(stdout.matches("req/s").count() >= 3, "{stdout}");
    assert!(number_after(&stdout, "requests") > 500, "{stdout}");
    assert!(number_after(&stdout, "wins") > 200, "{stdout}");
    assert!(
        stdout.contains("ledger equals the oracle for all")
            && stdout.contains("reports: spend over report.campaign_minute rows equals the ledger"),
        "{stdout}"
    );

    // The truth files agree with what the demo reported.
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(truth.path().join("expected.json")).unwrap())
            .unwrap();
    let spend: u64 = expected["spend"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["spend_micros"].as_u64().unwrap())
        .sum();
    assert!(spend > 0, "nothing was charged: {expected}");
    let dead = expected["dead_letters"].as_object().unwrap();
    for reason in ["duplicate", "malformed", "bad_token"] {
        assert!(
            dead.get(reason).and_then(|v| v.as_u64()).unwrap_or(0) > 0,
            "no {reason} injected: {expected}"
        );
    }
    let served = std::fs::File::open(truth.path().join("served.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = std::io::BufReader::new(served)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(rows.len() as u64, number_after(&stdout, "wins"));
    for row in &rows {
        let p = row["true_ctr"].as_f64().unwrap();
        assert!(p > 0.0 && p < 1.0, "{row}");
    }
    let events = std::fs::read_to_string(truth.path().join("events.jsonl")).unwrap();
    for fault in ["\"late\"", "\"duplicate\"", "\"forged\"", "\"malformed\""] {
        assert!(events.contains(fault), "no {fault} event in events.jsonl");
    }
}

/// Bad flags are refused with a message naming the flag, before anything starts.
#[test]
fn demo_and_simulate_refuse_bad_flags() {
    for (args, needle) in [
        (vec!["demo", "--rate", "0"], "--rate"),
        (vec!["demo", "--duration", "soon"], "--duration"),
        (vec!["demo", "--late", "2"], "--late"),
        (vec!["simulate", "--curve", "1,2,3"], "--curve"),
        (vec!["simulate", "--start-hour", "25"], "--start-hour"),
    ] {
        let out = common::adstream().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// `adstream simulate` against a pipeline on a real broker: it seeds its campaigns, drives
/// traffic through the API, and `--check` waits until the API's spend equals its ground truth.
#[test]
fn simulate_drives_a_pipeline_on_a_real_broker() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    // Throttling off: fresh campaigns would spend 8 seconds exploring up from 1% participation,
    // and this test is about the ground truth check, not pacing (tests/pacing.rs).
    let pipeline = common::pipeline_file(
        dir.path(),
        &broker.brokers(),
        "\n[pacing]\nenabled = false\n",
    );
    common::create_topics(&pipeline);
    let running = common::Running::start(&pipeline, &dir.path().join("state"), &[]);
    let out = common::adstream()
        .arg("simulate")
        .arg("--pipeline")
        .arg(&pipeline)
        .args(["--brokers", &broker.brokers(), "--api", &running.api])
        .args(["--duration", "8s", "--rate", "100", "--advertisers", "5"])
        .args(["--duplicates", "0.05", "--forged", "0.02", "--check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "simulate failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("the API's spend equals the ground truth"),
        "{stdout}"
    );
    assert!(number_after(&stdout, "requests") > 200, "{stdout}");
    assert!(number_after(&stdout, "wins") > 50, "{stdout}");
}
