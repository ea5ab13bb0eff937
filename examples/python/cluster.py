"""What producer.py and consumer.py share: the generated stubs, one channel per broker, Keel's
error convention, and finding each partition's leader with Cluster.Metadata."""

import sys
import time
from pathlib import Path

import grpc

# gen.py writes the stubs to keel_pb/keel/v1/, mirroring the proto package keel.v1.
sys.path.insert(0, str(Path(__file__).resolve().parent / "keel_pb"))
from keel.v1 import cluster_pb2, cluster_pb2_grpc, errors_pb2  # noqa: E402

_channels: dict[str, grpc.Channel] = {}


def channel(endpoint: str) -> grpc.Channel:
    """A channel to a broker's "host:port", reused: gRPC multiplexes calls over one connection."""
    if endpoint not in _channels:
        _channels[endpoint] = grpc.insecure_channel(endpoint)
    return _channels[endpoint]


def error_of(msg):
    """The Keel error of a response (or of one item of it), or None on success.

    Keel reports failures inside normal responses: an absent `error`, or code OK, is success
    (errors.proto). gRPC status codes only mean transport trouble (grpc.RpcError)."""
    if msg.HasField("error") and msg.error.code != errors_pb2.OK:
        return msg.error
    return None


def describe(err) -> str:
    try:
        name = errors_pb2.ErrorCode.Name(err.code)
    except ValueError:  # a code newer than these stubs: `retriable` still tells what to do
        name = f"error {err.code}"
    return f"{name}: {err.message}" if err.message else name


def show(value) -> str:
    """A key or value for printing: bytes as text; a null key or value as (null)."""
    return "(null)" if value is None else value.decode("utf-8", "backslashreplace")


class Leaders:
    """Where to send requests for each partition of one topic.

    Metadata names each partition's leader; a NOT_LEADER error usually carries a hint naming the
    new one, which we follow until the next metadata refresh. Other retriable errors (no leader
    yet, topic not yet known here, a broker that went away) make us reload metadata after a
    short pause. Everything gives up at `deadline` (time.monotonic())."""

    def __init__(self, bootstrap: str, topic: str, deadline: float):
        self.bootstrap = bootstrap.split(",")
        self.topic = topic
        self.deadline = deadline
        self.leader: dict[int, str] = {}  # partition -> leader "host:port"
        self.hint: dict[int, str] = {}  # partition -> endpoint from a NOT_LEADER hint
        self.stale = False
        self.refresh()

    @property
    def partitions(self) -> list[int]:
        return sorted(self.leader)

    def endpoint(self, partition: int) -> str:
        return self.hint.get(partition) or self.leader[partition]

    def refresh(self) -> None:
        """Reloads metadata until a broker knows the topic and a leader for every partition."""
        while (problem := self._load()) is not None:
            self._pause(problem)
        self.hint.clear()
        self.stale = False

    def _load(self):
        """Loads metadata from the first bootstrap broker that answers; returns what is wrong
        (None when every partition has a leader)."""
        problem = "no bootstrap address"
        for addr in self.bootstrap:
            stub = cluster_pb2_grpc.ClusterStub(channel(addr))
            try:
                resp = stub.Metadata(cluster_pb2.MetadataRequest(topics=[self.topic]), timeout=5)
            except grpc.RpcError as e:
                problem = f"{addr}: {e.code().name}"
                continue
            err = error_of(resp) or error_of(resp.topics[0])
            if err is not None:
                if not err.retriable:  # an invalid topic name, say: waiting will not help
                    sys.exit(f"metadata for {self.topic}: {describe(err)}")
                problem = f"{self.topic}: {describe(err)}"
                continue
            # Brokers are listed with the client endpoint they advertise.
            brokers = {b.broker_id: f"{b.host}:{b.port}" for b in resp.brokers}
            leader = {}
            for p in resp.topics[0].partitions:
                if not p.HasField("leader_id") or p.leader_id not in brokers:
                    problem = f"{self.topic}/{p.partition}: no leader yet"
                    break
                leader[p.partition] = brokers[p.leader_id]
            else:
                self.leader = leader
                return None
        return problem

    def retry(self, partition: int, err) -> None:
        """Handles a partition's error: follows a NOT_LEADER hint, or marks the metadata stale.
        Exits on an error that retrying cannot fix."""
        if not err.retriable:
            sys.exit(f"{self.topic}/{partition}: {describe(err)}")
        if err.code == errors_pb2.NOT_LEADER and err.HasField("leader_endpoint"):
            self.hint[partition] = err.leader_endpoint
            self._check_deadline(describe(err))
        else:
            self.stale = True
            self.last_problem = f"{self.topic}/{partition}: {describe(err)}"

    def unreachable(self, endpoint: str, e: grpc.RpcError) -> None:
        """A broker did not answer (it may be restarting): reload metadata before retrying."""
        self.stale = True
        self.last_problem = f"{endpoint}: {e.code().name}"

    def settle(self) -> None:
        """Called between rounds of requests: reloads metadata, after a pause, if it is stale."""
        if self.stale:
            self._pause(self.last_problem)
            self.refresh()

    def _pause(self, problem: str) -> None:
        self._check_deadline(problem)
        time.sleep(0.2)

    def _check_deadline(self, problem: str) -> None:
        if time.monotonic() > self.deadline:
            sys.exit(f"gave up: {problem}")
