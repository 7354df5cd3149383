//! `atrest ui-url`: a new one-time login link to the status page of a running `atrest serve`.

use atrest_storage::KeyPrefix;
use clap::Args;

use super::offline::runtime;
use super::StoreArgs;
use crate::exit::{CmdResult, Failure};

/// Mint a one-time login link to the status page (`/ui/`) of `atrest serve`.
///
/// Browsers cannot present kubectl's bearer token or client certificate, so the page has
/// its own login: the link holds a random token, valid for one hour and for one use; the
/// browser exchanges it for a session cookie. The token is kept in the server's store
/// (as a digest), so this works for a server running now, on the same data directory or
/// etcd. Whoever can read the data directory or write to etcd is an admin already.
#[derive(Debug, Args)]
pub struct UiUrlArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The server's address (https://host:port); default: the one in
    /// <data-dir>/admin.kubeconfig, which `atrest serve` wrote.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

pub fn run(args: UiUrlArgs) -> CmdResult {
    let server = match &args.server {
        Some(s) => s.trim_end_matches('/').to_string(),
        None => {
            let path = args
                .store
                .data_dir
                .join(atrest_auth::kubeconfig::ADMIN_KUBECONFIG);
            atrest_client::kubeconfig::Kubeconfig::load(&path)
                .map_err(|e| {
                    Failure::Error(format!(
                        "{e}; give --server https://HOST:PORT, or --data-dir of an `atrest serve`"
                    ))
                })?
                .server
        }
    };
    if args.store.etcd_servers.is_empty() && !args.store.data_dir.join("state.db").exists() {
        return Err(Failure::Error(format!(
            "no embedded store in --data-dir {} (no state.db); give --data-dir of an \
             `atrest serve`, or --etcd-servers",
            args.store.data_dir.display()
        )));
    }
    let config = args.store.config(false)?;
    let prefix = KeyPrefix::new(&args.store.etcd_prefix);
    let token = runtime()?.block_on(async {
        let store = atrest_store::open(config)
            .await
            .map_err(|e| Failure::Error(format!("opening the store: {e}")))?;
        let tokens = atrest_web::StoreTokens::new(store, prefix);
        tokens.mint().await.map_err(Failure::Error)
    })?;
    println!("{server}/ui/login?token={}", token.expose());
    Ok(())
}
