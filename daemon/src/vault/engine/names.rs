//! Session names: [`validate_name`] and which characters a name may hold, and the name-index
//! queries the daemon's authorization needs (per-uid namespaces, their quota, a lookup of
//! comparable cost for names that exist and names that do not).
//!
//! A name is shown to administrators (`vaultctl list`, logs) and typed by them, so it must not
//! be able to look like another name. [`check_characters`] refuses every code point that is
//! invisible, reorders text or is otherwise not plain text, by the Unicode Character Database
//! as ICU4X ships it (`icu_properties`, compiled data): general categories Cc, Cf, Zl, Zp, Co,
//! Cs and Cn (unassigned and noncharacters), `White_Space` other than U+0020, and
//! `Default_Ignorable_Code_Point` (U+034F, U+115F, U+1160, U+3164, U+FFA0, variation
//! selectors, tags, …). Look-alike letters of other scripts (Cyrillic `у` for Latin `y`) are
//! legitimate in names; `vaultctl list` shows every name outside printable ASCII escaped.

use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory, WhiteSpace};
use icu_properties::{CodePointMapData, CodePointSetData};
use session_vault_proto::model::SessionAcl;

use super::{Engine, SessionId, SessionRecord};
use crate::vault::Vault;
use crate::vault::crypto::{PAD_FIXED, RecordPlace};
use crate::vault::error::{EngineError, Result};
use crate::vault::store::Store;

/// Names starting with this are never stored: `open_session` expands them to the caller's
/// namespace (`<uid>/`).
pub const HOME_PREFIX: &str = "~/";

/// Why `c` may not be part of a session name, or `None` if it may.
fn refusal(c: char) -> Option<&'static str> {
    if c == ' ' {
        return None;
    }
    let gc = CodePointMapData::<GeneralCategory>::new().get(c);
    let by_category = match gc {
        GeneralCategory::Control => Some("a control character"),
        GeneralCategory::Format => Some("an invisible format character (it may reorder text)"),
        GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
            Some("a line or paragraph separator")
        }
        GeneralCategory::PrivateUse => Some("a private-use character"),
        GeneralCategory::Surrogate => Some("a surrogate"),
        GeneralCategory::Unassigned => Some("unassigned in Unicode, or a noncharacter"),
        _ => None,
    };
    by_category.or_else(|| {
        if CodePointSetData::new::<WhiteSpace>().contains(c) {
            Some("white space other than the plain space U+0020")
        } else if CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c) {
            Some("invisible (a default-ignorable code point)")
        } else {
            None
        }
    })
}

/// Refuses names holding characters that are invisible, reorder text or are not plain text
/// (see the module docs). The message names the first such code point as `U+XXXX` and never
/// repeats the name, whose invisible characters would travel on into terminals and logs.
pub fn check_characters(name: &str) -> Result<()> {
    for (i, c) in name.chars().enumerate() {
        if let Some(why) = refusal(c) {
            return Err(EngineError::Invalid(format!(
                "a session name may not contain U+{:04X} (character {} of the name): it is {why}",
                c as u32,
                i + 1
            )));
        }
    }
    Ok(())
}

/// Checks a session name: 1..=128 characters; none invisible, reordering or otherwise not
/// plain text ([`check_characters`]); no leading or trailing space; not starting with
/// `~/`, which `open_session` expands to the caller's namespace.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > 128 {
        return Err(EngineError::Invalid(
            "a session name must be 1 to 128 characters long".into(),
        ));
    }
    check_characters(name)?;
    if name.trim_matches(' ') != name {
        return Err(EngineError::Invalid(
            "a session name may not start or end with a space".into(),
        ));
    }
    if name.starts_with(HOME_PREFIX) {
        return Err(EngineError::Invalid(format!(
            "a session name may not start with {:?}: open_session expands it to the caller's \
             namespace (\"<uid>/\")",
            HOME_PREFIX
        )));
    }
    Ok(())
}

/// The namespace of a non-admin uid: the names it may create start with this.
pub fn namespace(uid: u32) -> String {
    format!("{uid}/")
}

/// `name` with a leading [`HOME_PREFIX`] replaced by `uid`'s [`namespace`].
pub fn expand_home(name: &str, uid: u32) -> String {
    match name.strip_prefix(HOME_PREFIX) {
        Some(rest) => format!("{}{rest}", namespace(uid)),
        None => name.to_owned(),
    }
}

/// A namespace held its quota of sessions already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaFull {
    /// Sessions in the namespace now.
    pub count: usize,
}

/// Plaintext of the decoy record opened for a missing name: about a session record's size.
const DECOY_PLAINTEXT: [u8; 96] = [0; 96];

impl<S: Store> Engine<S> {
    /// Resolves `name` and opens its record, for an authorization decision.
    ///
    /// For a name that does not exist it does the same work on another session's record
    /// (read, opened and decoded, then dropped), so that the time of an answer does not tell
    /// a caller which names exist before it is told it may not use them (a decoy record
    /// sealed and opened instead, as before, was measurably faster: about 3 µs in 120 µs).
    /// Only a vault with no session at all falls back to that decoy.
    pub fn lookup_for_open(&mut self, name: &str) -> Result<Option<(SessionId, SessionRecord)>> {
        let u = self.unlocked()?;
        let found = u.by_name.get(name).copied();
        let stand_in = u.by_name.values().next().copied();
        match (found, stand_in) {
            (Some(sid), _) => Ok(Some((sid, self.session_record(sid)?))),
            (None, Some(other)) => {
                let _ = self.session_record(other);
                Ok(None)
            }
            (None, None) => {
                // Row ids start at 1: id 0 never exists.
                let _ = self.store.session(0)?;
                let row = Self::session_row_key(name);
                let place = RecordPlace {
                    table: "sessions",
                    session_id: 0,
                    row: &row,
                };
                let u = self.unlocked()?;
                // Sealed as a session record is (same generation, same padded size).
                let sealed =
                    u.keys
                        .seal(&place, u.manifest.generation, &DECOY_PLAINTEXT, PAD_FIXED)?;
                let _ = u.keys.open(&place, &sealed)?;
                Ok(None)
            }
        }
    }

    /// How many sessions have a name starting with `prefix` (from the name index).
    pub fn count_with_prefix(&self, prefix: &str) -> Result<usize> {
        Ok(self
            .unlocked()?
            .by_name
            .keys()
            .filter(|n| n.starts_with(prefix))
            .count())
    }

    /// Creates session `name` (see [`Engine::create_session`]) unless `quota` names a prefix
    /// that `limit` sessions start with already. Counting and creating happen in one step of
    /// the storage thread, so concurrent creations cannot overshoot the quota. Durable.
    pub fn create_session_within(
        &mut self,
        name: &str,
        acl: SessionAcl,
        quota: Option<(&str, usize)>,
    ) -> Result<std::result::Result<SessionId, QuotaFull>> {
        if let Some((prefix, limit)) = quota {
            let count = self.count_with_prefix(prefix)?;
            if count >= limit {
                return Ok(Err(QuotaFull { count }));
            }
        }
        self.create_session(name, acl).map(Ok)
    }
}

impl Vault {
    /// [`Engine::lookup_for_open`]: the session named `name` and its record, or `None`.
    pub async fn lookup_for_open(&self, name: &str) -> Result<Option<(SessionId, SessionRecord)>> {
        let name = name.to_owned();
        self.read(move |e| e.lookup_for_open(&name)).await
    }

    /// [`Engine::count_with_prefix`].
    pub async fn count_with_prefix(&self, prefix: &str) -> Result<usize> {
        let prefix = prefix.to_owned();
        self.read(move |e| e.count_with_prefix(&prefix)).await
    }

    /// [`Engine::create_session_within`]: creates `name` unless the quota `(prefix, limit)`
    /// is full. Durable.
    pub async fn create_session_within(
        &self,
        name: &str,
        acl: SessionAcl,
        quota: Option<(String, usize)>,
    ) -> Result<std::result::Result<SessionId, QuotaFull>> {
        let name = name.to_owned();
        self.call_retrying(move |e| {
            let quota = quota.as_ref().map(|(p, l)| (p.as_str(), *l));
            e.create_session_within(&name, acl.clone(), quota)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(name: &str) -> String {
        match check_characters(name) {
            Err(EngineError::Invalid(m)) => m,
            other => panic!("{name:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn plain_names_of_any_script_pass() {
        for name in [
            "mybot",
            "my bot",
            "бот",
            "ボット",
            "bot-1.2_x",
            "100/bot",
            "émoji🦀",
        ] {
            check_characters(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
    }

    #[test]
    fn invisible_reordering_and_odd_characters_are_refused_by_code_point() {
        for (c, what) in [
            ('\u{202E}', "format"),
            ('\u{200B}', "format"),
            ('\u{200D}', "format"),
            ('\u{2066}', "format"),
            ('\u{FEFF}', "format"),
            ('\u{E0041}', "format"),
            ('\u{034F}', "default-ignorable"),
            ('\u{115F}', "default-ignorable"),
            ('\u{1160}', "default-ignorable"),
            ('\u{3164}', "default-ignorable"),
            ('\u{FFA0}', "default-ignorable"),
            ('\u{FE0F}', "default-ignorable"),
            ('\u{E0100}', "default-ignorable"),
            ('\u{180B}', "default-ignorable"),
            ('\u{2028}', "separator"),
            ('\u{2029}', "separator"),
            ('\u{E000}', "private-use"),
            ('\u{FFFF}', "noncharacter"),
            ('\u{00A0}', "white space"),
            ('\u{3000}', "white space"),
            ('\t', "control"),
            ('\u{85}', "control"),
            ('\u{1B}', "control"),
        ] {
            let m = refused(&format!("ab{c}cd"));
            let code = format!("U+{:04X}", c as u32);
            assert!(m.contains(&code), "{what} {code}: {m}");
            assert!(m.contains("character 3"), "{code}: {m}");
            assert!(!m.contains(c), "the message must not carry {code} raw: {m}");
        }
    }

    #[test]
    fn names_are_checked_for_length_spaces_and_the_home_prefix() {
        for ok in ["a", "1000/bot", "my bot", &"x".repeat(128)] {
            validate_name(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in ["", " bot", "bot ", "~/bot", &"x".repeat(129), "a\u{202E}b"] {
            assert!(
                matches!(validate_name(bad), Err(EngineError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn home_prefix_expands_to_the_namespace() {
        assert_eq!(expand_home("~/bot", 1000), "1000/bot");
        assert_eq!(expand_home("~bot", 1000), "~bot");
        assert_eq!(expand_home("bot/~/x", 1000), "bot/~/x");
        assert_eq!(namespace(0), "0/");
    }
}
