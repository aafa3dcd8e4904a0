//! What a pipeline's `[kafka.properties]` may set. Every librdkafka property passes through
//! (TLS, SASL, compression, timeouts...) and overrides adstream's defaults, except the few that
//! adstream's guarantees rest on: those are refused when the pipeline is loaded, with the reason.

use rdkafka::ClientConfig;

/// The properties adstream sets itself because correctness depends on their value, each with
/// why (librdkafka's aliases included).
const FIXED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set `[kafka] brokers` (or --brokers) instead"),
    ("metadata.broker.list", "set `[kafka] brokers` (or --brokers) instead"),
    (
        "enable.auto.commit",
        "offsets are checkpointed with the state in RocksDB; adstream commits them to Kafka itself \
         after each checkpoint, for monitoring only",
    ),
    (
        "enable.auto.offset.store",
        "offsets are checkpointed with the state in RocksDB; adstream commits them to Kafka itself \
         after each checkpoint, for monitoring only",
    ),
    (
        "auto.offset.reset",
        "a partition whose checkpointed offset is gone is handled by adstream (counted, logged and \
         dead-lettered as offsets_lost), never skipped silently by the client",
    ),
    (
        "enable.partition.eof",
        "adstream's readers and tools decide when a partition's end matters",
    ),
    (
        "enable.idempotence",
        "outputs are exactly-once only with the idempotent producer, which is always on",
    ),
    (
        "acks",
        "the idempotent producer needs every in-sync replica's acknowledgement (acks=all)",
    ),
    (
        "request.required.acks",
        "the idempotent producer needs every in-sync replica's acknowledgement (acks=all)",
    ),
    (
        "message.timeout.ms",
        "outputs never give up on a record (an expired record would be lost output); an outage \
         is held by backpressure instead",
    ),
    (
        "delivery.timeout.ms",
        "outputs never give up on a record (an expired record would be lost output); an outage \
         is held by backpressure instead",
    ),
    (
        "transactional.id",
        "adstream is effectively-once through its checkpoints and the idempotent producer, not \
         Kafka transactions",
    ),
    (
        "allow.auto.create.topics",
        "topics are made by `adstream topics create` (partitions, compaction), never by a read \
         or a write",
    ),
];

/// Why `key` may not be set in `[kafka.properties]`, or `None` when it may.
pub fn refusal(key: &str) -> Option<&'static str> {
    let key = key.trim().to_ascii_lowercase();
    FIXED.iter().find(|(k, _)| *k == key).map(|(_, why)| *why)
}

/// Sets each `(key, value)` of `defaults` that `config` (the pipeline's properties) does not
/// set already: the user's value wins.
pub fn set_defaults(config: &mut ClientConfig, defaults: &[(&str, &str)]) {
    for (key, value) in defaults {
        if config.get(key).is_none() {
            config.set(*key, *value);
        }
    }
}

/// The consumer group id of pipeline `name`, under which adstream commits its checkpointed
/// offsets for lag monitoring (`group.id` in `[kafka.properties]` overrides it).
pub fn group_id(name: &str) -> String {
    format!("adstream-{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_properties_are_refused_with_a_reason_and_the_rest_pass() {
        for key in [
            "enable.auto.commit",
            "acks",
            "Message.Timeout.Ms",
            "bootstrap.servers",
        ] {
            assert!(refusal(key).is_some_and(|why| !why.is_empty()), "{key}");
        }
        for key in [
            "security.protocol",
            "sasl.mechanism",
            "compression.type",
            "linger.ms",
            "fetch.wait.max.ms",
            "group.id",
            "client.id",
        ] {
            assert_eq!(refusal(key), None, "{key}");
        }
    }

    #[test]
    fn defaults_never_override_what_the_user_set() {
        let mut config = ClientConfig::new();
        config.set("linger.ms", "50");
        set_defaults(&mut config, &[("linger.ms", "5"), ("fetch.min.bytes", "1")]);
        assert_eq!(config.get("linger.ms"), Some("50"));
        assert_eq!(config.get("fetch.min.bytes"), Some("1"));
        assert_eq!(group_id("ads"), "adstream-ads");
    }
}
