//! What a report is: its group dimensions, window, finality watermark and measures, as a pipeline
//! file declares them (`[[reports]]`), plus the three reports every pipeline has by default.

use serde::{Deserialize, Serialize};

/// A field rows are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Dimension {
    /// `campaign_id`.
    Campaign,
    /// `advertiser_id`.
    Advertiser,
    /// `ad_id`.
    Ad,
    /// The request's `country` (`unknown` when it gave none).
    Country,
    /// The request's `device` type (`unknown` when it gave none).
    Device,
    /// The win's `billing` unit: `cpm`, `cpc` or `cpa`.
    Billing,
}

impl Dimension {
    /// Every dimension, in documentation order.
    pub const ALL: [Dimension; 6] = [
        Dimension::Campaign,
        Dimension::Advertiser,
        Dimension::Ad,
        Dimension::Country,
        Dimension::Device,
        Dimension::Billing,
    ];

    /// Its name in pipeline files and rows.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Campaign => "campaign_id",
            Dimension::Advertiser => "advertiser_id",
            Dimension::Ad => "ad_id",
            Dimension::Country => "country",
            Dimension::Device => "device",
            Dimension::Billing => "billing",
        }
    }

    /// The dimension called `name`.
    pub fn parse(name: &str) -> Result<Dimension, SpecError> {
        Dimension::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| SpecError::UnknownDimension(name.to_string()))
    }
}

/// A column of a row: a base counter or a ratio derived from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Measure {
    /// Wins served (`requests_won`).
    RequestsWon,
    /// Verified impressions.
    Impressions,
    /// Verified clicks.
    Clicks,
    /// Attributed conversions.
    Conversions,
    /// Their value, micros.
    ConversionValue,
    /// Spend charged, micros (the ledger's, to the micro).
    Spend,
    /// Delivered past the budget, free to the advertiser, micros (the ledger's, to the micro).
    Overdelivery,
    /// Clicks per impression.
    Ctr,
    /// Conversions per click.
    Cvr,
    /// Spend per click, micros.
    Cpc,
    /// Spend per conversion, micros.
    Cpa,
    /// Mean predicted CTR of the wins.
    AvgPctr,
    /// Mean predicted CTR over observed CTR (1 = calibrated).
    PctrOverCtr,
}

impl Measure {
    /// Every measure, in row order.
    pub const ALL: [Measure; 13] = [
        Measure::RequestsWon,
        Measure::Impressions,
        Measure::Clicks,
        Measure::Conversions,
        Measure::ConversionValue,
        Measure::Spend,
        Measure::Overdelivery,
        Measure::Ctr,
        Measure::Cvr,
        Measure::Cpc,
        Measure::Cpa,
        Measure::AvgPctr,
        Measure::PctrOverCtr,
    ];

    /// Its name in pipeline files and rows.
    pub fn name(self) -> &'static str {
        match self {
            Measure::RequestsWon => "requests_won",
            Measure::Impressions => "impressions",
            Measure::Clicks => "clicks",
            Measure::Conversions => "conversions",
            Measure::ConversionValue => "conversion_value_micros",
            Measure::Spend => "spend_micros",
            Measure::Overdelivery => "overdelivery_micros",
            Measure::Ctr => "ctr",
            Measure::Cvr => "cvr",
            Measure::Cpc => "cpc_micros",
            Measure::Cpa => "cpa_micros",
            Measure::AvgPctr => "avg_pctr",
            Measure::PctrOverCtr => "pctr_over_ctr",
        }
    }

    /// The measure called `name`.
    pub fn parse(name: &str) -> Result<Measure, SpecError> {
        Measure::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| SpecError::UnknownMeasure(name.to_string()))
    }
}

/// A report as declared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportSpec {
    /// Its name (`[a-z0-9_]+`), in every row.
    pub name: String,
    /// The compacted topic its rows go to (`report.<name>` unless given).
    pub topic: String,
    /// Group-by fields, in key order.
    pub dimensions: Vec<Dimension>,
    /// Tumbling window length, ms (aligned to the epoch, so to UTC minutes, hours, days).
    pub window_ms: i64,
    /// A window is final once the watermark passes its end plus this, ms; later events do not
    /// change it (they are counted in `adstream_report_events_total{outcome="late"}`).
    pub final_after_ms: i64,
    /// Changed rows are re-published at most once per this much event time, ms.
    pub update_ms: i64,
    /// Columns, in row order.
    pub measures: Vec<Measure>,
}

/// Why a report declaration is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Not a known dimension.
    #[error("unknown dimension {0:?} (expected one of campaign_id, advertiser_id, ad_id, country, device, billing)")]
    UnknownDimension(String),
    /// Not a known measure.
    #[error("unknown measure {0:?} (expected one of requests_won, impressions, clicks, conversions, conversion_value_micros, spend_micros, overdelivery_micros, ctr, cvr, cpc_micros, cpa_micros, avg_pctr, pctr_over_ctr)")]
    UnknownMeasure(String),
    /// A field with a bad value.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl ReportSpec {
    /// A report with every measure, published every second of event time.
    pub fn new(name: &str, dimensions: &[Dimension], window_ms: i64, final_after_ms: i64) -> Self {
        ReportSpec {
            name: name.to_string(),
            topic: format!("report.{name}"),
            dimensions: dimensions.to_vec(),
            window_ms,
            final_after_ms,
            update_ms: 1_000,
            measures: Measure::ALL.to_vec(),
        }
    }

    /// The reports of a pipeline that declares none: campaign × minute (final 10 minutes after
    /// the minute), advertiser × hour and country × device × hour (final an hour after the hour).
    pub fn defaults() -> Vec<ReportSpec> {
        vec![
            ReportSpec::new("campaign_minute", &[Dimension::Campaign], 60_000, 600_000),
            ReportSpec::new(
                "advertiser_hour",
                &[Dimension::Advertiser],
                3_600_000,
                3_600_000,
            ),
            ReportSpec::new(
                "country_device_hour",
                &[Dimension::Country, Dimension::Device],
                3_600_000,
                3_600_000,
            ),
        ]
    }

    /// Checks the declaration; the error names the field.
    pub fn validate(&self) -> Result<(), SpecError> {
        let invalid = |field, message: &str| {
            Err(SpecError::Invalid {
                field,
                message: message.to_string(),
            })
        };
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return invalid("name", "must be non-empty lowercase letters, digits and _");
        }
        if self.topic.trim().is_empty() {
            return invalid("topic", "must not be empty");
        }
        if self.dimensions.is_empty() {
            return invalid("dimensions", "must list at least one dimension");
        }
        let mut seen = self.dimensions.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != self.dimensions.len() {
            return invalid("dimensions", "lists a dimension twice");
        }
        if self.measures.is_empty() {
            return invalid("measures", "must list at least one measure");
        }
        if self.window_ms <= 0 {
            return invalid("window_ms", "must be positive");
        }
        if self.final_after_ms < 0 {
            return invalid("final_after_ms", "must not be negative");
        }
        if self.update_ms <= 0 {
            return invalid("update_ms", "must be positive");
        }
        Ok(())
    }

    /// Start of the window holding event time `ts`, ms.
    pub fn window_start(&self, ts: i64) -> i64 {
        ts.div_euclid(self.window_ms) * self.window_ms
    }

    /// The watermark at which the window starting at `start` becomes final, ms.
    pub fn final_at(&self, start: i64) -> i64 {
        start
            .saturating_add(self.window_ms)
            .saturating_add(self.final_after_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_named() {
        for d in Dimension::ALL {
            assert_eq!(Dimension::parse(d.name()), Ok(d));
        }
        for m in Measure::ALL {
            assert_eq!(Measure::parse(m.name()), Ok(m));
        }
        let e = Dimension::parse("city").unwrap_err();
        assert!(e.to_string().contains("\"city\""), "{e}");
        let e = Measure::parse("roas").unwrap_err();
        assert!(e.to_string().contains("\"roas\""), "{e}");
    }

    #[test]
    fn defaults_are_valid_and_windows_align() {
        for spec in ReportSpec::defaults() {
            spec.validate().unwrap();
        }
        let minute = &ReportSpec::defaults()[0];
        assert_eq!(minute.window_start(125_000), 120_000);
        assert_eq!(minute.window_start(-1), -60_000);
        assert_eq!(minute.final_at(120_000), 120_000 + 60_000 + 600_000);
    }

    #[test]
    fn validation_names_the_field() {
        let mut s = ReportSpec::defaults()[0].clone();
        s.window_ms = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("window_ms"));
        let mut s = ReportSpec::defaults()[0].clone();
        s.dimensions = vec![Dimension::Ad, Dimension::Ad];
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("dimensions"));
        let mut s = ReportSpec::defaults()[0].clone();
        s.name = "Bad Name".into();
        assert!(s.validate().unwrap_err().to_string().starts_with("name"));
        let mut s = ReportSpec::defaults()[0].clone();
        s.measures.clear();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("measures"));
    }
}
