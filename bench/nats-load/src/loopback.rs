//! The loopback TCP ceiling: how fast this machine moves bytes from memory through a local
//! socket into memory, with plain blocking I/O and 1 MiB buffers (what a fetch over gRPC could
//! at best approach).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::load::{histogram, result, BenchResult};

const CHUNK: usize = 1 << 20;

#[derive(Args)]
pub struct LoopbackArgs {
    /// Mebibytes to send.
    #[arg(long, default_value_t = 4096)]
    mib: u64,
}

pub fn run(args: &LoopbackArgs) -> Result<BenchResult> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    let address = listener.local_addr()?;
    let total = args.mib * CHUNK as u64;
    let start = Instant::now();
    let sender = std::thread::spawn(move || -> Result<()> {
        let mut socket = TcpStream::connect(address)?;
        let chunk = vec![0x5a_u8; CHUNK];
        for _ in 0..total / CHUNK as u64 {
            socket.write_all(&chunk)?;
        }
        Ok(())
    });
    let (mut socket, _) = listener
        .accept()
        .context("accepting the loopback connection")?;
    let mut buffer = vec![0_u8; CHUNK];
    let mut received = 0u64;
    loop {
        let n = socket.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        received += n as u64;
    }
    let elapsed = start.elapsed();
    match sender.join() {
        Ok(outcome) => outcome.context("sending over loopback")?,
        Err(_) => bail!("the loopback sender panicked"),
    }
    if received != total {
        bail!("loopback: received {received} bytes of {total}");
    }
    Ok(result(
        ("loopback", "127.0.0.1", "none"),
        (total / CHUNK as u64, 0, total),
        elapsed,
        &histogram(),
    ))
}
