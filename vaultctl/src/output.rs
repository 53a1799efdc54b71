//! Output helpers of `vaultctl`: UTC ISO-8601 dates from unix seconds, human durations,
//! aligned tables, JSON, and escaping of control characters in names shown on a terminal.
//!
//! Pure functions over strings and `Write`, so that they are unit-tested here and the output
//! is deterministic (no locale, no local time zone, no colours).

use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Howard Hinnant's `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>),
/// exact for every `i64` day count that does not overflow the era arithmetic.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Unix seconds as UTC ISO-8601, e.g. `2024-05-01T12:34:56Z`.
pub(crate) fn format_utc(unix_secs: i64) -> String {
    // Clamp to ±10^13 s (about ±317,000 years) so the day arithmetic cannot overflow.
    let secs = unix_secs.clamp(-10_000_000_000_000, 10_000_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3_600,
        sod % 3_600 / 60,
        sod % 60
    )
}

/// An uptime such as `3d 4h 5m 6s`, leading zero units left out (`0s` for zero).
pub(crate) fn format_uptime(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    let mut out = String::new();
    for (value, unit) in [(d, "d"), (h, "h"), (m, "m")] {
        if value > 0 || !out.is_empty() {
            // Writing to a String cannot fail.
            let _ = write!(out, "{value}{unit} ");
        }
    }
    let _ = write!(out, "{s}s");
    out
}

/// A delay for a person: `250 ms`, `2.5 s`, `1 min 5 s`, `2 h 1 min`.
///
/// Above one second the value is rounded up, so that waiting the printed time is enough.
pub(crate) fn format_delay_ms(ms: u64) -> String {
    if ms < 1_000 {
        return format!("{ms} ms");
    }
    if ms < 60_000 {
        let tenths = ms.div_ceil(100);
        return if tenths % 10 == 0 {
            format!("{} s", tenths / 10)
        } else {
            format!("{}.{} s", tenths / 10, tenths % 10)
        };
    }
    let secs = ms.div_ceil(1_000);
    if secs < 3_600 {
        match secs % 60 {
            0 => format!("{} min", secs / 60),
            s => format!("{} min {s} s", secs / 60),
        }
    } else {
        let mins = secs.div_ceil(60);
        match mins % 60 {
            0 => format!("{} h", mins / 60),
            m => format!("{} h {m} min", mins / 60),
        }
    }
}

/// `text` with control characters escaped (`\n`, `\u{1b}`, …), so that a session name or a
/// daemon message cannot move the cursor or recolour an administrator's terminal.
pub(crate) fn sanitize(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// How a table column is aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    /// Text columns.
    Left,
    /// Number columns.
    Right,
}

/// Writes `rows` under `header` as space-separated columns padded to their widest cell;
/// the last column is not padded, so that no line ends in spaces.
pub(crate) fn write_table(
    out: &mut dyn Write,
    header: &[(&str, Align)],
    rows: &[Vec<String>],
) -> io::Result<()> {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = header.iter().map(|(h, _)| width(h)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let mut text = String::new();
        let last = header.len().saturating_sub(1);
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let pad = widths[i].saturating_sub(width(cell));
            match header[i].1 {
                Align::Right => {
                    text.extend(std::iter::repeat_n(' ', pad));
                    text.push_str(cell);
                }
                Align::Left => {
                    text.push_str(cell);
                    if i < last {
                        text.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
        }
        writeln!(out, "{text}")
    };
    line(&mut header.iter().map(|(h, _)| *h))?;
    for row in rows {
        line(&mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

/// Writes `value` as pretty-printed JSON and a newline.
pub(crate) fn write_json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::other)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_iso8601() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(format_utc(1_709_251_200), "2024-03-01T00:00:00Z");
        assert_eq!(format_utc(4_102_444_800), "2100-01-01T00:00:00Z");
        assert_eq!(format_utc(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_utc(-86_400 * 365), "1969-01-01T00:00:00Z");
        // Extremes do not panic.
        let _ = format_utc(i64::MAX);
        let _ = format_utc(i64::MIN);
    }

    #[test]
    fn civil_from_days_round_trips_every_day_of_four_centuries() {
        // Walk day by day from 1600-03-01 and check the calendar advances as it should.
        let start = -135_080; // 1600-03-01
        let mut prev = civil_from_days(start - 1);
        assert_eq!(prev, (1600, 2, 29));
        for day in start..start + 146_097 {
            let cur = civil_from_days(day);
            let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_len = |y: i64, m: u32| match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let expected = if prev.2 < month_len(prev.0, prev.1) {
                (prev.0, prev.1, prev.2 + 1)
            } else if prev.1 < 12 {
                (prev.0, prev.1 + 1, 1)
            } else {
                (prev.0 + 1, 1, 1)
            };
            assert_eq!(cur, expected, "day {day}");
            prev = cur;
        }
    }

    #[test]
    fn uptimes() {
        assert_eq!(format_uptime(0), "0s");
        assert_eq!(format_uptime(59), "59s");
        assert_eq!(format_uptime(60), "1m 0s");
        assert_eq!(format_uptime(3_600), "1h 0m 0s");
        assert_eq!(format_uptime(90_061), "1d 1h 1m 1s");
    }

    #[test]
    fn delays() {
        assert_eq!(format_delay_ms(0), "0 ms");
        assert_eq!(format_delay_ms(250), "250 ms");
        assert_eq!(format_delay_ms(1_000), "1 s");
        assert_eq!(format_delay_ms(2_500), "2.5 s");
        assert_eq!(format_delay_ms(2_501), "2.6 s");
        assert_eq!(format_delay_ms(59_999), "60 s");
        assert_eq!(format_delay_ms(60_000), "1 min");
        assert_eq!(format_delay_ms(65_000), "1 min 5 s");
        assert_eq!(format_delay_ms(3_600_000), "1 h");
        assert_eq!(format_delay_ms(3_660_000), "1 h 1 min");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(sanitize("plain name"), "plain name");
        assert_eq!(sanitize("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
    }

    #[test]
    fn tables_are_aligned_without_trailing_spaces() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            &[
                ("NAME", Align::Left),
                ("PEERS", Align::Right),
                ("NOTE", Align::Left),
            ],
            &[
                vec!["a".into(), "1234567".into(), "x".into()],
                vec!["longer-name".into(), "2".into(), "-".into()],
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME           PEERS  NOTE\n\
             a            1234567  x\n\
             longer-name        2  -\n"
        );
    }
}
