//! Rows: the key of a row in the dataflow ([`RowKey`]) and the upsert record analysts read
//! ([`ReportRow`], documented by `schemas/report_row.schema.json`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::spec::{Measure, ReportSpec};
use super::totals::Totals;

/// Which row: a report (its index in the pipeline's list), a group and a window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RowKey {
    /// Index of the report in the pipeline's list.
    pub report: u16,
    /// The group's dimension values, in the report's order.
    pub group: Vec<String>,
    /// Window start, ms since the epoch.
    pub window_start: i64,
}

/// One upsert record of a report topic.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportRow {
    /// Index of the report in the pipeline's list (its topic).
    pub report: usize,
    /// Kafka key: the group values joined by `|`, `@`, the window start (RFC 3339).
    pub key: String,
    /// The row document.
    pub value: Value,
}

fn ratio(num: i64, den: i64) -> Value {
    if den > 0 {
        json!(num as f64 / den as f64)
    } else {
        Value::Null
    }
}

fn per(num: i64, den: i64) -> Value {
    if den > 0 {
        json!(num / den)
    } else {
        Value::Null
    }
}

/// The value of `measure` for `t` (a ratio is `null` when its denominator is zero; money per
/// unit is whole micros, rounded down).
pub fn measure_value(measure: Measure, t: &Totals) -> Value {
    match measure {
        Measure::RequestsWon => json!(t.won),
        Measure::Impressions => json!(t.impressions),
        Measure::Clicks => json!(t.clicks),
        Measure::Conversions => json!(t.conversions),
        Measure::ConversionValue => json!(t.conversion_value_micros),
        Measure::Spend => json!(t.spend_micros),
        Measure::Overdelivery => json!(t.overdelivery_micros),
        Measure::Ctr => ratio(t.clicks, t.impressions),
        Measure::Cvr => ratio(t.conversions, t.clicks),
        Measure::Cpc => per(t.spend_micros, t.clicks),
        Measure::Cpa => per(t.spend_micros, t.conversions),
        Measure::AvgPctr => ratio(t.pctr_nanos, t.won.saturating_mul(1_000_000_000)),
        Measure::PctrOverCtr => {
            if t.won > 0 && t.impressions > 0 && t.clicks > 0 {
                let avg = t.pctr_nanos as f64 / 1e9 / t.won as f64;
                json!(avg / (t.clicks as f64 / t.impressions as f64))
            } else {
                Value::Null
            }
        }
    }
}

/// `ms` as RFC 3339 UTC, with a fraction only when it has one.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The Kafka key of `key`'s row.
pub fn kafka_key(key: &RowKey) -> String {
    format!("{}@{}", key.group.join("|"), rfc3339(key.window_start))
}

/// Renders `key`'s row of `spec` with `totals`; `watermark` is the event-time frontier it
/// reflects (every event stamped before it is counted), `is_final` whether it will change again.
pub fn render(
    spec: &ReportSpec,
    key: &RowKey,
    totals: &Totals,
    watermark: i64,
    is_final: bool,
) -> ReportRow {
    let mut group = Map::new();
    for (d, v) in spec.dimensions.iter().zip(&key.group) {
        group.insert(d.name().to_string(), json!(v));
    }
    let mut doc = Map::new();
    doc.insert("report".into(), json!(spec.name));
    doc.insert("window_start".into(), json!(rfc3339(key.window_start)));
    doc.insert(
        "window_end".into(),
        json!(rfc3339(key.window_start.saturating_add(spec.window_ms))),
    );
    doc.insert("group".into(), Value::Object(group));
    for m in &spec.measures {
        doc.insert(m.name().to_string(), measure_value(*m, totals));
    }
    doc.insert("final".into(), json!(is_final));
    doc.insert("watermark".into(), json!(rfc3339(watermark)));
    ReportRow {
        report: key.report as usize,
        key: kafka_key(key),
        value: Value::Object(doc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::spec::Dimension;

    #[test]
    fn renders_measures_ratios_and_key() {
        let spec = ReportSpec::new(
            "geo",
            &[Dimension::Country, Dimension::Device],
            3_600_000,
            0,
        );
        let key = RowKey {
            report: 2,
            group: vec!["DE".into(), "mobile".into()],
            window_start: 1_764_230_400_000,
        };
        let t = Totals {
            overdelivery_micros: 0,
            won: 4,
            impressions: 4,
            clicks: 1,
            conversions: 0,
            conversion_value_micros: 0,
            spend_micros: 2_500,
            pctr_nanos: 4 * 50_000_000,
        };
        let row = render(&spec, &key, &t, 1_764_230_999_000, false);
        assert_eq!(row.report, 2);
        assert_eq!(row.key, "DE|mobile@2025-11-27T08:00:00Z");
        let v = &row.value;
        assert_eq!(v["group"]["country"], "DE");
        assert_eq!(v["window_end"], "2025-11-27T09:00:00Z");
        assert_eq!(v["spend_micros"], 2_500);
        assert_eq!(v["ctr"], 0.25);
        assert_eq!(v["cvr"], 0.0);
        assert_eq!(v["cpc_micros"], 2_500);
        assert_eq!(v["cpa_micros"], Value::Null);
        assert_eq!(v["avg_pctr"], 0.05);
        assert!((v["pctr_over_ctr"].as_f64().unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(v["final"], false);
    }
}
