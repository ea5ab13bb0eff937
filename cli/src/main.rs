//! The `keel` binary: parse, run, print. Everything else lives in the `keel_cli` library.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use keel_cli::{usage_error_line, Args};

// jemalloc keeps freed fetch and request buffers for reuse; glibc returned them to the kernel,
// so each new one faulted in zeroed pages (BENCHMARKS.md, backlog read).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) => match usage_error_line(&err) {
            Some(line) => {
                eprintln!("{line}");
                return ExitCode::from(2);
            }
            None => err.exit(), // --help, --version
        },
    };
    init_logging(args.verbose);

    // Several threads, as a client application would run: `keel bench` and `keel consume`
    // then receive from the brokers' connections while they decode.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: INTERNAL: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(keel_cli::run(&args)) {
        Ok(report) => {
            // A closed pipe (`keel topic list | head -1`) is not an error worth a panic.
            let _ = std::io::stdout()
                .lock()
                .write_all(report.render(args.output).as_bytes());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{}", err.error_line());
            ExitCode::FAILURE
        }
    }
}

/// Logs on stderr only with `-v` (keel's own crates at debug) or `-vv` (everything at debug).
fn init_logging(verbose: u8) {
    let filter = match verbose {
        0 => return,
        1 => "keel_client=debug,keel_cli=debug",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
