//! `adstream report tail TOPIC`: follow a reporting topic as a table.
//!
//! A reporting topic holds upsert records: the Kafka key is `GROUP@WINDOW_START` (group values
//! joined by `|`), the value a JSON object with `window_start`, `group` (an object of the group's
//! fields), the report's measures, `final` and `revision`; a null value (tombstone) deletes the
//! key. The tail reads the whole (compacted) topic up to the high watermarks seen at start, prints
//! the latest rows as an aligned table, then (unless `--once`) one table line per new, updated
//! or deleted row as it arrives.
//!
//! The row table, column discovery and cell formatting are plain types ([`Row`], [`Table`],
//! [`Layout`], [`Follow`], [`CatchUp`]); [`run`] is the thin Kafka loop around them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// How long reading the cluster's metadata may take before the brokers count as unreachable.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(8);

/// In follow mode, the header is printed again after this many lines.
pub const HEADER_EVERY: usize = 40;

/// Value fields that are not measures (and, but for `window_start`, not shown).
const RESERVED: &[&str] = &[
    "report",
    "window_start",
    "window_end",
    "group",
    "final",
    "revision",
    "watermark",
];

/// Why a record's value is not a row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// The bytes are not JSON.
    #[error("value is not JSON ({0})")]
    NotJson(String),
    /// The JSON is not an object.
    #[error("value is a JSON {0}, not an object")]
    NotObject(&'static str),
}

/// A JSON value whose objects keep their fields in the order they were written (serde_json's
/// own map sorts them), so that columns come out in the order the report writes them.
enum Node {
    Object(Vec<(String, Node)>),
    Other(Value),
}

impl Node {
    fn into_value(self) -> Value {
        match self {
            Node::Other(v) => v,
            Node::Object(fields) => Value::Object(
                fields
                    .into_iter()
                    .map(|(k, n)| (k, n.into_value()))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Other(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Other(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Other(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Other(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Other(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Other(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Other(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Other(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item.into_value());
        }
        Ok(Node::Other(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut fields: Vec<(String, Node)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Node>()? {
            // A repeated field: the last one wins, in the place of the first.
            match fields.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => fields.push((key, value)),
            }
        }
        Ok(Node::Object(fields))
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// How rows sort: by window start (as a time where it is one, else as text), then group values,
/// then key.
type SortKey = (Option<i64>, Option<String>, Vec<String>, String);

/// One aggregate row: the latest value of one Kafka key.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The Kafka key (`GROUP@WINDOW_START`).
    pub key: String,
    /// The window's start, an RFC 3339 string or integer milliseconds.
    pub window_start: Value,
    /// The group's fields in the order the value gives them.
    pub group: Vec<(String, Value)>,
    /// The measures in the order the value gives them.
    pub measures: Vec<(String, Value)>,
    /// `final`: whether the window is closed (absent: unknown).
    pub is_final: Option<Value>,
    /// `revision`: how many times the row was updated.
    pub revision: Option<Value>,
}

impl Row {
    /// Parses the value of the record with Kafka key `key`.
    ///
    /// Fields other than `report`, `window_start`, `window_end`, `group`, `final`, `revision`
    /// and `watermark` are measures. A value without `window_start` takes it from the key's
    /// part after the last `@`; one without a `group` object gets a single `group` field, the
    /// key's part before it.
    pub fn parse(key: &str, value: &[u8]) -> Result<Row, RowError> {
        let fields = match serde_json::from_slice::<Node>(value) {
            Err(e) => return Err(RowError::NotJson(e.to_string())),
            Ok(Node::Other(v)) => return Err(RowError::NotObject(kind_of(&v))),
            Ok(Node::Object(fields)) => fields,
        };
        let (key_group, key_window) = match key.rsplit_once('@') {
            Some((g, w)) => (g, Some(w)),
            None => (key, None),
        };
        let mut row = Row {
            key: key.to_owned(),
            window_start: Value::Null,
            group: Vec::new(),
            measures: Vec::new(),
            is_final: None,
            revision: None,
        };
        let mut has_window = false;
        let mut has_group = false;
        for (name, node) in fields {
            match name.as_str() {
                "window_start" => {
                    row.window_start = node.into_value();
                    has_window = true;
                }
                "group" => {
                    has_group = true;
                    row.group = match node {
                        Node::Object(g) => {
                            g.into_iter().map(|(k, n)| (k, n.into_value())).collect()
                        }
                        Node::Other(v) => vec![("group".to_owned(), v)],
                    };
                }
                "final" => row.is_final = Some(node.into_value()),
                "revision" => row.revision = Some(node.into_value()),
                n if RESERVED.contains(&n) => {}
                _ => row.measures.push((name, node.into_value())),
            }
        }
        if !has_window {
            if let Some(w) = key_window {
                row.window_start = Value::String(w.to_owned());
            }
        }
        if !has_group {
            row.group = vec![("group".to_owned(), Value::String(key_group.to_owned()))];
        }
        Ok(row)
    }

    fn sort_key(&self) -> SortKey {
        let millis = time_millis(&self.window_start);
        (
            millis,
            millis.is_none().then(|| plain(&self.window_start)),
            self.group.iter().map(|(_, v)| plain(v)).collect(),
            self.key.clone(),
        )
    }

    /// The text of this row's cell in `column`.
    pub fn cell(&self, column: &Column) -> String {
        match column {
            Column::WindowStart => format_time(&self.window_start),
            Column::Group(name) => lookup(&self.group, name).map_or_else(|| "-".into(), plain),
            Column::Measure(name) => {
                lookup(&self.measures, name).map_or_else(|| "-".into(), |v| format_measure(name, v))
            }
            Column::Final => match &self.is_final {
                Some(Value::Bool(true)) => "final".into(),
                Some(Value::Bool(false)) => "open".into(),
                Some(Value::Null) | None => "-".into(),
                Some(other) => plain(other),
            },
            Column::Revision => self.revision.as_ref().map_or_else(|| "-".into(), plain),
        }
    }

    /// The cells of this row in `columns`.
    pub fn cells(&self, columns: &[Column]) -> Vec<String> {
        columns.iter().map(|c| self.cell(c)).collect()
    }
}

fn lookup<'a>(fields: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// One column of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// `window_start`.
    WindowStart,
    /// A field of the group.
    Group(String),
    /// A measure.
    Measure(String),
    /// `final` (shown as `final` / `open`).
    Final,
    /// `revision`.
    Revision,
}

impl Column {
    /// The column's heading.
    pub fn title(&self) -> &str {
        match self {
            Column::WindowStart => "window_start",
            Column::Group(name) | Column::Measure(name) => name,
            Column::Final => "final",
            Column::Revision => "revision",
        }
    }

    /// The narrowest the column gets: its heading, and for `final` room for `deleted`.
    pub fn min_width(&self) -> usize {
        match self {
            Column::Final => width("deleted"),
            other => width(other.title()),
        }
    }

    /// Whether cells are aligned to the right (numbers).
    pub fn right_aligned(&self) -> bool {
        matches!(self, Column::Measure(_) | Column::Revision)
    }
}

/// The columns discovered from the rows: group fields and measures in the order they first
/// appear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    group: Vec<String>,
    measures: Vec<String>,
    revision: bool,
}

impl Columns {
    /// Adds the fields of `row` not seen yet; whether there were any.
    pub fn observe(&mut self, row: &Row) -> bool {
        let mut added = false;
        for (name, _) in &row.group {
            if !self.group.contains(name) {
                self.group.push(name.clone());
                added = true;
            }
        }
        for (name, _) in &row.measures {
            if !self.measures.contains(name) {
                self.measures.push(name.clone());
                added = true;
            }
        }
        if row.revision.is_some() && !self.revision {
            self.revision = true;
            added = true;
        }
        added
    }

    /// `window_start`, the group fields, the measures (adstream's in their documented order,
    /// others after them as first seen), `final`, and `revision` when rows carry one.
    pub fn list(&self) -> Vec<Column> {
        let rank = |name: &str| {
            adstream_operators::report::Measure::ALL
                .iter()
                .position(|m| m.name() == name)
                .unwrap_or(usize::MAX)
        };
        let mut measures = self.measures.clone();
        measures.sort_by_key(|m| rank(m));
        std::iter::once(Column::WindowStart)
            .chain(self.group.iter().cloned().map(Column::Group))
            .chain(measures.into_iter().map(Column::Measure))
            .chain(std::iter::once(Column::Final))
            .chain(self.revision.then_some(Column::Revision))
            .collect()
    }
}

/// What applying one record did.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The key now has this row (new or replaced).
    Upserted(String),
    /// A tombstone deleted this row.
    Deleted(Row),
    /// A tombstone for a key that had no row.
    Nothing,
}

/// The latest row of every key.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: HashMap<String, Row>,
    columns: Columns,
}

impl Table {
    /// Applies one record: a value upserts the key's row, `None` (a tombstone) deletes it. A
    /// value that is not a JSON object leaves the table as it was.
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) -> Result<Update, RowError> {
        match value {
            None => Ok(self.delete(key).map_or(Update::Nothing, Update::Deleted)),
            Some(bytes) => {
                let row = Row::parse(key, bytes)?;
                self.upsert(row);
                Ok(Update::Upserted(key.to_owned()))
            }
        }
    }

    /// Sets the row of its key; whether it brought new columns.
    pub fn upsert(&mut self, row: Row) -> bool {
        let added = self.columns.observe(&row);
        self.rows.insert(row.key.clone(), row);
        added
    }

    /// Removes the row of `key`, returning it.
    pub fn delete(&mut self, key: &str) -> Option<Row> {
        self.rows.remove(key)
    }

    /// The row of `key`.
    pub fn get(&self, key: &str) -> Option<&Row> {
        self.rows.get(key)
    }

    /// Rows in the table.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The columns discovered so far.
    pub fn columns(&self) -> Vec<Column> {
        self.columns.list()
    }

    /// The latest `n` rows, sorted by window start then group.
    pub fn latest(&self, n: usize) -> Vec<&Row> {
        let mut rows: Vec<(SortKey, &Row)> =
            self.rows.values().map(|r| (r.sort_key(), r)).collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let skip = rows.len().saturating_sub(n);
        rows.into_iter().skip(skip).map(|(_, r)| r).collect()
    }
}

/// Milliseconds since the epoch of an RFC 3339 string or an integer.
fn time_millis(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis()),
        _ => None,
    }
}

/// A value as plain text: strings without quotes, null as `-`.
pub fn plain(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// A time: strings as they are, integer milliseconds as RFC 3339 (UTC).
pub fn format_time(v: &Value) -> String {
    match v.as_i64().and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => plain(v),
    }
}

/// Whether measure `name` is a ratio shown as a percentage.
pub fn is_ratio(name: &str) -> bool {
    // `pctr_over_ctr` is a ratio of ratios (1 = calibrated), shown as a plain number.
    name != "pctr_over_ctr"
        && (matches!(name, "ctr" | "cvr" | "avg_pctr" | "avg_pcvr")
            || name.ends_with("_ctr")
            || name.ends_with("_cvr")
            || name.ends_with("_rate"))
}

/// A measure's cell: `*_micros` in currency units with 2 decimals, ratios as percentages,
/// null as `-`, anything else as plain text.
pub fn format_measure(name: &str, v: &Value) -> String {
    if v.is_null() {
        return "-".into();
    }
    if name == "pctr_over_ctr" {
        if let Some(f) = v.as_f64() {
            return format!("{f:.2}");
        }
    }
    if name.ends_with("_micros") {
        if let Some(m) = v.as_i64() {
            return format_micros(i128::from(m));
        }
        if let Some(m) = v.as_u64() {
            return format_micros(i128::from(m));
        }
        if let Some(f) = v.as_f64() {
            return format!("{:.2}", f / 1e6);
        }
    }
    if is_ratio(name) {
        if let Some(f) = v.as_f64() {
            return format_percent(f);
        }
    }
    plain(v)
}

/// Micros in currency units, rounded half away from zero to 2 decimals: 12345 is `0.01`.
pub fn format_micros(micros: i128) -> String {
    let cents = (micros.abs() + 5_000) / 10_000;
    let sign = if micros < 0 && cents > 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents / 100, cents % 100)
}

/// A ratio as a percentage: 2 decimals from 1% up (`12.50%`), 3 significant digits below
/// (`0.125%`, `0.0123%`), at most 6 decimals.
pub fn format_percent(ratio: f64) -> String {
    let pct = ratio * 100.0;
    if !pct.is_finite() {
        return ratio.to_string();
    }
    let magnitude = pct.abs();
    let decimals = if magnitude == 0.0 || magnitude >= 1.0 {
        2
    } else {
        // magnitude in (0, 1): log10 is negative, so this is 3 or more.
        (2.0 - magnitude.log10().floor()).clamp(3.0, 6.0) as usize
    };
    format!("{pct:.decimals$}%")
}

fn width(text: &str) -> usize {
    text.chars().count()
}

/// Columns and their widths: how rows are laid out as aligned lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    columns: Vec<Column>,
    widths: Vec<usize>,
}

impl Layout {
    /// A layout wide enough for the headings and the cells of `rows`.
    pub fn fit(columns: Vec<Column>, rows: &[&Row]) -> Layout {
        let mut widths: Vec<usize> = columns.iter().map(Column::min_width).collect();
        for row in rows {
            for (w, cell) in widths.iter_mut().zip(row.cells(&columns)) {
                *w = (*w).max(width(&cell));
            }
        }
        Layout { columns, widths }
    }

    /// The columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Takes `columns` (keeping the widths of those it had) and widens to `cells` (one per
    /// column); whether anything changed.
    pub fn accommodate(&mut self, columns: &[Column], cells: &[String]) -> bool {
        let mut changed = false;
        if columns != self.columns.as_slice() {
            let widths = columns
                .iter()
                .map(|c| {
                    self.columns
                        .iter()
                        .position(|old| old == c)
                        .map_or(c.min_width(), |i| self.widths[i])
                })
                .collect();
            self.columns = columns.to_vec();
            self.widths = widths;
            changed = true;
        }
        for (w, cell) in self.widths.iter_mut().zip(cells) {
            if width(cell) > *w {
                *w = width(cell);
                changed = true;
            }
        }
        changed
    }

    /// One aligned line of `cells` (one per column), without trailing spaces.
    pub fn line(&self, cells: &[String]) -> String {
        let mut out = String::new();
        for (i, ((column, w), cell)) in self.columns.iter().zip(&self.widths).zip(cells).enumerate()
        {
            if i > 0 {
                out.push_str("  ");
            }
            if column.right_aligned() {
                out.push_str(&format!("{cell:>w$}"));
            } else {
                out.push_str(&format!("{cell:<w$}"));
            }
        }
        out.truncate(out.trim_end().len());
        out
    }

    /// The heading line and its underline.
    pub fn header(&self) -> Vec<String> {
        let titles: Vec<String> = self.columns.iter().map(|c| c.title().to_owned()).collect();
        let rules: Vec<String> = self.widths.iter().map(|w| "-".repeat(*w)).collect();
        vec![self.line(&titles), self.line(&rules)]
    }

    /// The header and one line per row.
    pub fn table(&self, rows: &[&Row]) -> Vec<String> {
        let mut lines = self.header();
        lines.extend(rows.iter().map(|r| self.line(&r.cells(&self.columns))));
        lines
    }
}

/// The table of the latest `n` rows of `table`: header and aligned lines.
pub fn render_latest(table: &Table, n: usize) -> (Layout, Vec<String>) {
    let rows = table.latest(n);
    let layout = Layout::fit(table.columns(), &rows);
    let lines = layout.table(&rows);
    (layout, lines)
}

/// Follow mode: one line per change, the header again every [`HEADER_EVERY`] lines and
/// whenever the columns or their widths change.
#[derive(Debug, Clone)]
pub struct Follow {
    layout: Layout,
    since_header: usize,
    every: usize,
}

impl Follow {
    /// Follows on from a table printed with `layout` and `lines_shown` rows under its header.
    pub fn new(layout: Layout, lines_shown: usize, every: usize) -> Follow {
        Follow {
            layout,
            since_header: lines_shown,
            every: every.max(1),
        }
    }

    fn emit(&mut self, columns: &[Column], cells: Vec<String>) -> Vec<String> {
        let changed = self.layout.accommodate(columns, &cells);
        let mut lines = Vec::new();
        if changed || self.since_header >= self.every {
            lines.extend(self.layout.header());
            self.since_header = 0;
        }
        lines.push(self.layout.line(&cells));
        self.since_header += 1;
        lines
    }

    /// The lines to print for a new or updated `row`; `columns` are the table's.
    pub fn row(&mut self, columns: &[Column], row: &Row) -> Vec<String> {
        self.emit(columns, row.cells(columns))
    }

    /// The lines to print for a deleted row: its window and group, `deleted` under `final`.
    pub fn deleted(&mut self, columns: &[Column], row: &Row) -> Vec<String> {
        let cells = columns
            .iter()
            .map(|c| match c {
                Column::WindowStart | Column::Group(_) => row.cell(c),
                Column::Final => "deleted".into(),
                Column::Measure(_) | Column::Revision => String::new(),
            })
            .collect();
        self.emit(columns, cells)
    }
}

/// Catch-up: which partitions are still below the high watermark they had at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchUp {
    behind: BTreeMap<i32, i64>,
}

impl CatchUp {
    /// Partition `partition` must be read up to `high` (nothing to read when `high <= low`).
    pub fn expect(&mut self, partition: i32, low: i64, high: i64) {
        if high > low {
            self.behind.insert(partition, high);
        } else {
            self.behind.remove(&partition);
        }
    }

    /// A record at `offset` of `partition` was read.
    pub fn consumed(&mut self, partition: i32, offset: i64) {
        self.position(partition, offset.saturating_add(1));
    }

    /// The next offset to read from `partition` is `next`.
    pub fn position(&mut self, partition: i32, next: i64) {
        if self
            .behind
            .get(&partition)
            .is_some_and(|high| next >= *high)
        {
            self.behind.remove(&partition);
        }
    }

    /// `partition` was read to its end.
    pub fn at_end(&mut self, partition: i32) {
        self.behind.remove(&partition);
    }

    /// Whether every partition has reached its start-up high watermark.
    pub fn done(&self) -> bool {
        self.behind.is_empty()
    }
}

/// What `report tail` does.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// The reporting topic.
    pub topic: String,
    /// Bootstrap servers, `host:port,...`.
    pub brokers: String,
    /// Latest rows shown once caught up.
    pub rows: usize,
    /// Exit after the first table instead of following.
    pub once: bool,
    /// Extra librdkafka properties (a pipeline's SASL/SSL settings), secrets resolved.
    pub properties: Vec<(String, String)>,
}

/// librdkafka's log lines go to debug level; its errors are warnings of this module.
struct TailContext;

impl ClientContext for TailContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(target: "librdkafka", ?level, "{fac} {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Reaching the end of a partition is how catch-up ends, not a problem.
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            return;
        }
        tracing::warn!("kafka: {error}: {reason}");
    }
}

impl ConsumerContext for TailContext {}

/// The consumer's settings: `properties` (SASL/SSL..., overriding the client id and fetch wait),
/// then no group membership or commits, every partition from the start.
pub fn consumer_config(brokers: &str, properties: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in properties {
        config.set(k, v);
    }
    crate::kafka::properties::set_defaults(
        &mut config,
        &[
            ("client.id", "adstream-report-tail"),
            ("fetch.wait.max.ms", "100"),
        ],
    );
    config
        .set("bootstrap.servers", brokers)
        // Its own group: a tail never joins or commits to the pipeline's.
        .set(
            "group.id",
            format!("adstream-report-tail-{:016x}", rand::random::<u64>()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "false");
    config
}

/// The partitions of `topic`; a clear error when the brokers cannot be reached or do not have
/// the topic.
fn partitions_of(
    consumer: &BaseConsumer<TailContext>,
    topic: &str,
    brokers: &str,
) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(None, METADATA_TIMEOUT)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach Kafka at {brokers} (no metadata within {}s): {e}",
                METADATA_TIMEOUT.as_secs()
            )
        })?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        let reports: Vec<&str> = metadata
            .topics()
            .iter()
            .map(|t| t.name())
            .filter(|n| n.starts_with("report."))
            .collect();
        let hint = if reports.is_empty() {
            "no report.* topics there".to_owned()
        } else {
            format!("report topics there: {}", reports.join(", "))
        };
        anyhow::bail!("topic {topic} does not exist on {brokers} ({hint})");
    };
    if let Some(e) = found.error() {
        anyhow::bail!("topic {topic} on {brokers}: {}", RDKafkaErrorCode::from(e));
    }
    let partitions: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
    if partitions.is_empty() {
        anyhow::bail!("topic {topic} on {brokers} has no partitions");
    }
    Ok(partitions)
}

/// Applies one record to `table`; a value that is not a JSON object, or a record without a
/// key, is reported on stderr and skipped.
fn ingest(table: &mut Table, m: &BorrowedMessage<'_>) -> Option<Update> {
    let Some(key) = m.key() else {
        eprintln!(
            "warning: {} partition {} offset {}: record without a key; skipped",
            m.topic(),
            m.partition(),
            m.offset()
        );
        return None;
    };
    let key = String::from_utf8_lossy(key);
    match table.apply(&key, m.payload()) {
        Ok(update) => Some(update),
        Err(e) => {
            eprintln!(
                "warning: {} partition {} offset {} (key {key}): {e}; skipped",
                m.topic(),
                m.partition(),
                m.offset()
            );
            None
        }
    }
}

fn write_lines(out: &mut impl Write, lines: &[String]) -> std::io::Result<()> {
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()
}

/// Runs `adstream report tail`: catch up, print the latest rows, then follow (unless `once`).
/// Output goes to stdout; a closed stdout (`| head`) ends the tail quietly.
pub fn run(options: &TailOptions) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match tail(options, &mut out) {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn tail(options: &TailOptions, out: &mut impl Write) -> anyhow::Result<()> {
    let topic = options.topic.as_str();
    let config = consumer_config(&options.brokers, &options.properties);
    crate::kafka::check_connection(&config, &options.brokers, METADATA_TIMEOUT)?;
    let consumer: BaseConsumer<TailContext> = config
        .create_with_context(TailContext)
        .context("creating a Kafka consumer")?;
    let partitions = partitions_of(&consumer, topic, &options.brokers)?;
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        assignment
            .add_partition_offset(topic, *p, Offset::Beginning)
            .context("building the assignment")?;
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;
    let mut catch_up = CatchUp::default();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, METADATA_TIMEOUT)
            .with_context(|| {
                format!(
                    "reading the watermarks of {topic} partition {p} on {}",
                    options.brokers
                )
            })?;
        catch_up.expect(*p, low, high);
    }

    let mut table = Table::default();
    while !catch_up.done() {
        match consumer.poll(Duration::from_millis(200)) {
            None => {
                // Idle: the tail of a partition may be offsets with no record to deliver.
                if let Ok(positions) = consumer.position() {
                    for e in positions.elements() {
                        if let Offset::Offset(next) = e.offset() {
                            catch_up.position(e.partition(), next);
                        }
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => catch_up.at_end(p),
            Some(Err(e)) => tracing::warn!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                ingest(&mut table, &m);
                catch_up.consumed(m.partition(), m.offset());
            }
        }
    }

    let (layout, lines) = render_latest(&table, options.rows);
    let shown = lines.len().saturating_sub(2);
    write_lines(out, &lines)?;
    if options.once {
        return Ok(());
    }

    let mut follow = Follow::new(layout, shown, HEADER_EVERY);
    loop {
        let lines = match consumer.poll(Duration::from_millis(500)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => continue,
            Some(Err(e)) => {
                tracing::warn!("reading {topic}: {e}");
                continue;
            }
            Some(Ok(m)) => match ingest(&mut table, &m) {
                Some(Update::Upserted(key)) => match table.get(&key) {
                    Some(row) => follow.row(&table.columns(), row),
                    None => continue,
                },
                Some(Update::Deleted(row)) => follow.deleted(&table.columns(), &row),
                Some(Update::Nothing) | None => continue,
            },
        };
        write_lines(out, &lines)?;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ROW: &str = r#"{"report":"campaign_minute","window_start":"2026-11-27T10:05:00Z","window_end":"2026-11-27T10:06:00Z","group":{"campaign_id":"c17"},"final":false,"revision":3,"watermark":"2026-11-27T10:05:42Z","requests_won":10,"impressions":8,"clicks":1,"conversions":0,"spend_micros":12345,"ctr":0.125,"cvr":null,"cpc_micros":12345,"cpa_micros":null,"avg_pctr":0.02}"#;

    fn row(campaign: &str, window: &str, clicks: u64, revision: u64) -> (String, String) {
        (
            format!("{campaign}@{window}"),
            format!(
                r#"{{"window_start":"{window}","group":{{"campaign_id":"{campaign}"}},"final":false,"revision":{revision},"clicks":{clicks},"spend_micros":{}}}"#,
                clicks * 1000
            ),
        )
    }

    fn titles(columns: &[Column]) -> Vec<&str> {
        columns.iter().map(Column::title).collect()
    }

    #[test]
    fn parses_the_documented_row_in_field_order() {
        let r = Row::parse("c17@2026-11-27T10:05:00Z", ROW.as_bytes()).unwrap();
        assert_eq!(r.window_start, Value::from("2026-11-27T10:05:00Z"));
        assert_eq!(r.group, vec![("campaign_id".into(), Value::from("c17"))]);
        let measures: Vec<&str> = r.measures.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            measures,
            [
                "requests_won",
                "impressions",
                "clicks",
                "conversions",
                "spend_micros",
                "ctr",
                "cvr",
                "cpc_micros",
                "cpa_micros",
                "avg_pctr"
            ]
        );
        let mut t = Table::default();
        t.upsert(r.clone());
        assert_eq!(
            titles(&t.columns()),
            [
                "window_start",
                "campaign_id",
                "requests_won",
                "impressions",
                "clicks",
                "conversions",
                "spend_micros",
                "ctr",
                "cvr",
                "cpc_micros",
                "cpa_micros",
                "avg_pctr",
                "final",
                "revision"
            ]
        );
        let cells = r.cells(&t.columns());
        assert_eq!(
            cells,
            [
                "2026-11-27T10:05:00Z",
                "c17",
                "10",
                "8",
                "1",
                "0",
                "0.01",
                "12.50%",
                "-",
                "0.01",
                "-",
                "2.00%",
                "open",
                "3"
            ]
        );
    }

    #[test]
    fn group_fields_keep_their_order_and_columns_grow_in_first_seen_order() {
        // (No row carries a `revision`: no such column.)
        let mut t = Table::default();
        t.apply(
            "US|c1@2026-01-01T00:00:00Z",
            Some(br#"{"window_start":"2026-01-01T00:00:00Z","group":{"country":"US","campaign_id":"c1"},"impressions":1}"#),
        )
        .unwrap();
        t.apply(
            "US|c2@2026-01-01T00:00:00Z",
            Some(br#"{"window_start":"2026-01-01T00:00:00Z","group":{"country":"US","campaign_id":"c2"},"clicks":2,"impressions":1}"#),
        )
        .unwrap();
        assert_eq!(
            titles(&t.columns()),
            [
                "window_start",
                "country",
                "campaign_id",
                "impressions",
                "clicks",
                "final",
            ]
        );
        let first = t.get("US|c1@2026-01-01T00:00:00Z").unwrap();
        assert_eq!(first.cell(&Column::Measure("clicks".into())), "-");
        assert_eq!(first.cell(&Column::Final), "-");
    }

    #[test]
    fn upserts_keep_the_latest_value_and_tombstones_delete() {
        let mut t = Table::default();
        let (k1, v1) = row("c1", "2026-11-27T10:05:00Z", 1, 1);
        let (_, v1b) = row("c1", "2026-11-27T10:05:00Z", 7, 2);
        let (k2, v2) = row("c2", "2026-11-27T10:05:00Z", 3, 1);
        assert_eq!(
            t.apply(&k1, Some(v1.as_bytes())).unwrap(),
            Update::Upserted(k1.clone())
        );
        t.apply(&k2, Some(v2.as_bytes())).unwrap();
        t.apply(&k1, Some(v1b.as_bytes())).unwrap();
        assert_eq!(t.len(), 2);
        let c1 = t.get(&k1).unwrap();
        assert_eq!(c1.cell(&Column::Measure("clicks".into())), "7");
        assert_eq!(c1.cell(&Column::Revision), "2");
        match t.apply(&k2, None).unwrap() {
            Update::Deleted(old) => assert_eq!(old.key, k2),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.apply(&k2, None).unwrap(), Update::Nothing);
        assert_eq!(t.len(), 1);
        assert!(t.get(&k2).is_none());
    }

    #[test]
    fn values_that_are_not_objects_are_refused_and_change_nothing() {
        let mut t = Table::default();
        let (k, v) = row("c1", "2026-11-27T10:05:00Z", 1, 1);
        t.apply(&k, Some(v.as_bytes())).unwrap();
        assert!(matches!(
            t.apply(&k, Some(b"not json")),
            Err(RowError::NotJson(_))
        ));
        assert_eq!(
            t.apply(&k, Some(b"[1,2]")),
            Err(RowError::NotObject("array"))
        );
        assert_eq!(t.apply(&k, Some(b"null")), Err(RowError::NotObject("null")));
        assert!(t.apply(&k, Some(b"")).is_err());
        assert_eq!(
            t.get(&k).unwrap().cell(&Column::Measure("clicks".into())),
            "1"
        );
    }

    #[test]
    fn window_and_group_fall_back_to_the_key() {
        let r = Row::parse("c9|US@2026-11-27T10:05:00Z", br#"{"clicks":1}"#).unwrap();
        assert_eq!(r.cell(&Column::WindowStart), "2026-11-27T10:05:00Z");
        assert_eq!(r.cell(&Column::Group("group".into())), "c9|US");
        let r = Row::parse("k", br#"{"window_start":1795773900000,"group":"g"}"#).unwrap();
        assert_eq!(r.cell(&Column::WindowStart), "2026-11-27T10:05:00Z");
        assert_eq!(r.cell(&Column::Group("group".into())), "g");
    }

    #[test]
    fn latest_rows_sort_by_window_then_group() {
        let mut t = Table::default();
        for (c, w) in [
            ("c2", "2026-11-27T10:06:00Z"),
            ("c1", "2026-11-27T10:06:00Z"),
            ("c3", "2026-11-27T10:04:00Z"),
            ("c1", "2026-11-27T10:05:00Z"),
        ] {
            let (k, v) = row(c, w, 1, 1);
            t.apply(&k, Some(v.as_bytes())).unwrap();
        }
        // A millisecond window sorts with the RFC 3339 ones by time (10:04, before c3 by group).
        t.apply(
            "c0@x",
            Some(br#"{"window_start":1795773840000,"group":{"campaign_id":"c0"}}"#),
        )
        .unwrap();
        let keys: Vec<&str> = t.latest(10).iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "c0@x",
                "c3@2026-11-27T10:04:00Z",
                "c1@2026-11-27T10:05:00Z",
                "c1@2026-11-27T10:06:00Z",
                "c2@2026-11-27T10:06:00Z"
            ]
        );
        let last2: Vec<&str> = t.latest(2).iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            last2,
            ["c1@2026-11-27T10:06:00Z", "c2@2026-11-27T10:06:00Z"]
        );
        assert!(t.latest(0).is_empty());
    }

    #[test]
    fn money_is_shown_in_units_with_two_decimals() {
        assert_eq!(format_micros(12345), "0.01");
        assert_eq!(format_micros(0), "0.00");
        assert_eq!(format_micros(5_000), "0.01");
        assert_eq!(format_micros(4_999), "0.00");
        assert_eq!(format_micros(1_234_567_890), "1234.57");
        assert_eq!(format_micros(-1_500_000), "-1.50");
        assert_eq!(format_micros(-1), "0.00");
        assert_eq!(
            format_measure("spend_micros", &Value::from(u64::MAX)),
            "18446744073709.55"
        );
        assert_eq!(format_measure("spend_micros", &Value::from(2.5e6)), "2.50");
        assert_eq!(format_measure("spend_micros", &Value::Null), "-");
    }

    #[test]
    fn ratios_are_percentages() {
        assert_eq!(format_percent(0.125), "12.50%");
        assert_eq!(format_percent(0.02), "2.00%");
        assert_eq!(format_percent(1.0), "100.00%");
        assert_eq!(format_percent(0.0), "0.00%");
        assert_eq!(format_percent(0.00125), "0.125%");
        assert_eq!(format_percent(0.000123), "0.0123%");
        assert_eq!(format_percent(1e-12), "0.000000%");
        assert_eq!(format_measure("ctr", &Value::from(0.5)), "50.00%");
        assert_eq!(format_measure("cvr", &Value::Null), "-");
        assert_eq!(format_measure("avg_pctr", &Value::from(0.02)), "2.00%");
        assert_eq!(format_measure("clicks", &Value::from(3)), "3");
        assert_eq!(format_measure("note", &Value::from("x")), "x");
    }

    #[test]
    fn final_is_final_or_open() {
        let closed = Row::parse("g@w", br#"{"final":true}"#).unwrap();
        let open = Row::parse("g@w", br#"{"final":false}"#).unwrap();
        assert_eq!(closed.cell(&Column::Final), "final");
        assert_eq!(open.cell(&Column::Final), "open");
    }

    #[test]
    fn the_table_is_aligned_under_its_header() {
        let mut t = Table::default();
        let (k1, v1) = row("c1", "2026-11-27T10:05:00Z", 1, 1);
        let (k2, v2) = row("campaign-long", "2026-11-27T10:05:00Z", 12345, 10);
        t.apply(&k1, Some(v1.as_bytes())).unwrap();
        t.apply(&k2, Some(v2.as_bytes())).unwrap();
        let (_, lines) = render_latest(&t, 20);
        assert_eq!(
            lines,
            [
                "window_start          campaign_id    clicks  spend_micros  final    revision",
                "--------------------  -------------  ------  ------------  -------  --------",
                "2026-11-27T10:05:00Z  c1                  1          0.00  open            1",
                "2026-11-27T10:05:00Z  campaign-long   12345         12.35  open           10",
            ]
        );
    }

    #[test]
    fn following_reprints_the_header_every_40_lines_and_on_layout_changes() {
        let mut t = Table::default();
        let (k, v) = row("c1", "2026-11-27T10:05:00Z", 1, 1);
        t.apply(&k, Some(v.as_bytes())).unwrap();
        let (layout, lines) = render_latest(&t, 20);
        assert_eq!(lines.len(), 3);
        let mut f = Follow::new(layout, 1, HEADER_EVERY);
        let mut printed = Vec::new();
        for i in 0..80 {
            let (k, v) = row("c1", "2026-11-27T10:05:00Z", 1, i);
            t.apply(&k, Some(v.as_bytes())).unwrap();
            printed.extend(f.row(&t.columns(), t.get(&k).unwrap()));
        }
        let headers = printed
            .iter()
            .filter(|l| l.starts_with("window_start"))
            .count();
        // 1 row under the first header, then 39 more, a header, 40, a header, 1.
        assert_eq!(headers, 2);
        assert_eq!(printed.len(), 80 + 2 * 2);
        assert!(printed[39].starts_with("window_start"), "{}", printed[39]);

        // A wider cell or a new column brings the header back at once.
        let (k, v) = row("c1", "2026-11-27T10:05:00Z", 1_000_000_000, 81);
        t.apply(&k, Some(v.as_bytes())).unwrap();
        let lines = f.row(&t.columns(), t.get(&k).unwrap());
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("clicks"));
        t.apply(
            "c2@2026-11-27T10:05:00Z",
            Some(br#"{"window_start":"2026-11-27T10:05:00Z","group":{"campaign_id":"c2"},"clicks":1,"conversions":2}"#),
        )
        .unwrap();
        let lines = f.row(&t.columns(), t.get("c2@2026-11-27T10:05:00Z").unwrap());
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("conversions"));
        // The same layout again: just the line.
        let lines = f.row(&t.columns(), t.get("c2@2026-11-27T10:05:00Z").unwrap());
        assert_eq!(lines.len(), 1);

        let Update::Deleted(old) = t.apply("c2@2026-11-27T10:05:00Z", None).unwrap() else {
            panic!("not deleted");
        };
        let lines = f.deleted(&t.columns(), &old);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("c2") && lines[0].contains("deleted"));
        assert!(!lines[0].contains("---"), "{}", lines[0]);
    }

    #[test]
    fn catch_up_waits_for_every_partition() {
        let mut c = CatchUp::default();
        c.expect(0, 0, 3);
        c.expect(1, 5, 5);
        c.expect(2, 0, 2);
        assert!(!c.done());
        c.consumed(0, 1);
        c.consumed(0, 2);
        assert!(!c.done());
        c.position(2, 1);
        assert!(!c.done());
        c.position(2, 2);
        assert!(c.done());
        let mut c = CatchUp::default();
        c.expect(0, 0, 10);
        c.at_end(0);
        assert!(c.done());
        assert!(CatchUp::default().done());
    }
}
