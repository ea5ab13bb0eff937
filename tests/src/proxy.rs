//! A fault-injecting TCP proxy for tests: forwards bytes between a client and one target
//! address, and on request swallows what the server sends back and then cuts the
//! connection, so that requests reach the server but their answers are lost (the client sees
//! a broken connection and retries).
//!
//! To put a proxy in front of a node's advertised address, start the node with
//! `KEEL_ADVERTISED_HOST=127.0.0.2` and the proxy on `127.0.0.2` with the node's client port
//! ([`Proxy::start_on`]): clients that learn leaders from metadata then go through it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long a connection lives after its first swallowed answer, so that more requests
/// already on their way reach the server too.
const CUT_AFTER: Duration = Duration::from_millis(100);

/// A running proxy; stops (and cuts every connection) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    faults: Arc<Faults>,
    task: JoinHandle<()>,
}

/// What the connections of a proxy share.
#[derive(Default)]
struct Faults {
    swallow: AtomicBool,
    /// Answers swallowed so far (each cut a connection).
    swallowed: AtomicU64,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        Proxy::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), target).await
    }

    /// Listens on `listen` and forwards every connection to `target`.
    pub async fn start_on(listen: SocketAddr, target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(listen).await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let faults = Arc::new(Faults::default());
        let shared = faults.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(forward(client, target, shared.clone()));
                while connections.try_join_next().is_some() {}
            }
        });
        Proxy { addr, faults, task }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// While on, answers from the server are swallowed and their connections cut.
    pub fn swallow_answers(&self, on: bool) {
        self.faults.swallow.store(on, Ordering::SeqCst);
    }

    /// How many answers were swallowed (and their connections cut) so far.
    pub fn swallowed(&self) -> u64 {
        self.faults.swallowed.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(client: TcpStream, target: SocketAddr, faults: Arc<Faults>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if faults.swallow.load(Ordering::SeqCst) {
                faults.swallowed.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(CUT_AFTER).await;
                return; // drops the answer and, with `up`, the connection
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
