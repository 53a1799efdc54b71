//! Windows security identifiers (SIDs) as the numeric ids the daemon's ACLs, leases and admin
//! checks use, so that one vault format and one protocol serve Unix and Windows alike.
//!
//! The mapping is Cygwin's, simplified (`S-1-5-…` are NT authority SIDs):
//!
//! | SID                                   | id               | e.g.                        |
//! |---------------------------------------|------------------|-----------------------------|
//! | `S-1-5-21-A-B-C-RID` (an account)     | `0x30000 + RID`  | a local or domain user/group |
//! | `S-1-5-32-X` (a builtin group)        | `X`              | Administrators → 544        |
//! | `S-1-5-X` (a well-known principal)    | `X`              | SYSTEM (`S-1-5-18`) → 18    |
//!
//! Anything else (other authorities, other shapes) has no id: the daemon refuses a client
//! whose user SID has none and ignores such groups. An account's id keeps only its RID, as
//! Cygwin does for the machine's own domain: accounts of two domains with the same RID share
//! an id, so a host whose clients come from several domains must not rely on RIDs alone
//! (grant by the SID the daemon reports in its audit log and check it there).
//!
//! Pure parsing, no Win32: it builds and is tested on every platform.

/// Where account SIDs (`S-1-5-21-…-RID`) start in the id space (Cygwin's offset).
pub const ACCOUNT_BASE: u32 = 0x30000;

/// The id of the SID written as `sid` (`S-1-…`), or `None` where it has none (see the module
/// docs) or it is not a SID.
pub fn id_of(sid: &str) -> Option<u32> {
    let rest = sid
        .strip_prefix("S-1-")
        .or_else(|| sid.strip_prefix("s-1-"))?;
    let parts: Vec<u64> = rest
        .split('-')
        .map(|p| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    let (&authority, subs) = parts.split_first()?;
    if authority != 5 {
        return None;
    }
    let small = |x: u64| u32::try_from(x).ok().filter(|&x| x < ACCOUNT_BASE);
    match subs {
        [x] => small(*x),
        [32, x] => small(*x),
        [21, _, _, _, rid] => u32::try_from(*rid).ok()?.checked_add(ACCOUNT_BASE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_accounts_builtins_and_well_known_principals() {
        assert_eq!(id_of("S-1-5-18"), Some(18));
        assert_eq!(id_of("S-1-5-32-544"), Some(544));
        assert_eq!(id_of("S-1-5-32-545"), Some(545));
        assert_eq!(
            id_of("S-1-5-21-3623811015-3361044348-30300820-1013"),
            Some(0x30000 + 1013)
        );
        assert_eq!(
            id_of("S-1-5-21-1-2-3-500"),
            Some(0x30000 + 500),
            "the builtin Administrator account"
        );
    }

    #[test]
    fn refuses_what_it_cannot_map() {
        for bad in [
            "",
            "S-1-5",
            "S-1-1-0",                    // Everyone: another authority
            "S-1-5-21-1-2-3",             // a domain, not an account
            "S-1-5-21-1-2-3-4-5",         // too long
            "S-1-5-32-544-1",             // too long
            "S-1-5-x",                    // not a number
            "S-1-5--18",                  // empty part
            "S-1-5-+18",                  // sign
            "S-1-5-196608",               // would collide with accounts
            "S-1-5-21-1-2-3-99999999999", // RID overflows
            "X-1-5-18",
        ] {
            assert_eq!(id_of(bad), None, "{bad:?}");
        }
    }
}
