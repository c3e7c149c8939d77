//! `vivarium serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use vivarium::serve::{self, Limits, ServeOptions, Server};

use super::output::Out;

/// Arguments of `vivarium serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// The address to listen on (port 0: any free port). Loopback unless
    /// --allow-remote.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// Read the access token from the first line of this file (else
    /// $VIVARIUM_SERVE_TOKEN, else a random one, printed).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Allow a listen address outside loopback.
    #[arg(long)]
    pub allow_remote: bool,
}

pub async fn serve(a: ServeArgs, out: &Out) -> ExitCode {
    let started = async {
        let (token, source) = serve::token_from(a.token_file.as_deref())?;
        let opts = ServeOptions { listen: a.listen, allow_remote: a.allow_remote, token, limits: Limits::default() };
        let server = Server::bind(vivarium::home::Home::from_env(), opts).await?;
        Ok::<_, vivarium::Error>((server, source))
    }
    .await;
    let (server, source) = match started {
        Ok(s) => s,
        Err(e) => return out.error(&e),
    };
    let home = vivarium::home::Home::from_env();
    let remote = !server.addr().ip().is_loopback();
    if out.json {
        // One line, so a caller can read it before the server ends.
        let mut v = json!({
            "status": "listening", "url": server.base_url(), "addr": server.addr().to_string(),
            "actor": server.actor(), "token_source": source, "home": home.root(),
        });
        if source == "random" {
            v["token"] = json!(server.url_with_token().rsplit_once("#token=").map(|(_, t)| t.to_string()));
        }
        let _ = writeln!(std::io::stdout().lock(), "{v}");
    } else {
        let mut t = format!("vivarium serve: {} over {}\n", server.base_url(), home.root().display());
        if remote {
            t.push_str("  WARNING: listening beyond loopback (--allow-remote); put TLS in front of it\n");
        }
        match source {
            "random" => t.push_str(&format!(
                "  open     {}\n  (a new random token; set $VIVARIUM_SERVE_TOKEN or --token-file to choose it)\n",
                server.url_with_token()
            )),
            "env" => t.push_str("  token    from $VIVARIUM_SERVE_TOKEN\n"),
            _ => t.push_str("  token    from the --token-file\n"),
        }
        t.push_str(&format!("  actions are audited as {}; Ctrl-C ends the server", server.actor()));
        out.print(&json!(null), || t);
    }
    let _ = std::io::stdout().flush();
    tokio::select! {
        r = server.run() => match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => out.error(&e),
        },
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
    }
}
