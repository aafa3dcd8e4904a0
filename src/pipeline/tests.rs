//! Pipeline files: defaults, located errors (all of them), secrets.

use std::path::Path;
use std::time::Duration;

use adstream_operators::attribution::Windows;
use adstream_operators::labels::LabelConfig;
use adstream_operators::ledger::Horizons;
use adstream_operators::pacing::PacingConfig;
use adstream_operators::ranker::features::{FeatureSpec, DEFAULT_SPEC};
use adstream_operators::ranker::trainer::{DevicePreference, TrainerConfig};
use adstream_operators::report::ReportSpec;
use adstream_operators::source::SourceConfig;

use super::*;
use adstream_operators::serve::currency::Rates;

const OK: &str = r#"
[pipeline]
name = "t"
secret = "0123456789"

[kafka]
brokers = "127.0.0.1:9092"
"#;

fn parse(text: &str) -> Result<Pipeline, PipelineErrors> {
    Pipeline::parse("t.toml", text)
}

/// The only error of `text`.
fn one_error(text: &str) -> PipelineError {
    let errors = parse(text).unwrap_err();
    assert_eq!(errors.errors().len(), 1, "{errors}");
    errors.errors()[0].clone()
}

/// `OK` with `extra` appended (from line 9 on).
fn with(extra: &str) -> String {
    format!("{OK}\n{extra}\n")
}

fn shipped() -> Pipeline {
    Pipeline::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/ads.toml")).unwrap()
}

#[test]
fn every_section_defaults() {
    let p = parse(OK).unwrap();
    assert_eq!(p.name, "t");
    assert_eq!(p.workers, 1);
    assert_eq!(p.state_dir, Path::new(".state"));
    assert!(!p.allow_development_secret);
    assert_eq!(p.kafka.brokers, "127.0.0.1:9092");
    assert!(p.kafka.properties.is_empty());
    assert_eq!(p.topics, Topics::default());
    assert_eq!(p.topics.campaigns, "ads.campaigns");
    let source = SourceConfig::default();
    assert_eq!(
        (
            p.source.tick_ms,
            p.source.lateness_ms,
            p.source.max_skew_ms,
            p.source.checkpoint_interval_ms,
            p.source.batch,
            p.source.poll_interval
        ),
        (
            source.tick_ms,
            source.lateness_ms,
            source.max_skew_ms,
            source.checkpoint_interval_ms,
            source.batch,
            source.poll_interval
        )
    );
    assert_eq!(
        p.checkpoint,
        Checkpoint {
            interval_ms: 1_000,
            fsync: false
        }
    );
    assert_eq!(p.monitor.interval, Duration::from_secs(1));
    assert_eq!(p.monitor.timeout, Duration::from_secs(5));
    assert_eq!(p.monitor.max_lag, 100_000);
    assert_eq!(p.horizons, Horizons::default());
    assert_eq!(p.max_message_bytes, 64 * 1024);
    assert_eq!(p.windows, Windows::default());
    assert_eq!(p.api.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(p.api.admin_token, None);
    assert_eq!(p.api.limits, Limits::default());
    assert_eq!(p.api.limits.header_read_timeout.as_millis(), 10_000);
    assert_eq!(p.api.limits.idle_timeout.as_millis(), 60_000);
    assert_eq!(p.api.limits.max_connections, 1_024);
    assert_eq!(p.api.limits.shutdown_grace.as_millis(), 5_000);
    assert_eq!(
        p.serving,
        Serving {
            reserve_ecpm_micros: 10_000,
            per_advertiser: 2,
            max_candidates: 200,
            prerank_candidates: 400,
            reservation_ttl_ms: PacingConfig::default().reservation_ttl_ms,
            queue: 1024,
            public_url: None,
            seat: "adstream".into(),
            nbr_body: false,
        }
    );
    assert_eq!(p.currency, Rates::default());
    assert_eq!(p.pacing, PacingConfig::default());
    assert_eq!(p.labels, LabelConfig::default());
    assert!(p.model.enabled);
    assert_eq!(p.model.features, FeatureSpec::parse(DEFAULT_SPEC).unwrap());
    assert_eq!(p.model.trainer, TrainerConfig::default());
    assert_eq!(&p.reports[..], &ReportSpec::defaults()[..]);
}

#[test]
fn the_shipped_pipeline_resolves() {
    let p = shipped();
    assert_eq!(p.workers, 2);
    // The admin routes listen apart; per-campaign series are off.
    assert_eq!(p.api.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        p.api.admin_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9090")
    );
    assert!(!p.metrics.per_campaign);
    assert_eq!(p.kafka.properties["client.id"].as_written(), "adstream");
    assert_eq!(p.reports.len(), 3);
    assert_eq!(p.reports[2].measures.len(), 12);
    assert_eq!(p.reports[1].update_ms, 1_000);
    assert_eq!(p.labels.click_window_ms, 60_000);
    assert_eq!(p.model.trainer.snapshot_interval, Duration::from_secs(30));
    // Mappings across sections.
    assert_eq!(p.pacing.conversion_window_ms, p.windows.click_ms);
    assert_eq!(p.horizons.conversion_ms, p.windows.click_ms + 86_400_000);
    // Report rows within two seconds of their events: lateness + checkpoint + update_ms.
    assert_eq!(p.source.checkpoint_interval_ms, 500);
    assert_eq!(p.source.lateness_ms, 1_000);
    assert_eq!(p.reports[0].update_ms, 500);
    assert_eq!(p.serving.reservation_ttl_ms, p.pacing.reservation_ttl_ms);
}

#[test]
fn three_errors_are_reported_together_with_their_positions() {
    let text = format!(
        "{OK}\n[checkpoint]\ninterval_ms = 0\n\n[model]\ndevice = \"tpu\"\n\n[[reporting.reports]]\nname = \"r\"\ndimensions = [\"country\", \"city\"]\nwindow_ms = 60000\n"
    );
    let errors = parse(&text).unwrap_err();
    let found: Vec<(usize, usize, Option<&str>)> = errors
        .errors()
        .iter()
        .map(|e| (e.line, e.column, e.field.as_deref()))
        .collect();
    assert_eq!(
        found,
        [
            (10, 15, Some("checkpoint.interval_ms")),
            (13, 10, Some("model.device")),
            (17, 26, Some("reporting.reports[0].dimensions")),
        ],
        "{errors}"
    );
    let shown = errors.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(
        lines,
        [
            "t.toml:10:15: field `checkpoint.interval_ms`: must be at least 10",
            "t.toml:13:10: field `model.device`: must be \"auto\", \"cpu\" or \"cuda\"",
            "t.toml:17:26: field `reporting.reports[0].dimensions`: unknown dimension \"city\" (expected one of campaign_id, advertiser_id, ad_id, country, device, billing)",
        ]
    );
}

#[test]
fn unknown_keys_are_errors_with_line() {
    let err = one_error(&with("[checkpoint]\nintervall_ms = 5"));
    assert_eq!(err.line, 10, "{err}");
    assert!(err.to_string().starts_with("t.toml:10:"), "{err}");
    assert!(err.to_string().contains("intervall_ms"), "{err}");
}

#[test]
fn semantic_errors_name_field_and_line() {
    let err = one_error(&OK.replace("brokers = \"127.0.0.1:9092\"", "brokers = \"nohost\""));
    assert_eq!(err.line, 7, "{err}");
    assert_eq!(err.field.as_deref(), Some("kafka.brokers"), "{err}");
    let err = one_error(&with("[checkpoint]\ninterval_ms = 0"));
    assert_eq!(
        err.field.as_deref(),
        Some("checkpoint.interval_ms"),
        "{err}"
    );
    assert_eq!(err.line, 10);
    let err = one_error("[pipeline]\nname = \"x\"\n");
    assert!(err.to_string().contains("secret"), "{err}");
    let err = one_error(&with("[topics]\nclicks = \"a b\""));
    assert_eq!(err.field.as_deref(), Some("topics.clicks"), "{err}");
    assert_eq!(err.line, 10);
}

#[test]
fn model_and_label_settings_are_checked() {
    let p = parse(&with("[model]\nhidden = [64]\ndevice = \"cpu\"\naverage_examples = 5000\n[model.guards]\nmax_auc_drop = 0.02\n[labels]\nclick_window_ms = 5000\n[history]\nrecent_clicks = 4\nretention_hours = 48")).unwrap();
    assert_eq!(p.model.trainer.average_examples, 5_000);
    assert_eq!(p.model.trainer.conversion_head_rate, 0.03);
    assert_eq!(p.history.recent_clicks, 4);
    assert_eq!(p.history.retention_ms, 48 * 3_600_000);
    assert_eq!(p.model.trainer.model.hidden, vec![64]);
    assert_eq!(p.model.trainer.device, DevicePreference::Cpu);
    assert_eq!(p.model.trainer.guards.max_auc_drop, 0.02);
    assert_eq!(p.labels.click_window_ms, 5_000);
    for (bad, field) in [
        ("[model]\ndevice = \"tpu\"", "model.device"),
        ("[model]\nhidden = []", "model.hidden"),
        ("[model]\nlearning_rate = 0.0", "model.learning_rate"),
        ("[model]\nconversion_head_rate = 0.0", "model.conversion_head_rate"),
        ("[model]\nconversion_head_rate = 2.0", "model.conversion_head_rate"),
        (
            "[model.guards]\ncalibration = [2.0, 1.0]",
            "model.guards.calibration",
        ),
        ("[labels]\nclick_window_ms = -5", "labels.click_window_ms"),
        ("[history]\nrecent_clicks = 1000", "history.recent_clicks"),
        ("[history]\nretention_hours = 1", "history.retention_hours"),
        ("[history]\nrecent = 3", "history"),
        ("[model]\naverage_examples = -1", "model.average_examples"),
        (
            "[model]\nfeatures = \"/nonexistent/features.json\"",
            "model.features",
        ),
        ("[model]\nbatch_size = \"big\"", "model.batch_size"),
        (
            "[[reporting.reports]]\nname = \"r\"\ndimensions = [\"city\"]\nwindow_ms = 60000",
            "reporting.reports[0].dimensions",
        ),
        (
            "[[reporting.reports]]\nname = \"r\"\ndimensions = [\"country\"]\nwindow_ms = 60000\nmeasures = [\"roas\"]",
            "reporting.reports[0].measures",
        ),
        (
            "[[reporting.reports]]\nname = \"r\"\ndimensions = [\"country\"]\nwindow_ms = 0",
            "reporting.reports[0].window_ms",
        ),
        (
            "[[reporting.reports]]\nname = \"Bad\"\ndimensions = [\"country\"]\nwindow_ms = 1000",
            "reporting.reports[0].name",
        ),
        (
            "[[reporting.reports]]\nname = \"a\"\ndimensions = [\"ad_id\"]\nwindow_ms = 1000\n[[reporting.reports]]\nname = \"a\"\ndimensions = [\"ad_id\"]\nwindow_ms = 1000",
            "reporting.reports[1].name",
        ),
        (
            "[[reporting.reports]]\nname = \"r\"\ndimensions = [\"country\"]\nwindow_ms = 1000\nfinal_after_ms = -1",
            "reporting.reports[0].final_after_ms",
        ),
        (
            "[[reporting.reports]]\nname = \"r\"\ntopic = \"a/b\"\ndimensions = [\"country\"]\nwindow_ms = 1000",
            "reporting.reports[0].topic",
        ),
        ("[[reporting.reports]]\nname = \"r\"\nwindow_ms = 1000", "dimensions"),
        ("[reporting]\nenabled = \"yes\"", "enabled"),
    ] {
        let err = one_error(&with(bad));
        assert!(err.to_string().contains(field), "{bad}: {err}");
        assert!(err.line > 8, "{bad}: {err}");
    }
}

#[test]
fn api_limits_parse_and_are_checked() {
    let p = parse(&with("[api]\nheader_read_timeout_ms = 500\nidle_timeout_ms = 2000\nmax_connections = 8\nshutdown_grace_ms = 0")).unwrap();
    let limits = p.api.limits;
    assert_eq!(limits.header_read_timeout.as_millis(), 500);
    assert_eq!(limits.idle_timeout.as_millis(), 2_000);
    assert_eq!(limits.max_connections, 8);
    assert_eq!(limits.shutdown_grace.as_millis(), 0);
    for (bad, field) in [
        ("header_read_timeout_ms = 0", "api.header_read_timeout_ms"),
        ("idle_timeout_ms = 99", "api.idle_timeout_ms"),
        ("max_connections = 0", "api.max_connections"),
        ("shutdown_grace_ms = 600001", "api.shutdown_grace_ms"),
        ("max_connections = -1", "api.max_connections"),
        ("idle_timeout = 5", "idle_timeout"),
        ("listen = \"localhost\"", "api.listen"),
    ] {
        let err = one_error(&with(&format!("[api]\n{bad}")));
        assert!(err.to_string().contains(field), "{bad}: {err}");
        assert_eq!(err.line, 10, "{bad}: {err}");
    }
}

#[test]
fn the_admin_listener_and_advertiser_tokens_parse_and_are_checked() {
    let p = parse(OK).unwrap();
    assert_eq!(p.api.admin_listen, None);
    assert!(p.api.advertiser_tokens.is_empty());
    assert!(!p.metrics.per_campaign);
    let p = parse(&with(
        "[api]\nadmin_listen = \"127.0.0.1:9191\"\n[api.advertiser_tokens]\nadv-1 = \"adv-1-read-token-0123\"\nadv-2 = \"env:ADV2_TOKEN\"\n[metrics]\nper_campaign = true",
    ))
    .unwrap();
    assert_eq!(p.api.admin_listen.unwrap().to_string(), "127.0.0.1:9191");
    assert_eq!(p.api.advertiser_tokens.len(), 2);
    assert!(p.metrics.per_campaign);
    assert!(
        !format!("{p:?}").contains("adv-1-read-token-0123"),
        "tokens are never printed"
    );
    // An unset variable is found at start-up, not by `validate`.
    assert!(p.unlock().is_err());
    let p = parse(&with(
        "[api.advertiser_tokens]\nadv-1 = \"adv-1-read-token-0123\"",
    ))
    .unwrap();
    assert_eq!(
        p.unlock().unwrap().advertiser_tokens,
        [("adv-1".to_string(), "adv-1-read-token-0123".to_string())]
    );
    for (bad, field) in [
        ("admin_listen = \"localhost\"", "api.admin_listen"),
        ("admin_listen = \"127.0.0.1:8080\"", "api.admin_listen"),
        (
            "listen = \"0.0.0.0:80\"\nadmin_listen = \"0.0.0.0:80\"",
            "api.admin_listen",
        ),
        (
            "[api.advertiser_tokens]\nadv-1 = \"short\"",
            "api.advertiser_tokens.adv-1",
        ),
        (
            "[api.advertiser_tokens]\nadv-1 = \"env:\"",
            "api.advertiser_tokens.adv-1",
        ),
        (
            "[api.advertiser_tokens]\n\"a\\u0000b\" = \"a-long-enough-token-123\"",
            "api.advertiser_tokens.a\0b",
        ),
    ] {
        let err = one_error(&with(&format!("[api]\n{bad}")));
        assert_eq!(err.field.as_deref(), Some(field), "{bad}: {err}");
    }
    let err = one_error(&with("[metrics]\nper_campaing = true"));
    assert!(err.to_string().contains("per_campaing"), "{err}");
}

#[test]
fn serving_settings_resolve_and_are_checked() {
    let p = parse(&with(
        "[serving]\nreserve_cpm = 1.5\nqueue = 7\n[pacing]\nreservation_ttl_ms = 5000",
    ))
    .unwrap();
    assert_eq!(p.serving.reserve_ecpm_micros, 1_500_000);
    assert_eq!(p.serving.queue, 7);
    assert_eq!(p.serving.reservation_ttl_ms, 5_000);
    assert_eq!(
        (p.serving.max_candidates, p.serving.prerank_candidates),
        (200, 400),
        "the pool defaults to 2 x max_candidates"
    );
    let p = parse(&with("[serving]\nmax_candidates = 50")).unwrap();
    assert_eq!(p.serving.prerank_candidates, 100);
    let p = parse(&with(
        "[serving]\nmax_candidates = 50\nprerank_candidates = 50",
    ))
    .unwrap();
    assert_eq!(p.serving.prerank_candidates, 50);
    for (bad, field) in [
        ("reserve_cpm = -1.0", "serving.reserve_cpm"),
        ("queue = 0", "serving.queue"),
        ("per_advertiser = 0", "serving.per_advertiser"),
        ("public_url = \"ads.example.com\"", "serving.public_url"),
        ("public_url = \"https://x/?a=1\"", "serving.public_url"),
        ("burl_base = \"http://x/v1/billing\"", "serving.burl_base"),
        ("seat = \"\"", "serving.seat"),
        ("no_bid = \"200\"", "serving.no_bid"),
        ("prerank_candidates = 199", "serving.prerank_candidates"),
        (
            "max_candidates = 50\nprerank_candidates = 49",
            "serving.prerank_candidates",
        ),
    ] {
        let err = one_error(&with(&format!("[serving]\n{bad}")));
        assert_eq!(err.field.as_deref(), Some(field), "{bad}: {err}");
    }
    let err = one_error(&with("[serving]\nburl_base = \"http://x/v1/billing\""));
    assert!(err.to_string().contains("public_url"), "{err}");
    let p = parse(&with(
        "[serving]\npublic_url = \"https://ads.example.com/\"\nseat = \"s9\"\nno_bid = \"nbr\"",
    ))
    .unwrap();
    assert_eq!(
        p.serving.public_url.as_deref(),
        Some("https://ads.example.com")
    );
    assert_eq!(p.serving.seat, "s9");
    assert!(p.serving.nbr_body);
}

#[test]
fn currency_tables_resolve_and_are_checked() {
    let p = parse(&with(
        "[currency]\naccount = \"eur\"\nrates = { USD = 0.92, GBP = 1.17 }",
    ))
    .unwrap();
    assert_eq!(p.currency.account(), "EUR");
    assert_eq!(p.currency.rate("usd"), Some(0.92));
    assert_eq!(p.currency.rate("EUR"), Some(1.0));
    for (bad, field) in [
        ("account = \"EURO\"", "currency.account"),
        ("rates = { USD = -1.0 }", "currency.rates"),
        ("rates = { DOLLAR = 1.0 }", "currency.rates"),
    ] {
        let err = one_error(&with(&format!("[currency]\n{bad}")));
        assert_eq!(err.field.as_deref(), Some(field), "{bad}: {err}");
    }
}

#[test]
fn secrets_are_never_printed_and_admin_tokens_are_checked() {
    let text = with("[kafka.properties]\n\"sasl.password\" = \"hunter2-literal\"\n\"sasl.username\" = \"env:KAFKA_USER\"\n[api]\nadmin_token = \"tok-literal-123\"");
    let p = parse(&text).unwrap();
    let printed = format!("{p:?}");
    for secret in ["hunter2-literal", "tok-literal-123", "0123456789"] {
        assert!(!printed.contains(secret), "{secret} leaked: {printed}");
    }
    assert!(printed.contains("env:KAFKA_USER"), "indirections are shown");
    let unlocked = p.unlock().unwrap();
    assert_eq!(unlocked.admin_token.as_deref(), Some("tok-literal-123"));
    assert_eq!(unlocked.serve.secret, b"0123456789");
    assert_eq!(unlocked.decode.secret, b"0123456789");
    assert_eq!(unlocked.decode.max_message_bytes, 64 * 1024);
    assert_eq!(unlocked.serve.reserve_ecpm_micros, 10_000);
    let err = one_error(&with("[api]\nadmin_token = \" \""));
    assert_eq!(err.field.as_deref(), Some("api.admin_token"), "{err}");
}

#[test]
fn reports_default_parse_and_disable() {
    let p = parse(OK).unwrap();
    let names: Vec<&str> = p.reports.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["campaign_minute", "advertiser_hour", "country_device_hour"]
    );
    assert!(p
        .all_topics()
        .contains(&("report.campaign_minute".to_string(), true)));
    let p = parse(&with("[[reporting.reports]]\nname = \"ads\"\ntopic = \"an.ads.report\"\ndimensions = [\"ad_id\", \"billing\"]\nwindow_ms = 300000")).unwrap();
    let spec = &p.reports[0];
    assert_eq!(
        (spec.topic.as_str(), spec.final_after_ms),
        ("an.ads.report", 300_000)
    );
    let p = parse(&with("[reporting]\nenabled = false")).unwrap();
    assert!(p.reports.is_empty());
    assert!(!p.all_topics().iter().any(|(t, _)| t.starts_with("report.")));
}

#[test]
fn pacing_settings_are_checked() {
    let p = parse(&with("[pacing]\nslots = 48\nmin_pass = 0.5")).unwrap();
    assert_eq!(p.pacing.slots, 48);
    assert_eq!(p.pacing.min_pass, 0.5);
    let p = parse(&with("[attribution]\nclick_window_ms = 1000")).unwrap();
    assert_eq!(p.pacing.conversion_window_ms, 1_000);
    let err = one_error(&with("[pacing]\nmin_pass = 2.0"));
    assert_eq!(err.field.as_deref(), Some("pacing.min_pass"), "{err}");
    assert_eq!(err.line, 10, "{err}");
    let err = one_error(&with("[pacing]\npublish_ms = 5000"));
    assert_eq!(err.field.as_deref(), Some("pacing.publish_ms"), "{err}");
    let err = one_error(&with("[pacing]\nenabled = \"yes\""));
    assert!(err.to_string().contains("field `pacing.enabled`"), "{err}");
    assert!(err.message.contains("expected a boolean"), "{err}");
    let err = one_error(&with("[pacing]\ninterval_ms = 60000\nhorizon_ms = 1000"));
    assert_eq!(err.field.as_deref(), Some("pacing.horizon_ms"), "{err}");
}

#[test]
fn the_development_secret_needs_an_explicit_allowance() {
    let text = OK.replace("0123456789", DEVELOPMENT_SECRET);
    let p = parse(&text).unwrap();
    let err = p.unlock().unwrap_err().to_string();
    assert!(err.contains("allow_development_secret"), "{err}");
    let allowed = text.replace(
        "[pipeline]\n",
        "[pipeline]\nallow_development_secret = true\n",
    );
    let p = parse(&allowed).unwrap();
    assert_eq!(p.secret().unwrap(), DEVELOPMENT_SECRET.as_bytes());
    assert!(
        shipped().secret().is_err(),
        "the shipped pipeline must not run with it silently"
    );
}

#[test]
fn secrets_resolve_from_env_and_files() {
    std::env::set_var("ADSTREAM_TEST_SECRET", "from-env");
    assert_eq!(
        Secret::from("env:ADSTREAM_TEST_SECRET").resolve().unwrap(),
        "from-env"
    );
    assert!(Secret::from("env:ADSTREAM_NOT_SET_ANYWHERE")
        .resolve()
        .is_err());
    assert_eq!(Secret::from("literal").resolve().unwrap(), "literal");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "from-file\n").unwrap();
    let secret = Secret::from(format!("file:{}", path.display()).as_str());
    assert_eq!(secret.resolve().unwrap(), "from-file");
    // Resolution does not read the environment: `validate` works without it.
    let p = parse(&OK.replace("0123456789", "env:ADSTREAM_NOT_SET_ANYWHERE")).unwrap();
    assert!(p.unlock().is_err());
}

#[test]
fn an_unreadable_file_is_one_error() {
    let err = Pipeline::load(Path::new("/nonexistent/p.toml")).unwrap_err();
    assert_eq!(err.errors().len(), 1);
    assert!(
        err.to_string()
            .starts_with("/nonexistent/p.toml:0:0: cannot read"),
        "{err}"
    );
}

#[test]
fn kafka_properties_override_defaults_but_not_what_correctness_rests_on() {
    let p = parse(&with(
        "[kafka.properties]\n\"linger.ms\" = \"50\"\n\"compression.type\" = \"zstd\"\n\"group.id\" = \"team-ads\"",
    ))
    .unwrap();
    assert_eq!(p.kafka.properties["linger.ms"].as_written(), "50");
    for key in [
        "enable.auto.commit",
        "acks",
        "message.timeout.ms",
        "transactional.id",
    ] {
        let err = one_error(&with(&format!("[kafka.properties]\n\"{key}\" = \"x\"")));
        assert_eq!(
            err.field.as_deref(),
            Some(format!("kafka.properties.{key}").as_str()),
            "{err}"
        );
        assert!(err.message.contains("may not be changed"), "{err}");
        assert!(err.line > 1, "the error points at the key: {err}");
    }
}
