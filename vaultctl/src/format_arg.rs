//! `--format` of `import` and `export`, and the format tables of their `--help`: all built
//! from [`Format::ALL`] and what each [`Format`] says of itself (its name, what it reads,
//! whether and what it writes), so that a format added to `session-vault-formats` is
//! accepted, listed and completed here with no list to edit.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use session_vault_formats::Format;

/// The `--format` of `import` that asks for detection from the content.
const AUTO: &str = "auto";

/// What `import --format` gives: a format, or `None` for `auto`.
///
/// A type alias (not a bare `Option<Format>` field) so that clap does not take the option
/// for one that may be left out: it always has a value, `auto` by default.
pub(crate) type FormatOrAuto = Option<Format>;

/// `import --format`: `auto` or any format, by its name.
pub(crate) fn import_parser() -> impl TypedValueParser<Value = FormatOrAuto> {
    let values = std::iter::once(PossibleValue::new(AUTO).help("Detect from the content"))
        .chain(Format::ALL.into_iter().map(possible_value));
    PossibleValuesParser::new(values).map(|name| {
        (name != AUTO).then(|| Format::from_name(&name).expect("clap admits only these names"))
    })
}

/// `export --format`: a format that can be written ([`Format::can_write`]), by its name.
pub(crate) fn export_parser() -> impl TypedValueParser<Value = Format> {
    let values = writable().map(possible_value);
    PossibleValuesParser::new(values)
        .map(|name| Format::from_name(&name).expect("clap admits only these names"))
}

fn possible_value(format: Format) -> PossibleValue {
    PossibleValue::new(format.name()).help(format.describe())
}

fn writable() -> impl Iterator<Item = Format> {
    Format::ALL.into_iter().filter(|f| f.can_write())
}

/// The lines of `import --help` that list the formats read, one a line.
pub(crate) fn import_table() -> String {
    table(Format::ALL.into_iter().map(|f| (f, f.reads().to_owned())))
}

/// The lines of `export --help` that list the formats written, one a line.
pub(crate) fn export_table() -> String {
    table(writable().map(|f| {
        let what = f.writes().expect("writable() yields written formats");
        let text = if f.is_string() {
            what.to_owned()
        } else {
            format!("{what} (needs --output)")
        };
        (f, text)
    }))
}

fn table(rows: impl Iterator<Item = (Format, String)>) -> String {
    rows.map(|(f, text)| format!("  {:<18}{text}\n", f.name()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<P: TypedValueParser>(parser: P, value: &str) -> Result<P::Value, clap::Error> {
        let cmd = clap::Command::new("t");
        parser.parse_ref(&cmd, None, std::ffi::OsStr::new(value))
    }

    #[test]
    fn import_accepts_auto_and_every_name() {
        assert_eq!(parse(import_parser(), "auto").unwrap(), None);
        for f in Format::ALL {
            assert_eq!(parse(import_parser(), f.name()).unwrap(), Some(f));
        }
        assert!(parse(import_parser(), "telethon").is_err());
    }

    #[test]
    fn export_accepts_exactly_the_written_formats() {
        for f in Format::ALL {
            assert_eq!(
                parse(export_parser(), f.name()).ok(),
                f.can_write().then_some(f)
            );
        }
        assert!(parse(export_parser(), "auto").is_err());
        // The four formats written today, by the names scripts use.
        for name in [
            "telethon-string",
            "pyrogram-string",
            "telethon-sqlite",
            "grammers-sqlite",
        ] {
            assert!(parse(export_parser(), name).is_ok(), "{name}");
        }
        for name in ["pyrogram-sqlite", "grammers-tl"] {
            assert!(parse(export_parser(), name).is_err(), "{name}");
        }
    }

    #[test]
    fn tables_list_every_format_once() {
        let import = import_table();
        assert_eq!(import.lines().count(), Format::ALL.len());
        assert!(import.contains(
            "  telethon-sqlite   Telethon SQLiteSession file, schema v1 to v8 (Telethon 0.16 to \
             1.45)\n"
        ));
        let export = export_table();
        assert_eq!(export.lines().count(), writable().count());
        assert!(export.contains(
            "  grammers-sqlite   grammers SqliteSession file, user_version 1 (needs --output)\n"
        ));
        assert!(export.contains("  telethon-string   Telethon StringSession (home DC"));
        assert!(!export.contains("grammers-tl"));
    }
}
