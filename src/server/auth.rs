//! Who may call the API: HTTP basic credentials as A1111's `--api-auth user:pass[,user:pass]`,
//! and/or a bearer token read from a file. Credentials are compared through their SHA-256
//! digests with a constant-time equality, so timing says nothing about how much matched.

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The accepted credentials; empty means the API is open.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    basic: Vec<[u8; 32]>,
    bearer: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("basic", &self.basic.len())
            .field("bearer", &self.bearer.len())
            .finish()
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Equal digests, in time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Credentials {
    /// No credentials: every request passes.
    pub fn open() -> Self {
        Self::default()
    }

    /// Whether any credential is required.
    pub fn is_required(&self) -> bool {
        !self.basic.is_empty() || !self.bearer.is_empty()
    }

    /// Adds `user:pass[,user:pass]` (A1111's `--api-auth`).
    ///
    /// # Errors
    /// An entry without `:`, or with an empty user or password.
    pub fn add_basic(&mut self, spec: &str) -> Result<(), String> {
        for entry in spec.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
            match entry.split_once(':') {
                Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                    self.basic.push(digest(&format!("{user}:{password}")));
                }
                _ => {
                    return Err(format!(
                        "--api-auth: {:?} is not USER:PASSWORD",
                        entry.chars().take(40).collect::<String>().split(':').next().unwrap_or("")
                    ));
                }
            }
        }
        if self.basic.is_empty() {
            return Err("--api-auth: no USER:PASSWORD given".to_owned());
        }
        Ok(())
    }

    /// Adds the bearer token held in `file` (surrounding whitespace trimmed).
    ///
    /// # Errors
    /// An unreadable or empty file, named.
    pub fn add_token_file(&mut self, file: &Path) -> Result<(), String> {
        let text =
            fs_err::read_to_string(file).map_err(|err| format!("--api-token-file: {err}"))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("--api-token-file: {} is empty", file.display()));
        }
        self.bearer.push(digest(token));
        Ok(())
    }

    /// Whether the request's `Authorization` header carries an accepted credential.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        if !self.is_required() {
            return true;
        }
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                return false;
            };
            let Ok(pair) = String::from_utf8(decoded) else { return false };
            let offered = digest(&pair);
            self.basic.iter().fold(false, |found, known| same(known, &offered) | found)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let offered = digest(rest);
            self.bearer.iter().fold(false, |found, known| same(known, &offered) | found)
        } else {
            false
        }
    }
}

/// The middleware: 401 with `WWW-Authenticate` unless the request is admitted.
pub async fn require(
    State(credentials): State<Credentials>,
    request: Request,
    next: Next,
) -> Response {
    if credentials.admits(request.headers()) {
        return next.run(request).await;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        crate::server::Json(serde_json::json!({"detail": "Not authenticated"})),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"imagelab\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
        headers
    }

    #[test]
    fn basic_and_bearer_are_checked() {
        let mut credentials = Credentials::open();
        assert!(credentials.admits(&HeaderMap::new()), "open by default");
        credentials.add_basic("alice:s3cret, bob:pa:ss").expect("spec");
        let basic = |pair: &str| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        };
        assert!(credentials.admits(&headers(&basic("alice:s3cret"))));
        assert!(credentials.admits(&headers(&basic("bob:pa:ss"))), "passwords may hold ':'");
        assert!(!credentials.admits(&headers(&basic("alice:wrong"))));
        assert!(!credentials.admits(&HeaderMap::new()));
        assert!(!credentials.admits(&headers("Bearer s3cret")));
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("token");
        fs_err::write(&file, "tok-123\n").expect("write");
        credentials.add_token_file(&file).expect("token");
        assert!(credentials.admits(&headers("Bearer tok-123")));
        assert!(!credentials.admits(&headers("Bearer tok-12")));
        assert!(Credentials::open().add_basic("nopassword").is_err());
        assert!(Credentials::open().add_basic("user:").is_err());
    }
}
