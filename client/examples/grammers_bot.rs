//! A complete grammers echo bot whose session lives in the Session Vault.
//!
//! The only session-related line is the `VaultSession::builder(..)…connect()` below; the rest
//! is grammers' own `echo` example. The vault must be running and unlocked (or unlocked
//! within ten minutes: the bot waits for it), e.g.:
//!
//! ```sh
//! vaultd &                      # or the systemd unit
//! vaultctl init                 # once
//! TG_ID=12345 TG_HASH=0123abcd… BOT_TOKEN=123:abc… \
//!     cargo run -p session-vault-client --example grammers_bot
//! ```
//!
//! Environment: `TG_ID` (API id), `TG_HASH` (API hash), `BOT_TOKEN`; optional
//! `VAULT_SESSION` (the session's name in the vault, default `~/echo-bot`: this uid's own) and
//! `SESSION_VAULT_SOCKET` (the daemon's socket, default the standard paths).

use std::sync::Arc;
use std::time::Duration;

use grammers_client::Client;
use grammers_client::update::Update;
use grammers_mtsender::{SenderPool, UpdatesConfiguration};
use session_vault_client::VaultSession;
use tokio::task::JoinSet;
use tracing::{error, info};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn var(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| format!("set the {name} environment variable").into())
}

async fn handle_update(update: Update) {
    if let Update::NewMessage(message) = update
        && !message.outgoing()
    {
        info!("echoing to {}", message.peer_id());
        if let Err(e) = message.reply(message.text()).await {
            error!("failed to reply: {e}");
        }
    }
}

async fn run() -> Result {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let api_id: i32 = var("TG_ID")?
        .parse()
        .map_err(|_| "TG_ID must be a number")?;
    let api_hash = var("TG_HASH")?;
    let token = var("BOT_TOKEN")?;
    let name = std::env::var("VAULT_SESSION").unwrap_or_else(|_| "~/echo-bot".to_owned());

    // Was: `let session = Arc::new(SqliteSession::open("echo.session").await?);`
    let session = Arc::new(
        VaultSession::builder(name)
            .create_if_missing(true)
            .wait_for_unlock(Duration::from_secs(600))
            .connect()
            .await?,
    );

    let SenderPool {
        runner,
        updates,
        handle,
    } = SenderPool::new(Arc::clone(&session), api_id);
    let client = Client::new(handle.clone());
    let pool_task = tokio::spawn(runner.run());

    if !client.is_authorized().await? {
        info!("signing in…");
        client.bot_sign_in(&token, &api_hash).await?;
        info!("signed in");
    }

    info!("waiting for messages (Ctrl+C to stop)…");
    let mut handlers = JoinSet::new();
    let mut updates = client
        .stream_updates(updates, UpdatesConfiguration { catch_up: true })
        .await?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            update = updates.next() => {
                handlers.spawn(handle_update(update?));
            }
            Some(res) = handlers.join_next(), if !handlers.is_empty() => {
                if let Err(e) = res {
                    error!("handler task panicked: {e}");
                }
            }
        }
    }

    info!("saving the update state…");
    updates.sync_update_state().await?;
    handle.quit();
    let _ = pool_task.await;
    while handlers.join_next().await.is_some() {}
    Ok(())
}

fn main() -> Result {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
