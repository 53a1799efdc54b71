//! Integration tests: the real `vaultd` and `vaultctl` binaries on a temp dir and a real
//! socket. One test binary, a module per area; helpers in `util`.

mod util;

mod audit;
mod auth;
mod autolock;
mod backup;
mod bad_input;
mod cli;
mod client;
mod disconnect;
mod errors;
mod groups;
mod import;
mod leases;
mod lifecycle;
mod load;
mod migrate;
mod namespaces;
mod postgres;
mod recovery;
mod reliability;
mod revocation;
mod shutdown;
mod startup;
mod strength;
mod systemd;
mod uid_without_access;
mod untrusted_dirs;
mod userns;
mod vaultfile;
