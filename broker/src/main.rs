//! `keeld`: the Keel server.

use std::path::PathBuf;

use clap::Parser;
use keel_broker::{Config, Node};

#[derive(Parser, Debug)]
#[command(name = "keeld", version, about = "The Keel server")]
struct Args {
    /// Start a one-node development cluster with a local data directory.
    #[arg(long)]
    dev: bool,
    /// This node's id, unique in the cluster.
    #[arg(long, env = "KEEL_NODE_ID")]
    node_id: Option<u32>,
    /// Folder for segment files and the index.
    #[arg(long, env = "KEEL_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

fn config(args: &Args) -> Config {
    let mut config = Config::dev();
    if let Some(id) = args.node_id {
        config.node_id = id;
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    config
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let node = Node::start(config(&args))?;
    node.run(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
