//! OpenDAL's own PUT and GET of one file to and from an S3 bucket, with the operator, part size
//! and part concurrency barge's S3 backend uses: the reference `scale/run` measures barge's
//! upload and download through S3 against (issue 15), so what it shows is barge's own cost
//! (protocol, hashing, the hop through the server) over the S3 client's.
//!
//! ```text
//! AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... cargo run --release --example s3_raw -- \
//!     --endpoint http://127.0.0.1:3900 --region garage --bucket barge put FILE KEY
//! ... get KEY FILE    ... rm KEY
//! ```
//!
//! Prints one line: what it did, the bytes, the seconds.

use std::time::Instant;

use anyhow::{Context as _, bail};
use barge::store::object::{PART, PARTS, S3Location};
use clap::Parser;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::compat::FuturesAsyncReadCompatExt as _;

#[derive(Parser)]
struct Args {
    /// The S3 endpoint URL
    #[arg(long)]
    endpoint: String,
    /// The region
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// The bucket
    #[arg(long)]
    bucket: String,
    /// A key prefix inside the bucket
    #[arg(long, default_value = "raw")]
    prefix: String,
    /// Part size in bytes (default: barge's)
    #[arg(long, default_value_t = PART)]
    part: usize,
    /// Parts sent at once (default: barge's)
    #[arg(long, default_value_t = PARTS)]
    parts: usize,
    /// `put FILE KEY`, `get KEY FILE` or `rm KEY`
    #[arg(num_args = 2..=3)]
    command: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let location = S3Location {
        bucket: args.bucket.clone(),
        prefix: args.prefix.clone(),
        endpoint: args.endpoint.clone(),
        region: args.region.clone(),
        access_key_id: std::env::var("AWS_ACCESS_KEY_ID").context("AWS_ACCESS_KEY_ID")?,
        secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY")
            .context("AWS_SECRET_ACCESS_KEY")?,
        session_token: None,
    };
    let op = location.operator()?;
    let t = Instant::now();
    let (what, bytes) = match args.command.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["put", file, key] => {
            let mut f = tokio::fs::File::open(file)
                .await
                .with_context(|| format!("opening {file}"))?;
            let mut w = op
                .writer_with(key)
                .chunk(args.part)
                .concurrent(args.parts)
                .await?;
            let mut total = 0u64;
            loop {
                // Read as barge's server receives: 1 MiB at a time, handed over whole.
                let mut buf = vec![0u8; 1 << 20];
                let mut filled = 0;
                while filled < buf.len() {
                    let n = f.read(&mut buf[filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                buf.truncate(filled);
                total += filled as u64;
                w.write(buf).await?;
            }
            w.close().await?;
            ("put", total)
        }
        ["get", key, file] => {
            let size = op.stat(key).await?.content_length();
            let reader = op.reader_with(key).chunk(args.part).concurrent(2).await?;
            let mut r = reader.into_futures_async_read(0..size).await?.compat();
            let mut out = tokio::fs::File::create(file)
                .await
                .with_context(|| format!("creating {file}"))?;
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).await?;
                total += n as u64;
            }
            out.flush().await?;
            ("get", total)
        }
        ["rm", key] => {
            op.delete(key).await?;
            ("rm", 0)
        }
        _ => bail!("expected `put FILE KEY`, `get KEY FILE` or `rm KEY`"),
    };
    println!("{what} {bytes} {:.3}", t.elapsed().as_secs_f64());
    Ok(())
}
