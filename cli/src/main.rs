//! `keel`: Keel's admin and console tool. It talks to brokers only through `keel-client`
//! over the gRPC API, and never links the broker or RocksDB.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "keel", version, about = "Keel's admin and console tool")]
struct Args {
    /// Brokers to bootstrap from, host:port[,host:port].
    #[arg(
        long,
        env = "KEEL_BOOTSTRAP",
        default_value = "127.0.0.1:9292",
        global = true
    )]
    bootstrap: String,
}

fn main() {
    let _args = Args::parse();
}
