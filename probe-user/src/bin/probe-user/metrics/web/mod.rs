//! `--web-config-file`: TLS and basic authentication for the metrics endpoint, read from a file
//! in the format of the Prometheus exporter-toolkit (node_exporter's and ebpf_exporter's
//! `--web.config.file`), so that the same file and the same Prometheus `scrape_config` work:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt        # relative paths are relative to this file's directory
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: clients-ca.crt
//! basic_auth_users:
//!   prometheus: $2y$10$...      # bcrypt, e.g. `htpasswd -nBC 10 "" | tr -d ':\n'`
//! http_server_config:
//!   headers:
//!     X-Content-Type-Options: nosniff
//! ```
//!
//! Everything is read and checked once, at start, before anything is attached ([`load`]): a
//! file that cannot be used is one line naming it and the problem. Unlike exporter-toolkit,
//! which rereads the file for every request, a changed file (a renewed certificate) takes
//! effect at the next start. What exporter-toolkit accepts and this does not
//! (`client_allowed_sans`, `rate_limit`, TLS 1.0 and 1.1, ciphers and curves rustls does not
//! implement) is refused by name, never ignored; `http2` is accepted and has no effect (the
//! endpoint speaks HTTP/1.1, which every Prometheus speaks).

mod auth;
#[cfg(test)]
mod tests;
mod tls;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, de::IgnoredAny};

pub use auth::{BasicAuth, Verdict};

/// A web config file that cannot be used: which file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("--web-config-file {}: {problem}", path.display())]
pub struct WebConfigError {
    path: PathBuf,
    problem: String,
}

/// What the endpoint does with each connection and each request, from a web config file.
pub struct WebConfig {
    /// `tls_server_config`: each connection is a TLS handshake first.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `basic_auth_users`: each request needs one of these users' credentials.
    pub auth: Option<BasicAuth>,
    /// `http_server_config.headers`: set on every response.
    pub headers: HeaderMap,
}

/// The file, as exporter-toolkit defines it (`web/tls_config.go`: `Config`); unknown keys are
/// refused, like its strict YAML decoding does.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    http_server_config: HttpFile,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    /// Accepted by exporter-toolkit, not implemented here: refused when set.
    rate_limit: Option<IgnoredAny>,
}

/// `tls_server_config`. Empty strings count as absent, as in exporter-toolkit.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    #[serde(default)]
    cipher_suites: Vec<String>,
    prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    curve_preferences: Vec<String>,
    /// Not implemented here: refused when set.
    client_allowed_sans: Option<IgnoredAny>,
}

/// `http_server_config`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    /// Accepted and without effect: the endpoint speaks HTTP/1.1 only.
    #[allow(dead_code)]
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The headers exporter-toolkit lets a file set, with the values it allows (none listed: any).
const HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Reads `path` and everything it names (certificates, keys, CAs) and checks it all, so that
/// nothing about it can fail once serving.
pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
    let error = |problem: String| WebConfigError {
        path: path.to_path_buf(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    // Relative file names in it are relative to its directory, as in exporter-toolkit.
    let dir = path.parent().unwrap_or(Path::new("."));
    from_text(&text, dir).map_err(error)
}

/// The configuration in `text`, whose relative file names are relative to `dir`.
fn from_text(text: &str, dir: &Path) -> Result<WebConfig, String> {
    let file = parse(text)?;
    if file.rate_limit.is_some() {
        return Err("rate_limit is not supported by probe-user (the endpoint's own limits are in docs/usage.md): remove it".into());
    }
    let tls = match file.tls_server_config {
        Some(tls) if tls.is_enabled() => Some(Arc::new(tls::server_config(tls, dir)?)),
        Some(tls) => {
            tls.refuse_unsupported()?;
            None
        }
        None => None,
    };
    let auth = if file.basic_auth_users.is_empty() {
        None
    } else {
        Some(BasicAuth::new(file.basic_auth_users)?)
    };
    Ok(WebConfig {
        tls,
        auth,
        headers: headers(&file.http_server_config.headers)?,
    })
}

/// The YAML, on one line if it is wrong. An empty file (or only comments) configures nothing,
/// as in exporter-toolkit.
fn parse(text: &str) -> Result<File, String> {
    let empty = text
        .lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "---" || l == "...");
    if empty {
        return Ok(File::default());
    }
    serde_saphyr::from_str::<File>(text).map_err(|e| {
        let plain = serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        };
        let message = e.render_with_options(plain);
        format!(
            "invalid YAML: {}",
            message.split_whitespace().collect::<Vec<_>>().join(" ")
        )
    })
}

impl TlsFile {
    /// Whether TLS is asked for: any of its keys set (exporter-toolkit's `IsEnabled`).
    fn is_enabled(&self) -> bool {
        [
            &self.cert,
            &self.key,
            &self.client_ca,
            &self.client_auth_type,
        ]
        .iter()
        .any(|s| s.as_deref().is_some_and(|s| !s.is_empty()))
            || [&self.cert_file, &self.key_file, &self.client_ca_file]
                .iter()
                .any(|p| p.as_deref().is_some_and(|p| !p.as_os_str().is_empty()))
    }

    /// Keys probe-user does not implement: one line naming the first one set.
    fn refuse_unsupported(&self) -> Result<(), String> {
        if self.client_allowed_sans.is_some() {
            return Err("tls_server_config.client_allowed_sans is not supported by probe-user: check client certificates with client_auth_type RequireAndVerifyClientCert and a client_ca_file that signs only the scrapers' certificates".into());
        }
        Ok(())
    }
}

/// `http_server_config.headers`, checked as exporter-toolkit checks them (only its five
/// headers; the values it enumerates; a blank value leaves the header unset).
fn headers(configured: &BTreeMap<String, String>) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (name, value) in configured {
        let Some((_, allowed)) = HEADERS.iter().find(|(n, _)| n == name) else {
            let names: Vec<&str> = HEADERS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "http_server_config.headers: header {name:?} cannot be set (only {})",
                names.join(", ")
            ));
        };
        if value.is_empty() {
            continue;
        }
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(format!(
                "http_server_config.headers: {name} must be one of {}, not {value:?}",
                allowed.join(", ")
            ));
        }
        let value = HeaderValue::from_str(value).map_err(|_| {
            format!("http_server_config.headers: {name}: {value:?} is not a valid header value")
        })?;
        // Canonical (lower-case) by `from_bytes`; every name of HEADERS is valid.
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
        headers.insert(name, value);
    }
    Ok(headers)
}
