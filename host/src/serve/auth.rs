//! The access token, and the checks every request passes before a handler
//! runs: token (header or cookie), `Host` on loopback, and for POST the
//! action header and `Origin`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::api::AppState;
use crate::error::{Error, Result};

/// The cookie that carries the token after the page is opened once.
pub const COOKIE: &str = "vivarium_token";

/// The header every POST must carry (`X-Vivarium-Action: 1`): a
/// cross-site form cannot set it, and a cross-site script cannot without a
/// CORS preflight this server never answers.
pub const ACTION_HEADER: &str = "x-vivarium-action";

/// The server's access token. `Debug` never prints it.
#[derive(Clone)]
pub struct Token {
    secret: Arc<str>,
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({})", self.actor())
    }
}

impl Token {
    /// A token given by the operator: 16 to 256 printable ASCII characters
    /// (no spaces; it goes into a header and a cookie).
    ///
    /// Errors: [`Error::Invalid`] saying what is wrong with it.
    pub fn new(secret: &str) -> Result<Token> {
        if secret.len() < 16 || secret.len() > 256 {
            return Err(Error::invalid("the access token must be 16 to 256 characters long"));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b',' && b != b'"' && b != b'\\') {
            return Err(Error::invalid(
                "the access token must be printable ASCII without spaces, quotes, backslashes, `;` or `,`",
            ));
        }
        Ok(Token { secret: secret.into(), digest: Sha256::digest(secret.as_bytes()).into() })
    }

    /// A new random token: 32 bytes from the OS, as 64 hex digits.
    ///
    /// Errors: [`Error::Io`] when the OS's random source cannot be read.
    pub fn random() -> Result<Token> {
        let mut bytes = [0u8; 32];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| Error::io("reading /dev/urandom for the access token", e))?;
        Token::new(&hex::encode(bytes))
    }

    /// Whether `given` is the token, in time independent of where they
    /// differ (both are hashed first, so their lengths do not show either).
    pub fn matches(&self, given: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        bool::from(d.ct_eq(&self.digest))
    }

    /// The token itself, to print once at start.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    /// Who acted, for the audit log: `serve:` and 8 hex digits of the
    /// token's sha256 (the token cannot be recovered from it).
    pub fn actor(&self) -> String {
        format!("serve:{}", &hex::encode(self.digest)[..8])
    }
}

/// The token a request carries: its bearer token, else its cookie.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim());
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Whether the request's `Host` names this server on a loopback name
/// (`127.0.0.1`, `[::1]`, `localhost`), checked unless remote access is on.
fn host_ok(state: &AppState, headers: &HeaderMap) -> bool {
    if state.allow_remote {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else { return false };
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    };
    name == "localhost"
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a POST carries the action header and, when the browser sent
/// one, an `Origin` of this server.
fn action_ok(headers: &HeaderMap) -> bool {
    if headers.get(ACTION_HEADER).and_then(|v| v.to_str().ok()) != Some("1") {
        return false;
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
    }
}

/// A JSON refusal.
pub(crate) fn refuse(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
}

/// The paths served without the token: the login page's script and style
/// (fixed files holding no data).
const PUBLIC: &[&str] = &["/login.js", "/app.css"];

/// The middleware every route passes. Order: `Host`, then the token (a
/// request without it gets 401, and the page path gets the login page),
/// then for POST the action header and `Origin` (403).
pub async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if !host_ok(&state, headers) {
        return refuse(StatusCode::MISDIRECTED_REQUEST, "this server answers only to a loopback host name");
    }
    let path = req.uri().path();
    if req.method() == Method::GET && PUBLIC.contains(&path) {
        return next.run(req).await;
    }
    let authorized = presented(headers).is_some_and(|t| state.token.matches(t));
    if !authorized {
        if req.method() == Method::GET && path == "/" {
            return (StatusCode::UNAUTHORIZED, page_headers(), super::api::LOGIN_HTML).into_response();
        }
        // The login call checks its bearer token itself.
        if !(req.method() == Method::POST && path == "/api/session") {
            let mut r = refuse(StatusCode::UNAUTHORIZED, "an access token is required (Authorization: Bearer …)");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    if req.method() == Method::POST && !action_ok(headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "a POST needs the header `X-Vivarium-Action: 1` and, from a browser, this server's Origin",
        );
    }
    next.run(req).await
}

/// `POST /api/session` with `Authorization: Bearer <token>`: sets the
/// cookie (HttpOnly, SameSite=Strict, path /) the page uses from then on.
pub async fn login(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if !bearer.is_some_and(|t| state.token.matches(t)) {
        return refuse(StatusCode::UNAUTHORIZED, "wrong token");
    }
    let cookie = format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", state.token.expose());
    let mut r = axum::Json(serde_json::json!({ "ok": true, "actor": state.token.actor() })).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /api/logout`: clears the cookie.
pub async fn logout() -> Response {
    let mut r = axum::Json(serde_json::json!({ "ok": true })).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("vivarium_token=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r
}

/// Headers of an HTML page: a Content-Security-Policy allowing only this
/// origin's scripts, styles and connections (no inline script, no
/// framing), no caching, no sniffing.
pub(crate) fn page_headers() -> [(header::HeaderName, &'static str); 5] {
    [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_itself_only_and_its_actor_hides_it() {
        let t = Token::new("0123456789abcdef-secret").unwrap();
        assert!(t.matches("0123456789abcdef-secret"));
        assert!(!t.matches("0123456789abcdef-secreT"));
        assert!(!t.matches(""));
        assert!(t.actor().starts_with("serve:") && t.actor().len() == 14);
        assert!(!format!("{t:?}").contains("secret"));
        assert!(Token::new("short").is_err());
        assert!(Token::new("has a space in it, long enough").is_err());
        let r = Token::random().unwrap();
        assert_eq!(r.expose().len(), 64);
        assert_ne!(r.expose(), Token::random().unwrap().expose());
    }

    #[test]
    fn the_cookie_or_the_bearer_header_presents_the_token() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=b; vivarium_token=xyz; c=d"));
        assert_eq!(presented(&h), Some("xyz"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(presented(&h), Some("abc"));
    }

    #[test]
    fn only_loopback_host_names_are_answered() {
        let ok = |host: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static(host));
            let state = super::super::api::AppState::new(
                crate::home::Home::at("/nonexistent"),
                Token::new("0123456789abcdef-secret").unwrap(),
                "127.0.0.1:1".parse().unwrap(),
                false,
                &super::super::Limits::default(),
            );
            host_ok(&state, &h)
        };
        for good in ["127.0.0.1:8080", "localhost:1", "[::1]:9", "127.0.0.2"] {
            assert!(ok(good), "{good}");
        }
        for bad in ["127.evil.example:80", "evil.example", "10.0.0.1:80", "localhost.evil:80"] {
            assert!(!ok(bad), "{bad}");
        }
    }

    #[test]
    fn a_post_needs_the_action_header_and_a_same_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(!action_ok(&h));
        h.insert(ACTION_HEADER, HeaderValue::from_static("1"));
        assert!(action_ok(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!action_ok(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(action_ok(&h));
    }
}
