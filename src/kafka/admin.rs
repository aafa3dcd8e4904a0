//! Topic administration: `adstream topics create`.

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::pipeline::Pipeline;

/// What happened to one topic.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// Made now.
    New,
    /// Already there (left as it is).
    Existed,
}

/// Creates every topic of `pipeline` (compaction for upsert topics); existing ones are kept.
pub async fn create_topics(
    pipeline: &Pipeline,
    config: &ClientConfig,
) -> anyhow::Result<Vec<(String, Created)>> {
    let admin: AdminClient<DefaultClientContext> =
        config.create().context("creating a Kafka admin client")?;
    let partitions = pipeline.topics.partitions;
    let replication = pipeline.topics.replication;
    let topics = pipeline.all_topics();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, compacted)| {
            let t = NewTopic::new(
                name,
                if *compacted {
                    partitions.min(4)
                } else {
                    partitions
                },
                TopicReplication::Fixed(replication),
            );
            if *compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .context("creating topics")?;
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(name) => out.push((name, Created::New)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => out.push((name, Created::Existed)),
            Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
        }
    }
    Ok(out)
}
