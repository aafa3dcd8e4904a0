#!/usr/bin/env python3
"""Checks a local broker with an independent Kafka client (pip install confluent-kafka).

    python3 deploy/local/smoke-test.py [--brokers 127.0.0.1:9092] [-n 100]

Creates a 3-partition topic and a compacted topic, produces N keyed messages (idempotent
producer), consumes them back in a consumer group with offset commits, reports throughput, then
probes: topic configs, auto topic creation, and null-value tombstones. Exits non-zero on failure.
It leaves its uniquely named topics behind (tansu 0.6.0's DeleteTopics deletes *all* topics), so
point it at a throwaway broker: start-broker.sh 19092 /tmp/smoke-broker.
"""
import argparse
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic


def create(admin, topics):
    futures = admin.create_topics(topics, operation_timeout=10, request_timeout=15)
    for name, fut in futures.items():
        fut.result()
        print(f"created {name}")


def produce(brokers, topic, n, value=lambda i: f'{{"i":{i}}}'.encode(), key=lambda i: f"k{i}"):
    p = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "linger.ms": 5})
    errors = []
    t0 = time.time()
    for i in range(n):
        while True:
            try:
                p.produce(topic, key=key(i), value=value(i),
                          on_delivery=lambda err, msg: err and errors.append(err))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(30)
    dt = time.time() - t0
    if errors or left:
        raise SystemExit(f"produce to {topic}: {len(errors)} errors ({errors[:3]}), {left} unflushed")
    return dt


def consume(brokers, topic, n, group, timeout=60):
    c = Consumer({"bootstrap.servers": brokers, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got = []
    t0 = time.time()
    while len(got) < n and time.time() - t0 < timeout:
        for m in c.consume(num_messages=1000, timeout=1.0):
            if m.error():
                raise SystemExit(f"consume {topic}: {m.error()}")
            got.append(m)
    dt = time.time() - t0
    if got:
        c.commit(asynchronous=False)
    committed = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    c.close()
    return got, dt, committed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("-n", type=int, default=100)
    args = ap.parse_args()
    b = args.brokers
    run = uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": b})

    md = admin.list_topics(timeout=10)
    print(f"cluster {md.cluster_id}, brokers {[f'{x.host}:{x.port}' for x in md.brokers.values()]}")

    # 1. plain 3-partition topic: produce, consume, commit.
    topic = f"smoke.events.{run}"
    create(admin, [NewTopic(topic, num_partitions=3, replication_factor=1)])
    dt_p = produce(b, topic, args.n)
    got, dt_c, committed = consume(b, topic, args.n, f"smoke-{run}")
    parts = sorted({m.partition() for m in got})
    print(f"produced {args.n} in {dt_p:.2f}s ({args.n / dt_p:.0f}/s); consumed {len(got)} "
          f"in {dt_c:.2f}s ({len(got) / max(dt_c, 1e-9):.0f}/s) from partitions {parts}")
    print(f"committed offsets: {[(tp.partition, tp.offset) for tp in committed]}")
    if len(got) != args.n or len({m.key() for m in got}) != args.n:
        raise SystemExit(f"FAIL: consumed {len(got)} of {args.n}")
    if len(parts) != 3:
        raise SystemExit(f"FAIL: messages landed on partitions {parts}, expected 3")

    # 2. compacted topic created with configs, read configs back, tombstones.
    ctopic = f"smoke.compact.{run}"
    create(admin, [NewTopic(ctopic, num_partitions=3, replication_factor=1,
                            config={"cleanup.policy": "compact"})])
    res = ConfigResource(ConfigResource.Type.TOPIC, ctopic)
    try:
        cfg = admin.describe_configs([res])[res].result(timeout=10)
        print(f"describe_configs {ctopic}: cleanup.policy="
              f"{cfg['cleanup.policy'].value if 'cleanup.policy' in cfg else '(absent)'}")
    except KafkaException as e:
        print(f"describe_configs {ctopic}: error {e}")
    produce(b, ctopic, 4, key=lambda i: "c1" if i < 3 else "c2",
            value=lambda i: None if i == 2 else f'{{"v":{i}}}'.encode())
    got, _, _ = consume(b, ctopic, 4, f"smoke-c-{run}", timeout=20)
    print("compacted topic read back (key, value): "
          f"{[(m.key(), m.value()) for m in sorted(got, key=lambda m: (m.partition(), m.offset()))]}")
    if not any(m.value() is None for m in got):
        raise SystemExit("FAIL: tombstone (null value) not read back as null")

    # 3. auto topic creation: produce to a topic nobody created.
    auto = f"smoke.auto.{run}"
    try:
        p = Producer({"bootstrap.servers": b, "message.timeout.ms": 8000})
        errs = []
        p.produce(auto, key="k", value=b"{}", on_delivery=lambda e, m: e and errs.append(e))
        p.flush(10)
        t = admin.list_topics(timeout=10).topics.get(auto)
        print(f"auto-create: produce errors={errs}, topic exists={t is not None}, "
              f"partitions={len(t.partitions) if t else 0}")
    except KafkaException as e:
        print(f"auto-create: {e}")

    # 4. duplicate create is refused with TOPIC_ALREADY_EXISTS.
    try:
        create(admin, [NewTopic(topic, num_partitions=3, replication_factor=1)])
        print("re-create: accepted silently")
    except KafkaException as e:
        print(f"re-create: {e.args[0].name()}")

    # No DeleteTopics: on tansu 0.6.0 (sqlite) deleting one topic deletes every topic.
    print(f"OK (left topics {topic}, {ctopic} in place; use a throwaway DATA_DIR)")


if __name__ == "__main__":
    sys.exit(main())
