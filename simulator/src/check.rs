//! The ledger against the oracle: what the demo (and any end-to-end check) compares once the
//! pipeline has caught up.

use std::collections::{BTreeMap, HashSet};

use chrono::NaiveDate;

use crate::truth::Expected;

/// The pipeline's dead-letter reasons in the oracle's categories: malformed input
/// (`malformed_json`, `invalid_field`, `oversize`) is `malformed`, a bad token of any kind is
/// `bad_token`; zero counts are left out.
pub fn dead_letter_categories(by_reason: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (reason, n) in by_reason {
        if *n == 0 {
            continue;
        }
        let category = match reason.as_str() {
            "malformed_json" | "invalid_field" | "oversize" => "malformed",
            "missing_token" | "bad_token" | "token_mismatch" => "bad_token",
            other => other,
        };
        *out.entry(category.to_string()).or_default() += n;
    }
    out
}

/// The ledger against the oracle.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Campaign-days compared.
    pub compared: usize,
    /// Total spend both agree on, micros.
    pub total_micros: u64,
    /// (campaign, day, expected, actual) where they differ.
    pub mismatches: Vec<(String, NaiveDate, u64, u64)>,
}

/// Compares the oracle's spend with the ledger's for every one of `campaigns` (the simulator's),
/// those the oracle expects nothing of included.
pub fn compare(
    expected: &Expected,
    actual: &BTreeMap<(String, NaiveDate), u64>,
    campaigns: &HashSet<&str>,
) -> Verdict {
    let mut v = Verdict::default();
    let mut wanted: BTreeMap<(String, NaiveDate), u64> = expected
        .spend
        .iter()
        .map(|s| ((s.campaign_id.clone(), s.day), s.spend_micros))
        .collect();
    for k in actual.keys() {
        if campaigns.contains(k.0.as_str()) {
            wanted.entry(k.clone()).or_insert(0);
        }
    }
    for ((campaign, day), e) in wanted {
        let a = actual.get(&(campaign.clone(), day)).copied().unwrap_or(0);
        v.compared += 1;
        if a == e {
            v.total_micros += a;
        } else {
            v.mismatches.push((campaign, day, e, a));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::truth::ExpectedSpend;

    #[test]
    fn dead_letter_reasons_map_to_the_oracles_categories() {
        let seen: BTreeMap<String, u64> = [
            ("malformed_json", 2),
            ("invalid_field", 3),
            ("bad_token", 1),
            ("token_mismatch", 1),
            ("duplicate", 4),
            ("expired", 0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let c = dead_letter_categories(&seen);
        let want: BTreeMap<String, u64> = [("bad_token", 2), ("duplicate", 4), ("malformed", 5)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(c, want);
    }

    #[test]
    fn compare_finds_missing_extra_and_wrong_spend() {
        let day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let expected = Expected {
            spend: vec![
                ExpectedSpend {
                    campaign_id: "a".into(),
                    day,
                    spend_micros: 10,
                    overdelivery_micros: 0,
                },
                ExpectedSpend {
                    campaign_id: "b".into(),
                    day,
                    spend_micros: 20,
                    overdelivery_micros: 0,
                },
            ],
            ..Expected::default()
        };
        let mut actual = BTreeMap::new();
        actual.insert(("a".to_string(), day), 10);
        actual.insert(("other".to_string(), day), 99);
        let ours: HashSet<&str> = ["a", "b", "c"].into_iter().collect();
        let v = compare(&expected, &actual, &ours);
        assert_eq!(v.compared, 2);
        assert_eq!(v.total_micros, 10);
        assert_eq!(v.mismatches, vec![("b".to_string(), day, 20, 0)]);
        // Spend the oracle did not expect on one of its campaigns is a mismatch too.
        actual.insert(("a".to_string(), day.succ_opt().unwrap()), 5);
        actual.insert(("b".to_string(), day), 20);
        let v = compare(&expected, &actual, &ours);
        assert_eq!(v.mismatches.len(), 1);
        assert_eq!(v.mismatches[0].3, 5);
        // Spend on one of ours the oracle expects nothing of.
        actual.insert(("c".to_string(), day), 1);
        let v = compare(&expected, &actual, &ours);
        assert_eq!(v.mismatches.len(), 2);
    }
}
