//! Two interpreter instances linked for one grading
//! (`vivarium:interp/source` `peer`): the *caller* (a test instance, running
//! only the grader's code) sends a request and waits for the reply; the
//! *server* (the instance of the code under test) asks for the next request
//! and hands back the reply to the previous one.
//!
//! Why two instances: code under test that shares an interpreter with its
//! test can reach the test (patch `builtins`, swallow the assert's
//! exception, jump over lines with a trace function, end the interpreter
//! before the asserts run). Here the test runs in an instance the code under
//! test has no handle on, and all that crosses between them is text the
//! host checks ([`check_reply`]): plain data, never an object.
//!
//! Each side's `peer` is a host import of its own call, so both calls keep
//! their own fuel, memory and wall-clock limits; a server that stops
//! answering ends the caller's wait when its call ends (its side of the
//! link is dropped with its store).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

/// Most bytes one message may carry across the link.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

type Reply = std::result::Result<String, String>;

/// One end of a link, handed to a call through
/// [`crate::runtime::CallOptions::peer`].
#[derive(Clone)]
pub enum PeerLink {
    /// Sends requests, waits for replies.
    Caller(mpsc::Sender<(String, oneshot::Sender<Reply>)>),
    /// Answers requests, one at a time.
    Server(Arc<Mutex<Server>>),
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerLink::Caller(_) => "PeerLink::Caller",
            PeerLink::Server(_) => "PeerLink::Server",
        })
    }
}

/// The server's side: requests not yet taken, and where the reply to the
/// one taken last goes.
pub struct Server {
    requests: mpsc::Receiver<(String, oneshot::Sender<Reply>)>,
    pending: Option<oneshot::Sender<Reply>>,
}

/// A linked pair: `(caller, server)`.
pub fn link() -> (PeerLink, PeerLink) {
    let (tx, rx) = mpsc::channel(1);
    (PeerLink::Caller(tx), PeerLink::Server(Arc::new(Mutex::new(Server { requests: rx, pending: None }))))
}

/// What a server's reply must be: one JSON object `{"ok": data}` or
/// `{"err": "message"}`, at most [`MAX_MESSAGE_BYTES`], nested no deeper
/// than serde_json's limit. Anything else is turned into an `err` naming
/// what was wrong, so the caller never sees text that is not data.
pub fn check_reply(message: &str) -> Reply {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "the code under test answered {} bytes; at most {MAX_MESSAGE_BYTES} bytes cross to the grader",
            message.len()
        ));
    }
    let value: serde_json::Value = serde_json::from_str(message)
        .map_err(|e| format!("the code under test answered something that is not plain data: {e}"))?;
    match value.as_object() {
        Some(o) if o.len() == 1 && (o.contains_key("ok") || o.get("err").is_some_and(|v| v.is_string())) => {
            Ok(message.to_string())
        }
        _ => Err("the code under test answered a message of the wrong shape".into()),
    }
}

impl PeerLink {
    /// One `peer(message)` from the instance holding this end.
    ///
    /// Caller: `message` is a request; the result is the server's checked
    /// reply, or `err` when the server's call ended without answering.
    /// Server: `message` is the reply to the previous request (ignored on
    /// the first call); the result is the next request, or `err("done")`
    /// when the caller is gone.
    pub async fn exchange(&self, message: String) -> Reply {
        match self {
            PeerLink::Caller(tx) => {
                if message.len() > MAX_MESSAGE_BYTES {
                    return Err(format!("a request over {MAX_MESSAGE_BYTES} bytes"));
                }
                let (reply_tx, reply_rx) = oneshot::channel();
                if tx.send((message, reply_tx)).await.is_err() {
                    return Err("the code under test is not running (its instance ended)".into());
                }
                match reply_rx.await {
                    Ok(reply) => reply,
                    Err(_) => Err("the code under test did not answer (its instance ended)".into()),
                }
            }
            PeerLink::Server(server) => {
                let mut server = server.lock().await;
                if let Some(pending) = server.pending.take() {
                    let _ = pending.send(check_reply(&message));
                }
                match server.requests.recv().await {
                    Some((request, reply)) => {
                        server.pending = Some(reply);
                        Ok(request)
                    }
                    None => Err("done".into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_that_is_not_plain_data_becomes_an_err_naming_why() {
        assert!(check_reply(r#"{"ok": {"i": "3"}}"#).is_ok());
        assert!(check_reply(r#"{"err": "TypeError: x"}"#).is_ok());
        assert!(check_reply("not json").unwrap_err().contains("not plain data"));
        assert!(check_reply(r#"{"ok": 1, "err": "x"}"#).unwrap_err().contains("wrong shape"));
        assert!(check_reply(r#"{"err": 3}"#).unwrap_err().contains("wrong shape"));
        let deep = format!("{{\"ok\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(check_reply(&deep).unwrap_err().contains("not plain data"));
        let big = format!("{{\"ok\": \"{}\"}}", "a".repeat(MAX_MESSAGE_BYTES));
        assert!(check_reply(&big).unwrap_err().contains("bytes cross"));
    }

    #[tokio::test]
    async fn a_caller_whose_server_ended_gets_an_err() {
        let (caller, server) = link();
        drop(server);
        assert!(caller.exchange("[]".into()).await.unwrap_err().contains("not running"));
    }

    #[tokio::test]
    async fn requests_and_checked_replies_cross_in_order() {
        let (caller, server) = link();
        let serve = tokio::spawn(async move {
            let mut reply = String::new();
            let mut seen = Vec::new();
            while let Ok(req) = server.exchange(reply).await {
                seen.push(req.clone());
                reply = if req == "bad" { "garbage".into() } else { format!("{{\"ok\": {req}}}") };
            }
            seen
        });
        assert_eq!(caller.exchange("1".into()).await.unwrap(), "{\"ok\": 1}");
        assert!(caller.exchange("bad".into()).await.unwrap_err().contains("not plain data"));
        drop(caller);
        assert_eq!(serve.await.unwrap(), vec!["1".to_string(), "bad".to_string()]);
    }
}
