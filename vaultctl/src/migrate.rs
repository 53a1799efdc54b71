//! `vaultctl migrate-store`: copy the vault into an empty PostgreSQL database.

use std::io::Write;
use std::path::PathBuf;

use session_vault_proto::backup::MigrateInfo;
use session_vault_proto::message::{Passphrase, Request, Response};

use super::output::{sanitize, write_json};
use super::prompt::{self, Pending, Source, Which};
use super::{CtlError, DaemonClient};

/// The systemd credential read for the password when no flag names one (as `vaultd`'s
/// `--store` does).
const PASSWORD_CREDENTIAL: &str = "store-password";

const DB_PASSWORD: Which = Which {
    name: "database password",
    file_flag: "--to-password-file",
    fd_flag: "--to-password-fd",
};

/// Copy the vault into an empty PostgreSQL database (to run it on several hosts)
///
/// The daemon copies every row of its store as it is (sealed records; no key is involved)
/// into the database named by --to, in one transaction: every row is read back and compared
/// with the source before it commits, so the database holds the whole vault or nothing. The
/// vault must be locked (`vaultctl lock`), so that no write races the copy; a database that
/// already holds a vault is refused. The current store is left as it was.
///
/// The database password never goes on the command line: it comes from --to-password-file,
/// --to-password-fd, the systemd credential `store-password`, or a prompt on the terminal
/// (an empty answer: none). A connection string holding a password is refused.
///
/// Then restart vaultd with `--store URL --store-password-file FILE` and unlock it with the
/// same passphrase.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The target database: postgres://USER@HOST[:PORT]/DB (no password)
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Read the database password from the first line of FILE
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "to_password_fd",
        value_hint = clap::ValueHint::FilePath
    )]
    pub to_password_file: Option<PathBuf>,
    /// Read the database password from the first line of the inherited file descriptor N
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
    pub to_password_fd: Option<i32>,
    /// Print what was copied as JSON
    #[arg(long)]
    pub json: bool,
}

/// Whether a connection string carries a password: `user:password@` in a URL, or a
/// `password=` parameter (URL query or `key=value` form).
pub(crate) fn holds_password(url: &str) -> bool {
    if url.to_ascii_lowercase().contains("password=") {
        return true;
    }
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"));
    let Some(rest) = rest else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo.contains(':'),
        None => false,
    }
}

fn password(args: &Args) -> Result<Option<Passphrase>, CtlError> {
    let mut source = Source::from_flags(args.to_password_file.clone(), args.to_password_fd);
    if source == Source::Prompt {
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let path = PathBuf::from(dir).join(PASSWORD_CREDENTIAL);
            if path.exists() {
                source = Source::File(path);
            }
        }
    }
    if source == Source::Prompt {
        if !prompt::stdin_is_terminal() {
            // Trust, peer or certificate authentication: no password.
            return Ok(None);
        }
        let text =
            prompt::terminal_prompt("Database password (empty for none): ").map_err(|source| {
                CtlError::Input {
                    what: DB_PASSWORD.name,
                    from: "the terminal".into(),
                    source,
                }
            })?;
        if text.is_empty() {
            return Ok(None);
        }
        return Ok(Some(Passphrase::new(text.as_bytes().to_vec())));
    }
    match prompt::prepare(&source, DB_PASSWORD, false, false)? {
        Pending::Read(p) => Ok(Some(p)),
        Pending::Prompt { .. } => Ok(None),
    }
}

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    if holds_password(&args.to) {
        // Not echoed: it holds a password.
        return Err(CtlError::usage_with_hint(
            "the connection string given to --to holds a password",
            "remove it from the string and pass it with --to-password-file FILE, \
             --to-password-fd N, the systemd credential `store-password`, or at the prompt",
        ));
    }
    let password = password(&args)?;
    let request = Request::MigrateStore {
        url: args.to.clone(),
        password,
    };
    let info = match daemon.connect()?.call(request)? {
        Response::Migrated(info) => info,
        _ => return Err(CtlError::unexpected(daemon.socket(), "migrate_store")),
    };
    if args.json {
        write_json(out, &info)?;
    } else {
        write_summary(out, &info, &args.to)?;
    }
    Ok(())
}

fn write_summary(out: &mut dyn Write, i: &MigrateInfo, url: &str) -> std::io::Result<()> {
    let target = sanitize(&i.target);
    // The string as given (it holds no password): the form `--store` takes.
    let url = sanitize(url);
    writeln!(
        out,
        "Copied into {target}: keyslots {}, sessions {}, session rows {}, audit entries {}; \
         every row read back and found equal before the copy was committed.",
        i.keyslots, i.sessions, i.rows, i.audit_entries
    )?;
    writeln!(
        out,
        "Next: stop vaultd, start it with `--store {url} --store-password-file FILE` (or the \
         systemd credential `store-password`), unlock it with the same passphrase, and run \
         `vaultctl verify`. The current store is unchanged; keep it until then."
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::holds_password;

    #[test]
    fn passwords_in_connection_strings_are_found() {
        assert!(holds_password("postgres://u:pw@h/db"));
        assert!(holds_password("postgresql://u:pw@h:5432/db"));
        assert!(holds_password("postgres://u@h/db?password=x"));
        assert!(holds_password("host=h dbname=db password=x"));
        assert!(!holds_password("postgres://u@h/db"));
        assert!(!holds_password("postgres://u@h:5432/db?sslmode=disable"));
        assert!(!holds_password("postgres://%2Frun%2Fpg/db"));
        assert!(!holds_password("host=/run/pg dbname=db user=u"));
    }
}
