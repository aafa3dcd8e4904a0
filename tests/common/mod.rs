//! Test harness: a real tansu broker, the adstream binary, and event builders.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use adstream_operators::events::Billing;
use adstream_operators::time::EventTime;
use adstream_operators::token::{sign, WinClaims};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

pub const SECRET: &str = "integration-test-secret";

/// A loopback port that is free now, for a server a test starts later (a broker, a timely
/// cluster's hostfile). It is taken below the kernel's range for outgoing connections
/// (32768-60999 by default), so no client socket takes it meanwhile, and a test binary never
/// hands one out twice, since its tests run in parallel. A port from the kernel (`bind` to 0)
/// could be in use again by the time the server binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id() % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(
            n < SPAN,
            "no free loopback port left below the ephemeral range"
        );
        let port = (LOW + (offset + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_bin = Path::new(&home).join(".cargo/bin/tansu");
    if cargo_bin.exists() {
        cargo_bin
    } else {
        PathBuf::from("tansu")
    }
}

pub fn wait_for_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < timeout,
            "port {port} did not open within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tansu broker on a free loopback port, with sqlite storage in a temp dir; killed on drop.
pub struct Broker {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

fn spawn_tansu(dir: &Path, port: u16) -> Child {
    spawn_tansu_behind(dir, port, port, false)
}

/// tansu in `dir` (sqlite storage, log in `tansu.log`) on loopback `port`, advertising
/// `advertised` (a proxy's port in front of it, or `port`); with `authentication`, clients
/// must authenticate with SASL. Returns once the port is open.
pub fn spawn_tansu_behind(dir: &Path, port: u16, advertised: u16, authentication: bool) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tansu.log"))
        .unwrap();
    let mut cmd = Command::new(tansu_binary());
    cmd.current_dir(dir)
        .args(["broker"])
        .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
        .args([
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{advertised}"),
        ])
        .args(["--storage-engine", "sqlite://tansu.db"]);
    if authentication {
        cmd.arg("--authentication");
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("tansu is installed (deploy/local/install-tansu.sh)");
    wait_for_port(port, Duration::from_secs(60));
    child
}

impl Broker {
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = spawn_tansu(dir.path(), port);
        Broker {
            port,
            child,
            _dir: dir,
        }
    }

    /// Kills the broker; its storage stays.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the broker (SIGSTOP): connections stay open and nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Starts the broker again on the same port and storage.
    pub fn restart(&mut self) {
        self.child = spawn_tansu(self._dir.path(), self.port);
    }

    /// Deletes the records of `topic`/`partition` below `offset`, as retention would (in
    /// tansu's sqlite storage, with the sqlite3 command-line tool).
    pub fn delete_records(&self, topic: &str, partition: i32, offset: i64) {
        self.sqlite(&format!(
            "DELETE FROM record WHERE offset_id < {offset} AND topition = \
             (SELECT tp.id FROM topition tp JOIN topic t ON tp.topic = t.id \
             WHERE t.name = '{topic}' AND tp.partition = {partition});"
        ));
    }

    fn sqlite(&self, sql: &str) {
        let out = Command::new("sqlite3")
            .arg("-cmd")
            .arg(".timeout 10000")
            .arg(self._dir.path().join("tansu.db"))
            .arg(sql)
            .output()
            .expect("the sqlite3 command-line tool is installed (apt-get install sqlite3)");
        assert!(
            out.status.success(),
            "sqlite3 on tansu's storage: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Grows `topic` to `partitions` partitions. tansu has no CreatePartitions request, so
    /// this does in its sqlite storage what topic creation does per partition (with the
    /// sqlite3 command-line tool).
    pub fn add_partitions(&self, topic: &str, partitions: i32) {
        let mut sql =
            format!("BEGIN;\nUPDATE topic SET partitions = {partitions} WHERE name = '{topic}';\n");
        for p in 0..partitions {
            sql.push_str(&format!(
                "INSERT OR IGNORE INTO topition (topic, partition) SELECT id, {p} FROM topic WHERE name = '{topic}';\n\
                 INSERT INTO watermark (topition) SELECT tp.id FROM topition tp JOIN topic t ON tp.topic = t.id \
                 WHERE t.name = '{topic}' AND tp.partition = {p} \
                 AND NOT EXISTS (SELECT 1 FROM watermark w WHERE w.topition = tp.id);\n"
            ));
        }
        sql.push_str("COMMIT;\n");
        self.sqlite(&sql);
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipeline file for `brokers`, written into `dir`.
pub fn pipeline_file(dir: &Path, brokers: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[pipeline]
name = "it"
secret = "{SECRET}"
workers = 1

[kafka]
brokers = "{brokers}"

[topics]
partitions = 4

[time]
lateness_ms = 500

[checkpoint]
interval_ms = 200
{extra}
"#
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub fn adstream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_adstream"))
}

pub fn create_topics(pipeline: &Path) {
    let out = adstream()
        .args(["topics", "create"])
        .arg(pipeline)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "topics create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `adstream run`; SIGKILLed on drop.
pub struct Running {
    pub child: Child,
    pub api: String,
}

impl Running {
    pub fn start(pipeline: &Path, state_dir: &Path, args: &[&str]) -> Running {
        let mut child = adstream()
            .arg("run")
            .arg(pipeline)
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let api = loop {
            let line = lines
                .next()
                .expect("adstream exited before listening")
                .unwrap();
            if let Some(url) = line.split("listening on ").nth(1) {
                break url.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Running { child, api }
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

pub fn produce(p: &BaseProducer, topic: &str, key: &str, payload: Option<&[u8]>) {
    let mut record = BaseRecord::<str, [u8]>::to(topic).key(key);
    if let Some(bytes) = payload {
        record = record.payload(bytes);
    }
    send_retrying(p, record);
}

/// Sends `record`, waiting for room while the producer's queue is full.
fn send_retrying(p: &BaseProducer, mut record: BaseRecord<'_, str, [u8]>) {
    loop {
        match p.send(record) {
            Ok(()) => break,
            Err((_, back)) => {
                record = back;
                p.poll(Duration::from_millis(10));
            }
        }
    }
    p.poll(Duration::ZERO);
}

/// Produces to an explicit partition.
pub fn produce_to(p: &BaseProducer, topic: &str, partition: i32, key: &str, payload: &[u8]) {
    let record = BaseRecord::<str, [u8]>::to(topic)
        .partition(partition)
        .key(key)
        .payload(payload);
    send_retrying(p, record);
}

/// The body of `GET url` as text (`None` if the request fails).
pub fn http_text(url: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async { reqwest::get(url).await.ok()?.text().await.ok() })
}

/// The value of the sample `series` (`name{labels}` exactly as exported) at `api`'s
/// `/metrics`, if present.
pub fn metric(api: &str, series: &str) -> Option<f64> {
    let text = http_text(&format!("{api}/metrics"))?;
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Every record of `topic` from its beginning to the end it has now, as JSON (others skipped).
pub fn read_all(brokers: &str, topic: &str) -> Vec<serde_json::Value> {
    read_all_decoded(brokers, topic, |m| {
        use rdkafka::message::Message;
        serde_json::from_slice(m.payload().unwrap_or_default()).ok()
    })
}

/// Every dead letter on `ads.deadletter` (read from the start to its end now), as
/// [`dead_letter_doc`]s.
pub fn read_dead_letters(brokers: &str) -> Vec<serde_json::Value> {
    read_all_decoded(brokers, "ads.deadletter", |m| Some(dead_letter_doc(m)))
}

/// A dead letter as one JSON document: its headers' reason, detail, source topic, partition
/// and offset (numbers) and truncation, its key and value as (lossy) text, and the value's
/// exact bytes in `payload_bytes`.
pub fn dead_letter_doc(m: &rdkafka::message::BorrowedMessage<'_>) -> serde_json::Value {
    use rdkafka::message::{Headers, Message};
    let header = |name: &str| -> Option<String> {
        let h = m.headers()?.iter().find(|h| h.key == name)?;
        Some(String::from_utf8(h.value?.to_vec()).expect("UTF-8 header"))
    };
    let number = |name: &str| header(name).and_then(|v| v.parse::<i64>().ok());
    let payload = m.payload().unwrap_or_default();
    serde_json::json!({
        "reason": header("adstream.error.reason"),
        "detail": header("adstream.error.detail"),
        "topic": header("adstream.source.topic"),
        "partition": number("adstream.source.partition"),
        "offset": number("adstream.source.offset"),
        "payload_truncated": header("adstream.payload.truncated").map(|t| t == "true"),
        "key": m.key().map(String::from_utf8_lossy),
        "payload": String::from_utf8_lossy(payload),
        "payload_bytes": payload,
    })
}

/// Every record of `topic` that `decode` turns into a document, from the start to its end now.
pub fn read_all_decoded(
    brokers: &str,
    topic: &str,
    mut decode: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Option<serde_json::Value>,
) -> Vec<serde_json::Value> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("it-all-{}", free_port()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut ends = std::collections::BTreeMap::new();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (_, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        if high > 0 {
            ends.insert(p.id(), high);
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .unwrap();
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        assert!(
            Instant::now() < deadline,
            "could not read {topic} to its end"
        );
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        if let Some(doc) = decode(&m) {
            out.push(doc);
        }
        if ends
            .get(&m.partition())
            .is_some_and(|e| m.offset() + 1 >= *e)
        {
            ends.remove(&m.partition());
        }
    }
    out
}

/// Waits until every queued message is acknowledged (at most 120 s). A timed-out flush keeps
/// the messages queued and retried, so on a loaded machine (or while the broker reconnects) it
/// is simply waited on again.
pub fn flush(p: &BaseProducer) {
    let start = Instant::now();
    loop {
        match p.flush(Duration::from_secs(10)) {
            Ok(()) => return,
            Err(e) if start.elapsed() < Duration::from_secs(120) => {
                eprintln!("flush: {e}; {} messages still queued", p.in_flight_count());
            }
            Err(e) => panic!("flush: {e} after 120 s"),
        }
    }
}

/// The time zone of the tests' campaigns: one whose local time was near noon when the test
/// binary started (a fixed offset, `Etc/GMT±N`), so no test runs across its campaigns' midnight,
/// where "spend today" starts again at 0. With UTC, a run across midnight UTC read a spend of 0
/// for a minute and failed.
pub fn campaign_zone() -> &'static str {
    use chrono::Timelike;
    static ZONE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ZONE.get_or_init(|| {
        // Local hour = UTC hour + offset; the IANA names invert the sign (Etc/GMT-3 is UTC+3).
        let offset = 12 - chrono::Utc::now().hour() as i32;
        match offset {
            0 => "Etc/GMT".to_string(),
            o if o > 0 => format!("Etc/GMT-{o}"),
            o => format!("Etc/GMT+{}", -o),
        }
    })
}

/// [`campaign_zone`] as the ledger reads it.
pub fn campaign_tz() -> chrono_tz::Tz {
    campaign_zone()
        .parse()
        .expect("an Etc/GMT zone is in the time zone database")
}

pub fn campaign_json(id: &str, advertiser: &str, billing: Billing, budget: u64) -> String {
    let zone = campaign_zone();
    format!(
        r#"{{"campaign_id":"{id}","advertiser_id":"{advertiser}","status":"active","daily_budget_micros":{budget},"timezone":"{zone}","billing":"{}","bid_micros":10000000,"objective":"clicks","targeting":{{}},"creatives":[{{"ad_id":"{id}-ad"}}]}}"#,
        billing.as_str()
    )
}

pub fn claims(
    rid: &str,
    campaign: &str,
    advertiser: &str,
    billing: Billing,
    price: u64,
    issued: EventTime,
) -> WinClaims {
    WinClaims {
        request_id: rid.into(),
        imp_id: "1".into(),
        campaign_id: campaign.into(),
        advertiser_id: advertiser.into(),
        ad_id: format!("{campaign}-ad"),
        billing,
        charge_micros: price,
        issued,
        country: None,
        device: None,
    }
}

pub fn ad_event(
    event_id: &str,
    ts: EventTime,
    user: &str,
    c: &WinClaims,
    token: Option<String>,
) -> String {
    serde_json::json!({
        "event_id": event_id,
        "ts": ts.millis(),
        "request_id": c.request_id,
        "imp_id": c.imp_id,
        "campaign_id": c.campaign_id,
        "ad_id": c.ad_id,
        "user_id": user,
        "billing_token": token,
    })
    .to_string()
}

/// A CPM impression for campaign `campaign` (advertiser `adv`) of request `rid`, priced
/// `price`, with its signed billing token.
pub fn signed_impression(campaign: &str, rid: &str, price: u64) -> String {
    let now = EventTime::now();
    let c = claims(
        rid,
        campaign,
        "adv",
        Billing::Cpm,
        price,
        EventTime(now.millis() - 10),
    );
    ad_event(&format!("imp-{rid}"), now, "u1", &c, Some(token(&c)))
}

/// Waits (at most 60 s) until the API at `api` serves campaign `id`: events judged before
/// their campaign is read are refused (unknown campaign).
pub fn wait_for_campaign(api: &str, id: &str) {
    assert!(
        eventually(Duration::from_secs(60), || {
            http_get(&format!("{api}/v1/campaigns/{id}")).is_some_and(|(s, _)| s == 200)
        }),
        "campaign {id} never appeared"
    );
}

pub fn token(c: &WinClaims) -> String {
    sign(SECRET.as_bytes(), c)
}

pub fn http_get(url: &str) -> Option<(u16, serde_json::Value)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let resp = reqwest::get(url).await.ok()?;
        let status = resp.status().as_u16();
        let body = resp
            .json::<serde_json::Value>()
            .await
            .unwrap_or(serde_json::Value::Null);
        Some((status, body))
    })
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// POSTs an OpenRTB request; the status and the JSON body (null when empty).
pub fn post(api: &str, body: &str) -> (u16, serde_json::Value) {
    post_to(&format!("{api}/v1/openrtb"), body)
}

/// POSTs `body` to `url`; the status and the JSON body (null when empty).
pub fn post_to(url: &str, body: &str) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(url)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp
            .json::<serde_json::Value>()
            .await
            .unwrap_or(serde_json::Value::Null);
        (status, body)
    })
}

/// Reads `topic` from the start until a record with `key` satisfies `check` (its JSON value),
/// or `timeout` passes.
pub fn find_record(
    brokers: &str,
    topic: &str,
    key: &str,
    timeout: Duration,
    check: impl FnMut(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    find_decoded(
        brokers,
        topic,
        key,
        timeout,
        |m| {
            use rdkafka::message::Message;
            serde_json::from_slice(m.payload().unwrap_or_default()).ok()
        },
        check,
    )
}

/// The dead letter of the message keyed `key` (a [`dead_letter_doc`]), once it is published
/// (or `None` after `timeout`).
pub fn find_dead_letter(brokers: &str, key: &str, timeout: Duration) -> Option<serde_json::Value> {
    find_decoded(
        brokers,
        "ads.deadletter",
        key,
        timeout,
        |m| Some(dead_letter_doc(m)),
        |_| true,
    )
}

/// [`find_record`] with the record's document made by `decode`.
pub fn find_decoded(
    brokers: &str,
    topic: &str,
    key: &str,
    timeout: Duration,
    mut decode: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Option<serde_json::Value>,
    mut check: impl FnMut(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("it-find-{}", free_port()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        if m.key() != Some(key.as_bytes()) {
            continue;
        }
        let Some(doc) = decode(&m) else {
            continue;
        };
        if check(&doc) {
            return Some(doc);
        }
    }
    None
}

/// The latest row per key of report topic `topic` (read from the start to its end now).
pub fn report_rows(
    brokers: &str,
    topic: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    adstream::kafka::read_latest(&config, topic, Duration::from_secs(60))
        .unwrap()
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
        .collect()
}

/// Sum of `measure` over `rows`, per value of group field `by`.
pub fn sum_by(
    rows: &std::collections::BTreeMap<String, serde_json::Value>,
    by: &str,
    measure: &str,
) -> std::collections::BTreeMap<String, i64> {
    let mut out = std::collections::BTreeMap::new();
    for row in rows.values() {
        let group = row["group"][by].as_str().unwrap_or("?").to_string();
        *out.entry(group).or_insert(0) += row[measure].as_i64().unwrap_or(0);
    }
    out
}

/// Starts `adstream run` like [`Running::start`], with `envs` set and its stderr (at `RUST_LOG`
/// `info`) written to `log`.
pub fn start_logged(
    pipeline: &Path,
    state_dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    log: &Path,
) -> Running {
    let mut child = adstream()
        .arg("run")
        .arg(pipeline)
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info,rdkafka=warn")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let api = loop {
        let Some(line) = lines.next() else {
            panic!(
                "adstream exited before listening: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        };
        if let Some(url) = line.unwrap().split("listening on ").nth(1) {
            break url.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Running { child, api }
}

/// The exit status of `child` once it has exited, or `None` if it is still running after
/// `timeout`.
pub fn exit_within(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal` (`-TERM`, `-KILL`...) to `child`.
pub fn send_signal(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} failed");
}

/// A fixed pseudo-random draw in 0..1000 for item `i` (splitmix-style mixing): whether the
/// `i`-th served ad of a test's traffic is clicked, the same on every run and machine.
pub fn per_mille_draw(i: usize) -> u64 {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    x % 1000
}

/// The number right after the first `marker` in `text` (up to a comma, brace or space).
pub fn number_following(text: &str, marker: &str) -> Option<f64> {
    text.split(marker)
        .nth(1)?
        .split([',', '}', ' '])
        .next()?
        .parse()
        .ok()
}
