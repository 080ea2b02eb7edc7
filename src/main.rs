#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use summit_config::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    summit_config::install_crypto_provider();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("summit-config: {}", error.chain());
            ExitCode::from(error.exit_code())
        }
    }
}
