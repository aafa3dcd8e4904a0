//! The JSON Schemas in `schemas/` and the Rust parsers in `adstream_operators::events` must agree.
//!
//! - every schema is a valid draft 2020-12 schema;
//! - every example in `schemas/examples/` is accepted by its schema and by the Rust parser;
//! - every example in `schemas/examples/invalid/` is rejected by both;
//! - removing any required field from a valid example is rejected by both;
//! - what the Rust types serialise validates against the schemas;
//! - the few rules a JSON Schema cannot express (IANA zones, `end` before `start`, the byte
//!   length of non-ASCII ids) are pinned so a
//!   change on either side is noticed.
//!
//! An example's schema is picked from its file name: `campaign.json`, `campaign_minimal.json` and
//! `invalid/campaign_bad_billing.json` all belong to `campaign.schema.json`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use adstream_operators::events::{AdEvent, Campaign, Conversion};
use serde_json::Value;

/// The schema kinds, each with a `schemas/<kind>.schema.json`.
const KINDS: &[&str] = &[
    "campaign",
    "impression",
    "click",
    "conversion",
    "deadletter",
    "budget_status",
    "served",
    "report_row",
];

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema(kind: &str) -> Value {
    read_json(&schemas_dir().join(format!("{kind}.schema.json")))
}

fn validator(kind: &str) -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema(kind))
        .unwrap_or_else(|e| panic!("{kind}.schema.json does not compile: {e}"))
}

/// Schema errors of `doc`, one line each; empty when valid.
fn schema_errors(kind: &str, doc: &Value) -> Vec<String> {
    let v = validator(kind);
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

/// The Rust parser's verdict for `kind`; `None` for kinds adstream only writes.
fn rust_parse(kind: &str, bytes: &[u8]) -> Option<Result<(), String>> {
    let r = match kind {
        "campaign" => Campaign::parse(bytes).map(drop),
        "impression" | "click" => AdEvent::parse(bytes).map(drop),
        "conversion" => Conversion::parse(bytes).map(drop),
        _ => return None,
    };
    Some(r.map_err(|e| e.to_string()))
}

/// The kind an example file belongs to: the longest kind that is its stem or a `kind_` prefix.
fn kind_of(path: &Path) -> &'static str {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_else(|| panic!("bad file name {}", path.display()));
    KINDS
        .iter()
        .copied()
        .filter(|k| stem == *k || stem.starts_with(&format!("{k}_")))
        .max_by_key(|k| k.len())
        .unwrap_or_else(|| panic!("{}: name does not start with a schema kind", path.display()))
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn schemas_are_valid_draft_2020_12() {
    for kind in KINDS {
        let s = schema(kind);
        assert_eq!(
            s["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{kind}.schema.json must declare draft 2020-12"
        );
        if let Err(e) = jsonschema::draft202012::meta::validate(&s) {
            panic!("{kind}.schema.json is not a valid schema: {e}");
        }
        validator(kind);
    }
    // Nothing unexpected in schemas/: every *.schema.json is one of the kinds tested here.
    for path in json_files(&schemas_dir()) {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name == "features.json" {
            // The ranker's feature spec (not an event schema): it must parse and pass its checks.
            let text = std::fs::read_to_string(&path).unwrap();
            adstream_operators::ranker::features::FeatureSpec::parse(&text)
                .unwrap_or_else(|e| panic!("schemas/features.json: {e}"));
            continue;
        }
        let kind = name.strip_suffix(".schema.json").unwrap_or(name);
        assert!(
            KINDS.contains(&kind),
            "{name} is not covered by tests/schemas.rs"
        );
    }
}

#[test]
fn valid_examples_pass_schema_and_rust_parser() {
    let files = json_files(&schemas_dir().join("examples"));
    for kind in ["campaign", "impression", "click", "conversion"] {
        assert!(
            files.iter().any(|p| kind_of(p) == kind),
            "no valid example for {kind}"
        );
    }
    for path in &files {
        let kind = kind_of(path);
        let bytes = std::fs::read(path).expect("read example");
        let doc: Value = serde_json::from_slice(&bytes).expect("example is JSON");
        let errors = schema_errors(kind, &doc);
        assert!(
            errors.is_empty(),
            "{}: schema rejects it: {errors:#?}",
            path.display()
        );
        if let Some(Err(e)) = rust_parse(kind, &bytes) {
            panic!("{}: Rust parser rejects it: {e}", path.display());
        }
    }
}

#[test]
fn invalid_examples_fail_schema_and_rust_parser() {
    let files = json_files(&schemas_dir().join("examples").join("invalid"));
    assert!(
        files.len() >= 4,
        "expected invalid examples, found {}",
        files.len()
    );
    for path in &files {
        let kind = kind_of(path);
        let bytes = std::fs::read(path).expect("read example");
        let doc: Value = serde_json::from_slice(&bytes).expect("invalid examples are still JSON");
        assert!(
            !schema_errors(kind, &doc).is_empty(),
            "{}: schema accepts it",
            path.display()
        );
        if let Some(Ok(())) = rust_parse(kind, &bytes) {
            panic!("{}: Rust parser accepts it", path.display());
        }
    }
}

#[test]
fn dropping_a_required_field_fails_both() {
    for path in json_files(&schemas_dir().join("examples")) {
        let kind = kind_of(&path);
        let doc = read_json(&path);
        let required: Vec<String> = schema(kind)["required"]
            .as_array()
            .expect("schema lists required fields")
            .iter()
            .map(|f| f.as_str().expect("field name").to_string())
            .collect();
        for field in required {
            let mut broken = doc.clone();
            broken
                .as_object_mut()
                .expect("example is an object")
                .remove(&field);
            let bytes = serde_json::to_vec(&broken).expect("serialise");
            assert!(
                !schema_errors(kind, &broken).is_empty(),
                "{}: schema accepts it without `{field}`",
                path.display()
            );
            if let Some(Ok(())) = rust_parse(kind, &bytes) {
                panic!(
                    "{}: Rust parser accepts it without `{field}`",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn rust_serialised_events_validate() {
    let examples = schemas_dir().join("examples");
    for path in json_files(&examples) {
        let kind = kind_of(&path);
        let bytes = std::fs::read(&path).expect("read example");
        let value = match kind {
            "campaign" => serde_json::to_value(Campaign::parse(&bytes).expect("parse campaign")),
            "impression" | "click" => {
                serde_json::to_value(AdEvent::parse(&bytes).expect("parse ad event"))
            }
            "conversion" => {
                serde_json::to_value(Conversion::parse(&bytes).expect("parse conversion"))
            }
            "served" => serde_json::to_value(
                serde_json::from_slice::<adstream_operators::records::Served>(&bytes)
                    .expect("parse served"),
            ),
            _ => continue,
        }
        .expect("serialise");
        let errors = schema_errors(kind, &value);
        assert!(
            errors.is_empty(),
            "{}: the Rust serialisation {value} fails the schema: {errors:#?}",
            path.display()
        );
        // And what Rust writes, Rust reads back.
        let again = serde_json::to_vec(&value).expect("serialise");
        if let Some(Err(e)) = rust_parse(kind, &again) {
            panic!(
                "{}: Rust cannot re-read its own output: {e}",
                path.display()
            );
        }
    }

    // Rows as the reports render them, every measure and a subset, validate.
    use adstream_operators::report::row::render;
    use adstream_operators::report::{Dimension, Measure, ReportSpec, RowKey, Totals};
    let mut spec = ReportSpec::new(
        "geo",
        &[Dimension::Country, Dimension::Device],
        3_600_000,
        0,
    );
    let key = RowKey {
        report: 0,
        group: vec!["DE".into(), "unknown".into()],
        window_start: 1_764_237_600_000,
    };
    for totals in [
        Totals::default(),
        Totals {
            won: 9,
            impressions: 8,
            clicks: 2,
            conversions: 1,
            conversion_value_micros: 5_000,
            spend_micros: 3_333,
            overdelivery_micros: 1_200,
            pctr_nanos: 9 * 30_000_000,
        },
    ] {
        for measures in [Measure::ALL.to_vec(), vec![Measure::Spend, Measure::Ctr]] {
            spec.measures = measures;
            let row = render(&spec, &key, &totals, 1_764_241_200_500, true);
            let errors = schema_errors("report_row", &row.value);
            assert!(errors.is_empty(), "{}: {errors:#?}", row.value);
        }
    }

    // A campaign with every optional field absent serialises with defaults and nulls.
    let minimal = br#"{"campaign_id":"c","advertiser_id":"a","daily_budget_micros":0,
        "timezone":"UTC","billing":"cpa","bid_micros":1}"#;
    let value = serde_json::to_value(Campaign::parse(minimal).expect("parse")).expect("serialise");
    let errors = schema_errors("campaign", &value);
    assert!(errors.is_empty(), "{value}: {errors:#?}");
}

/// What only the Rust parser can check. If one of these starts failing, a rule moved between the
/// schema and the parser: update `schemas/README.md` and this list together.
#[test]
fn known_schema_gaps_are_caught_by_the_parser() {
    let base = read_json(&schemas_dir().join("examples").join("campaign.json"));
    let mut cases: Vec<(&str, Value)> = Vec::new();

    let mut bad_zone = base.clone();
    bad_zone["timezone"] = Value::from("Mars/Olympus_Mons");
    cases.push(("unknown IANA time zone", bad_zone));

    // maxLength counts characters; the id limit is in bytes of UTF-8.
    let mut wide_id = base.clone();
    wide_id["campaign_id"] = Value::from("é".repeat(200));
    cases.push(("an id of 200 characters and 400 bytes", wide_id));

    let mut reversed = base.clone();
    reversed["start"] = Value::from("2026-12-01T00:00:00Z");
    reversed["end"] = Value::from("2026-11-01T00:00:00Z");
    cases.push(("end before start", reversed));

    for (what, doc) in cases {
        assert!(
            schema_errors("campaign", &doc).is_empty(),
            "{what}: the schema now rejects it; move it to schemas/examples/invalid/"
        );
        let bytes = serde_json::to_vec(&doc).expect("serialise");
        assert!(
            Campaign::parse(&bytes).is_err(),
            "{what}: the Rust parser accepts it"
        );
    }
}

#[test]
fn times_accept_rfc3339_and_integer_millis_in_both() {
    let v = validator("conversion");
    let doc = |ts: Value| {
        serde_json::json!({
            "event_id": "e", "ts": ts, "user_id": "u", "advertiser_id": "a", "type": "purchase"
        })
    };
    for ts in [
        Value::from("2026-11-25T10:00:00Z"),
        Value::from("2026-11-25T10:00:00.123456+05:30"),
        Value::from("2026-11-25t10:00:00z"),
        Value::from(1_795_600_800_000_i64),
        Value::from(0),
        Value::from(-1),
    ] {
        let d = doc(ts.clone());
        let bytes = serde_json::to_vec(&d).expect("serialise");
        assert!(v.is_valid(&d), "schema rejects ts {ts}");
        assert!(Conversion::parse(&bytes).is_ok(), "Rust rejects ts {ts}");
    }
    for ts in [
        Value::from("2026-11-25"),
        Value::from("2026-11-25T10:00:00"),
        Value::from("10:00:00Z"),
        Value::from("1795600800000"),
        Value::from(1.5),
        Value::Bool(true),
        Value::Null,
    ] {
        let d = doc(ts.clone());
        let bytes = serde_json::to_vec(&d).expect("serialise");
        assert!(!v.is_valid(&d), "schema accepts ts {ts}");
        assert!(Conversion::parse(&bytes).is_err(), "Rust accepts ts {ts}");
    }
}

/// The headers the pipeline writes on a dead letter validate against `deadletter.schema.json`,
/// for every reason.
#[test]
fn dead_letter_headers_validate() {
    use adstream_operators::records::{DeadLetter, Origin, Reason};
    for reason in Reason::ALL {
        let dead = DeadLetter {
            reason,
            detail: "field `ts`: missing".into(),
            origin: Origin {
                stream: 1,
                partition: 7,
                offset: 123_456,
            },
            key: Some(vec![0xff, 0x00]),
            payload: vec![0xc3, 0x28, b'{'],
            truncated: reason == Reason::Oversize,
        };
        let headers: serde_json::Map<String, Value> =
            adstream::kafka::sink::dead_letter_headers(&dead, "ads.impressions")
                .into_iter()
                .map(|(k, v)| (k, Value::String(String::from_utf8(v).unwrap())))
                .collect();
        let doc = Value::Object(headers);
        let errors = schema_errors("deadletter", &doc);
        assert!(errors.is_empty(), "{doc}: {errors:#?}");
    }
}
