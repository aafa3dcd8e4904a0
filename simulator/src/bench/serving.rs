//! `adstream bench --serving`: the serving path of one worker (the product's
//! [`adstream_operators::serve::operator::answer`]: retrieval, format fit, block lists, prior
//! ranking, gated auction, token signing) on a seeded catalog, in requests/s on one thread and
//! per-request latency, for two kinds of traffic:
//!
//! - `plain`: requests without media objects or block lists (what the simulator sends);
//! - `mixed`: what exchanges send: banner imps with size lists, video, native and audio imps,
//!   alpha-3 countries, and block lists (`bcat`, `badv`) on every request.
//!
//! The difference between the two is the cost of the format and brand-safety checks. Parsing
//! and the HTTP round trip are not included (`wrk` with `deploy/bench/openrtb.lua` measures
//! those against a running pipeline).

use std::time::Instant;

use adstream_operators::events::Campaign;
use adstream_operators::ledger::status::BudgetBook;
use adstream_operators::pacing::board::PacingBoard;
use adstream_operators::ranker::prior::PriorRanker;
use adstream_operators::records::{CatalogUpdate, LedgerState};
use adstream_operators::request::{parse_request, AdRequest};
use adstream_operators::serve::operator::{answer, ServeConfig};
use adstream_operators::serve::retrieval::CampaignIndex;
use adstream_operators::time::EventTime;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const COUNTRIES: [(&str, &str); 10] = [
    ("US", "USA"),
    ("FR", "FRA"),
    ("DE", "DEU"),
    ("GB", "GBR"),
    ("JP", "JPN"),
    ("BR", "BRA"),
    ("IN", "IND"),
    ("CA", "CAN"),
    ("AU", "AUS"),
    ("ES", "ESP"),
];
const DEVICES: [(&str, u32); 3] = [("mobile", 4), ("desktop", 2), ("tablet", 5)];
const SIZES: [(u32, u32); 3] = [(300, 250), (728, 90), (320, 50)];

/// The `i`-th seeded campaign: targeting spread over countries and devices, two to four
/// creatives of mixed kinds, a domain and a category.
pub fn campaign(i: usize) -> String {
    let (w, h) = SIZES[i % SIZES.len()];
    let creatives = [
        format!(r#"{{"ad_id":"c{i}-b","w":{w},"h":{h},"adm":"<img src='https://cdn/{i}.png'>"}}"#),
        format!(
            r#"{{"ad_id":"c{i}-v","type":"video","mimes":["video/mp4"],"duration":{},"protocols":[2,3,7],"adm":"<VAST version='3.0'/>"}}"#,
            [6, 15, 30][i % 3]
        ),
        format!(
            r#"{{"ad_id":"c{i}-n","type":"native","native":{{"title":"Offer {i}","sponsored":"Brand {}","image":{{"url":"https://cdn/{i}.jpg","w":1200,"h":627}},"click_url":"https://brand{}.example/{i}"}}}}"#,
            i % 500,
            i % 500
        ),
        format!(
            r#"{{"ad_id":"c{i}-a","type":"audio","mimes":["audio/mpeg"],"duration":30,"nurl":"https://brand.example/a/{i}"}}"#
        ),
    ];
    let kept = 2 + i % 3;
    format!(
        r#"{{"campaign_id":"c{i}","advertiser_id":"adv{}","daily_budget_micros":100000000000,"timezone":"UTC","billing":"{}","bid_micros":{},"targeting":{{"countries":["{}"],"devices":["{}"]}},"creatives":[{}],"adomain":["brand{}.example"],"cat":["IAB{}-{}"]}}"#,
        i % 500,
        ["cpm", "cpc", "cpa"][i % 3],
        [2_000_000u64, 200_000, 2_000_000][i % 3] + (i as u64 * 7_919) % 1_000_000,
        COUNTRIES[(i / 3) % COUNTRIES.len()].0,
        DEVICES[i % 3].0,
        creatives[..kept].join(","),
        i % 500,
        1 + i % 26,
        1 + i % 10,
    )
}

/// A request of the `mixed` kind (see the module doc), request number `n`.
pub fn mixed_request(rng: &mut StdRng, n: usize) -> String {
    let (_, alpha3) = COUNTRIES[rng.random_range(0..COUNTRIES.len())];
    let device = DEVICES[rng.random_range(0..DEVICES.len())].1;
    let imp = match rng.random_range(0..4) {
        0 => r#"{"id":"1","bidfloor":0.05,"banner":{"w":300,"h":250,"format":[{"w":300,"h":250},{"w":320,"h":50}]}}"#.to_string(),
        1 => r#"{"id":"1","bidfloor":0.05,"video":{"mimes":["video/mp4","video/webm"],"minduration":5,"maxduration":30,"protocols":[2,3,5,6],"w":640,"h":480}}"#.to_string(),
        2 => {
            let native = r#"{\"ver\":\"1.2\",\"assets\":[{\"id\":1,\"required\":1,\"title\":{\"len\":90}},{\"id\":2,\"required\":1,\"img\":{\"type\":3,\"wmin\":600,\"hmin\":314}},{\"id\":3,\"data\":{\"type\":1}}]}"#;
            format!(r#"{{"id":"1","bidfloor":0.05,"native":{{"request":"{native}","ver":"1.2"}}}}"#)
        }
        _ => r#"{"id":"1","bidfloor":0.05,"audio":{"mimes":["audio/mpeg"],"maxduration":60}}"#.to_string(),
    };
    let blocked_cat = rng.random_range(1..=26);
    format!(
        r#"{{"id":"m{n}","imp":[{imp},{{"id":"2","banner":{{"w":728,"h":90}}}}],"device":{{"geo":{{"country":"{alpha3}"}},"devicetype":{device}}},"user":{{"id":"u{}"}},"site":{{"id":"s"}},"tmax":50,"bcat":["IAB{blocked_cat}","IAB25","IAB26"],"badv":["brand{}.example","brand{}.example","casino.example"]}}"#,
        rng.random_range(0..100_000),
        rng.random_range(0..500),
        rng.random_range(0..500),
    )
}

/// A request of the `plain` kind, request number `n`.
pub fn plain_request(rng: &mut StdRng, n: usize) -> String {
    let (alpha2, _) = COUNTRIES[rng.random_range(0..COUNTRIES.len())];
    let device = DEVICES[rng.random_range(0..DEVICES.len())].1;
    format!(
        r#"{{"id":"p{n}","imp":[{{"id":"1","bidfloor":0.05}},{{"id":"2"}}],"device":{{"geo":{{"country":"{alpha2}"}},"devicetype":{device}}},"user":{{"id":"u{}"}},"site":{{"id":"s"}},"tmax":50}}"#,
        rng.random_range(0..100_000),
    )
}

/// Figures of one kind of traffic.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Requests answered per second on one thread.
    pub per_second: f64,
    /// Median time to answer, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Share of requests with at least one win.
    pub fill: f64,
}

fn measure(book: &BudgetBook, index: &CampaignIndex, requests: &[AdRequest]) -> Figures {
    let board = PacingBoard::new(0, 1);
    let ranker = PriorRanker::default();
    let config = ServeConfig {
        secret: b"bench-secret".to_vec(),
        reserve_ecpm_micros: 10_000,
        per_advertiser: 2,
        max_candidates: 200,
        reservation_ttl_ms: 120_000,
    };
    let mut reach: adstream_operators::hash::HashMap<String, u64> = Default::default();
    let now = EventTime::now();
    let mut latencies = Vec::with_capacity(requests.len());
    let mut filled = 0usize;
    let started = Instant::now();
    for request in requests {
        let t = Instant::now();
        let outcome = answer(
            book, index, &board, &mut reach, &ranker, &config, request, now,
        );
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
        filled += usize::from(!outcome.wins.is_empty());
        if reach.len() > 100_000 {
            reach.clear();
        }
    }
    let took = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        per_second: requests.len() as f64 / took,
        p50_us: at(0.5),
        p99_us: at(0.99),
        fill: filled as f64 / requests.len() as f64,
    }
}

/// Seeds `campaigns` campaigns, then answers `requests` requests of each kind; prints and
/// returns `(plain, mixed)`.
pub fn run(campaigns: usize, requests: usize) -> anyhow::Result<(Figures, Figures)> {
    let mut book = BudgetBook::default();
    for i in 0..campaigns {
        let c = Campaign::parse(campaign(i).as_bytes())
            .map_err(|e| anyhow::anyhow!("seeded campaign {i}: {e}"))?;
        book.apply(&LedgerState::Campaign(CatalogUpdate::new(
            c.campaign_id.clone(),
            Some(Box::new(c)),
        )));
    }
    let index = CampaignIndex::build(&book);
    let mut rng = StdRng::seed_from_u64(7);
    let parse = |body: String| {
        parse_request(body.as_bytes()).map_err(|e| anyhow::anyhow!("bench request: {e}"))
    };
    let plain: Vec<AdRequest> = (0..requests)
        .map(|n| parse(plain_request(&mut rng, n)))
        .collect::<Result<_, _>>()?;
    let mixed: Vec<AdRequest> = (0..requests)
        .map(|n| parse(mixed_request(&mut rng, n)))
        .collect::<Result<_, _>>()?;
    // Warm up, then measure each kind.
    measure(&book, &index, &plain[..requests.min(1_000)]);
    let p = measure(&book, &index, &plain);
    let m = measure(&book, &index, &mixed);
    println!("serving (one worker thread, answer() per request, {campaigns} campaigns):");
    for (name, f) in [("plain", &p), ("mixed formats + block lists", &m)] {
        println!(
            "  {name:<28} {:>9.0} req/s   p50 {:>7.1} µs   p99 {:>7.1} µs   fill {:>5.1} %",
            f.per_second,
            f.p50_us,
            f.p99_us,
            f.fill * 100.0
        );
    }
    println!(
        "  cost of the checks: {:+.1} % time per request",
        (p.per_second / m.per_second - 1.0) * 100.0
    );
    Ok((p, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_campaigns_and_requests_are_valid_and_fill() {
        for i in 0..12 {
            Campaign::parse(campaign(i).as_bytes()).expect("valid campaign");
        }
        let mut rng = StdRng::seed_from_u64(1);
        for n in 0..50 {
            parse_request(mixed_request(&mut rng, n).as_bytes()).expect("valid mixed request");
            parse_request(plain_request(&mut rng, n).as_bytes()).expect("valid plain request");
        }
        let (plain, mixed) = run(300, 200).expect("runs");
        assert!(plain.fill > 0.5, "{plain:?}");
        assert!(mixed.fill > 0.2, "{mixed:?}");
    }
}
