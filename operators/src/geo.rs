//! Country and region codes, normalised once at the edge: requests (OpenRTB 2.x sends
//! ISO-3166-1 alpha-3, `USA`) and campaign targeting (usually alpha-2, `US`) both end up as
//! upper-case alpha-2, so targeting compares plain strings.
//!
//! Regions are ISO-3166-2 subdivisions written `CC-SUB` (`US-CA`); a request's
//! `device.geo.region` gives only the subdivision part (`CA`), which is joined with its country.
//! Metros (`device.geo.metro`, Nielsen DMA codes in the US) are compared as given.

/// Every ISO-3166-1 country as `(alpha-3, alpha-2)`, sorted by alpha-3 (plus Kosovo's
/// user-assigned `XKX`/`XK`, which exchanges send).
const COUNTRIES: &[(&str, &str)] = &[
    ("ABW", "AW"),
    ("AFG", "AF"),
    ("AGO", "AO"),
    ("AIA", "AI"),
    ("ALA", "AX"),
    ("ALB", "AL"),
    ("AND", "AD"),
    ("ARE", "AE"),
    ("ARG", "AR"),
    ("ARM", "AM"),
    ("ASM", "AS"),
    ("ATA", "AQ"),
    ("ATF", "TF"),
    ("ATG", "AG"),
    ("AUS", "AU"),
    ("AUT", "AT"),
    ("AZE", "AZ"),
    ("BDI", "BI"),
    ("BEL", "BE"),
    ("BEN", "BJ"),
    ("BES", "BQ"),
    ("BFA", "BF"),
    ("BGD", "BD"),
    ("BGR", "BG"),
    ("BHR", "BH"),
    ("BHS", "BS"),
    ("BIH", "BA"),
    ("BLM", "BL"),
    ("BLR", "BY"),
    ("BLZ", "BZ"),
    ("BMU", "BM"),
    ("BOL", "BO"),
    ("BRA", "BR"),
    ("BRB", "BB"),
    ("BRN", "BN"),
    ("BTN", "BT"),
    ("BVT", "BV"),
    ("BWA", "BW"),
    ("CAF", "CF"),
    ("CAN", "CA"),
    ("CCK", "CC"),
    ("CHE", "CH"),
    ("CHL", "CL"),
    ("CHN", "CN"),
    ("CIV", "CI"),
    ("CMR", "CM"),
    ("COD", "CD"),
    ("COG", "CG"),
    ("COK", "CK"),
    ("COL", "CO"),
    ("COM", "KM"),
    ("CPV", "CV"),
    ("CRI", "CR"),
    ("CUB", "CU"),
    ("CUW", "CW"),
    ("CXR", "CX"),
    ("CYM", "KY"),
    ("CYP", "CY"),
    ("CZE", "CZ"),
    ("DEU", "DE"),
    ("DJI", "DJ"),
    ("DMA", "DM"),
    ("DNK", "DK"),
    ("DOM", "DO"),
    ("DZA", "DZ"),
    ("ECU", "EC"),
    ("EGY", "EG"),
    ("ERI", "ER"),
    ("ESH", "EH"),
    ("ESP", "ES"),
    ("EST", "EE"),
    ("ETH", "ET"),
    ("FIN", "FI"),
    ("FJI", "FJ"),
    ("FLK", "FK"),
    ("FRA", "FR"),
    ("FRO", "FO"),
    ("FSM", "FM"),
    ("GAB", "GA"),
    ("GBR", "GB"),
    ("GEO", "GE"),
    ("GGY", "GG"),
    ("GHA", "GH"),
    ("GIB", "GI"),
    ("GIN", "GN"),
    ("GLP", "GP"),
    ("GMB", "GM"),
    ("GNB", "GW"),
    ("GNQ", "GQ"),
    ("GRC", "GR"),
    ("GRD", "GD"),
    ("GRL", "GL"),
    ("GTM", "GT"),
    ("GUF", "GF"),
    ("GUM", "GU"),
    ("GUY", "GY"),
    ("HKG", "HK"),
    ("HMD", "HM"),
    ("HND", "HN"),
    ("HRV", "HR"),
    ("HTI", "HT"),
    ("HUN", "HU"),
    ("IDN", "ID"),
    ("IMN", "IM"),
    ("IND", "IN"),
    ("IOT", "IO"),
    ("IRL", "IE"),
    ("IRN", "IR"),
    ("IRQ", "IQ"),
    ("ISL", "IS"),
    ("ISR", "IL"),
    ("ITA", "IT"),
    ("JAM", "JM"),
    ("JEY", "JE"),
    ("JOR", "JO"),
    ("JPN", "JP"),
    ("KAZ", "KZ"),
    ("KEN", "KE"),
    ("KGZ", "KG"),
    ("KHM", "KH"),
    ("KIR", "KI"),
    ("KNA", "KN"),
    ("KOR", "KR"),
    ("KWT", "KW"),
    ("LAO", "LA"),
    ("LBN", "LB"),
    ("LBR", "LR"),
    ("LBY", "LY"),
    ("LCA", "LC"),
    ("LIE", "LI"),
    ("LKA", "LK"),
    ("LSO", "LS"),
    ("LTU", "LT"),
    ("LUX", "LU"),
    ("LVA", "LV"),
    ("MAC", "MO"),
    ("MAF", "MF"),
    ("MAR", "MA"),
    ("MCO", "MC"),
    ("MDA", "MD"),
    ("MDG", "MG"),
    ("MDV", "MV"),
    ("MEX", "MX"),
    ("MHL", "MH"),
    ("MKD", "MK"),
    ("MLI", "ML"),
    ("MLT", "MT"),
    ("MMR", "MM"),
    ("MNE", "ME"),
    ("MNG", "MN"),
    ("MNP", "MP"),
    ("MOZ", "MZ"),
    ("MRT", "MR"),
    ("MSR", "MS"),
    ("MTQ", "MQ"),
    ("MUS", "MU"),
    ("MWI", "MW"),
    ("MYS", "MY"),
    ("MYT", "YT"),
    ("NAM", "NA"),
    ("NCL", "NC"),
    ("NER", "NE"),
    ("NFK", "NF"),
    ("NGA", "NG"),
    ("NIC", "NI"),
    ("NIU", "NU"),
    ("NLD", "NL"),
    ("NOR", "NO"),
    ("NPL", "NP"),
    ("NRU", "NR"),
    ("NZL", "NZ"),
    ("OMN", "OM"),
    ("PAK", "PK"),
    ("PAN", "PA"),
    ("PCN", "PN"),
    ("PER", "PE"),
    ("PHL", "PH"),
    ("PLW", "PW"),
    ("PNG", "PG"),
    ("POL", "PL"),
    ("PRI", "PR"),
    ("PRK", "KP"),
    ("PRT", "PT"),
    ("PRY", "PY"),
    ("PSE", "PS"),
    ("PYF", "PF"),
    ("QAT", "QA"),
    ("REU", "RE"),
    ("ROU", "RO"),
    ("RUS", "RU"),
    ("RWA", "RW"),
    ("SAU", "SA"),
    ("SDN", "SD"),
    ("SEN", "SN"),
    ("SGP", "SG"),
    ("SGS", "GS"),
    ("SHN", "SH"),
    ("SJM", "SJ"),
    ("SLB", "SB"),
    ("SLE", "SL"),
    ("SLV", "SV"),
    ("SMR", "SM"),
    ("SOM", "SO"),
    ("SPM", "PM"),
    ("SRB", "RS"),
    ("SSD", "SS"),
    ("STP", "ST"),
    ("SUR", "SR"),
    ("SVK", "SK"),
    ("SVN", "SI"),
    ("SWE", "SE"),
    ("SWZ", "SZ"),
    ("SXM", "SX"),
    ("SYC", "SC"),
    ("SYR", "SY"),
    ("TCA", "TC"),
    ("TCD", "TD"),
    ("TGO", "TG"),
    ("THA", "TH"),
    ("TJK", "TJ"),
    ("TKL", "TK"),
    ("TKM", "TM"),
    ("TLS", "TL"),
    ("TON", "TO"),
    ("TTO", "TT"),
    ("TUN", "TN"),
    ("TUR", "TR"),
    ("TUV", "TV"),
    ("TWN", "TW"),
    ("TZA", "TZ"),
    ("UGA", "UG"),
    ("UKR", "UA"),
    ("UMI", "UM"),
    ("URY", "UY"),
    ("USA", "US"),
    ("UZB", "UZ"),
    ("VAT", "VA"),
    ("VCT", "VC"),
    ("VEN", "VE"),
    ("VGB", "VG"),
    ("VIR", "VI"),
    ("VNM", "VN"),
    ("VUT", "VU"),
    ("WLF", "WF"),
    ("WSM", "WS"),
    ("XKX", "XK"),
    ("YEM", "YE"),
    ("ZAF", "ZA"),
    ("ZMB", "ZM"),
    ("ZWE", "ZW"),
];

/// The canonical (upper-case alpha-2) form of a country code given as alpha-2 or alpha-3 in any
/// case; `None` for anything that is not an ISO-3166-1 country. `UK`, the common mistake for
/// `GB`, is read as `GB`.
pub fn country(code: &str) -> Option<&'static str> {
    let code = code.trim();
    let mut upper = [0u8; 3];
    if !(2..=3).contains(&code.len()) || !code.is_ascii() {
        return None;
    }
    for (u, b) in upper.iter_mut().zip(code.bytes()) {
        *u = b.to_ascii_uppercase();
    }
    let upper = std::str::from_utf8(&upper[..code.len()]).ok()?;
    if upper.len() == 3 {
        return COUNTRIES
            .binary_search_by(|(a3, _)| a3.cmp(&upper))
            .ok()
            .map(|i| COUNTRIES[i].1);
    }
    if upper == "UK" {
        return Some("GB");
    }
    let by_alpha2 = alpha2_sorted();
    by_alpha2.binary_search(&upper).ok().map(|i| by_alpha2[i])
}

/// The alpha-2 codes, sorted (every request's country is looked up here).
fn alpha2_sorted() -> &'static [&'static str] {
    static SORTED: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    SORTED.get_or_init(|| {
        let mut codes: Vec<&'static str> = COUNTRIES.iter().map(|(_, a2)| *a2).collect();
        codes.sort_unstable();
        codes
    })
}

/// The canonical form (`CC-SUB`, upper case) of a targeted region written `CC-SUB` with either
/// kind of country code (`USA-CA` is `US-CA`); `None` when the country is unknown or the
/// subdivision part is empty or longer than 3 characters of letters and digits.
pub fn region(code: &str) -> Option<String> {
    let (cc, sub) = code.trim().split_once('-')?;
    subdivision(country(cc)?, sub)
}

/// The canonical region of a request: `device.geo.region` (`CA`, or already `US-CA`) in the
/// request's canonical `country`.
pub fn request_region(country_a2: &str, region_code: &str) -> Option<String> {
    let code = region_code.trim();
    match code.split_once('-') {
        Some(_) => region(code).filter(|r| r.starts_with(country_a2)),
        None => subdivision(country_a2, code),
    }
}

fn subdivision(country_a2: &str, sub: &str) -> Option<String> {
    let ok = (1..=3).contains(&sub.len()) && sub.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then(|| format!("{country_a2}-{}", sub.to_ascii_uppercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_3_and_alpha_2_meet_on_alpha_2() {
        assert_eq!(country("USA"), Some("US"));
        assert_eq!(country("us"), Some("US"));
        assert_eq!(country("fra"), Some("FR"));
        assert_eq!(country("DEU"), Some("DE"));
        assert_eq!(country("GBR"), Some("GB"));
        assert_eq!(country("UK"), Some("GB"));
        assert_eq!(country("XKX"), Some("XK"));
        for bad in ["", "U", "USAA", "ZZ", "ZZZ", "É", "1US"] {
            assert_eq!(country(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_table_is_sorted_and_consistent() {
        assert!(COUNTRIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(COUNTRIES.len(), 250);
        for (a3, a2) in COUNTRIES {
            assert_eq!(country(a3), Some(*a2));
            assert_eq!(country(a2), Some(*a2));
        }
    }

    #[test]
    fn regions_join_their_country() {
        assert_eq!(region("us-ca").as_deref(), Some("US-CA"));
        assert_eq!(region("USA-NY").as_deref(), Some("US-NY"));
        assert_eq!(region("ZZ-CA"), None);
        assert_eq!(region("US-"), None);
        assert_eq!(region("CA"), None);
        assert_eq!(request_region("US", "ca").as_deref(), Some("US-CA"));
        assert_eq!(request_region("US", "US-CA").as_deref(), Some("US-CA"));
        assert_eq!(request_region("US", "FR-75"), None);
        assert_eq!(request_region("US", "C A"), None);
    }
}
