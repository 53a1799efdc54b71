//! `vaultctl`: the admin CLI of the Session Vault daemon. Thin: parse the arguments (clap
//! exits 2 on a usage error, 0 after `--help`) and hand over to the `vaultctl` library,
//! which returns the exit code.

use std::process::ExitCode;

use clap::Parser;
use vaultctl::Cli;

fn main() -> ExitCode {
    vaultctl::main(Cli::parse())
}
