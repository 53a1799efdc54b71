//! Where `vaultctl` gets secrets and confirmations from.
//!
//! A passphrase comes from exactly one of: a no-echo prompt on the terminal (`rpassword`,
//! only when standard input is a terminal), the first line of a file (`--passphrase-file`),
//! or the first line of an inherited file descriptor (`--passphrase-fd`). Never from a
//! command-line argument (visible in `ps`) or an environment variable (visible in
//! `/proc/PID/environ` and inherited by children). Without a terminal and without a file or
//! fd, the command fails with a usage error rather than hang or guess.
//!
//! "First line" means the bytes up to the first `\n` (a `\r` before it is dropped too), or up
//! to the end of the input when there is no newline; at most [`MAX_PASSPHRASE_BYTES`]. An fd
//! is read one byte at a time through a duplicate, so nothing past that line is consumed:
//! `--passphrase-fd 3 --new-passphrase-fd 3` reads the first and the second line of fd 3.
//!
//! Passphrases live in `Zeroizing` buffers, then in the proto [`Passphrase`] (zeroized on
//! drop, redacted in `Debug`); buffers are allocated at full size up front so that growing
//! them never leaves a copy behind.

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};

use session_vault_proto::message::Passphrase;
use zeroize::{Zeroize, Zeroizing};

use super::error::CtlError;

/// Longest passphrase accepted from a file or an fd, in bytes.
pub(crate) const MAX_PASSPHRASE_BYTES: usize = 4096;

/// Where the passphrase of `init` and `unlock` comes from.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Passphrase input")]
pub struct PassphraseArgs {
    /// Read the passphrase from the first line of FILE (line ending removed)
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "passphrase_fd",
        value_hint = clap::ValueHint::FilePath
    )]
    pub passphrase_file: Option<PathBuf>,
    /// Read the passphrase from the first line of the inherited file descriptor N
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
    pub passphrase_fd: Option<i32>,
}

impl PassphraseArgs {
    /// The source these flags name.
    pub(crate) fn source(&self) -> Source {
        Source::from_flags(self.passphrase_file.clone(), self.passphrase_fd)
    }
}

/// Where one passphrase comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A no-echo prompt on the terminal.
    Prompt,
    /// The first line of a file.
    File(PathBuf),
    /// The first line of an inherited file descriptor.
    Fd(i32),
}

impl Source {
    /// The source of a `--…-file` / `--…-fd` flag pair (clap makes them exclusive).
    pub(crate) fn from_flags(file: Option<PathBuf>, fd: Option<i32>) -> Source {
        match (file, fd) {
            (Some(path), _) => Source::File(path),
            (None, Some(fd)) => Source::Fd(fd),
            (None, None) => Source::Prompt,
        }
    }
}

/// Which passphrase is asked for: names used in prompts and messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Which {
    /// `passphrase`, `current passphrase`, `new passphrase`.
    pub name: &'static str,
    /// The flag that names a file for it.
    pub file_flag: &'static str,
    /// The flag that names an fd for it.
    pub fd_flag: &'static str,
}

/// The passphrase of `init` and `unlock`.
pub(crate) const PASSPHRASE: Which = Which {
    name: "passphrase",
    file_flag: "--passphrase-file",
    fd_flag: "--passphrase-fd",
};

/// The current passphrase of `passwd`.
pub(crate) const CURRENT_PASSPHRASE: Which = Which {
    name: "current passphrase",
    file_flag: "--passphrase-file",
    fd_flag: "--passphrase-fd",
};

/// The new passphrase of `passwd`.
pub(crate) const NEW_PASSPHRASE: Which = Which {
    name: "new passphrase",
    file_flag: "--new-passphrase-file",
    fd_flag: "--new-passphrase-fd",
};

/// Reads a passphrase from the terminal without echo; the argument is the prompt.
pub(crate) type TtyPrompt<'a> = &'a mut dyn FnMut(&str) -> io::Result<Zeroizing<String>>;

/// The real terminal prompt.
///
/// `rpassword` reads `/dev/tty` with echo off and restores the terminal on every exit path
/// (Ctrl-C included).
pub(crate) fn terminal_prompt(prompt: &str) -> io::Result<Zeroizing<String>> {
    rpassword::prompt_password(prompt).map(Zeroizing::new)
}

/// Whether standard input is a terminal, i.e. whether prompting is allowed.
pub(crate) fn stdin_is_terminal() -> bool {
    use std::io::IsTerminal;
    io::stdin().is_terminal()
}

/// A passphrase read already, or one still to be asked on the terminal.
///
/// Files and fds are read at once (before the runtime starts and before connecting); a prompt
/// waits until the daemon's state says it is worth asking.
pub(crate) enum Pending {
    /// Read from a file or an fd.
    Read(Passphrase),
    /// To be asked on the terminal.
    Prompt {
        /// Which passphrase.
        which: Which,
        /// Ask twice.
        confirm: bool,
    },
}

/// Reads the passphrase from a file or an fd now, or checks that it can be asked later.
///
/// `have_tty` says whether standard input is a terminal; without one, [`Source::Prompt`] is
/// a usage error that says how to pass the passphrase. An empty passphrase is refused.
pub(crate) fn prepare(
    source: &Source,
    which: Which,
    confirm: bool,
    have_tty: bool,
) -> Result<Pending, CtlError> {
    let (line, from) = match source {
        Source::File(path) => {
            let from = format!("file {}", path.display());
            (read_file_line(path), from)
        }
        Source::Fd(fd) => (read_fd_line(*fd), format!("file descriptor {fd}")),
        Source::Prompt if have_tty => return Ok(Pending::Prompt { which, confirm }),
        Source::Prompt => {
            return Err(CtlError::usage_with_hint(
                format!(
                    "no {} given, and standard input is not a terminal to ask for it on",
                    which.name
                ),
                format!(
                    "pass {} FILE (its first line), or {} N (the first line of an inherited \
                     file descriptor, e.g. `{} 0` for standard input); passphrases are never \
                     taken from arguments or the environment",
                    which.file_flag, which.fd_flag, which.fd_flag
                ),
            ));
        }
    };
    let line = line.map_err(|source| CtlError::Input {
        what: which.name,
        from: from.clone(),
        source,
    })?;
    let passphrase = check_text(line, which, &from)?;
    if passphrase.expose().is_empty() {
        return Err(CtlError::usage(format!(
            "the {} read from {from} is empty",
            which.name
        )));
    }
    Ok(Pending::Read(passphrase))
}

impl Pending {
    /// The passphrase, asking `tty` for it if it was not read already.
    pub(crate) fn resolve(self, tty: TtyPrompt<'_>) -> Result<Passphrase, CtlError> {
        match self {
            Pending::Read(passphrase) => Ok(passphrase),
            Pending::Prompt { which, confirm } => prompt_text(tty, which, confirm),
        }
    }

    /// The passphrase, asking the terminal for it if it was not read already.
    pub(crate) fn resolve_on_terminal(self) -> Result<Passphrase, CtlError> {
        self.resolve(&mut terminal_prompt)
    }
}

fn prompt_text(tty: TtyPrompt<'_>, which: Which, confirm: bool) -> Result<Passphrase, CtlError> {
    let input_error = |source| CtlError::Input {
        what: which.name,
        from: "the terminal".into(),
        source,
    };
    let mut first = tty(&format!("{}: ", capitalized(which.name))).map_err(input_error)?;
    if first.is_empty() {
        return Err(CtlError::usage(format!("the {} is empty", which.name)));
    }
    if confirm {
        let second = tty(&format!("Repeat the {}: ", which.name)).map_err(input_error)?;
        if *first != *second {
            return Err(CtlError::usage(format!("the {}s do not match", which.name)));
        }
    }
    // Moves the buffer into the Passphrase: no copy is left behind.
    Ok(Passphrase::new(std::mem::take(&mut *first).into_bytes()))
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Refuses a line that is not UTF-8 (the protocol's passphrases are text as typed) and
/// moves it into a [`Passphrase`].
fn check_text(
    mut line: Zeroizing<Vec<u8>>,
    which: Which,
    from: &str,
) -> Result<Passphrase, CtlError> {
    if std::str::from_utf8(&line).is_err() {
        return Err(CtlError::usage(format!(
            "the {} read from {from} is not valid UTF-8 text",
            which.name
        )));
    }
    Ok(Passphrase::new(std::mem::take(&mut *line)))
}

/// The first line of `reader`: up to the first `\n` (a `\r` before it is dropped), or to the
/// end when there is none. Reads one byte at a time so that nothing past the line is
/// consumed. Fails on a line longer than `limit` bytes.
pub(crate) fn read_first_line(
    reader: &mut dyn Read,
    limit: usize,
) -> io::Result<Zeroizing<Vec<u8>>> {
    // One spare byte for a `\r` that is dropped with the newline.
    let mut line = Zeroizing::new(Vec::with_capacity(limit + 1));
    let mut byte = [0u8; 1];
    let result = loop {
        match reader.read(&mut byte) {
            Ok(0) => break Ok(()),
            Ok(_) if byte[0] == b'\n' => {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                break Ok(());
            }
            Ok(_) if line.len() > limit => {
                break Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the first line is longer than {limit} bytes"),
                ));
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    byte.zeroize();
    result?;
    if line.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the first line is longer than {limit} bytes"),
        ));
    }
    Ok(line)
}

fn read_file_line(path: &Path) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut file = File::open(path)?;
    read_first_line(&mut file, MAX_PASSPHRASE_BYTES)
}

fn read_fd_line(fd: i32) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut file = dup_inherited_fd(fd)?;
    read_first_line(&mut file, MAX_PASSPHRASE_BYTES)
}

/// A duplicate of the inherited descriptor `fd`, as a `File` that closes only the duplicate.
///
/// Must run while the process is single-threaded (before the tokio runtime is built), so that
/// no other thread can close `fd` between the check and the duplication.
#[cfg(unix)]
fn dup_inherited_fd(fd: i32) -> io::Result<File> {
    use std::os::fd::BorrowedFd;
    // SAFETY: F_GETFD only queries the descriptor table; any integer is a valid argument.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (checked just above), is not -1, and stays open while borrowed:
    // the process is single-threaded here and nothing between these lines closes it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(File::from(borrowed.try_clone_to_owned()?))
}

#[cfg(not(unix))]
fn dup_inherited_fd(_fd: i32) -> io::Result<File> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "passing a passphrase by file descriptor is supported on Unix only; use a file",
    ))
}

/// Whether `answer` confirms deleting session `name`: the name itself, or `y`/`yes`.
pub(crate) fn is_confirmation(answer: &str, name: &str) -> bool {
    let line = answer.strip_suffix('\n').unwrap_or(answer);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let word = line.trim();
    let names_it = !name.is_empty() && (line == name || word == name);
    names_it || word.eq_ignore_ascii_case("y") || word.eq_ignore_ascii_case("yes")
}

/// Asks on `prompt_out` whether to delete session `name` and reads the answer from `input`.
pub(crate) fn confirm_deletion(
    name: &str,
    shown_name: &str,
    input: &mut dyn BufRead,
    prompt_out: &mut dyn Write,
) -> io::Result<bool> {
    write!(
        prompt_out,
        "Delete session \"{shown_name}\" and everything in it, auth keys included? \
         This cannot be undone.\nType the session name or \"y\" to confirm [y/N]: "
    )?;
    prompt_out.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    Ok(is_confirmation(&answer, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `prepare` then `resolve`, as a command does; `tty: None` means no terminal.
    fn obtain(
        source: &Source,
        which: Which,
        confirm: bool,
        tty: Option<TtyPrompt<'_>>,
    ) -> Result<Passphrase, CtlError> {
        let pending = prepare(source, which, confirm, tty.is_some())?;
        let mut unused = |_: &str| -> io::Result<Zeroizing<String>> { panic!("no terminal") };
        pending.resolve(tty.unwrap_or(&mut unused))
    }

    fn line(input: &[u8]) -> io::Result<Vec<u8>> {
        read_first_line(&mut &input[..], 16).map(|l| l.to_vec())
    }

    #[test]
    fn first_line_endings() {
        assert_eq!(line(b"secret\n").unwrap(), b"secret");
        assert_eq!(line(b"secret\r\n").unwrap(), b"secret");
        assert_eq!(line(b"secret").unwrap(), b"secret");
        assert_eq!(line(b"secret\nsecond line\n").unwrap(), b"secret");
        assert_eq!(line(b"  spaced  \n").unwrap(), b"  spaced  ");
        // A lone `\r` not followed by `\n` is part of the passphrase.
        assert_eq!(line(b"sec\rret").unwrap(), b"sec\rret");
        assert_eq!(line(b"").unwrap(), b"");
        assert_eq!(line(b"\n").unwrap(), b"");
    }

    #[test]
    fn first_line_limit() {
        assert_eq!(line(&[b'a'; 16]).unwrap().len(), 16);
        let mut crlf = vec![b'a'; 16];
        crlf.extend_from_slice(b"\r\n");
        assert_eq!(line(&crlf).unwrap().len(), 16);
        assert!(line(&[b'a'; 17]).is_err());
        let mut long = vec![b'a'; 17];
        long.push(b'\n');
        assert!(line(&long).is_err());
    }

    #[test]
    fn reading_stops_after_the_first_line() {
        let mut input: &[u8] = b"old\r\nnew\nrest";
        assert_eq!(&**read_first_line(&mut input, 16).unwrap(), b"old");
        assert_eq!(&**read_first_line(&mut input, 16).unwrap(), b"new");
        assert_eq!(input, b"rest");
    }

    #[test]
    fn passphrase_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        std::fs::write(&path, "correct horse\r\nignored\n").unwrap();
        let p = obtain(&Source::File(path.clone()), PASSPHRASE, true, None).unwrap();
        assert_eq!(p.expose(), b"correct horse");

        std::fs::write(&path, "no newline").unwrap();
        let p = obtain(&Source::File(path.clone()), PASSPHRASE, false, None).unwrap();
        assert_eq!(p.expose(), b"no newline");

        std::fs::write(&path, "\nsecond\n").unwrap();
        let err = obtain(&Source::File(path.clone()), PASSPHRASE, false, None).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("empty"), "{err}");

        std::fs::write(&path, b"\xff\xfe\n").unwrap();
        let err = obtain(&Source::File(path), PASSPHRASE, false, None).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");

        let missing = dir.path().join("missing");
        let err = obtain(&Source::File(missing), PASSPHRASE, false, None).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn passphrase_from_fd_reads_line_by_line() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        std::fs::write(&path, "old one\r\nnew one").unwrap();
        let file = File::open(&path).unwrap();
        let fd = file.as_raw_fd();
        let old = obtain(&Source::Fd(fd), PASSPHRASE, false, None).unwrap();
        let new = obtain(&Source::Fd(fd), PASSPHRASE, false, None).unwrap();
        assert_eq!(old.expose(), b"old one");
        assert_eq!(new.expose(), b"new one");
        // The duplicate was closed, the original is still open.
        drop(file);
    }

    #[cfg(unix)]
    #[test]
    fn closed_fd_is_an_input_error() {
        let err = obtain(&Source::Fd(987_654), PASSPHRASE, false, None).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("file descriptor 987654"), "{err}");
    }

    #[test]
    fn without_a_terminal_the_prompt_is_a_usage_error() {
        let err = obtain(&Source::Prompt, PASSPHRASE, false, None).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let mut report = Vec::new();
        err.report(&mut report).unwrap();
        let report = String::from_utf8(report).unwrap();
        assert!(report.contains("--passphrase-file FILE"), "{report}");
        assert!(report.contains("--passphrase-fd N"), "{report}");
    }

    fn answers(list: &'static [&'static str]) -> impl FnMut(&str) -> io::Result<Zeroizing<String>> {
        let mut it = list.iter();
        move |_prompt| {
            Ok(Zeroizing::new(
                it.next().expect("asked too often").to_string(),
            ))
        }
    }

    #[test]
    fn prompt_twice_must_match() {
        let mut tty = answers(&["hunter22", "hunter22"]);
        let p = obtain(&Source::Prompt, PASSPHRASE, true, Some(&mut tty)).unwrap();
        assert_eq!(p.expose(), b"hunter22");

        let mut tty = answers(&["hunter22", "hunter23"]);
        let err = obtain(&Source::Prompt, PASSPHRASE, true, Some(&mut tty)).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("do not match"), "{err}");
        assert!(!err.to_string().contains("hunter"), "{err}");
    }

    #[test]
    fn empty_prompt_is_refused_before_the_repeat() {
        let mut tty = answers(&[""]);
        let err = obtain(&Source::Prompt, PASSPHRASE, true, Some(&mut tty)).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn confirmations() {
        assert!(is_confirmation("y\n", "bot"));
        assert!(is_confirmation("YES\r\n", "bot"));
        assert!(is_confirmation("bot\n", "bot"));
        assert!(is_confirmation(" bot \n", "bot"));
        assert!(!is_confirmation("\n", "bot"));
        assert!(!is_confirmation("n\n", "bot"));
        assert!(!is_confirmation("bo\n", "bot"));
        assert!(!is_confirmation("", "bot"));
        let mut prompt = Vec::new();
        assert!(confirm_deletion("bot", "bot", &mut &b"bot\n"[..], &mut prompt).unwrap());
        assert!(!confirm_deletion("bot", "bot", &mut &b""[..], &mut prompt).unwrap());
    }
}
