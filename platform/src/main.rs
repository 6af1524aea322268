//! `platform`: the reference platform token API on a local address.
//!
//! platform --listen 127.0.0.1:8090 --data platform.json --admin-token-file admin.token [--enable-faults]
//!
//! The admin token file is read once (created with a fresh token if missing); only its
//! SHA-256 is kept. The data file holds hashes only and survives restarts.

use std::path::PathBuf;
use std::process::ExitCode;

use tokenwarden_platform::Platform;

struct Args {
    listen: String,
    data: PathBuf,
    admin_token_file: PathBuf,
    enable_faults: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:8090".to_string();
    let (mut data, mut admin) = (None, None);
    let mut enable_faults = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value("--listen")?,
            "--data" => data = Some(PathBuf::from(value("--data")?)),
            "--admin-token-file" => admin = Some(PathBuf::from(value("--admin-token-file")?)),
            "--enable-faults" => enable_faults = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        listen,
        data: data.ok_or("--data is required")?,
        admin_token_file: admin.ok_or("--admin-token-file is required")?,
        enable_faults,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "platform: {e}\nusage: platform --listen ADDR --data FILE --admin-token-file FILE [--enable-faults]"
            );
            return ExitCode::from(2);
        }
    };
    let admin_token = match std::fs::read_to_string(&args.admin_token_file) {
        Ok(t) => t.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = tokenwarden_platform::new_admin_token();
            if let Err(e) = tokenwarden_platform::write_secret_file(&args.admin_token_file, &token)
            {
                eprintln!("platform: write {}: {e}", args.admin_token_file.display());
                return ExitCode::FAILURE;
            }
            token
        }
        Err(e) => {
            eprintln!("platform: read {}: {e}", args.admin_token_file.display());
            return ExitCode::FAILURE;
        }
    };
    let platform = match Platform::open(&args.data, &admin_token, args.enable_faults).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("platform: open {}: {e}", args.data.display());
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("platform: listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!("platform: listening on http://{addr}");
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    match axum::serve(listener, platform.router())
        .with_graceful_shutdown(shutdown)
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("platform: {e}");
            ExitCode::FAILURE
        }
    }
}
