//! Retrieval: from the replicated catalog and budget state to the candidates of one request.
//!
//! The [`CampaignIndex`] holds one compact [`Entry`] per campaign (the definition, shared with
//! the catalog, and what the funnel orders and counts it by) and postings of entries by targeted
//! country and device (each with a posting for the campaigns that target every country or every
//! device). Postings are in funnel order: by expected value per thousand impressions at the
//! campaign's prior when indexed ([`Entry::value`]), best first. A request merges the (at most
//! four) postings of its country and device in that order, so it visits only campaigns that can
//! match its geography and device, best first, and looks none up by id. The index follows the
//! catalog campaign by campaign ([`CampaignIndex::update`]), so editing one campaign of a large
//! catalog costs microseconds, not a rebuild.
//!
//! A visited campaign qualifies ([`qualify`]) when it is active and in flight, matches the
//! request's geography (country, region, metro), device and interests, has a creative that fits
//! one of its slots, and is not blocked by the request's block lists; then pacing may hold it
//! back and it needs budget left today. At most `per_advertiser` campaigns of one advertiser go
//! on. Retrieval stops once `pool` campaigns went on ([`Funnel`]): work per request is bounded
//! by the pool, not by the catalog. Pre-ranking ([`super::prerank`]) then keeps the best
//! `max_candidates` of the pool for the ranker.

use std::sync::Arc;

use super::auction::expected_ecpm;
use super::brand_safety::{blocked, BlockMask, Blocked};
use super::formats::{best_creative, format_signature};
use crate::catalog::Listed;
use crate::events::creative::{Creative, CreativeKind};
use crate::events::CampaignStatus;
use crate::hash::{HashMap, HashSet};
use crate::ledger::status::BudgetBook;
use crate::pacing::board::PacingBoard;
use crate::ranker::prior::PriorRanker;
use crate::routing::route;
use crate::time::EventTime;

use crate::request::AdRequest;

/// A campaign in a posting, with the key postings are ordered by (best first) and what the
/// throttle needs of it: a request decides whether it bids from the posting alone, reading
/// postings in order, with no look at a per-campaign table.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Posted {
    value: u64,
    route: u64,
    /// Its pass probability (pacing's broadcast; 1 until one arrives).
    pass: f64,
    number: u32,
}

impl Posted {
    /// Postings' order: higher value first; equal values by id hash, then entry number (so the
    /// order does not depend on the order campaigns were indexed in).
    fn order(&self) -> (std::cmp::Reverse<u64>, u64, u32) {
        (std::cmp::Reverse(self.value), self.route, self.number)
    }
}

/// The postings of one country, by device, each in [`Posted::order`].
type ByDevice = HashMap<Box<str>, Vec<Posted>>;

/// The posting key of "any country" and "any device".
const ANY: &str = "*";

/// One campaign as retrieval reads it, so that no campaign is looked up by id per request.
#[derive(Debug)]
pub struct Entry {
    /// The campaign (shared with the catalog).
    pub listed: Arc<Listed>,
    /// Its expected value per thousand impressions, micros, at its prior when indexed: the
    /// order in which requests visit campaigns.
    pub value: u64,
    /// The hash of its id: the seed of its pacing coin.
    pub route: u64,
    /// Its advertiser, numbered within the index.
    pub advertiser: u32,
    /// The kinds of its creatives, one bit each: a request taking none of them is skipped
    /// without looking at its creatives.
    pub kinds: u8,
    /// Its creatives' [`format_signature`].
    pub formats: u64,
    /// The zone its budget days run in, when that holds until its next edit (no zone change
    /// in flight); `None`: ask [`Listed::tz_at`].
    pub tz: Option<chrono_tz::Tz>,
    /// Its daily budget, micros (the budget check reads it with its spend by entry number).
    pub daily_budget_micros: u64,
    /// What qualification reads first, so that a visit costs no look at the definition
    /// unless the campaign narrows its targeting or the request blocks something.
    pub gate: Gate,
}

/// The first checks of [`qualify`], copied from a campaign's definition into its index
/// [`Entry`]: retrieval reads the entry of every campaign it visits, and the definition (a
/// separate allocation, a cache miss in a large catalog) only for what these do not settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// Its status is active.
    pub active: bool,
    /// It has at least one creative.
    pub has_creatives: bool,
    /// Its flight's start, ms (`i64::MIN`: none).
    pub start_ms: i64,
    /// Its flight's end, ms, exclusive (`i64::MAX`: none; a plain number keeps the entry
    /// within its cache lines).
    pub end_ms: i64,
    /// It targets regions, metros or interests: those are checked against its definition.
    pub narrow: bool,
    /// What could block it: its definition is read for a request's block lists only when
    /// this shares a bit with theirs.
    pub blocks: BlockMask,
}

impl Gate {
    /// The gate of `campaign`.
    pub fn of(campaign: &crate::events::Campaign) -> Gate {
        let t = &campaign.targeting;
        Gate {
            active: campaign.status == CampaignStatus::Active,
            has_creatives: !campaign.creatives.is_empty(),
            start_ms: campaign.start.map_or(i64::MIN, EventTime::millis),
            end_ms: campaign.end.map_or(i64::MAX, EventTime::millis),
            narrow: !(t.regions.is_empty() && t.metros.is_empty() && t.interests.is_empty()),
            blocks: BlockMask::of_campaign(campaign),
        }
    }

    /// Whether `now` is within the flight ([`crate::events::Campaign::in_flight`]).
    fn in_flight(&self, now: EventTime) -> bool {
        self.start_ms <= now.millis() && now.millis() < self.end_ms
    }
}

impl Entry {
    fn posted(&self, number: u32, pass: f64) -> Posted {
        Posted {
            value: self.value,
            route: self.route,
            pass,
            number,
        }
    }
}

/// The (country, device) postings a campaign is in: upper-case countries and lower-case
/// devices it targets, `*` for an axis it does not target, each pair once.
fn posting_keys(listed: &Listed) -> Vec<(String, String)> {
    let t = &listed.campaign.targeting;
    let mut countries: Vec<String> = if t.countries.is_empty() {
        vec![ANY.into()]
    } else {
        t.countries.iter().map(|c| c.to_ascii_uppercase()).collect()
    };
    let mut devices: Vec<String> = if t.devices.is_empty() {
        vec![ANY.into()]
    } else {
        t.devices.iter().map(|d| d.to_ascii_lowercase()).collect()
    };
    countries.sort();
    countries.dedup();
    devices.sort();
    devices.dedup();
    countries
        .iter()
        .flat_map(|c| devices.iter().map(move |d| (c.clone(), d.clone())))
        .collect()
}

/// Calls `found` with each posting of `entry` (numbered `number`) in `postings` and its position
/// there (postings in order; one it is missing from is skipped).
fn in_postings(
    postings: &mut HashMap<Box<str>, ByDevice>,
    entry: &Entry,
    number: u32,
    mut found: impl FnMut(&mut Vec<Posted>, usize),
) {
    let order = entry.posted(number, 1.0).order();
    for (country, device) in posting_keys(&entry.listed) {
        let Some(list) = postings
            .get_mut(country.as_str())
            .and_then(|by_device| by_device.get_mut(device.as_str()))
        else {
            continue;
        };
        if let Ok(at) = list.binary_search_by_key(&order, Posted::order) {
            found(list, at);
        }
    }
}

/// The campaigns of a catalog as numbered [`Entry`]s, with postings by targeted country (upper
/// case) and device (lower case), `*` standing for no targeting on that axis. A campaign is in
/// one posting per (country, device) pair it targets; a request, with one country and one
/// device, finds it in at most one.
///
/// The index is kept up to date campaign by campaign ([`CampaignIndex::update`]): a changed
/// campaign moves within its postings (a binary search and a move of the posting's tail), so
/// an edit does not rebuild the index of a large catalog. An entry keeps its number while its
/// campaign exists; a deleted campaign's number is not reused.
#[derive(Debug, Default)]
pub struct CampaignIndex {
    entries: Vec<Option<Entry>>,
    by_id: HashMap<Box<str>, u32>,
    advertisers: HashMap<Box<str>, u32>,
    postings: HashMap<Box<str>, ByDevice>,
}

impl CampaignIndex {
    /// Builds the index over every campaign of `book`, ordered by value at `prior`.
    pub fn build(book: &BudgetBook, prior: &PriorRanker) -> Self {
        let mut ids: Vec<&str> = book
            .catalog()
            .iter()
            .map(|l| l.campaign.campaign_id.as_str())
            .collect();
        // Numbered by id, whatever the catalog's own order.
        ids.sort_unstable();
        let mut index = CampaignIndex::default();
        index.update(book, prior, ids);
        index
    }

    /// Brings the entries of the campaigns named by `changed` up to date with `book` (added,
    /// edited or deleted), valued at `prior`. Each posting they change is merged once, so a
    /// bulk load costs a sort of what it adds plus one pass over the postings it touches.
    pub fn update<'s>(
        &mut self,
        book: &BudgetBook,
        prior: &PriorRanker,
        changed: impl IntoIterator<Item = &'s str>,
    ) {
        let mut seen: HashSet<&str> = HashSet::default();
        let changed: Vec<&str> = changed.into_iter().filter(|id| seen.insert(id)).collect();
        // An edited campaign keeps its number and pass (its reach counts stay its own, and its
        // throttle holds until pacing says otherwise).
        let numbers: Vec<Option<(u32, f64)>> = changed.iter().map(|id| self.remove(id)).collect();
        // Appended at the end of their postings, then merged in: posting -> its sorted length.
        let mut appended: HashMap<(Box<str>, Box<str>), usize> = HashMap::default();
        for (id, kept) in changed.into_iter().zip(numbers) {
            if let Some(listed) = book.catalog().get_shared(id) {
                self.append(listed, kept, prior, &mut appended);
            }
        }
        for ((country, device), sorted) in appended {
            if let Some(list) = self
                .postings
                .get_mut(&country)
                .and_then(|by_device| by_device.get_mut(&device))
            {
                merge_tail(list, sorted);
            }
        }
    }

    /// Takes `id` out of its postings and its entry, and returns its number (which stays taken:
    /// it is `id`'s again if `id` comes back in the same update, else never reused) and pass
    /// probability. The postings must be in order.
    fn remove(&mut self, id: &str) -> Option<(u32, f64)> {
        let number = self.by_id.remove(id)?;
        let Some(entry) = self.entries.get_mut(number as usize).and_then(Option::take) else {
            return Some((number, 1.0));
        };
        let mut pass = 1.0;
        in_postings(&mut self.postings, &entry, number, |list, at| {
            pass = list.remove(at).pass;
        });
        Some((number, pass))
    }

    /// Sets the pass probability of each campaign named by `ids` to what `board` says (pacing
    /// states changed, or campaigns changed in the index); campaigns not indexed are skipped.
    pub fn set_passes<'s>(&mut self, board: &PacingBoard, ids: impl IntoIterator<Item = &'s str>) {
        for id in ids {
            self.set_pass(id, board.pass(id));
        }
    }

    /// Sets every indexed campaign's pass probability to what `board` says.
    pub fn set_all_passes(&mut self, board: &PacingBoard) {
        let ids: Vec<Box<str>> = self.by_id.keys().cloned().collect();
        self.set_passes(board, ids.iter().map(|id| &**id));
    }

    /// Sets the pass probability of the campaign named `id` in each of its postings.
    fn set_pass(&mut self, id: &str, pass: f64) {
        let Some(&number) = self.by_id.get(id) else {
            return;
        };
        let Some(entry) = self.entries.get(number as usize).and_then(Option::as_ref) else {
            return;
        };
        in_postings(&mut self.postings, entry, number, |list, at| {
            if let Some(posted) = list.get_mut(at) {
                posted.pass = pass;
            }
        });
    }

    /// The pass probability the index holds for the campaign named `id` (1 when not indexed
    /// or never set), as its first posting has it.
    #[cfg(test)]
    fn pass(&self, id: &str) -> f64 {
        let Some(&number) = self.by_id.get(id) else {
            return 1.0;
        };
        let Some(entry) = self.entry(number) else {
            return 1.0;
        };
        let order = entry.posted(number, 1.0).order();
        posting_keys(&entry.listed)
            .into_iter()
            .find_map(|(country, device)| {
                let list = self.postings.get(country.as_str())?.get(device.as_str())?;
                let at = list.binary_search_by_key(&order, Posted::order).ok()?;
                list.get(at).map(|p| p.pass)
            })
            .unwrap_or(1.0)
    }

    /// Adds `listed` (not in the index) as the entry numbered `number` with pass probability
    /// `pass` (`kept`; `None`: a new number, pass 1) at the end of its postings, noting in
    /// `appended` how long each posting it joins was before.
    fn append(
        &mut self,
        listed: &Arc<Listed>,
        kept: Option<(u32, f64)>,
        prior: &PriorRanker,
        appended: &mut HashMap<(Box<str>, Box<str>), usize>,
    ) {
        let c = &listed.campaign;
        let p = prior.predict(&c.campaign_id);
        let next = self.advertisers.len() as u32;
        let advertiser = *self
            .advertisers
            .entry(c.advertiser_id.as_str().into())
            .or_insert(next);
        let (number, pass) = kept.unwrap_or((self.entries.len() as u32, 1.0));
        let entry = Entry {
            listed: listed.clone(),
            value: expected_ecpm(c.billing, c.bid_micros, p.pctr, p.pcvr),
            route: route(&c.campaign_id),
            advertiser,
            kinds: kinds_of(&c.creatives),
            formats: format_signature(&c.creatives),
            tz: listed
                .history
                .zone_change
                .is_none()
                .then(|| listed.tz_at(EventTime(0))),
            daily_budget_micros: c.daily_budget_micros,
            gate: Gate::of(c),
        };
        let posted = entry.posted(number, pass);
        for (country, device) in posting_keys(listed) {
            let (country, device) = (country.into_boxed_str(), device.into_boxed_str());
            let list = self
                .postings
                .entry(country.clone())
                .or_default()
                .entry(device.clone())
                .or_default();
            appended.entry((country, device)).or_insert(list.len());
            list.push(posted);
        }
        self.by_id.insert(c.campaign_id.as_str().into(), number);
        match self.entries.get_mut(number as usize) {
            Some(slot) => *slot = Some(entry),
            None => self.entries.push(Some(entry)),
        }
    }

    /// The campaigns whose country and device targeting admit `country` and `device`, each at
    /// most once, best first, with their entry numbers.
    pub fn lookup<'a>(
        &'a self,
        country: Option<&str>,
        device: Option<&str>,
    ) -> impl Iterator<Item = (u32, &'a Entry)> + 'a {
        self.postings_of(country, device)
            .filter_map(|p| self.entry(p.number).map(|e| (p.number, e)))
    }

    /// The postings of a request from `country` on `device`, merged in funnel order (deleted
    /// campaigns' included until their postings are merged).
    fn postings_of<'a>(&'a self, country: Option<&str>, device: Option<&str>) -> Merged<'a> {
        let device = device.map(str::to_ascii_lowercase);
        let mut lists: Vec<&'a [Posted]> = Vec::with_capacity(4);
        for c in [Some(ANY), country].into_iter().flatten() {
            let Some(by_device) = self.postings.get(c) else {
                continue;
            };
            for d in [Some(ANY), device.as_deref()].into_iter().flatten() {
                if let Some(list) = by_device.get(d) {
                    lists.push(list);
                }
            }
        }
        Merged { lists }
    }

    /// Starts loading entry `number` into the cache (a hint: it changes no result). Retrieval
    /// asks for the entries it will read a few campaigns ahead; in a large catalog each is
    /// otherwise a wait on memory.
    fn prefetch(&self, number: u32) {
        #[cfg(target_arch = "x86_64")]
        if let Some(entry) = self.entries.get(number as usize) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let at = (entry as *const Option<Entry>).cast::<i8>();
            // SAFETY: a prefetch is a hint that reads and writes nothing (it cannot fault, at
            // any address), and SSE is part of every x86_64 target. An entry spans two cache
            // lines at most.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(at);
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(64));
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = number;
    }

    /// The entry numbered `number` (`None`: no such number, or its campaign was deleted).
    pub fn entry(&self, number: u32) -> Option<&Entry> {
        self.entries.get(number as usize).and_then(Option::as_ref)
    }

    /// The entry number of the campaign named `id`.
    pub fn number_of(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    /// Campaigns indexed.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no campaign is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Entry numbers given out, deleted campaigns' included (the size of per-entry arrays).
    pub fn numbers(&self) -> usize {
        self.entries.len()
    }
}

/// Sorts the tail of `list` after its first `sorted` (in order) and merges it in, in one pass.
fn merge_tail(list: &mut Vec<Posted>, sorted: usize) {
    let mut tail = list.split_off(sorted.min(list.len()));
    tail.sort_unstable_by_key(Posted::order);
    let head = std::mem::take(list);
    list.reserve_exact(head.len() + tail.len());
    let (mut h, mut t) = (head.into_iter().peekable(), tail.into_iter().peekable());
    loop {
        let take_head = match (h.peek(), t.peek()) {
            (Some(a), Some(b)) => a.order() <= b.order(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_head { h.next() } else { t.next() };
        list.extend(next);
    }
}

/// Entry numbers merged, best first, from a few postings in [`Posted::order`] (disjoint: a
/// campaign is in at most one posting of a request).
struct Merged<'a> {
    lists: Vec<&'a [Posted]>,
}

impl Posted {
    /// Whether `self` comes before `other` in [`Posted::order`] (the comparison the merge makes
    /// per posting, without building the keys).
    fn before(&self, other: &Posted) -> bool {
        self.value > other.value
            || (self.value == other.value
                && (self.route, self.number) < (other.route, other.number))
    }
}

impl Iterator for Merged<'_> {
    type Item = Posted;

    fn next(&mut self) -> Option<Posted> {
        // Most requests read one or two postings; an emptied one is dropped, so the last one
        // left is read straight through.
        let mut at = 0;
        loop {
            let mut best: Option<&Posted> = None;
            let mut emptied = None;
            for (i, list) in self.lists.iter().enumerate() {
                match list.first() {
                    Some(p) if best.is_none_or(|b| p.before(b)) => {
                        best = Some(p);
                        at = i;
                    }
                    Some(_) => {}
                    None => emptied = Some(i),
                }
            }
            if let Some(i) = emptied {
                // Postings are disjoint and ordered by key, so which list a posting came from
                // never decides the order: dropping one reorders nothing.
                self.lists.swap_remove(i);
                continue;
            }
            let first = *best?;
            if let Some(list) = self.lists.get_mut(at) {
                *list = &list[1..];
            }
            return Some(first);
        }
    }
}

/// What retrieval's budget check asks: the budget left on budget day `day` for entry `number`
/// (`entry`). The book answers it from the campaign's definition and spend
/// ([`BudgetBook::remaining_on`]); a serving replica answers it from spend cached by entry
/// number, falling back to the book.
pub trait BudgetLeft {
    /// Budget left, micros.
    fn remaining(&self, number: u32, entry: &Entry, day: chrono::NaiveDate) -> u64;
}

impl BudgetLeft for BudgetBook {
    fn remaining(&self, _: u32, entry: &Entry, day: chrono::NaiveDate) -> u64 {
        self.remaining_on(&entry.listed, day)
    }
}

/// How far retrieval goes for one request.
#[derive(Debug, Clone, Copy)]
pub struct Funnel {
    /// At most this many campaigns of one advertiser go on.
    pub per_advertiser: usize,
    /// Retrieval stops once this many campaigns went on (the pre-ranking pool).
    pub pool: usize,
}

impl Funnel {
    /// No limit: every qualifying campaign of every advertiser.
    pub const ALL: Funnel = Funnel {
        per_advertiser: usize::MAX,
        pool: usize::MAX,
    };
}

/// The budget day of each time zone at one instant: campaigns share a handful of zones, and
/// converting an instant to a local date is the costly part of a budget check.
#[derive(Default)]
struct BudgetDays {
    known: Vec<(chrono_tz::Tz, chrono::NaiveDate)>,
}

impl BudgetDays {
    /// The budget day at `now` of `entry`'s campaign (always `now`: one instance per request).
    fn day(&mut self, entry: &Entry, now: EventTime) -> chrono::NaiveDate {
        let tz = entry.tz.unwrap_or_else(|| entry.listed.tz_at(now));
        if let Some((_, day)) = self.known.iter().find(|(z, _)| *z == tz) {
            return *day;
        }
        let day = crate::time::day::budget_day(now, tz);
        self.known.push((tz, day));
        day
    }
}

/// Why a campaign did not bid on a request: the answer to "why didn't my ad serve", in the
/// order the stages run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NoBid {
    /// Paused.
    Paused,
    /// Before its start or after its end.
    OutOfFlight,
    /// It has no creative.
    NoCreative,
    /// Country targeting.
    Country,
    /// Region targeting.
    Region,
    /// Metro targeting.
    Metro,
    /// Device targeting.
    Device,
    /// Interest targeting.
    Interests,
    /// None of its creatives fits a slot.
    Format,
    /// A block list of the request.
    Blocked(Blocked),
    /// Its pacing throttle held it back from this request.
    Pacing,
    /// No budget left today.
    Budget,
    /// Another campaign of its advertiser went on instead.
    AdvertiserLimit,
    /// More candidates than ranking takes.
    CandidateLimit,
    /// Its expected value is below every floor it could bid on.
    Floor,
    /// Another bid was higher.
    Outbid,
    /// What its win would reserve exceeds what it may still reserve today.
    BudgetGate,
}

impl NoBid {
    /// The name used in explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            NoBid::Paused => "paused",
            NoBid::OutOfFlight => "out_of_flight",
            NoBid::NoCreative => "no_creative",
            NoBid::Country => "targeting_country",
            NoBid::Region => "targeting_region",
            NoBid::Metro => "targeting_metro",
            NoBid::Device => "targeting_device",
            NoBid::Interests => "targeting_interests",
            NoBid::Blocked(b) => b.as_str(),
            NoBid::Format => "format",
            NoBid::Pacing => "pacing",
            NoBid::Budget => "budget",
            NoBid::AdvertiserLimit => "advertiser_limit",
            NoBid::CandidateLimit => "candidate_limit",
            NoBid::Floor => "floor",
            NoBid::Outbid => "outbid",
            NoBid::BudgetGate => "budget_gate",
        }
    }
}

fn listed_in(list: &[String], value: Option<&str>, eq: fn(&str, &str) -> bool) -> bool {
    list.is_empty() || value.is_some_and(|v| list.iter().any(|x| eq(x, v)))
}

fn same(a: &str, b: &str) -> bool {
    a == b
}

fn same_ignoring_case(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Whether `listed` may bid on `request` at `now` as far as the campaign and the request alone
/// say (status, flight, targeting, formats, block lists); if so, the best creative of each slot
/// (by index into its creatives).
pub fn qualify(
    listed: &Listed,
    request: &AdRequest,
    now: EventTime,
) -> Result<Vec<Option<usize>>, NoBid> {
    let gate = Gate::of(&listed.campaign);
    let request_blocks = BlockMask::of_request(&request.blocks);
    qualify_checked(
        listed,
        &gate,
        request,
        request_blocks,
        now,
        false,
        true,
        &mut |c| fits_of(&c.creatives, request),
    )
    .map(|fits| fits.to_vec())
}

/// The best creative of each slot of a request, by index into a campaign's creatives (`None`:
/// none fits the slot). Shared by every campaign of a request with the same creative formats.
pub type Fits = std::rc::Rc<[Option<usize>]>;

/// The best creative of `creatives` per slot of `request`.
fn fits_of(creatives: &[Creative], request: &AdRequest) -> Fits {
    request
        .slots
        .iter()
        .map(|slot| best_creative(creatives, &slot.formats))
        .collect()
}

/// The creative kinds of `creatives` as a bit set (see [`kind_bit`]).
fn kinds_of(creatives: &[Creative]) -> u8 {
    creatives.iter().fold(0, |bits, c| bits | kind_bit(c.kind))
}

/// One bit per creative kind.
fn kind_bit(kind: CreativeKind) -> u8 {
    match kind {
        CreativeKind::Banner => 1,
        CreativeKind::Video => 2,
        CreativeKind::Audio => 4,
        CreativeKind::Native => 8,
    }
}

/// The creative kinds some slot of `request` takes: a creative of no other kind fits any
/// ([`super::formats::fit`]).
fn kinds_wanted(request: &AdRequest) -> u8 {
    request.slots.iter().fold(0, |bits, slot| {
        let f = &slot.formats;
        let mut b = bits;
        if f.banner.is_some() || f.any {
            b |= kind_bit(CreativeKind::Banner);
        }
        if f.video.is_some() || f.any {
            b |= kind_bit(CreativeKind::Video);
        }
        if f.audio.is_some() || f.any {
            b |= kind_bit(CreativeKind::Audio);
        }
        if f.native.is_some() {
            b |= kind_bit(CreativeKind::Native);
        }
        b
    })
}

/// [`qualify`], skipping the country and device checks when `indexed` (the campaign was found
/// in the [`CampaignIndex`] posting of the request's country and device, which is that check),
/// and the creative-by-creative format check when `may_fit` is false (none of its creative
/// kinds is one the request takes: a format no-bid at once); `fits` gives the best creative per
/// slot.
#[allow(clippy::too_many_arguments)]
fn qualify_checked(
    listed: &Listed,
    gate: &Gate,
    request: &AdRequest,
    request_blocks: BlockMask,
    now: EventTime,
    indexed: bool,
    may_fit: bool,
    fits: &mut dyn FnMut(&crate::events::Campaign) -> Fits,
) -> Result<Fits, NoBid> {
    // The definition is read only where the gate does not settle a check.
    let c = &listed.campaign;
    let t = &c.targeting;
    if !gate.active {
        return Err(NoBid::Paused);
    }
    if !gate.in_flight(now) {
        return Err(NoBid::OutOfFlight);
    }
    if !gate.has_creatives {
        return Err(NoBid::NoCreative);
    }
    if !indexed && !listed_in(&t.countries, request.country.as_deref(), same) {
        return Err(NoBid::Country);
    }
    if gate.narrow && !listed_in(&t.regions, request.region.as_deref(), same) {
        return Err(NoBid::Region);
    }
    if gate.narrow && !listed_in(&t.metros, request.metro.as_deref(), same) {
        return Err(NoBid::Metro);
    }
    if !indexed && !listed_in(&t.devices, request.device.as_deref(), same_ignoring_case) {
        return Err(NoBid::Device);
    }
    let interests_ok = !gate.narrow
        || t.interests.is_empty()
        || request
            .interests
            .iter()
            .any(|i| t.interests.iter().any(|x| x.eq_ignore_ascii_case(i)));
    if !interests_ok {
        return Err(NoBid::Interests);
    }
    if !may_fit {
        return Err(NoBid::Format);
    }
    let fits = fits(c);
    if fits.iter().all(Option::is_none) {
        return Err(NoBid::Format);
    }
    // After formats: a request whose only fitting campaign is blocked says "blocked".
    if gate.blocks.may_block(request_blocks) {
        if let Some(b) = blocked(c, &request.blocks) {
            return Err(NoBid::Blocked(b));
        }
    }
    Ok(fits)
}

/// A campaign that may bid, with its best creative per slot.
#[derive(Debug, Clone)]
pub struct Retrieved<'a> {
    /// The campaign.
    pub listed: &'a Listed,
    /// Its entry in the index.
    pub entry: &'a Entry,
    /// The entry's number.
    pub number: u32,
    /// Its pass probability when retrieved (the throttle's, and pre-ranking's discount).
    pub pass: f64,
    /// Per slot of the request, the index of the creative it shows there (`None`: it does
    /// not fit that slot).
    pub creatives: Fits,
}

impl Retrieved<'_> {
    /// The slots it fits, as the auction's bit set.
    pub fn fits(&self) -> u16 {
        self.creatives
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .fold(0u16, |bits, (i, _)| {
                bits | 1u16.checked_shl(i as u32).unwrap_or(0)
            })
    }
}

/// How many campaigns retrieval decides ahead of the one it checks (their entries are fetched
/// meanwhile); `pace` may be asked about that many past where retrieval stops.
const AHEAD: usize = 8;

/// What pacing says of a campaign a request visits, before the campaign is checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Its throttle lets it bid; if it qualifies, its reach counts `weight`.
    Bid {
        /// What the request counts for in the campaign's reach.
        weight: f64,
    },
    /// Its throttle holds it back; if it qualifies, its reach counts `weight`.
    HeldBack {
        /// What the request counts for in the campaign's reach.
        weight: f64,
    },
    /// Its throttle holds it back and this request does not sample its reach: it is not
    /// checked at all.
    Skip,
}

/// The campaigns that may bid on `request` at `now`, best value first, at most
/// `funnel.per_advertiser` per advertiser, stopping once `funnel.pool` went on; and the
/// furthest stage a campaign that did not make it reached (what a no-bid is explained by).
/// `pace` is asked about every campaign the request visits, with its entry number, id hash and
/// pass probability, before anything else of it is looked at ([`Pace`]; it may be asked about
/// up to [`AHEAD`] campaigns past the last one retrieval checks); `reached` counts each
/// campaign that qualifies (before the budget check) with the weight pacing gave.
pub fn retrieve<'a>(
    budgets: &impl BudgetLeft,
    index: &'a CampaignIndex,
    request: &AdRequest,
    now: EventTime,
    funnel: Funnel,
    mut pace: impl FnMut(u32, u64, f64) -> Pace,
    mut reached: impl FnMut(u32, f64),
) -> (Vec<Retrieved<'a>>, Option<NoBid>) {
    let mut furthest: Option<NoBid> = None;
    let mut missed = |why: NoBid| {
        furthest = Some(furthest.map_or(why, |f| f.max(why)));
    };
    let mut found: Vec<Retrieved> = Vec::new();
    let mut days = BudgetDays::default();
    let mut per: HashMap<u32, usize> = HashMap::default();
    let wanted = kinds_wanted(request);
    let request_blocks = BlockMask::of_request(&request.blocks);
    let mut fitted: HashMap<u64, Fits> = HashMap::default();
    if funnel.pool == 0 {
        return (found, furthest);
    }
    let mut postings = index.postings_of(request.country.as_deref(), request.device.as_deref());
    let mut ahead: Vec<(Posted, bool, f64)> = Vec::with_capacity(AHEAD);
    'visits: loop {
        // Pacing first, from the posting alone: a campaign the throttle skips (most of a large
        // paced catalog) costs no look at its entry. The next few it does not skip are
        // decided ahead, and their entries fetched into cache while the first is checked.
        ahead.clear();
        for posted in postings.by_ref() {
            let (bids, weight) = match pace(posted.number, posted.route, posted.pass) {
                Pace::Bid { weight } => (true, weight),
                Pace::HeldBack { weight } => (false, weight),
                Pace::Skip => continue,
            };
            index.prefetch(posted.number);
            ahead.push((posted, bids, weight));
            if ahead.len() == AHEAD {
                break;
            }
        }
        if ahead.is_empty() {
            break;
        }
        for &(posted, bids, weight) in &ahead {
            let number = posted.number;
            let Some(entry) = index.entry(number) else {
                continue;
            };
            let listed = &*entry.listed;
            if per
                .get(&entry.advertiser)
                .is_some_and(|n| *n >= funnel.per_advertiser)
            {
                // Its advertiser's better campaigns went on already.
                missed(NoBid::AdvertiserLimit);
                continue;
            }
            let may_fit = entry.kinds & wanted != 0;
            let creatives = match qualify_checked(
                listed,
                &entry.gate,
                request,
                request_blocks,
                now,
                true,
                may_fit,
                &mut |c| {
                    // Worked out once per format signature in this request.
                    fitted
                        .entry(entry.formats)
                        .or_insert_with(|| fits_of(&c.creatives, request))
                        .clone()
                },
            ) {
                Ok(c) => c,
                Err(why) => {
                    missed(why);
                    continue;
                }
            };
            reached(number, weight);
            if !bids {
                missed(NoBid::Pacing);
                continue;
            }
            if budgets.remaining(number, entry, days.day(entry, now)) == 0 {
                missed(NoBid::Budget);
                continue;
            }
            *per.entry(entry.advertiser).or_default() += 1;
            found.push(Retrieved {
                listed,
                entry,
                number,
                pass: posted.pass,
                creatives,
            });
            if found.len() >= funnel.pool {
                break 'visits;
            }
        }
    }
    (found, furthest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Campaign;
    use crate::records::CatalogUpdate;
    use crate::records::DaySpend;
    use crate::records::LedgerState;
    use crate::request::parse_request;

    fn add(book: &mut BudgetBook, json: &str) {
        let c = Campaign::parse(json.as_bytes()).unwrap();
        book.apply(&LedgerState::Campaign(CatalogUpdate::new(
            c.campaign_id.clone(),
            Some(Box::new(c)),
        )));
    }

    fn bid_all(_: u32, _: u64, _: f64) -> Pace {
        Pace::Bid { weight: 1.0 }
    }

    fn five() -> Funnel {
        Funnel {
            per_advertiser: 5,
            pool: 100,
        }
    }

    fn campaign(id: &str, adv: &str, targeting: &str, bid: u64) -> String {
        format!(
            r#"{{"campaign_id":"{id}","advertiser_id":"{adv}","daily_budget_micros":1000,"timezone":"UTC","billing":"cpm","bid_micros":{bid},"targeting":{targeting},"creatives":[{{"ad_id":"{id}-ad"}}]}}"#
        )
    }

    #[test]
    fn the_gate_settles_status_flight_and_creatives_as_the_definition_does() {
        let json = |extra: &str| {
            format!(
                r#"{{"campaign_id":"g","advertiser_id":"A","daily_budget_micros":1000,"timezone":"UTC","billing":"cpm","bid_micros":5{extra}}}"#
            )
        };
        let flight = Campaign::parse(
            json(r#","start":1000,"end":2000,"creatives":[{"ad_id":"x"}]"#).as_bytes(),
        )
        .unwrap();
        let gate = Gate::of(&flight);
        for t in [i64::MIN, 0, 999, 1000, 1999, 2000, i64::MAX] {
            assert_eq!(
                gate.in_flight(EventTime(t)),
                flight.in_flight(EventTime(t)),
                "at {t}"
            );
        }
        assert!(gate.active && gate.has_creatives && !gate.narrow);
        let open = Campaign::parse(json("").as_bytes()).unwrap();
        let gate = Gate::of(&open);
        assert!(gate.in_flight(EventTime(i64::MIN)) && gate.in_flight(EventTime(i64::MAX - 1)));
        assert!(!gate.has_creatives);
        let narrow = Campaign::parse(
            json(r#","status":"paused","targeting":{"interests":["golf"]}"#).as_bytes(),
        )
        .unwrap();
        let gate = Gate::of(&narrow);
        assert!(!gate.active && gate.narrow);
    }

    #[test]
    fn the_index_visits_each_campaign_matching_country_and_device_once() {
        let mut book = BudgetBook::default();
        add(
            &mut book,
            &campaign("us-fr", "A", r#"{"countries":["US","FR","us"]}"#, 5),
        );
        add(
            &mut book,
            &campaign(
                "us-mob",
                "B",
                r#"{"countries":["US"],"devices":["Mobile","tablet"]}"#,
                5,
            ),
        );
        add(&mut book, &campaign("all", "C", "{}", 3));
        add(
            &mut book,
            &campaign("desk", "D", r#"{"devices":["desktop"]}"#, 3),
        );
        let index = CampaignIndex::build(&book, &PriorRanker::default());
        assert_eq!(index.len(), 4);
        let visited = |country: Option<&str>, device: Option<&str>| {
            let mut ids: Vec<String> = index
                .lookup(country, device)
                .map(|(_, e)| e.listed.campaign.campaign_id.clone())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(
            visited(Some("US"), Some("mobile")),
            ["all", "us-fr", "us-mob"]
        );
        assert_eq!(
            visited(Some("US"), Some("desktop")),
            ["all", "desk", "us-fr"]
        );
        assert_eq!(visited(Some("FR"), Some("tablet")), ["all", "us-fr"]);
        assert_eq!(visited(Some("DE"), None), ["all"]);
        assert_eq!(visited(None, Some("DESKTOP")), ["all", "desk"]);
        assert_eq!(visited(None, None), ["all"]);
    }

    #[test]
    fn targeting_budget_and_advertiser_cap() {
        let mut book = BudgetBook::default();
        add(
            &mut book,
            &campaign("fr", "A", r#"{"countries":["FR"]}"#, 5),
        );
        add(
            &mut book,
            &campaign(
                "us-mobile",
                "B",
                r#"{"countries":["US"],"devices":["mobile"]}"#,
                5,
            ),
        );
        add(&mut book, &campaign("all-1", "C", "{}", 3));
        add(&mut book, &campaign("all-2", "C", "{}", 2));
        add(
            &mut book,
            &campaign("sports", "D", r#"{"interests":["sports"]}"#, 9),
        );
        let index = CampaignIndex::build(&book, &PriorRanker::default());
        let now = EventTime::now();
        let ids = |book: &BudgetBook, req: &str, k| {
            let r = parse_request(req.as_bytes()).unwrap();
            retrieve(
                book,
                &index,
                &r,
                now,
                Funnel {
                    per_advertiser: k,
                    pool: 100,
                },
                |_, _, _| Pace::Bid { weight: 1.0 },
                |_, _| {},
            )
            .0
            .iter()
            .map(|r| r.listed.campaign.campaign_id.clone())
            .collect::<Vec<_>>()
        };
        let fr =
            r#"{"id":"r","imp":[{"id":"1"}],"device":{"geo":{"country":"FR"},"devicetype":2}}"#;
        assert_eq!(ids(&book, fr, 5), vec!["fr", "all-1", "all-2"]);
        assert_eq!(ids(&book, fr, 1), vec!["fr", "all-1"]);
        let us_mobile = r#"{"id":"r","imp":[{"id":"1"}],"device":{"geo":{"country":"US"},"devicetype":4},"user":{"keywords":"sports"}}"#;
        assert_eq!(
            ids(&book, us_mobile, 5),
            vec!["sports", "us-mobile", "all-1", "all-2"]
        );
        // Out of budget: gone.
        book.apply(&LedgerState::Spend(DaySpend {
            campaign_id: "fr".into(),
            day: crate::time::day::budget_day(now, chrono_tz::UTC),
            spend_micros: 1000,
            overdelivery_micros: 0,
        }));
        assert_eq!(ids(&book, fr, 5), vec!["all-1", "all-2"]);
        // Pacing sees every reachable campaign (out of budget included) and may hold one back.
        let r = parse_request(fr.as_bytes()).unwrap();
        let mut reached = Vec::new();
        let (found, furthest) = retrieve(
            &book,
            &index,
            &r,
            now,
            five(),
            |_, route, _| {
                if route == crate::routing::route("all-2") {
                    Pace::HeldBack { weight: 1.0 }
                } else {
                    Pace::Bid { weight: 1.0 }
                }
            },
            |n, _| reached.push(index.entry(n).unwrap().listed.campaign.campaign_id.clone()),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(furthest, Some(NoBid::Budget));
        reached.sort();
        assert_eq!(reached, vec!["all-1", "all-2", "fr"]);
    }

    #[test]
    fn alpha_3_requests_meet_alpha_2_targeting_and_regions_and_metros_narrow_it() {
        let mut book = BudgetBook::default();
        add(
            &mut book,
            &campaign("us", "A", r#"{"countries":["US"]}"#, 5),
        );
        add(
            &mut book,
            &campaign("usa", "B", r#"{"countries":["usa"]}"#, 4),
        );
        add(
            &mut book,
            &campaign("ca", "C", r#"{"regions":["US-CA"]}"#, 3),
        );
        add(&mut book, &campaign("la", "D", r#"{"metros":["803"]}"#, 2));
        let index = CampaignIndex::build(&book, &PriorRanker::default());
        let now = EventTime::now();
        let ids = |geo: &str| {
            let r = parse_request(
                format!(r#"{{"id":"r","imp":[{{"id":"1"}}],"device":{{"geo":{geo}}}}}"#).as_bytes(),
            )
            .unwrap();
            let (found, furthest) = retrieve(&book, &index, &r, now, five(), bid_all, |_, _| {});
            let ids: Vec<String> = found
                .iter()
                .map(|r| r.listed.campaign.campaign_id.clone())
                .collect();
            (ids, furthest)
        };
        assert_eq!(ids(r#"{"country":"USA"}"#).0, vec!["us", "usa"]);
        assert_eq!(ids(r#"{"country":"us"}"#).0, vec!["us", "usa"]);
        assert_eq!(
            ids(r#"{"country":"USA","region":"CA","metro":"803"}"#).0,
            vec!["us", "usa", "ca", "la"]
        );
        assert_eq!(
            ids(r#"{"country":"USA","region":"NY"}"#).0,
            vec!["us", "usa"]
        );
        let (none, why) = ids(r#"{"country":"FRA"}"#);
        assert!(none.is_empty());
        assert_eq!(why, Some(NoBid::Metro), "the furthest stage reached");
    }

    #[test]
    fn block_lists_and_formats_leave_campaigns_out_with_their_reason() {
        let mut book = BudgetBook::default();
        add(
            &mut book,
            r#"{"campaign_id":"safe","advertiser_id":"A","daily_budget_micros":1000,"timezone":"UTC","billing":"cpm","bid_micros":5,"cat":["IAB1"],"adomain":["a.com"],"creatives":[{"ad_id":"s","w":300,"h":250}]}"#,
        );
        add(
            &mut book,
            r#"{"campaign_id":"gambling","advertiser_id":"B","daily_budget_micros":1000,"timezone":"UTC","billing":"cpm","bid_micros":9,"cat":["IAB9-7"],"adomain":["b.com"],"creatives":[{"ad_id":"g","w":300,"h":250}]}"#,
        );
        let index = CampaignIndex::build(&book, &PriorRanker::default());
        let now = EventTime::now();
        let run = |body: &str| {
            let r = parse_request(body.as_bytes()).unwrap();
            let (found, why) = retrieve(&book, &index, &r, now, five(), bid_all, |_, _| {});
            let ids: Vec<String> = found
                .iter()
                .map(|r| r.listed.campaign.campaign_id.clone())
                .collect();
            (ids, why)
        };
        let banner = r#"{"id":"r","imp":[{"id":"1","banner":{"w":300,"h":250}}],"bcat":["IAB9"]}"#;
        assert_eq!(
            run(banner),
            (
                vec!["safe".to_string()],
                Some(NoBid::Blocked(Blocked::Category))
            )
        );
        let video = r#"{"id":"r","imp":[{"id":"1","video":{"mimes":["video/mp4"]}}]}"#;
        assert_eq!(run(video), (vec![], Some(NoBid::Format)));
        let both = r#"{"id":"r","imp":[{"id":"1","video":{"mimes":["video/mp4"]}},{"id":"2","banner":{"w":300,"h":250}}]}"#;
        let r = parse_request(both.as_bytes()).unwrap();
        let (found, _) = retrieve(&book, &index, &r, now, five(), bid_all, |_, _| {});
        assert_eq!(*found[0].creatives, [None, Some(0)]);
        assert_eq!(found[0].fits(), 0b10);
    }

    proptest::proptest! {
        /// Over random catalogs: retrieval visits best value first, keeps at most
        /// `per_advertiser` per advertiser, and stopping at a pool gives exactly the first
        /// campaigns of the unbounded answer.
        #[test]
        fn a_bounded_pool_is_the_best_prefix_of_the_whole_answer(
            campaigns in proptest::collection::vec(
                (0u8..4, 0u8..3, 0u8..3, 1u64..100, 0u8..3),
                1..60,
            ),
            per_advertiser in 1usize..4,
            pool in 0usize..70,
            country in 0u8..3,
            device in 0u8..3,
        ) {
            const COUNTRIES: [&str; 3] = ["US", "FR", "DE"];
            const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];
            let mut book = BudgetBook::default();
            for (i, (adv, c, d, bid, billing)) in campaigns.iter().enumerate() {
                let targeting = match (c, d) {
                    (0, _) => "{}".to_string(),
                    (_, 0) => format!(r#"{{"countries":["{}"]}}"#, COUNTRIES[*c as usize]),
                    _ => format!(
                        r#"{{"countries":["{}"],"devices":["{}"]}}"#,
                        COUNTRIES[*c as usize], DEVICES[*d as usize]
                    ),
                };
                let json = campaign(&format!("c{i:02}"), &format!("a{adv}"), &targeting, *bid)
                    .replace("\"cpm\"", ["\"cpm\"", "\"cpc\"", "\"cpa\""][*billing as usize]);
                add(&mut book, &json);
            }
            let prior = PriorRanker::default();
            let index = CampaignIndex::build(&book, &prior);
            let request = parse_request(
                format!(
                    r#"{{"id":"r","imp":[{{"id":"1"}}],"device":{{"geo":{{"country":"{}"}},"devicetype":{}}}}}"#,
                    COUNTRIES[country as usize],
                    [4, 2, 5][device as usize]
                )
                .as_bytes(),
            )
            .unwrap();
            let now = EventTime::now();
            let all = retrieve(&book, &index, &request, now, Funnel { per_advertiser, pool: usize::MAX }, bid_all, |_, _| {}).0;
            let values: Vec<u64> = all.iter().map(|r| r.entry.value).collect();
            proptest::prop_assert!(values.windows(2).all(|w| w[0] >= w[1]), "best first: {:?}", values);
            let mut per: HashMap<&str, usize> = HashMap::default();
            for r in &all {
                *per.entry(r.listed.campaign.advertiser_id.as_str()).or_default() += 1;
            }
            proptest::prop_assert!(per.values().all(|n| *n <= per_advertiser));
            let bounded = retrieve(&book, &index, &request, now, Funnel { per_advertiser, pool }, bid_all, |_, _| {}).0;
            let ids = |found: &[Retrieved]| -> Vec<String> {
                found.iter().map(|r| r.listed.campaign.campaign_id.clone()).collect()
            };
            let mut prefix = ids(&all);
            prefix.truncate(pool);
            proptest::prop_assert_eq!(ids(&bounded), prefix);
        }
    }

    proptest::proptest! {
        /// Updating the index campaign by campaign (adds, edits of bid and targeting, deletes,
        /// in batches, with repeats) visits the same campaigns in the same order as building
        /// it afresh over the final catalog.
        #[test]
        fn an_updated_index_answers_as_a_fresh_one(
            ops in proptest::collection::vec(
                (0u8..12, proptest::option::weighted(0.8, (0u8..3, 0u8..3, 1u64..20))),
                1..80,
            ),
            batch in 1usize..10,
        ) {
            const COUNTRIES: [&str; 3] = ["*", "US", "FR"];
            const DEVICES: [&str; 3] = ["*", "mobile", "desktop"];
            let prior = PriorRanker::default();
            let mut book = BudgetBook::default();
            let mut index = CampaignIndex::default();
            for chunk in ops.chunks(batch) {
                let mut changed = Vec::new();
                for (id, def) in chunk {
                    let id = format!("c{id}");
                    match def {
                        Some((c, d, bid)) => {
                            let mut t = Vec::new();
                            if *c > 0 {
                                t.push(format!(r#""countries":["{}"]"#, COUNTRIES[*c as usize]));
                            }
                            if *d > 0 {
                                t.push(format!(r#""devices":["{}"]"#, DEVICES[*d as usize]));
                            }
                            add(&mut book, &campaign(&id, "A", &format!("{{{}}}", t.join(",")), *bid));
                        }
                        None => {
                            book.apply(&LedgerState::Campaign(CatalogUpdate::new(id.clone(), None)));
                        }
                    }
                    changed.push(id);
                }
                index.update(&book, &prior, changed.iter().map(String::as_str));
            }
            let fresh = CampaignIndex::build(&book, &prior);
            proptest::prop_assert_eq!(index.len(), fresh.len());
            for country in [None, Some("US"), Some("FR"), Some("DE")] {
                for device in [None, Some("mobile"), Some("desktop")] {
                    let visit = |i: &CampaignIndex| -> Vec<String> {
                        i.lookup(country, device)
                            .map(|(_, e)| e.listed.campaign.campaign_id.clone())
                            .collect()
                    };
                    proptest::prop_assert_eq!(visit(&index), visit(&fresh), "{:?} {:?}", country, device);
                }
            }
        }
    }

    fn paced(board: &mut PacingBoard, id: &str, pass: f64) {
        board.apply(crate::records::PacingUpdate {
            campaign_id: id.into(),
            state: crate::records::PacingState {
                mode: "paced".into(),
                pass_probability: pass,
                target_micros: 0,
                committed_micros: 0,
                conversions_pending_micros: 0,
                day: crate::time::day::budget_day(EventTime(0), chrono_tz::UTC),
                full_rate_micros_per_hour: None,
                updated_ms: 0,
            },
            reserved_by_replica: vec![0],
        });
    }

    #[test]
    fn postings_carry_each_campaigns_pass_to_the_throttle_through_edits() {
        let prior = PriorRanker::default();
        let mut book = BudgetBook::default();
        // In four postings (two countries, two devices), and one in none of them.
        add(
            &mut book,
            &campaign(
                "wide",
                "A",
                r#"{"countries":["US","FR"],"devices":["mobile","desktop"]}"#,
                5,
            ),
        );
        add(&mut book, &campaign("all", "B", "{}", 3));
        let mut index = CampaignIndex::build(&book, &prior);
        assert_eq!(index.pass("wide"), 1.0, "no pacing state yet: bids");
        let mut board = PacingBoard::new(0, 1);
        paced(&mut board, "wide", 0.25);
        paced(&mut board, "unknown", 0.5);
        index.set_passes(&board, ["wide", "unknown"]);
        assert_eq!(index.pass("wide"), 0.25);
        assert_eq!(index.pass("all"), 1.0);
        assert_eq!(index.pass("unknown"), 1.0, "not indexed");
        let pace_seen = |book: &BudgetBook, index: &CampaignIndex, country: &str, device: u8| {
            let r = parse_request(
                format!(r#"{{"id":"r","imp":[{{"id":"1"}}],"device":{{"geo":{{"country":"{country}"}},"devicetype":{device}}}}}"#)
                    .as_bytes(),
            )
            .unwrap();
            let mut seen = Vec::new();
            let (found, _) = retrieve(
                book,
                index,
                &r,
                EventTime::now(),
                five(),
                |n, _, pass| {
                    seen.push((
                        index.entry(n).unwrap().listed.campaign.campaign_id.clone(),
                        pass,
                    ));
                    Pace::Bid { weight: 1.0 }
                },
                |_, _| {},
            );
            let passes: Vec<(String, f64)> = found
                .iter()
                .map(|r| (r.listed.campaign.campaign_id.clone(), r.pass))
                .collect();
            assert_eq!(passes, seen, "retrieved with the pass the throttle saw");
            seen
        };
        // Every posting of the campaign holds its pass.
        for (country, device) in [("US", 4), ("US", 2), ("FR", 4), ("FR", 2)] {
            assert_eq!(
                pace_seen(&book, &index, country, device),
                vec![("wide".to_string(), 0.25), ("all".to_string(), 1.0)],
                "{country} {device}"
            );
        }
        // An edit (a new bid and one country fewer) keeps the pass until pacing says otherwise.
        add(
            &mut book,
            &campaign(
                "wide",
                "A",
                r#"{"countries":["FR"],"devices":["mobile"]}"#,
                9,
            ),
        );
        index.update(&book, &prior, ["wide"]);
        assert_eq!(index.pass("wide"), 0.25);
        assert_eq!(
            pace_seen(&book, &index, "FR", 4)[0],
            ("wide".to_string(), 0.25)
        );
        assert_eq!(
            pace_seen(&book, &index, "US", 4),
            vec![("all".to_string(), 1.0)]
        );
        paced(&mut board, "wide", 0.0);
        index.set_all_passes(&board);
        assert_eq!(
            pace_seen(&book, &index, "FR", 4)[0],
            ("wide".to_string(), 0.0)
        );
        // Deleted and defined again: a new campaign, which bids until pacing says otherwise.
        book.apply(&LedgerState::Campaign(CatalogUpdate::new(
            "wide".into(),
            None,
        )));
        index.update(&book, &prior, ["wide"]);
        add(&mut book, &campaign("wide", "A", "{}", 9));
        index.update(&book, &prior, ["wide"]);
        assert_eq!(index.pass("wide"), 1.0);
    }

    proptest::proptest! {
        /// A request visits the campaigns of all its postings merged in the funnel's order
        /// (value, best first; then id hash and entry number), whatever postings they sit in.
        #[test]
        fn merged_postings_are_in_funnel_order(
            campaigns in proptest::collection::vec((0u8..4, 0u8..4, 1u64..6), 1..60),
        ) {
            const COUNTRIES: [&str; 4] = ["*", "US", "FR", "US\",\"FR"];
            const DEVICES: [&str; 4] = ["*", "mobile", "desktop", "mobile\",\"desktop"];
            let mut book = BudgetBook::default();
            for (i, (c, d, bid)) in campaigns.iter().enumerate() {
                let mut t = Vec::new();
                if *c > 0 {
                    t.push(format!(r#""countries":["{}"]"#, COUNTRIES[*c as usize]));
                }
                if *d > 0 {
                    t.push(format!(r#""devices":["{}"]"#, DEVICES[*d as usize]));
                }
                add(&mut book, &campaign(&format!("c{i}"), "A", &format!("{{{}}}", t.join(",")), *bid));
            }
            let index = CampaignIndex::build(&book, &PriorRanker::default());
            for country in [None, Some("US"), Some("FR")] {
                for device in [None, Some("mobile"), Some("desktop")] {
                    let visited: Vec<(u32, Posted)> = index
                        .lookup(country, device)
                        .map(|(n, e)| (n, e.posted(n, 1.0)))
                        .collect();
                    let mut sorted = visited.clone();
                    sorted.sort_by_key(|(_, posted)| posted.order());
                    proptest::prop_assert_eq!(&visited, &sorted);
                    let mut numbers: Vec<u32> = visited.iter().map(|(n, _)| *n).collect();
                    numbers.dedup();
                    proptest::prop_assert_eq!(numbers.len(), visited.len(), "each campaign once");
                }
            }
        }
    }

    #[test]
    fn an_edited_campaign_keeps_its_entry_number() {
        let prior = PriorRanker::default();
        let mut book = BudgetBook::default();
        add(&mut book, &campaign("a", "A", "{}", 5));
        add(&mut book, &campaign("b", "B", r#"{"countries":["US"]}"#, 3));
        let mut index = CampaignIndex::build(&book, &prior);
        let a = index.number_of("a");
        for bid in 1..50 {
            add(
                &mut book,
                &campaign("a", "A", r#"{"countries":["FR"]}"#, bid),
            );
            index.update(&book, &prior, ["a"]);
        }
        assert_eq!(index.number_of("a"), a);
        assert_eq!(index.numbers(), 2, "edits take no new numbers");
        let fr: Vec<u32> = index.lookup(Some("FR"), None).map(|(n, _)| n).collect();
        assert_eq!(fr, a.into_iter().collect::<Vec<_>>());
        assert_eq!(
            index.entry(a.unwrap()).unwrap().listed.campaign.bid_micros,
            49
        );
        // Deleted: gone from the postings and from the ids; its number is not reused.
        book.apply(&LedgerState::Campaign(CatalogUpdate::new("a".into(), None)));
        index.update(&book, &prior, ["a"]);
        assert_eq!(index.number_of("a"), None);
        assert_eq!(index.lookup(Some("FR"), None).count(), 0);
        add(&mut book, &campaign("c", "C", "{}", 1));
        index.update(&book, &prior, ["c"]);
        assert_eq!(index.number_of("c"), Some(2));
        assert_eq!(index.len(), 2);
    }
}
