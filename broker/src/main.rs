//! `keeld`: the Keel server.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use keel_broker::config::Flags;
use keel_broker::logs::NodeTag;
use keel_broker::{Config, Node};

// jemalloc keeps freed fetch and request buffers for reuse; glibc returned them to the kernel,
// so each new one faulted in zeroed pages (BENCHMARKS.md, backlog read).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(name = "keeld", version, about = "The Keel server")]
struct Args {
    /// Start a one-node development cluster (both roles, data in .keel-dev/): no other flag
    /// or file needed.
    #[arg(long)]
    dev: bool,
    /// TOML config file; `KEEL_<KEY>` environment variables override it, flags override both.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's id, unique in the cluster.
    #[arg(long)]
    node_id: Option<u32>,
    /// broker, controller, or broker,controller.
    #[arg(long)]
    roles: Option<String>,
    /// Client gRPC listener (default 127.0.0.1:9292).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Raft, controller and replication listener (default 127.0.0.1:9293).
    #[arg(long)]
    internal_listen: Option<SocketAddr>,
    /// Metrics and health listener (default 127.0.0.1:9294).
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Folder for segment files, the index and the metadata log.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Controller voters: 1@host:port,2@host:port,...
    #[arg(long)]
    controller_voters: Option<String>,
    /// Rack or zone, for rack-aware replica placement.
    #[arg(long)]
    rack: Option<String>,
    /// Print the effective configuration, with where each value came from, and exit.
    #[arg(long)]
    print_config: bool,
    /// Log lines as human-readable text or as one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// `--log-format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

impl Args {
    fn flags(&self) -> Flags {
        Flags {
            node_id: self.node_id,
            roles: self.roles.clone(),
            listen: self.listen,
            internal_listen: self.internal_listen,
            http_listen: self.http_listen,
            data_dir: self.data_dir.clone(),
            controller_voters: self.controller_voters.clone(),
            rack: self.rack.clone(),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = if args.dev {
        Config::dev()
    } else {
        Config::default()
    };
    if args.print_config {
        let text = Config::describe(base, args.config.as_deref(), Config::env(), args.flags())
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        print!("{text}");
        return Ok(());
    }
    let config = Config::load(base, args.config.as_deref(), Config::env(), args.flags())
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    init_logs(args.log_format, config.node_id);
    // Watch for SIGTERM before start-up, so that one arriving while the node starts is kept
    // and stops it cleanly right after, instead of killing the process.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let node = Node::start(config).await?;
    node.run(terminated(term)).await;
    Ok(())
}

/// Installs the log subscriber: `RUST_LOG` (default `info,openraft=warn`), text (colours
/// only on a terminal) or one JSON object per line, every line naming the node
/// ([`keel_broker::logs`]).
fn init_logs(format: LogFormat, node_id: u32) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,openraft=warn".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => {
            let text = NodeTag::new(tracing_subscriber::fmt::format(), node_id, false);
            logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .event_format(text)
                .init()
        }
        // One JSON object per line, with the fields of each event and its spans.
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format()
                .json()
                .with_current_span(false)
                .with_span_list(true);
            logs.json()
                .event_format(NodeTag::new(json, node_id, true))
                .init()
        }
    }
}

/// Resolves at SIGTERM or SIGINT (Ctrl-C): both start a controlled shutdown.
async fn terminated(term: std::io::Result<tokio::signal::unix::Signal>) {
    let mut term = match term {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
