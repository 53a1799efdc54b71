//! Passphrase strength: zxcvbn's estimate of the guesses an attacker needs, a floor below
//! which `init`, `passwd` and `rekey` refuse a passphrase unless `--weak-passphrase` is
//! given, and the reason in plain words.
//!
//! The floor is zxcvbn's score 3 ("more than 10^8 guesses"). Each guess against a stolen
//! `vault.db` costs one Argon2id evaluation at the keyslot's cost (default m = 64 MiB, t = 3:
//! about 0.1 s of one core here), so 10^8 guesses are on the order of 100 core-days;
//! zxcvbn's estimate is conservative (it models a cracker that knows the common passwords,
//! words, names, keyboard patterns, dates and l33t substitutions it lists). A long passphrase
//! of a few uncommon words passes easily.
//!
//! zxcvbn copies pieces of the passphrase into its own (unwiped) result; this runs in the
//! short-lived `vaultctl` process, before anything is sent, and the copy made here for
//! non-UTF-8 input is wiped.

use session_vault_proto::message::Passphrase;
use zeroize::Zeroizing;
use zxcvbn::Score;
use zxcvbn::feedback::Warning;

use super::CtlError;

/// The lowest accepted zxcvbn score.
pub const FLOOR: Score = Score::Three;

/// Words an attacker would try first for this tool's vault.
const CONTEXT_WORDS: &[&str] = &[
    "session",
    "vault",
    "sessionvault",
    "session-vault",
    "vaultctl",
    "vaultd",
    "telegram",
    "telethon",
    "pyrogram",
    "grammers",
];

/// zxcvbn's estimate for one passphrase.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Characters (Unicode scalar values) in the passphrase.
    pub chars: usize,
    /// zxcvbn's score, 0 to 4.
    pub score: u8,
    /// log10 of the estimated guesses.
    pub guesses_log10: f64,
    /// zxcvbn's warning, if any ("This is a top-100 common password.").
    pub warning: Option<Warning>,
    /// zxcvbn's suggestions, joined.
    pub suggestions: String,
}

impl Estimate {
    /// Estimates `passphrase` (bytes that are not UTF-8 are read as U+FFFD).
    pub fn of(passphrase: &Passphrase) -> Estimate {
        let text = Zeroizing::new(String::from_utf8_lossy(passphrase.expose()).into_owned());
        let entropy = zxcvbn::zxcvbn(&text, CONTEXT_WORDS);
        let feedback = entropy.feedback();
        Estimate {
            chars: text.chars().count(),
            score: u8::from(entropy.score()),
            guesses_log10: entropy.guesses_log10(),
            warning: feedback.and_then(|f| f.warning()),
            suggestions: feedback
                .map(|f| {
                    f.suggestions()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default(),
        }
    }

    /// Whether the estimate reaches [`FLOOR`].
    pub fn passes(&self) -> bool {
        self.score >= u8::from(FLOOR)
    }

    /// "5 characters, found in common-password lists; estimated guesses 10^2.1 (zxcvbn
    /// score 0 of 4)".
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} character{}",
            self.chars,
            if self.chars == 1 { "" } else { "s" }
        );
        if let Some(w) = self.warning {
            s.push_str(", ");
            s.push_str(&reason(w));
        }
        s.push_str(&format!(
            "; estimated guesses 10^{:.1} (zxcvbn score {} of 4)",
            self.guesses_log10, self.score
        ));
        s
    }
}

/// zxcvbn's warning as a reason clause.
fn reason(w: Warning) -> String {
    match w {
        Warning::ThisIsATop10Password
        | Warning::ThisIsATop100Password
        | Warning::ThisIsACommonPassword => "found in common-password lists".into(),
        Warning::ThisIsSimilarToACommonlyUsedPassword => {
            "close to a password in common-password lists".into()
        }
        other => {
            // zxcvbn's own sentence, as a clause: "Dates are often easy to guess."
            let text = other.to_string();
            let text = text.trim_end_matches('.');
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => String::new(),
            }
        }
    }
}

/// `--weak-passphrase`, shared by `init`, `passwd` and `rekey`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct StrengthArgs {
    /// Accept a passphrase below the strength floor (zxcvbn score 3, over 10^8 guesses)
    #[arg(long)]
    pub weak_passphrase: bool,
}

impl StrengthArgs {
    /// [`check`] with this flag; the warning for an accepted weak passphrase goes to stderr.
    pub fn check(self, passphrase: &Passphrase, what: &str) -> Result<(), CtlError> {
        if let Some(warning) = check(passphrase, what, self.weak_passphrase)? {
            eprintln!("{warning}");
        }
        Ok(())
    }
}

/// Checks a passphrase that is about to protect the vault. `what` names it in the message
/// ("new passphrase"). Below [`FLOOR`]: an error, or with `weak_ok` a warning line for
/// stderr. At or above: `Ok(None)`.
pub fn check(
    passphrase: &Passphrase,
    what: &str,
    weak_ok: bool,
) -> Result<Option<String>, CtlError> {
    let estimate = Estimate::of(passphrase);
    if estimate.passes() {
        return Ok(None);
    }
    let description = estimate.describe();
    if weak_ok {
        return Ok(Some(format!(
            "vaultctl: warning: the {what} is weak ({description}); accepted because of --weak-passphrase"
        )));
    }
    let mut hint = format!(
        "a passphrase needs zxcvbn score {} or more (over 10^8 estimated guesses). ",
        u8::from(FLOOR)
    );
    if !estimate.suggestions.is_empty() {
        hint.push_str(&estimate.suggestions);
        hint.push(' ');
    }
    hint.push_str("To use this one anyway, add --weak-passphrase.");
    Err(CtlError::usage_with_hint(
        format!("the {what} is too weak: {description}"),
        hint,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Passphrase {
        Passphrase::new(s.as_bytes().to_vec())
    }

    #[test]
    fn common_passwords_are_refused_with_the_reason() {
        for weak in [
            "Password1!",
            "12345678",
            "qwertyuiop",
            "sessionvault1",
            "iloveyou1",
        ] {
            let err = check(&p(weak), "new passphrase", false).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with("the new passphrase is too weak: "),
                "{text}"
            );
            assert!(text.contains("characters"), "{text}");
            assert!(text.contains("estimated guesses 10^"), "{text}");
            assert!(
                !text.contains(weak),
                "the passphrase itself is printed: {text}"
            );
            let CtlError::Usage {
                hint: Some(hint), ..
            } = err
            else {
                panic!("not a usage error with a hint")
            };
            assert!(hint.contains("--weak-passphrase"), "{hint}");
        }
        let text = check(&p("password"), "passphrase", false)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("8 characters, found in common-password lists"),
            "{text}"
        );
    }

    #[test]
    fn weak_is_accepted_with_the_flag_and_a_warning() {
        let warning = check(&p("password1"), "passphrase", true).unwrap().unwrap();
        assert!(warning.contains("weak"), "{warning}");
        assert!(warning.contains("--weak-passphrase"), "{warning}");
        assert!(!warning.contains("password1"), "{warning}");
    }

    #[test]
    fn long_uncommon_passphrases_pass() {
        for strong in [
            "correct horse battery staple",
            "plover quarry tundra vellum 17",
            "Zq7!vR2#kLp9@wX4",
        ] {
            assert_eq!(
                check(&p(strong), "passphrase", false).unwrap(),
                None,
                "{strong}"
            );
        }
    }

    #[test]
    fn non_utf8_bytes_are_estimated_not_rejected_outright() {
        let bytes = Passphrase::new(b"\xff\xfe plover quarry tundra vellum".to_vec());
        assert!(Estimate::of(&bytes).passes());
        assert!(!Estimate::of(&Passphrase::new(vec![0xff; 8])).passes());
    }
}
