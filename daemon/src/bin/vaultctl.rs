//! `vaultctl`: the admin CLI of the Session Vault daemon. Thin: parse the arguments (clap
//! exits 2 on a usage error, 0 after `--help`) and hand over to
//! `session_vault_daemon::ctl`, which returns the exit code.

use std::process::ExitCode;

use clap::Parser;
use session_vault_daemon::ctl::{self, Cli};

fn main() -> ExitCode {
    ctl::main(Cli::parse())
}
