//! The throwaway PostgreSQL cluster of the daemon's own tests, shared by path: see its
//! module doc (`initdb` + `pg_ctl` in a temp dir, Unix socket only, run as the `postgres`
//! account when the tests run as root).

#[path = "../../daemon/src/vault/postgres/test_cluster.rs"]
mod test_cluster;

pub use test_cluster::{Cluster, Tcp};
