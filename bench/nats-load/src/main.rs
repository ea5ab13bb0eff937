//! `keel-nats-bench`: the NATS JetStream side of `bench/compare.sh`.
//!
//! It prints the same JSON result as `keel bench ... -o json` (kind, records, bytes,
//! elapsed_s, records_per_s, mb_per_s, latency_ms) so that the script reads both alike.
//!
//! - `stream`: (re)creates a file-backed stream with N replicas, retrying while the
//!   JetStream meta leader is still being elected.
//! - `produce`: P publishers, one connection each (publisher i to server i mod n), each with a
//!   window of W publishes whose acks are outstanding; latency is publish to ack, taken by a
//!   collector task as acks arrive (as `keel bench produce` does), optionally at a fixed rate.
//! - `consume`: one ephemeral pull consumer (no acks, like a Kafka consumer that commits
//!   nothing) reading the stream from the start.
//! - `e2e`: one publisher at a fixed rate and one consumer of new messages; latency is the
//!   arrival time minus the send time carried in the payload's first 8 bytes.
//! - `loopback`: the memory-to-socket ceiling: one thread writes N MiB from memory into a
//!   127.0.0.1 TCP socket, another reads them into memory (no NATS involved).

mod load;
mod loopback;

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use async_nats::jetstream::{self, stream};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(about = "NATS JetStream load generator for bench/compare.sh")]
struct Cli {
    /// NATS servers, comma-separated (nats://127.0.0.1:4222,...).
    #[arg(long, value_delimiter = ',', default_value = "nats://127.0.0.1:4222")]
    servers: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Delete the stream if it exists and create it anew (file storage).
    Stream(StreamArgs),
    /// Publish as fast as the window allows (or at --rate) and report throughput and
    /// publish-to-ack latency.
    Produce(load::ProduceArgs),
    /// Read the stream from its first message and report throughput.
    Consume(load::ConsumeArgs),
    /// Publish at a fixed rate while consuming, and report publish-to-arrival latency.
    E2e(load::E2eArgs),
    /// Send N MiB over a loopback TCP connection, memory to memory: the ceiling of a fetch.
    Loopback(loopback::LoopbackArgs),
}

#[derive(Args)]
struct StreamArgs {
    /// Stream name.
    #[arg(long)]
    name: String,
    /// Subject the stream captures.
    #[arg(long)]
    subject: String,
    /// Replicas (R1..R5).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Give up when the cluster has not accepted the stream after this many seconds.
    #[arg(long, default_value_t = 60)]
    wait_s: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Stream(args) => return create_stream(&cli.servers, args).await,
        Command::Produce(args) => load::produce(&cli.servers, args).await?,
        Command::Consume(args) => load::consume(&cli.servers, args).await?,
        Command::E2e(args) => load::e2e(&cli.servers, args).await?,
        Command::Loopback(args) => loopback::run(args)?,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// Connects to one server (with the others as reconnect targets).
pub async fn connect(servers: &[String], first: usize) -> Result<async_nats::Client> {
    let n = servers.len();
    let ordered: Vec<String> = (0..n).map(|i| servers[(first + i) % n].clone()).collect();
    async_nats::ConnectOptions::new()
        .retain_servers_order()
        .connect(ordered.as_slice())
        .await
        .with_context(|| format!("connecting to NATS at {}", ordered[0]))
}

async fn create_stream(servers: &[String], args: &StreamArgs) -> Result<()> {
    let js = jetstream::new(connect(servers, 0).await?);
    let config = stream::Config {
        name: args.name.clone(),
        subjects: vec![args.subject.clone()],
        num_replicas: args.replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_s);
    loop {
        // A leftover stream from an earlier round would make the backlog bigger than asked.
        let _ = js.delete_stream(&args.name).await;
        match js.create_stream(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("stream {} not created yet ({e}); retrying", args.name);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => bail!("creating stream {}: {e}", args.name),
        }
    }
}
