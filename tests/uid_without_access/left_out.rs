//! A non-admin uid's refused requests left out of the audit log are still counted: in its next
//! entry, or in an entry of their own once it has been quiet for a period, or at shutdown.

use std::time::{Duration, Instant};

use session_vault_client::Connection;
use session_vault_proto::audit::AuditEntry;

use super::{Hostile, audit_of};
use crate::util::*;

/// How many entries `e` says were left out before it (its detail's "N more … of this uid not
/// recorded before", alone or after "; ").
pub(super) fn left_out_in(e: &AuditEntry, what: &str) -> u64 {
    let Some(detail) = e.detail.as_deref() else {
        return 0;
    };
    let suffix = format!(" more {what} of this uid not recorded before");
    let Some(head) = detail.strip_suffix(&suffix) else {
        return 0;
    };
    let n = head.rsplit_once("; ").map_or(head, |(_, n)| n);
    n.parse().unwrap_or(0)
}

/// The uid's entries, and how many of its refused requests they record one by one and how
/// many they count as left out.
async fn refused_accounted(c: &Connection) -> (Vec<AuditEntry>, u64, u64) {
    let entries = audit_of(c, OTHER_UID).await;
    let recorded = entries
        .iter()
        .filter(|e| e.action == "rename_session")
        .count() as u64;
    let counted = entries
        .iter()
        .map(|e| left_out_in(e, "refused requests"))
        .sum();
    (entries, recorded, counted)
}

/// A uid sends refused requests in a burst and goes quiet: the first is recorded, the rest
/// are left out, and only the uid's next entry counted them, so a burst followed by silence
/// went uncounted (noticed in the closing review of the fourth session). Once the uid has been
/// quiet for a period, their count is an entry of its own (action `left_out`).
#[tokio::test]
async fn a_burst_of_refused_requests_is_counted_though_the_uid_goes_quiet() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    const N: u64 = 50;
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let hostile = Hostile::spawn(&env, &format!("audit:{N}:8"));
    hostile.wait_for(&format!("done {N}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (entries, recorded, counted) = refused_accounted(&c).await;
        if recorded + counted == N {
            let left = entries
                .iter()
                .find(|e| e.action == "left_out")
                .expect("an entry of the count");
            assert_eq!(left.result, "ok");
            assert!(left.pid.is_some(), "it names the sender: {left:?}");
            println!("{recorded} refused requests recorded, {counted} counted: {entries:?}");
            break;
        }
        assert!(
            Instant::now() < deadline && recorded + counted < N,
            "{recorded} recorded and {counted} counted of {N} refused requests: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The same burst, and the daemon stopped before the uid's quiet period is over: the count
/// is written at shutdown, while the vault can still seal it.
#[tokio::test]
async fn a_burst_of_refused_requests_just_before_a_shutdown_is_counted() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    const N: u64 = 20;
    let env = Env::new();
    let (d, c) = env.start_initialized(&[]).await;
    let hostile = Hostile::spawn(&env, &format!("audit:{N}:8"));
    hostile.wait_for(&format!("done {N}"));
    drop(c);
    assert!(d.terminate().success(), "a clean shutdown");
    let _d = env.start();
    let c = env.connect().await;
    c.call(unlock_request(PASS)).await.expect("unlock");
    let (entries, recorded, counted) = refused_accounted(&c).await;
    assert_eq!(recorded + counted, N, "{entries:?}");
}
