#!/usr/bin/env python3
"""Reads a Keel topic from the beginning with nothing but grpcio and the stubs generated from
proto/.

    python consumer.py --bootstrap 127.0.0.1:9292 --topic demo --count 100

Prints one line per record: partition, offset, key and value, separated by tabs. Stops after
--count records (exit status 0) or at --timeout (exit status 1 if --count records were not read;
without --count, reading until the timeout is the normal end).

How it works: Cluster.Metadata names each partition's leader; Consumer.Fetch asks each leader
for records of the partitions it leads, each from its own position, as structured records. The
broker holds a fetch up to max_wait_ms when there is nothing new (a long poll).
"""

import argparse
import sys
import time
from collections import defaultdict

import grpc

import cluster  # sets up the import path of the generated stubs
from keel.v1 import common_pb2, consumer_pb2, consumer_pb2_grpc, errors_pb2


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default="127.0.0.1:9292", help="host:port[,host:port...] of any brokers")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, help="stop after this many records")
    ap.add_argument("--timeout", type=float, default=10, help="seconds to read before giving up")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    deadline = time.monotonic() + args.timeout
    leaders = cluster.Leaders(args.bootstrap, args.topic, deadline)
    # From the beginning: offset 0. If retention has removed the start of a partition, the
    # broker answers OFFSET_OUT_OF_RANGE with the log start offset, and we move there.
    position = {p: 0 for p in leaders.partitions}
    read = 0

    while time.monotonic() < deadline and (args.count is None or read < args.count):
        by_leader = defaultdict(list)
        for p in position:
            by_leader[leaders.endpoint(p)].append(p)
        for endpoint, parts in by_leader.items():
            request = consumer_pb2.FetchRequest(
                max_wait_ms=500,  # answer after 0.5 s at the latest when there is nothing new
                min_bytes=1,  # ...and at once when there is anything
                format=common_pb2.RECORD_FORMAT_RECORDS,  # decoded records, not raw batches
                topics=[
                    consumer_pb2.FetchTopic(
                        topic=args.topic,
                        partitions=[consumer_pb2.FetchPartition(partition=p, fetch_offset=position[p]) for p in parts],
                    )
                ],
            )
            try:
                response = consumer_pb2_grpc.ConsumerStub(cluster.channel(endpoint)).Fetch(request, timeout=10)
            except grpc.RpcError as e:
                leaders.unreachable(endpoint, e)
                continue
            if (err := cluster.error_of(response)) is not None:
                sys.exit(f"fetch: {cluster.describe(err)}")
            for result in response.topics[0].partitions:
                p = result.partition
                err = cluster.error_of(result)
                if err is not None and err.code == errors_pb2.OFFSET_OUT_OF_RANGE and position[p] < result.log_start_offset:
                    position[p] = result.log_start_offset
                    continue
                if err is not None:
                    leaders.retry(p, err)
                    continue
                for record in result.records.records:
                    if args.count is not None and read == args.count:
                        break
                    print(f"{p}\t{record.offset}\t{cluster.show(record.key if record.HasField('key') else None)}"
                          f"\t{cluster.show(record.value if record.HasField('value') else None)}")
                    read += 1
                # Not simply last offset + 1: the broker may skip offsets that hold no records.
                position[p] = result.next_fetch_offset
        leaders.settle()

    print(f"consumer: {read} records read from {args.topic}", file=sys.stderr)
    if args.count is not None and read < args.count:
        sys.exit(f"consumer: timed out after {args.timeout} s with {read} of {args.count} records")


if __name__ == "__main__":
    main()
