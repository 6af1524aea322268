//! `leak-scan DIR`: fails when any artifact under DIR contains a token the suite minted.
//! Prints file:line of each hit, never the token.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: leak-scan DIR");
        return ExitCode::from(2);
    };
    let report = match tokenwarden_testenv::leak::scan(std::path::Path::new(&dir)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("leak-scan: read {dir}: {e}");
            return ExitCode::FAILURE;
        }
    };
    for hit in &report.hits {
        println!(
            "leak-scan: a minted token appears in {}:{}",
            hit.file.display(),
            hit.line
        );
    }
    println!(
        "leak-scan: {} files scanned for {} minted tokens: {} hits",
        report.files,
        report.minted,
        report.hits.len()
    );
    if report.minted == 0 {
        eprintln!("leak-scan: no minted token hashes found under {dir}: nothing was scanned for");
        return ExitCode::FAILURE;
    }
    if report.hits.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
