//! Appends numbered records to a partition log until killed; the crash tests `kill -9` it.
//!
//! Usage: `keel-log-writer DATA_DIR LOG_NAME`. Each batch holds 10 records whose values are
//! their sequence numbers; after every 5 batches it fsyncs and prints `flushed N` (the log end
//! offset now durable) on stdout, so the test knows what must survive.

use std::io::Write;

use bytes::Bytes;
use keel_storage::batch::{encode, BatchParams, NewRecord};
use keel_storage::{DataDir, LogConfig};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(name)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: keel-log-writer DATA_DIR LOG_NAME");
    };
    let data = DataDir::open(std::path::Path::new(&dir))?;
    let config = LogConfig {
        segment_bytes: 256 * 1024,
        index_interval_bytes: 4096,
        ..LogConfig::default()
    };
    let (mut log, _) = data.open_log(&name, config)?;
    let mut next = log.log_end_offset();
    let mut stdout = std::io::stdout();
    for round in 0u64.. {
        let records: Vec<NewRecord> = (next..next + 10)
            .map(|seq| NewRecord {
                timestamp: 1_700_000_000_000 + seq,
                key: None,
                value: Some(Bytes::from(format!("{seq:0>200}"))),
                headers: Vec::new(),
            })
            .collect();
        let batch = encode(&BatchParams::default(), &records)?;
        next = log.append(&batch, 0)?.last_offset + 1;
        if round % 5 == 4 {
            let flushed = log.flush()?;
            writeln!(stdout, "flushed {flushed}")?;
            stdout.flush()?;
        }
    }
    Ok(())
}
