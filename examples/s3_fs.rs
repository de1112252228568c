//! A small S3 server over one folder (s3s-fs: the real protocol, SigV4 checked) on loopback:
//! lets `scale/run --engine s3s` try barge's multi-node scenarios in a minute, without
//! building Garage (no replication, so the scenario that kills an S3 node is skipped).
//!
//! ```text
//! s3_fs DIR PORT KEY SECRET      # serves DIR's sub-folders as buckets on 127.0.0.1:PORT
//! ```

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, port, key, secret] = &args[..] else {
        anyhow::bail!("usage: s3_fs DIR PORT KEY SECRET");
    };
    let fs = s3s_fs::FileSystem::new(dir).map_err(|e| anyhow::anyhow!("s3s-fs: {e:?}"))?;
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(
        key.as_str(),
        secret.as_str(),
    ));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>()?))
        .await
        .context("binding")?;
    let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let conn = http
            .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(conn);
    }
}
