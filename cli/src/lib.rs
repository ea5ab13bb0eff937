//! `keel`: Keel's admin and console tool, as a library that the thin binary (`main.rs`) and
//! end-to-end tests call.
//!
//! The crate owns the command line (verbs, flags, their parsing), what each verb does with
//! [`keel_client::AdminClient`], [`keel_client::Producer`] and [`keel_client::Consumer`], how
//! results print (tables or one JSON document) and the one
//! error line. It talks to nodes only through `keel-client`: it never links the broker,
//! storage or RocksDB.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keel_cli::CliError> {
//! use clap::Parser;
//! let args = keel_cli::Args::try_parse_from(["keel", "--output", "json", "topic", "list"])
//!     .expect("valid arguments");
//! let report = keel_cli::run(&args).await?;
//! print!("{}", report.render(args.output));
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `args.rs` — [`Args`] (clap derive): global flags, verbs, the `KEY=VALUE` parser.
//! - `commands.rs` — [`plan`] (pure checks, builds the requests) and [`execute`] (calls the
//!   cluster), one arm per admin verb.
//! - `data.rs` — `produce`, `consume` (streaming: they print as they go; `--group` reads as
//!   a consumer group member) and `offsets`.
//! - `groups.rs` — `group list|describe|reset-offsets|delete`.
//! - `elastic.rs` — `partition reassign`, `broker list|decommission`, `quorum
//!   add-voter|remove-voter`, with progress bars for moves.
//! - `reassign_plan.rs` — the balanced, minimal-movement plan of `partition reassign
//!   --generate`, and the plan file's format.
//! - `bench.rs` — `bench produce` and `bench consume`: load, progress bar, [`bench::BenchResult`].
//! - `render.rs` — [`Report`] and its table and JSON renderings (tests in `render_test.rs`).
//! - `error.rs` — [`CliError`] and the `error: <CODE>: <message>` line, also for usage errors.
//! - `main.rs` — parses, installs logging for `-v`, runs, prints, sets the exit status.

pub mod args;
pub mod bench;
mod commands;
mod data;
pub mod elastic;
mod error;
pub mod groups;
pub mod reassign_plan;
pub mod render;

pub use args::{Args, OutputFormat};
pub use commands::{execute, plan, Plan};
pub use error::{usage_error_line, CliError};
pub use render::Report;

use args::{BenchCommand, Command, QuorumCommand};
use keel_client::AdminClient;

/// Runs the command of `args` against the cluster at `args.bootstrap` and returns what to
/// print (render it with [`Report::render`] and `args.output`).
///
/// The command is checked before any connection is made, so argument errors need no cluster.
pub async fn run(args: &Args) -> Result<Report, CliError> {
    let bootstrap = &args.bootstrap;
    match &args.command {
        Command::Produce(p) => {
            let input = tokio::io::BufReader::new(tokio::io::stdin());
            data::produce(
                bootstrap,
                p,
                args.verbose > 0,
                input,
                &mut std::io::stderr(),
            )
            .await?;
            return Ok(Report::Streamed);
        }
        Command::Consume(c) => {
            data::consume(bootstrap, c, &mut std::io::stdout().lock()).await?;
            return Ok(Report::Streamed);
        }
        Command::Offsets { topic } => return data::offsets(bootstrap, topic).await,
        Command::Group(g) => return groups::run(bootstrap, g).await,
        Command::Partition(p) => return elastic::partition(bootstrap, p).await,
        Command::Broker(b) => return elastic::broker(bootstrap, b).await,
        Command::Quorum(
            q @ (QuorumCommand::AddVoter { .. } | QuorumCommand::RemoveVoter { .. }),
        ) => return elastic::quorum(bootstrap, q).await,
        Command::Bench(BenchCommand::Produce(b)) => {
            return Ok(Report::Bench(bench::produce(bootstrap, b).await?))
        }
        Command::Bench(BenchCommand::Consume(b)) => {
            return Ok(Report::Bench(bench::consume(bootstrap, b).await?))
        }
        Command::Bench(BenchCommand::E2e(b)) => {
            return Ok(Report::Bench(bench::e2e(bootstrap, b).await?))
        }
        Command::Completions(c) => {
            let mut command = <Args as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(c.shell, &mut command, "keel", &mut out);
            return Ok(Report::Text(String::from_utf8_lossy(&out).into_owned()));
        }
        _ => {}
    }
    let plan = plan(&args.command)?;
    let admin = AdminClient::connect(&args.bootstrap).await?;
    execute(&admin, plan).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[tokio::test]
    async fn an_unreachable_bootstrap_is_one_unavailable_line() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let args =
            Args::try_parse_from(["keel", "--bootstrap", &address, "topic", "list"]).unwrap();
        let line = run(&args).await.unwrap_err().error_line();
        assert!(
            line.starts_with(&format!("error: UNAVAILABLE: {address}: cannot connect")),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[tokio::test]
    async fn argument_errors_need_no_cluster() {
        // The plan fails before any connection: nothing needs to listen at the address.
        let args = Args::try_parse_from([
            "keel",
            "--bootstrap",
            "127.0.0.1:9",
            "topic",
            "create",
            "t",
            "-c",
            "a=1",
            "-c",
            "a=2",
        ])
        .unwrap();
        let err = run(&args).await.unwrap_err();
        assert!(matches!(err, CliError::InvalidArgument(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_bad_bootstrap_address_is_an_invalid_argument() {
        let args =
            Args::try_parse_from(["keel", "--bootstrap", "localhost", "topic", "list"]).unwrap();
        assert_eq!(
            run(&args).await.unwrap_err().error_line(),
            "error: INVALID_ARGUMENT: localhost: expected host:port"
        );
    }
}
