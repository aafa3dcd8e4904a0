//! `adstream bench --serving`: the serving path of one worker (the product's
//! [`adstream_operators::serve::operator::answer`]: retrieval, format fit, block lists, prior
//! ranking, gated auction, token signing) on a seeded catalog, in requests/s on one thread and
//! per-request latency, for two kinds of traffic:
//!
//! - `plain`: requests without media objects or block lists (what the simulator sends);
//! - `mixed`: what exchanges send: banner imps with size lists, video, native and audio imps,
//!   alpha-3 countries, and block lists (`bcat`, `badv`) on every request.
//!
//! The difference between the two is the cost of the format and brand-safety checks. A third
//! row, `paced`, is plain traffic on a throttled catalog: every campaign's pass probability is
//! [`PACED_PASS`] (what pacing gives budget-bound campaigns at peak), so retrieval visits about
//! 1 / [`PACED_PASS`] times as many campaigns to fill its pool. Parsing and the HTTP round trip
//! are not included (`bench --load` measures those against a running pipeline, see
//! `deploy/bench/serving-http.sh`).

use std::time::Instant;

use adstream_operators::events::Campaign;
use adstream_operators::ledger::status::BudgetBook;
use adstream_operators::pacing::board::PacingBoard;
use adstream_operators::ranker::features::FeatureSpec;
use adstream_operators::ranker::model::ModelConfig;
use adstream_operators::ranker::prior::{PriorRanker, Ranker};
use adstream_operators::ranker::scoring::ScoringModel;
use adstream_operators::records::{CatalogUpdate, Engagement, LedgerState};
use adstream_operators::records::{PacingState, PacingUpdate};
use adstream_operators::request::{parse_request, AdRequest};
use adstream_operators::serve::operator::{answer, ServeConfig};
use adstream_operators::serve::reach::ReachCounts;
use adstream_operators::serve::retrieval::CampaignIndex;
use adstream_operators::serve::spend_cache::SpendCache;
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

/// The `i`-th seeded campaign: 20 campaigns per advertiser (so the advertisers grow with the
/// catalog); targeting one country, or two (every fourth), and one device type, or any (every
/// seventh); two to four creatives of mixed kinds, a domain and a category.
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
    let country = |k: usize| format!(r#""{}""#, COUNTRIES[k % COUNTRIES.len()].0);
    let countries = if i % 4 == 0 {
        format!("{},{}", country(i / 3), country(i / 3 + 1))
    } else {
        country(i / 3)
    };
    let devices = if i % 7 == 0 {
        String::new()
    } else {
        format!(r#","devices":["{}"]"#, DEVICES[i % 3].0)
    };
    format!(
        r#"{{"campaign_id":"c{i}","advertiser_id":"adv{}","daily_budget_micros":100000000000,"timezone":"UTC","billing":"{}","bid_micros":{},"targeting":{{"countries":[{}]{}}},"creatives":[{}],"adomain":["brand{}.example"],"cat":["IAB{}-{}"]}}"#,
        i / 20,
        ["cpm", "cpc", "cpa"][i % 3],
        [2_000_000u64, 200_000, 2_000_000][i % 3] + (i as u64 * 7_919) % 1_000_000,
        countries,
        devices,
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
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Share of requests with at least one win.
    pub fill: f64,
}

/// The serving settings of the bench: the shipped pipeline's, with a pre-ranking pool of
/// `prerank_candidates`.
pub fn bench_config(prerank_candidates: usize) -> ServeConfig {
    ServeConfig {
        secret: b"bench-secret".to_vec(),
        reserve_ecpm_micros: 10_000,
        per_advertiser: 2,
        max_candidates: 200,
        prerank_candidates: prerank_candidates.max(200),
        reservation_ttl_ms: 120_000,
    }
}

/// The pass probability of every campaign in the `paced` row.
pub const PACED_PASS: f64 = 0.05;

/// Every campaign of `index` with pass probability `pass`, as pacing's broadcast sets it.
fn board_at(index: &CampaignIndex, pass: f64) -> PacingBoard {
    let mut board = PacingBoard::new(0, 1);
    if pass >= 1.0 {
        return board;
    }
    let day = adstream_operators::time::day::budget_day(EventTime::now(), chrono_tz::UTC);
    for number in 0..index.numbers() as u32 {
        let Some(entry) = index.entry(number) else {
            continue;
        };
        board.apply(PacingUpdate {
            campaign_id: entry.listed.campaign.campaign_id.clone(),
            state: PacingState {
                mode: "paced".into(),
                pass_probability: pass,
                target_micros: 0,
                committed_micros: 0,
                conversions_pending_micros: 0,
                day,
                full_rate_micros_per_hour: None,
                updated_ms: 0,
            },
            reserved_by_replica: vec![0],
        });
    }
    board
}

fn measure(
    book: &BudgetBook,
    index: &mut CampaignIndex,
    ranker: &dyn Ranker,
    config: &ServeConfig,
    requests: &[AdRequest],
    pass: f64,
) -> Figures {
    let board = board_at(index, pass);
    index.set_all_passes(&board);
    let spent = SpendCache::of(index, book);
    let prior = PriorRanker::default();
    let mut reach = ReachCounts::default();
    let now = EventTime::now();
    let mut latencies = Vec::with_capacity(requests.len());
    let mut filled = 0usize;
    let started = Instant::now();
    for (n, request) in requests.iter().enumerate() {
        let t = Instant::now();
        let outcome = answer(
            book,
            index,
            &board,
            &spent,
            &mut reach,
            &prior,
            ranker,
            config,
            request,
            &Engagement::default(),
            now,
        );
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
        filled += usize::from(!outcome.wins.is_empty());
        if n % 1_000 == 999 {
            // As a replica sends its counts to pacing every flush period.
            reach.take(index);
        }
    }
    let took = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        per_second: requests.len() as f64 / took,
        p50_us: at(0.5),
        p99_us: at(0.99),
        p999_us: at(0.999),
        fill: filled as f64 / requests.len() as f64,
    }
}

/// The resident set of this process, bytes (0 where /proc is not there).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// A serving replica's budget book with `campaigns` seeded campaigns.
pub fn seeded_book(campaigns: usize) -> anyhow::Result<BudgetBook> {
    let mut book = BudgetBook::default();
    for i in 0..campaigns {
        let c = Campaign::parse(campaign(i).as_bytes())
            .map_err(|e| anyhow::anyhow!("seeded campaign {i}: {e}"))?;
        book.apply(&LedgerState::Campaign(CatalogUpdate::new(
            c.campaign_id.clone(),
            Some(Box::new(c)),
        )));
    }
    Ok(book)
}

/// The figures of one catalog size.
#[derive(Debug, Clone)]
pub struct CatalogFigures {
    /// Campaigns seeded.
    pub campaigns: usize,
    /// Resident memory of the book and index per campaign, bytes.
    pub bytes_per_campaign: f64,
    /// Time to build the index, ms.
    pub index_ms: f64,
    /// Plain traffic, prior.
    pub plain: Figures,
    /// Mixed traffic, prior.
    pub mixed: Figures,
    /// Plain traffic, prior, every campaign throttled to [`PACED_PASS`].
    pub paced: Figures,
    /// Mixed traffic, a live model of the shipped feature spec (when measured).
    pub model: Option<Figures>,
}

/// Seeds each catalog size of `catalogs` in turn and answers `requests` requests of each kind
/// with the prior (and with a live model of the shipped spec when `with_model`), retrieving up
/// to `prerank_candidates` for pre-ranking to 200; prints and returns the figures.
pub fn run(
    catalogs: &[usize],
    requests: usize,
    with_model: bool,
    prerank_candidates: usize,
) -> anyhow::Result<Vec<CatalogFigures>> {
    let config = bench_config(prerank_candidates);
    let model = if with_model {
        Some(
            ScoringModel::initial(&FeatureSpec::default_spec(), &ModelConfig::default())
                .map_err(|e| anyhow::anyhow!("the bench's model: {e}"))?,
        )
    } else {
        None
    };
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
    let prior = PriorRanker::default();
    println!(
        "serving (one worker thread, answer() per request: retrieval, pre-ranking to {} of up to {}, ranking, auction, signing):",
        config.max_candidates, config.prerank_candidates
    );
    println!(
        "  {:>9} {:<8} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "campaigns", "traffic", "req/s", "p50 µs", "p99 µs", "p99.9 µs", "fill"
    );
    let mut all = Vec::new();
    for &campaigns in catalogs {
        let before = rss_bytes();
        let book = seeded_book(campaigns)?;
        let t = Instant::now();
        let mut index = CampaignIndex::build(&book, &prior);
        let index_ms = t.elapsed().as_secs_f64() * 1e3;
        let bytes_per_campaign =
            rss_bytes().saturating_sub(before) as f64 / campaigns.max(1) as f64;
        // Warm up, then measure each kind.
        measure(
            &book,
            &mut index,
            &prior,
            &config,
            &plain[..requests.min(1_000)],
            1.0,
        );
        let p = measure(&book, &mut index, &prior, &config, &plain, 1.0);
        let m = measure(&book, &mut index, &prior, &config, &mixed, 1.0);
        let paced = measure(&book, &mut index, &prior, &config, &plain, PACED_PASS);
        let with_model = model.as_ref().map(|model| {
            let n = (requests / 10).max(100).min(mixed.len());
            measure(&book, &mut index, model, &config, &mixed[..n], 1.0)
        });
        for (name, f) in [
            ("plain", Some(&p)),
            ("mixed", Some(&m)),
            ("paced", Some(&paced)),
            ("model", with_model.as_ref()),
        ] {
            let Some(f) = f else { continue };
            println!(
                "  {campaigns:>9} {name:<8} {:>9.0} {:>9.1} {:>9.1} {:>9.1} {:>6.1}%",
                f.per_second,
                f.p50_us,
                f.p99_us,
                f.p999_us,
                f.fill * 100.0
            );
        }
        println!(
            "  {campaigns:>9} memory {:.0} bytes/campaign (book + index), index built in {index_ms:.0} ms",
            bytes_per_campaign
        );
        all.push(CatalogFigures {
            campaigns,
            bytes_per_campaign,
            index_ms,
            plain: p,
            mixed: m,
            paced,
            model: with_model,
        });
        drop(index);
        drop(book);
    }
    Ok(all)
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
        let figures = run(&[300], 200, true, 800).expect("runs");
        let f = &figures[0];
        assert!(f.plain.fill > 0.5, "{f:?}");
        assert!(f.mixed.fill > 0.2, "{f:?}");
        assert!(f.model.as_ref().is_some_and(|m| m.fill > 0.2), "{f:?}");
    }
}
