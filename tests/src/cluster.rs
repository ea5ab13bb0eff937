//! A cluster of real `keeld` processes on 127.0.0.1 (or, with `Spec::netns`, each in its own
//! network namespace, see [`crate::netns`]) for tests: each node with its own data
//! directory, free ports and log file, started, killed (`SIGKILL`), stopped (`SIGTERM`),
//! paused (`SIGSTOP`/`SIGCONT`) and restarted by the test. Every process still running when
//! the cluster is dropped is killed by its pid.
//!
//! The `keeld` binary is found next to the test executable's folder (`target/<profile>/keeld`,
//! which `cargo test --workspace` builds because keel-broker has an integration test), or at
//! `$KEELD`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::disk::SmallDisk;
use crate::netns::Net;

/// Timing and shape of a test cluster.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Nodes with both roles; they are the controller voters (ids 1..=n).
    pub voters: u32,
    /// Extra nodes with only the broker role (ids after the voters).
    pub brokers: u32,
    /// `broker_session_timeout_ms`.
    pub session_timeout_ms: u64,
    /// `broker_heartbeat_interval_ms`.
    pub heartbeat_interval_ms: u64,
    /// `replica_lag_time_max_ms`.
    pub replica_lag_ms: u64,
    /// Whether the voters have only the controller role (no partitions).
    pub controller_only: bool,
    /// More environment for every node (`KEEL_*` config keys).
    pub env: Vec<(String, String)>,
    /// Run every node in its own network namespace ([`crate::netns`]), so the test can cut
    /// the network between nodes (needs root).
    pub netns: bool,
    /// More `keeld` arguments for every node (e.g. `--log-format json`).
    pub args: Vec<String>,
    /// `Some((node, MiB))`: that node's data directory is a tmpfs of that size
    /// ([`crate::disk::SmallDisk`], needs root), so the test can fill its disk.
    pub small_disk: Option<(u32, u64)>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            voters: 3,
            brokers: 0,
            session_timeout_ms: 3000,
            heartbeat_interval_ms: 500,
            replica_lag_ms: 5000,
            controller_only: false,
            env: Vec::new(),
            netns: false,
            args: Vec::new(),
            small_disk: None,
        }
    }
}

/// One node's addresses and process.
pub struct NodeProc {
    /// Node id.
    pub id: u32,
    /// Client listener.
    pub client: SocketAddr,
    /// Internal listener.
    pub internal: SocketAddr,
    /// HTTP listener.
    pub http: SocketAddr,
    /// Whether it has the controller role.
    pub voter: bool,
    /// A controller that is not among the configured voters: it waits to be added with
    /// `keel quorum add-voter`.
    pub spare: bool,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running test cluster.
pub struct TestCluster {
    spec: Spec,
    /// With `Spec::small_disk`; unmounted (field order) before `dir` is removed, after
    /// `Drop` has killed the nodes.
    disk: Option<SmallDisk>,
    dir: TempDir,
    nodes: BTreeMap<u32, NodeProc>,
    /// The namespaces, with `Spec::netns`; dropped after the nodes (field order).
    net: Option<Net>,
}

/// A loopback address nobody listens on, never handed out twice by this process.
///
/// Ports come from below Linux's ephemeral range (32768 and up), so an outgoing connection's
/// local port cannot take a node's port between this check and the node's bind; each test
/// process starts at its own offset so parallel test binaries rarely meet.
fn free_addr() -> SocketAddr {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 64) * 150;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20_000 + (base - 20_000 + n) % 12_000;
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
}

/// The `keeld` binary under test.
pub fn keeld_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KEELD") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/keeld
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("keeld"))
        .expect("target folder");
    assert!(
        path.is_file(),
        "{} not found: run the workspace tests (cargo test --workspace) or set KEELD",
        path.display()
    );
    path
}

impl TestCluster {
    /// Starts the cluster of `spec` and returns once every process is running (not yet
    /// ready: see the readiness helpers of the test modules).
    pub fn start(spec: Spec) -> TestCluster {
        let dir = TempDir::new().expect("tempdir");
        let all: Vec<u32> = (1..=spec.voters + spec.brokers).collect();
        let net = spec.netns.then(|| Net::create(&all));
        // In its own namespace every node can use the same ports.
        let addr = |id: u32, port: u16| match &net {
            Some(n) => SocketAddr::from((n.node_ip(id), port)),
            None => free_addr(),
        };
        let mut nodes = BTreeMap::new();
        for id in all {
            let node = NodeProc {
                id,
                client: addr(id, 9292),
                internal: addr(id, 9293),
                http: addr(id, 9294),
                voter: id <= spec.voters,
                spare: false,
                data_dir: dir.path().join(format!("node-{id}")),
                log: dir.path().join(format!("node-{id}.log")),
                child: None,
            };
            nodes.insert(id, node);
        }
        let disk = spec
            .small_disk
            .map(|(id, mib)| SmallDisk::mount(&nodes[&id].data_dir, mib));
        let mut cluster = TestCluster {
            spec,
            disk,
            dir,
            nodes,
            net,
        };
        let ids: Vec<u32> = cluster.nodes.keys().copied().collect();
        for id in ids {
            cluster.start_node(id);
        }
        cluster
    }

    /// The `controller_voters` value of this cluster.
    pub fn voters(&self) -> String {
        self.nodes
            .values()
            .filter(|n| n.voter && !n.spare)
            .map(|n| format!("{}@{}", n.id, n.internal))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Adds node `id` to the running cluster and starts it: a broker, or with `spare` a node
    /// with both roles that is not among the configured voters (it joins the quorum when
    /// added with `keel quorum add-voter`). Not with `Spec::netns`.
    pub fn add_node(&mut self, id: u32, spare: bool) {
        assert!(self.net.is_none(), "add_node does not make namespaces");
        assert!(!self.nodes.contains_key(&id), "node {id} exists");
        let node = NodeProc {
            id,
            client: free_addr(),
            internal: free_addr(),
            http: free_addr(),
            voter: spare,
            spare,
            data_dir: self.dir.path().join(format!("node-{id}")),
            log: self.dir.path().join(format!("node-{id}.log")),
            child: None,
        };
        self.nodes.insert(id, node);
        self.start_node(id);
    }

    /// Node `id`.
    pub fn node(&self, id: u32) -> &NodeProc {
        &self.nodes[&id]
    }

    /// Ids of all nodes.
    pub fn ids(&self) -> Vec<u32> {
        self.nodes.keys().copied().collect()
    }

    /// `http://host:port` of node `id`'s client listener.
    pub fn client_url(&self, id: u32) -> String {
        format!("http://{}", self.nodes[&id].client)
    }

    /// The working folder of the cluster (data directories and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Node `id`'s data directory (`--data-dir`).
    pub fn data_dir(&self, id: u32) -> &Path {
        &self.nodes[&id].data_dir
    }

    /// The small disk of `Spec::small_disk`.
    pub fn small_disk(&self) -> &SmallDisk {
        self.disk
            .as_ref()
            .expect("the cluster was started with Spec::small_disk")
    }

    /// Starts (or restarts) node `id` with its data directory and ports.
    pub fn start_node(&mut self, id: u32) {
        let voters = self.voters();
        let spec = self.spec.clone();
        let node = &self.nodes[&id];
        assert!(node.child.is_none(), "node {id} is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let roles = match (node.voter, spec.controller_only) {
            (true, true) => "controller",
            (true, false) => "broker,controller",
            (false, _) => "broker",
        };
        let mut command = match &self.net {
            Some(net) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &net.ns(id)]).arg(keeld_path());
                c
            }
            None => Command::new(keeld_path()),
        };
        let node = self.nodes.get_mut(&id).expect("known node");
        let child = command
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--roles")
            .arg(roles)
            .arg("--listen")
            .arg(node.client.to_string())
            .arg("--internal-listen")
            .arg(node.internal.to_string())
            .arg("--http-listen")
            .arg(node.http.to_string())
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--controller-voters")
            .arg(voters)
            .args(&spec.args)
            .env("KEEL_CONTROLLER_JOIN", node.spare.to_string())
            .env(
                "KEEL_BROKER_SESSION_TIMEOUT_MS",
                spec.session_timeout_ms.to_string(),
            )
            .env(
                "KEEL_BROKER_HEARTBEAT_INTERVAL_MS",
                spec.heartbeat_interval_ms.to_string(),
            )
            .env(
                "KEEL_REPLICA_LAG_TIME_MAX_MS",
                spec.replica_lag_ms.to_string(),
            )
            .envs(spec.env.iter().cloned())
            .env(
                "RUST_LOG",
                std::env::var("KEEL_TEST_RUST_LOG").unwrap_or("info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start keeld");
        node.child = Some(child);
    }

    fn pid(&self, id: u32) -> i32 {
        let child = self.nodes[&id].child.as_ref().expect("node is running");
        child.id() as i32
    }

    fn signal(&self, id: u32, sig: i32) {
        // SAFETY: kill(2) on the pid of a child this cluster started and has not reaped.
        let rc = unsafe { libc::kill(self.pid(id), sig) };
        assert_eq!(rc, 0, "signal {sig} to node {id}");
    }

    /// The network namespaces (with `Spec::netns`), to cut and heal links between nodes.
    pub fn net(&self) -> &Net {
        self.net
            .as_ref()
            .expect("the cluster was started with Spec::netns")
    }

    /// `kill -9` node `id` and reap it.
    pub fn kill(&mut self, id: u32) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let mut child = node.child.take().expect("node is running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// Sends SIGTERM to node `id` and waits up to `within` for it to exit; returns its status.
    pub fn terminate(&mut self, id: u32, within: Duration) -> ExitStatus {
        self.signal(id, libc::SIGTERM);
        let node = self.nodes.get_mut(&id).expect("known node");
        let mut child = node.child.take().expect("node is running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "node {id} did not exit within {within:?} of SIGTERM\n{}",
                    self.log_tail(id)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes node `id` (SIGSTOP).
    pub fn pause(&self, id: u32) {
        self.signal(id, libc::SIGSTOP);
    }

    /// Thaws node `id` (SIGCONT).
    pub fn resume(&self, id: u32) {
        self.signal(id, libc::SIGCONT);
    }

    /// Node `id`'s log file (stdout and stderr of all its runs).
    pub fn log_path(&self, id: u32) -> &Path {
        &self.nodes[&id].log
    }

    /// Whether node `id` has a running process.
    pub fn is_running(&self, id: u32) -> bool {
        self.nodes[&id].child.is_some()
    }

    /// Everything node `id` has logged (all its runs).
    pub fn log(&self, id: u32) -> String {
        std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default()
    }

    /// The last lines of node `id`'s log, for failure messages.
    pub fn log_tail(&self, id: u32) -> String {
        let text = std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!("--- node {id} log ---\n{}", lines[start..].join("\n"))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: its nodes' last words are the best clue.
            for id in self.nodes.keys() {
                eprintln!("{}", self.log_tail(*id));
            }
        }
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                // SAFETY: as in `signal`; a paused child must be thawed to die promptly.
                unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
