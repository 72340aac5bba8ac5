//! The web config file: every way it can be wrong gives its one line; what it can say builds.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use hyper::header::HeaderValue;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use super::*;

/// A directory of its own for a test, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "probe-web-config-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA, and in `dir`: `ca.crt`, `server.crt` and `server.key` (signed by it, for localhost),
/// `other.key` (a key of no certificate).
fn certificates(dir: &Dir) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    dir.write("ca.crt", &ca.pem());
    dir.write("server.crt", &cert.pem());
    dir.write("server.key", &key.serialize_pem());
    dir.write("other.key", &KeyPair::generate().unwrap().serialize_pem());
    ca
}

/// The configuration of `yaml` in `dir`, or its error.
fn config(dir: &Dir, yaml: &str) -> Result<WebConfig, String> {
    from_text(yaml, &dir.0)
}

/// The error of `yaml` in `dir` (one line).
fn error(dir: &Dir, yaml: &str) -> String {
    match config(dir, yaml) {
        Ok(_) => panic!("accepted: {yaml}"),
        Err(e) => {
            assert!(!e.contains('\n'), "not one line: {e}");
            e
        }
    }
}

/// A `tls_server_config` with the server's files, and `extra` lines in it.
fn tls(extra: &str) -> String {
    format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}")
}

#[test]
fn an_unreadable_file_is_named() {
    let e = load(Path::new("/nonexistent/web.yml")).err().unwrap();
    assert_eq!(
        e.to_string(),
        "--web-config-file /nonexistent/web.yml: cannot read it: No such file or directory (os error 2)"
    );
}

#[test]
fn bad_yaml_and_unknown_keys_are_one_line() {
    let dir = Dir::new();
    let e = error(&dir, "tls_server_config: [\n");
    assert!(e.starts_with("invalid YAML: "), "{e}");
    let e = error(&dir, "tls_config:\n  cert_file: x\n");
    assert!(
        e.starts_with("invalid YAML: unknown field `tls_config`"),
        "{e}"
    );
    let e = error(&dir, &tls("  certfile: x\n"));
    assert!(
        e.starts_with("invalid YAML: unknown field `certfile`"),
        "{e}"
    );
    let e = error(&dir, "basic_auth_users: [a, b]\n");
    assert!(e.starts_with("invalid YAML: "), "{e}");
    let e = error(
        &dir,
        "http_server_config:\n  headers:\n    X-Frame-Options: [deny]\n",
    );
    assert!(e.starts_with("invalid YAML: "), "{e}");
}

#[test]
fn what_exporter_toolkit_has_and_probe_user_has_not_is_refused_by_name() {
    let dir = Dir::new();
    certificates(&dir);
    assert_eq!(
        error(&dir, "rate_limit:\n  interval: 1s\n  burst: 2\n"),
        "rate_limit is not supported by probe-user (the endpoint's own limits are in docs/usage.md): remove it"
    );
    let sans = "tls_server_config.client_allowed_sans is not supported by probe-user: check client certificates with client_auth_type RequireAndVerifyClientCert and a client_ca_file that signs only the scrapers' certificates";
    assert_eq!(
        error(&dir, &tls("  client_allowed_sans: [scraper]\n")),
        sans
    );
    // Without TLS too: nothing set is dropped on the floor.
    assert_eq!(
        error(
            &dir,
            "tls_server_config:\n  client_allowed_sans: [scraper]\n"
        ),
        sans
    );
    for (key, old) in [("min_version", "TLS10"), ("max_version", "TLS11")] {
        assert_eq!(
            error(&dir, &tls(&format!("  {key}: {old}\n"))),
            format!(
                "tls_server_config.{key} {old} is not supported: probe-user speaks TLS12 and TLS13 only"
            )
        );
    }
    let e = error(
        &dir,
        &tls("  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n"),
    );
    assert!(
        e.starts_with("tls_server_config.cipher_suites: \"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA\" is not one probe-user can use (it has TLS13_AES_256_GCM_SHA384, "),
        "{e}"
    );
    assert_eq!(
        error(&dir, &tls("  curve_preferences: [CurveP521]\n")),
        "tls_server_config.curve_preferences: \"CurveP521\" is not one probe-user can use (it has CurveP256, CurveP384, X25519)"
    );
}

#[test]
fn certificates_and_keys_are_checked() {
    let dir = Dir::new();
    certificates(&dir);
    let path = |name: &str| dir.0.join(name).display().to_string();
    assert_eq!(
        error(&dir, "tls_server_config:\n  key_file: server.key\n"),
        "tls_server_config needs cert_file (or cert) with key_file (or key)"
    );
    assert_eq!(
        error(&dir, "tls_server_config:\n  cert_file: server.crt\n"),
        "tls_server_config needs key_file (or key) with cert_file (or cert)"
    );
    assert_eq!(
        error(&dir, &tls("  cert: x\n")),
        "tls_server_config: set cert or cert_file, not both"
    );
    assert_eq!(
        error(
            &dir,
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n"
        ),
        format!(
            "cannot read cert_file {}: No such file or directory (os error 2)",
            path("missing.crt")
        )
    );
    assert_eq!(
        error(
            &dir,
            "tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n"
        ),
        format!(
            "cert_file {} holds no certificate (PEM BEGIN CERTIFICATE)",
            path("server.key")
        )
    );
    assert_eq!(
        error(
            &dir,
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n"
        ),
        format!(
            "key_file {} holds no private key (PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
            path("server.crt")
        )
    );
    let e = error(
        &dir,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
    );
    assert!(
        e.starts_with(&format!(
            "cert_file {} and key_file {}: ",
            path("server.crt"),
            path("other.key")
        )) && e.contains("key"),
        "{e}"
    );
    assert_eq!(
        error(
            &dir,
            &tls("  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.key\n")
        ),
        format!(
            "client_ca_file {} holds no certificate (PEM BEGIN CERTIFICATE)",
            path("server.key")
        )
    );
}

#[test]
fn client_authentication_is_checked() {
    let dir = Dir::new();
    certificates(&dir);
    assert_eq!(
        error(&dir, &tls("  client_auth_type: RequireCert\n")),
        "tls_server_config.client_auth_type: unknown \"RequireCert\" (expected NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
    );
    assert_eq!(
        error(&dir, &tls("  client_ca_file: ca.crt\n")),
        "tls_server_config: client CAs are set but client_auth_type is NoClientCert (set client_auth_type: RequireAndVerifyClientCert to check client certificates)"
    );
    for auth_type in ["VerifyClientCertIfGiven", "RequireAndVerifyClientCert"] {
        assert_eq!(
            error(&dir, &tls(&format!("  client_auth_type: {auth_type}\n"))),
            format!(
                "tls_server_config.client_auth_type {auth_type} needs client_ca_file (or client_ca): the CAs that sign client certificates"
            )
        );
    }
}

#[test]
fn versions_are_checked() {
    let dir = Dir::new();
    certificates(&dir);
    assert_eq!(
        error(&dir, &tls("  min_version: TLS14\n")),
        "tls_server_config.min_version: unknown TLS version \"TLS14\" (expected TLS12 or TLS13)"
    );
    assert_eq!(
        error(&dir, &tls("  min_version: TLS13\n  max_version: TLS12\n")),
        "tls_server_config: min_version TLS13 is above max_version TLS12"
    );
}

#[test]
fn headers_and_hashes_are_checked() {
    let dir = Dir::new();
    assert_eq!(
        error(&dir, "http_server_config:\n  headers:\n    Server: probe\n"),
        "http_server_config.headers: header \"Server\" cannot be set (only Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, Content-Security-Policy)"
    );
    assert_eq!(
        error(
            &dir,
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n"
        ),
        "http_server_config.headers: X-Frame-Options must be one of deny, sameorigin, not \"allow\""
    );
    assert_eq!(
        error(
            &dir,
            "http_server_config:\n  headers:\n    Content-Security-Policy: \"a\\nb\"\n"
        ),
        "http_server_config.headers: Content-Security-Policy: \"a\\nb\" is not a valid header value"
    );
    let e = error(&dir, "basic_auth_users:\n  prometheus: secret\n");
    assert!(
        e.starts_with("basic_auth_users: the hash of user \"prometheus\" is not a bcrypt hash: "),
        "{e}"
    );
}

#[test]
fn an_empty_file_configures_nothing() {
    let dir = Dir::new();
    for text in ["", "# nothing yet\n", "---\n"] {
        let web = config(&dir, text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(web.tls.is_none() && web.auth.is_none() && web.headers.is_empty());
    }
}

#[test]
fn everything_exporter_toolkit_files_say_builds() {
    let dir = Dir::new();
    let ca = certificates(&dir);
    // Every client authentication type, the CA where one is needed.
    for auth_type in [
        "NoClientCert",
        "RequestClientCert",
        "RequireAnyClientCert",
        "RequireClientCert",
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
    ] {
        let ca = match auth_type {
            "NoClientCert" => "",
            _ => "  client_ca_file: ca.crt\n",
        };
        let web = config(
            &dir,
            &tls(&format!("  client_auth_type: {auth_type}\n{ca}")),
        )
        .unwrap_or_else(|e| panic!("{auth_type}: {e}"));
        assert!(web.tls.is_some());
    }
    // Inline PEM, versions, suites, curves, http2 (no effect), headers, and plain HTTP with
    // basic auth beside it.
    let key = std::fs::read_to_string(dir.0.join("server.key")).unwrap();
    let cert = std::fs::read_to_string(dir.0.join("server.crt")).unwrap();
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let yaml = format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}  client_ca: |\n{}  client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS13\n  max_version: TLS13\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  prefer_server_cipher_suites: false\n  curve_preferences: [X25519, CurveP256]\n\
         http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n    X-XSS-Protection: \"\"\n\
         basic_auth_users:\n  prometheus: {}\n",
        indent(&cert),
        indent(&key),
        indent(&ca.pem()),
        bcrypt::hash("secret", 4).unwrap(),
    );
    let web = config(&dir, &yaml).unwrap();
    let tls = web.tls.unwrap();
    assert!(!tls.ignore_client_order);
    let provider = tls.crypto_provider();
    assert_eq!(provider.kx_groups.len(), 2);
    // TLS 1.3's three, and the one TLS 1.2 suite named.
    assert_eq!(provider.cipher_suites.len(), 4);
    assert!(web.auth.is_some());
    // A blank value leaves its header unset.
    assert_eq!(web.headers.len(), 1);
    assert_eq!(web.headers["x-frame-options"], "deny");

    // htpasswd's `$2y$` hashes, as exporter-toolkit's docs make them.
    let htpasswd = bcrypt::hash("secret", 4)
        .unwrap()
        .replacen("$2b$", "$2y$", 1);
    let web = config(&dir, &format!("basic_auth_users:\n  u: {htpasswd}\n")).unwrap();
    assert!(web.tls.is_none() && web.auth.is_some());
}

#[test]
fn basic_auth_allows_exactly_the_users_passwords_and_caches_only_successes() {
    let users = [
        ("prometheus".to_string(), bcrypt::hash("secret", 4).unwrap()),
        ("other".to_string(), bcrypt::hash("p:w", 4).unwrap()),
    ];
    let auth = BasicAuth::new(users.into_iter().collect()).unwrap();
    let basic = |credentials: &str| {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let check = |header: Option<HeaderValue>| runtime.block_on(auth.check(header.as_ref()));
    assert_eq!(check(None), Verdict::Denied);
    assert_eq!(
        check(Some(HeaderValue::from_static("Bearer x"))),
        Verdict::Denied
    );
    assert_eq!(
        check(Some(HeaderValue::from_static("Basic %%%"))),
        Verdict::Denied
    );
    assert_eq!(check(Some(basic("prometheus:wrong"))), Verdict::Denied);
    assert_eq!(check(Some(basic("nobody:secret"))), Verdict::Denied);
    assert_eq!(check(Some(basic("other:secret"))), Verdict::Denied);
    assert!(auth.passed().is_empty(), "failures are not cached");
    assert_eq!(check(Some(basic("prometheus:secret"))), Verdict::Allowed);
    // The password may hold colons; the scheme's case does not matter.
    let header = basic("other:p:w")
        .to_str()
        .unwrap()
        .replace("Basic", "basic");
    assert_eq!(
        check(Some(HeaderValue::from_str(&header).unwrap())),
        Verdict::Allowed
    );
    assert_eq!(auth.passed().len(), 2);
    // From the cache now, and still only for the right password.
    assert_eq!(check(Some(basic("prometheus:secret"))), Verdict::Allowed);
    assert_eq!(check(Some(basic("prometheus:secreT"))), Verdict::Denied);
    assert_eq!(auth.passed().len(), 2);
    // The decoy costs what the users' hashes cost.
    assert!(auth.decoy.starts_with("$2b$04$"), "{}", auth.decoy);
}
