//! A secured Kafka for real: TLS (a CA of the test's own, the broker's certificate checked
//! against it, hostname included) and SASL SCRAM-SHA-512, end to end from every client of the
//! pipeline. tansu does the SCRAM; its own TLS flags cannot be used together (0.6), so Debian's
//! stunnel4 terminates TLS in front of it, as a TLS-terminating proxy would.
//!
//! - `topics create`, `run` (consumer, producer, dead-letter read-back, offset commits) and
//!   `report tail` work through `SASL_SSL` with the pipeline's `[kafka.properties]`, and spend is
//!   exact;
//! - a wrong password and an untrusted certificate fail at once with an error that names the
//!   cause and what to check.
//!
//! Needs `openssl` and `stunnel4` (`deploy/local/test.sh` installs both); without them the test
//! fails saying how to install them.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use adstream_operators::events::Billing;
use common::*;
use rdkafka::producer::BaseProducer;
use rdkafka::ClientConfig;

const USER: &str = "adstream-it";
const PASSWORD: &str = "scram-test-password-7d1f";

fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (deploy/local/test.sh installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, the broker's certificate for 127.0.0.1 and localhost signed by it, and a second CA
/// that signed nothing; paths to `ca.pem`, `server.pem`, `server.key` and `other-ca.pem`.
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        run_ok(Command::new("openssl").current_dir(dir).args(args));
    };
    for (name, subject) in [("ca", "/CN=adstream test CA"), ("other-ca", "/CN=other CA")] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            subject,
        ]);
    }
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

/// A SCRAM-only tansu behind stunnel: killed on drop.
struct SecureBroker {
    tls_port: u16,
    tansu: Child,
    stunnel: Child,
    dir: tempfile::TempDir,
}

impl SecureBroker {
    fn start() -> SecureBroker {
        let dir = tempfile::tempdir().unwrap();
        certificates(dir.path());
        let (port, tls_port) = (free_port(), free_port());
        // Users are created while the broker runs without authentication.
        let mut open = spawn_tansu_behind(dir.path(), port, tls_port, false);
        run_ok(Command::new(tansu_binary()).args([
            "user",
            "create",
            USER,
            PASSWORD,
            "--mechanism",
            "scram512",
            "--broker",
            &format!("tcp://127.0.0.1:{port}"),
        ]));
        let _ = open.kill();
        let _ = open.wait();
        let tansu = spawn_tansu_behind(dir.path(), port, tls_port, true);
        let conf = dir.path().join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{tls_port}\nconnect = 127.0.0.1:{port}\ncert = {}\nkey = {}\n",
                dir.path().join("server.pem").display(),
                dir.path().join("server.key").display()
            ),
        )
        .unwrap();
        let stunnel = Command::new("stunnel4")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "stunnel4 is installed (`apt-get install stunnel4`; deploy/local/test.sh does)",
            );
        wait_for_port(tls_port, Duration::from_secs(30));
        SecureBroker {
            tls_port,
            tansu,
            stunnel,
            dir,
        }
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.tls_port)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        for child in [&mut self.stunnel, &mut self.tansu] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `[kafka.properties]` of a pipeline reaching `broker` as `password`, trusting `ca`.
fn properties(broker: &SecureBroker, password: &str, ca: &str) -> Vec<(&'static str, String)> {
    vec![
        ("security.protocol", "SASL_SSL".into()),
        ("sasl.mechanism", "SCRAM-SHA-512".into()),
        ("sasl.username", USER.into()),
        ("sasl.password", password.into()),
        ("ssl.ca.location", broker.path(ca).display().to_string()),
        ("ssl.endpoint.identification.algorithm", "https".into()),
    ]
}

fn secured_pipeline(dir: &Path, broker: &SecureBroker, password: &str, ca: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let props: String = properties(broker, password, ca)
        .iter()
        .map(|(k, v)| format!("\"{k}\" = \"{v}\"\n"))
        .collect();
    pipeline_file(
        dir,
        &broker.brokers(),
        &format!("[kafka.properties]\n{props}"),
    )
}

fn secured_producer(broker: &SecureBroker) -> BaseProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    for (k, v) in properties(broker, PASSWORD, "ca.pem") {
        config.set(k, v);
    }
    config.create().unwrap()
}

/// `adstream topics create` on `pipeline`: whether it succeeded, its stderr, and how long it took.
fn topics_create(pipeline: &Path) -> (bool, String, Duration) {
    let started = Instant::now();
    let out = adstream()
        .args(["topics", "create"])
        .arg(pipeline)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn the_pipeline_runs_through_tls_and_scram_and_bad_credentials_fail_fast() {
    let broker = SecureBroker::start();
    let dir = tempfile::tempdir().unwrap();

    // Wrong password, untrusted certificate: a clear error, at once.
    let wrong = secured_pipeline(
        &dir.path().join("wrong"),
        &broker,
        "not-the-password",
        "ca.pem",
    );
    let (ok, err, took) = topics_create(&wrong);
    assert!(!ok && err.contains("SASL authentication"), "{err}");
    assert!(
        err.contains("sasl.password"),
        "the error says what to check: {err}"
    );
    assert!(took < Duration::from_secs(15), "failed fast: {took:?}");
    let untrusted = secured_pipeline(
        &dir.path().join("untrusted"),
        &broker,
        PASSWORD,
        "other-ca.pem",
    );
    let (ok, err, took) = topics_create(&untrusted);
    assert!(!ok && err.contains("certificate verify failed"), "{err}");
    assert!(
        err.contains("ssl.ca.location"),
        "the error says what to check: {err}"
    );
    assert!(took < Duration::from_secs(15), "failed fast: {took:?}");
    // The pipeline refuses to start the same way.
    let out = adstream()
        .arg("run")
        .arg(&wrong)
        .arg("--state-dir")
        .arg(dir.path().join("wrong-state"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("SASL authentication"),
        "{err}"
    );

    // The right ones: the ledger scenario, end to end through TLS and SCRAM.
    let file = secured_pipeline(&dir.path().join("ok"), &broker, PASSWORD, "ca.pem");
    let (ok, err, _) = topics_create(&file);
    assert!(ok, "{err}");
    let run = Running::start(&file, &dir.path().join("state"), &[]);
    let p = secured_producer(&broker);
    let campaign = campaign_json("s-cpm", "adv", Billing::Cpm, 10_000_000_000);
    produce(&p, "ads.campaigns", "s-cpm", Some(campaign.as_bytes()));
    flush(&p);
    wait_for_campaign(&run.api, "s-cpm");
    let mut expected = 0;
    for i in 0..30u64 {
        let imp = signed_impression("s-cpm", &format!("s-{i}"), 1_000 + i);
        produce(
            &p,
            "ads.impressions",
            &format!("k{i}"),
            Some(imp.as_bytes()),
        );
        expected += 1_000 + i;
        if i % 10 == 0 {
            // A repeat is charged once and dead-lettered as a duplicate.
            produce(
                &p,
                "ads.impressions",
                &format!("k{i}"),
                Some(imp.as_bytes()),
            );
        }
    }
    produce(&p, "ads.impressions", "bad", Some(b"{not json"));
    flush(&p);
    let spend = || {
        http_get(&format!("{}/v1/campaigns/s-cpm", run.api))
            .filter(|(s, _)| *s == 200)
            .and_then(|(_, b)| b["spend_micros"].as_u64())
    };
    assert!(
        eventually(Duration::from_secs(60), || spend() == Some(expected)),
        "spend {:?}, expected {expected}",
        spend()
    );
    assert!(
        eventually(Duration::from_secs(60), || {
            metric(
                &run.api,
                "adstream_dead_letters_total{reason=\"duplicate\"}",
            ) == Some(3.0)
                && metric(
                    &run.api,
                    "adstream_dead_letters_total{reason=\"malformed_json\"}",
                ) == Some(1.0)
        }),
        "dead letters counted"
    );

    // Reports are read through the same secured connection.
    let rows_out = || {
        let out = adstream()
            .args([
                "report",
                "tail",
                "report.campaign_minute",
                "--once",
                "--pipeline",
            ])
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert!(
        eventually(Duration::from_secs(60), || {
            let (ok, text) = rows_out();
            ok && text.contains("s-cpm")
        }),
        "report tail over TLS: {:?}",
        rows_out()
    );
    run.kill();
}
