#!/usr/bin/env python3
"""Writes records to a Keel topic with nothing but grpcio and the stubs generated from proto/.

    python producer.py --bootstrap 127.0.0.1:9292 --topic demo --count 100
    python producer.py --bootstrap 127.0.0.1:9292 --topic demo user1=hello user2=world

Prints one line per acknowledged record: partition, offset, key and value, separated by tabs.

How it works: Cluster.Metadata names each partition's leader. Each record goes to the partition
its key picks (Kafka's default partitioner), and each partition's records go, in order, to its
leader with Producer.Produce (acks=all: the answer comes once every in-sync replica has them).
"""

import argparse
import sys
import time
from collections import defaultdict

import grpc

import cluster  # sets up the import path of the generated stubs
from keel.v1 import common_pb2, producer_pb2, producer_pb2_grpc


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Utils.murmur2) as an unsigned 32-bit number."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask  # Kafka's seed
    tail = len(data) - len(data) % 4
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    rest = data[tail:]
    if rest:
        h ^= int.from_bytes(rest, "little")
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    return h ^ (h >> 15)


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition Kafka clients (and Keel's Rust client) choose for a key, so that all
    clients agree where a key's records live. The broker never moves a record: the client
    picks."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default="127.0.0.1:9292", help="host:port[,host:port...] of any brokers")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=10, help="records to generate (key-I=value-I) when none are given")
    ap.add_argument("--batch", type=int, default=100, help="most records per partition in one request")
    ap.add_argument("--timeout", type=float, default=30, help="seconds before giving up on retries")
    ap.add_argument("records", nargs="*", metavar="KEY=VALUE", help="records to send instead of generated ones")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.records:
        pairs = [r.split("=", 1) if "=" in r else [r, ""] for r in args.records]
    else:
        pairs = [(f"key-{i}", f"value-{i}") for i in range(args.count)]
    deadline = time.monotonic() + args.timeout
    leaders = cluster.Leaders(args.bootstrap, args.topic, deadline)

    # Records waiting to be sent, per partition, in the order given.
    pending = defaultdict(list)
    for key, value in pairs:
        record = common_pb2.ProducerRecord(key=key.encode(), value=value.encode())
        pending[partition_for_key(record.key, len(leaders.partitions))].append(record)

    sent = 0
    while pending:
        # One request per leader, holding the next batch of every partition it leads. A
        # partition's next batch is sent only after the previous one is acknowledged, which
        # keeps the partition's records in order even across retries.
        by_leader = defaultdict(list)
        for p in pending:
            by_leader[leaders.endpoint(p)].append(p)
        for endpoint, parts in by_leader.items():
            batches = {p: pending[p][: args.batch] for p in parts}
            request = producer_pb2.ProduceRequest(
                acks=producer_pb2.ACKS_ALL,
                timeout_ms=10_000,
                topics=[
                    producer_pb2.TopicProduceData(
                        topic=args.topic,
                        partitions=[
                            producer_pb2.PartitionProduceData(
                                partition=p, records=producer_pb2.ProducerRecords(records=batch)
                            )
                            for p, batch in batches.items()
                        ],
                    )
                ],
            )
            try:
                response = producer_pb2_grpc.ProducerStub(cluster.channel(endpoint)).Produce(request, timeout=15)
            except grpc.RpcError as e:
                leaders.unreachable(endpoint, e)
                continue
            if (err := cluster.error_of(response)) is not None:
                sys.exit(f"produce: {cluster.describe(err)}")  # the request as a whole was refused
            for result in response.topics[0].partitions:
                p = result.partition
                if (err := cluster.error_of(result)) is not None:
                    # Retried later. Without an idempotent producer (InitProducerId), a retry
                    # after REQUEST_TIMED_OUT may write the records twice.
                    leaders.retry(p, err)
                    continue
                # The batch's records got consecutive offsets from base_offset.
                for i, record in enumerate(batches[p]):
                    print(f"{p}\t{result.base_offset + i}\t{cluster.show(record.key)}\t{cluster.show(record.value)}")
                sent += len(batches[p])
                del pending[p][: len(batches[p])]
                if not pending[p]:
                    del pending[p]
        leaders.settle()
    print(f"producer: {sent} records acknowledged by {args.topic}", file=sys.stderr)


if __name__ == "__main__":
    main()
