//! Integration tests: the real `vaultd` and `vaultctl` binaries on a temp dir and a real
//! socket. One test binary, a module per area; helpers in `util`.

mod util;

mod client;
mod lifecycle;
mod systemd;
