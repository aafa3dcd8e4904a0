//! Currencies: floors in any currency the pipeline has a rate for, and the response in the
//! request's first acceptable currency.
//!
//! Spend, budgets and charges stay in the account currency (integer micros); only the floors
//! a request sets and the price a response states are converted. A floor is converted rounding
//! up, so a bid never clears a floor it is below.

use std::collections::BTreeMap;

use crate::request::AdRequest;

/// The exchange rates of a pipeline: how many units of the account currency one unit of each
/// other currency is worth.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    account: String,
    rates: BTreeMap<String, f64>,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            account: "USD".into(),
            rates: BTreeMap::new(),
        }
    }
}

/// Why a rate table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Not a three-letter code.
    #[error("{0:?} is not an ISO-4217 currency code (three letters)")]
    Code(String),
    /// Not a positive finite number.
    #[error("the rate of {0} must be a positive number")]
    Rate(String),
}

fn code(c: &str) -> Result<String, RateError> {
    if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(c.to_ascii_uppercase())
    } else {
        Err(RateError::Code(c.to_string()))
    }
}

/// Why an impression was left out of the auction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Its `bidfloorcur` has no rate.
    UnknownCurrency,
}

impl SkipReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::UnknownCurrency => "unknown_currency",
        }
    }
}

impl Rates {
    /// A table for `account` with the value of one unit of each currency in `rates`.
    pub fn new(account: &str, rates: &BTreeMap<String, f64>) -> Result<Self, RateError> {
        let account = code(account)?;
        let mut table = BTreeMap::new();
        for (c, rate) in rates {
            let c = code(c)?;
            if !rate.is_finite() || *rate <= 0.0 {
                return Err(RateError::Rate(c));
            }
            if c != account {
                table.insert(c, *rate);
            }
        }
        Ok(Rates {
            account,
            rates: table,
        })
    }

    /// The account currency.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The value of one unit of `currency` in the account currency.
    pub fn rate(&self, currency: &str) -> Option<f64> {
        if currency.eq_ignore_ascii_case(&self.account) {
            Some(1.0)
        } else {
            self.rates.get(&currency.to_ascii_uppercase()).copied()
        }
    }

    /// Converts every slot's floor into account micros (rounding up); slots whose floor
    /// currency has no rate are removed, returned with their reason.
    pub fn price_floors(&self, request: &mut AdRequest) -> Vec<(String, SkipReason)> {
        let mut skipped = Vec::new();
        request
            .slots
            .retain_mut(|slot| match self.rate(&slot.floor_currency) {
                Some(rate) => {
                    // Up, but not for the float noise of an exact product (1.1 x 10^6).
                    let micros = (slot.floor_ecpm_micros as f64 * rate - 1e-3)
                        .ceil()
                        .max(0.0);
                    slot.floor_ecpm_micros = if micros.is_finite() {
                        micros.min(u64::MAX as f64) as u64
                    } else {
                        u64::MAX
                    };
                    slot.floor_currency = self.account.clone();
                    true
                }
                None => {
                    skipped.push((slot.imp_id.clone(), SkipReason::UnknownCurrency));
                    false
                }
            });
        skipped
    }

    /// The currency of the response and its rate: the first of the request's `cur` that has a
    /// rate, or the account currency when it lists none; `None` when it lists only unknown ones.
    pub fn response_currency(&self, request: &AdRequest) -> Option<(String, f64)> {
        if request.currencies.is_empty() {
            return Some((self.account.clone(), 1.0));
        }
        request
            .currencies
            .iter()
            .find_map(|c| self.rate(c).map(|r| (c.to_ascii_uppercase(), r)))
    }

    /// `ecpm_micros` of the account currency as a CPM price in a currency worth `rate`.
    pub fn price(ecpm_micros: u64, rate: f64) -> f64 {
        ecpm_micros as f64 / 1e6 / rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse_request;

    fn rates() -> Rates {
        let table = BTreeMap::from([("eur".to_string(), 1.10), ("JPY".to_string(), 0.0067)]);
        Rates::new("usd", &table).unwrap()
    }

    #[test]
    fn floors_are_converted_up_and_unknown_ones_skip_their_slot() {
        let mut r = parse_request(
            br#"{"id":"r","imp":[{"id":"1","bidfloor":1.000001,"bidfloorcur":"EUR"},{"id":"1b","bidfloor":1.0,"bidfloorcur":"EUR"},{"id":"2","bidfloor":100,"bidfloorcur":"jpy"},{"id":"3","bidfloor":2},{"id":"4","bidfloor":1,"bidfloorcur":"CHF"}]}"#,
        )
        .unwrap();
        let skipped = rates().price_floors(&mut r);
        assert_eq!(
            skipped,
            vec![("4".to_string(), SkipReason::UnknownCurrency)]
        );
        let floors: Vec<u64> = r.slots.iter().map(|s| s.floor_ecpm_micros).collect();
        // 1.000001 EUR is 1.1000011 USD: up to the next micro, never below the floor.
        assert_eq!(floors, vec![1_100_002, 1_100_000, 670_000, 2_000_000]);
        assert!(r.slots.iter().all(|s| s.floor_currency == "USD"));
    }

    #[test]
    fn the_response_is_in_the_first_acceptable_currency() {
        let req = |cur: &str| {
            parse_request(format!(r#"{{"id":"r","imp":[{{"id":"1"}}],"cur":{cur}}}"#).as_bytes())
                .unwrap()
        };
        let r = rates();
        assert_eq!(
            r.response_currency(&req(r#"["CHF","EUR","USD"]"#)),
            Some(("EUR".into(), 1.10))
        );
        assert_eq!(r.response_currency(&req("[]")), Some(("USD".into(), 1.0)));
        assert_eq!(r.response_currency(&req(r#"["CHF"]"#)), None);
        assert!((Rates::price(1_100_000, 1.10) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bad_tables_are_refused() {
        let bad = BTreeMap::from([("EURO".to_string(), 1.0)]);
        assert_eq!(Rates::new("USD", &bad), Err(RateError::Code("EURO".into())));
        let bad = BTreeMap::from([("EUR".to_string(), 0.0)]);
        assert_eq!(Rates::new("USD", &bad), Err(RateError::Rate("EUR".into())));
        let bad = BTreeMap::from([("EUR".to_string(), f64::NAN)]);
        assert!(Rates::new("USD", &bad).is_err());
        assert!(Rates::new("US", &BTreeMap::new()).is_err());
    }
}
