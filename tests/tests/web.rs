//! `--metrics` with `--web-config-file`: basic authentication, TLS, and TLS client
//! certificates, checked with real clients against a running probe-user, with certificates and
//! bcrypt hashes made for each run; and the endpoint's bounds against clients that hold
//! connections without scraping. Nothing here depends on the kernel or the backend, so
//! `cargo xtask test` runs it in one pass only (natively with the tracepoint backend where the
//! host allows; see `ONCE` in xtask/src/test.rs).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use base64::Engine as _;
use probe_tests::{ProbeUser, connect, listener, probe_user_command, serving_addr};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
};

const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse";

/// A directory of the test's files, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("probe-web-{name}-{}", std::process::id()));
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

/// A certificate authority of the test's own, named `name`.
fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `name` signed by `ca`, with its key: (certificate PEM, key PEM).
fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, name: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// `basic_auth_users` with [`USER`]'s hash of [`PASSWORD`] (bcrypt's lowest cost: the test
/// checks the comparison, not its price).
fn users() -> String {
    format!(
        "basic_auth_users:\n  {USER}: {}\n",
        bcrypt::hash(PASSWORD, 4).unwrap()
    )
}

/// probe-user counting connects to `port` with its metrics on a free loopback port, as
/// `config` says; returns it and the bound address.
fn start(config: &std::path::Path, port: u16) -> (ProbeUser, SocketAddr) {
    let port = port.to_string();
    let tracer = ProbeUser::start_until(
        probe_user_command()
            .args(["--metrics", "127.0.0.1:0", "--filter-port", &port])
            .arg("--web-config-file")
            .arg(config),
        "Counting TCP connects",
    );
    let addr = serving_addr(&tracer);
    (tracer, addr)
}

/// `GET /metrics` on `stream`, with basic credentials if given: the whole response, or the
/// error that ended reading it.
fn get(
    mut stream: impl Read + Write,
    credentials: Option<(&str, &str)>,
) -> std::io::Result<String> {
    let mut request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n".to_string();
    if let Some((user, password)) = credentials {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Authorization: Basic {encoded}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// A TCP connection to `addr` whose reads give up after 10 s.
fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// A TLS connection to `addr` that trusts only `ca` (as `localhost`), with a client
/// certificate if given (certificate PEM, key PEM).
fn tls(
    addr: SocketAddr,
    ca: &CertifiedIssuer<'static, KeyPair>,
    client: Option<&(String, String)>,
) -> StreamOwned<ClientConnection, TcpStream> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    // The provider probe-user serves with (deprecated by rustls for lacking post-quantum key
    // exchange: see probe-user's web/tls.rs).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("localhost").unwrap();
    let connection = ClientConnection::new(Arc::new(config), name).unwrap();
    StreamOwned::new(connection, tcp(addr))
}

/// The status line of `response`.
fn status(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

/// Makes a connect to `target` and waits until a scrape with `scrape` shows it counted.
fn connect_and_see_it_counted(target: SocketAddr, scrape: impl Fn() -> String) -> String {
    connect(target, None).unwrap();
    let series = format!(
        "tcpconn_connects_total{{family=\"ipv4\",dport=\"{}\"}} 1",
        target.port()
    );
    let mut last = String::new();
    for _ in 0..50 {
        last = scrape();
        assert_eq!(status(&last), "HTTP/1.1 200 OK", "{last}");
        if last.lines().any(|l| l == series) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no {series} in {last}");
}

#[test]
fn web_basic_auth_over_plain_http() {
    let dir = Dir::new("auth");
    let config = dir.write(
        "web.yml",
        &format!(
            "{}http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
            users()
        ),
    );
    let target = listener("127.0.0.1:0");
    let (tracer, addr) = start(&config, target.port());
    assert!(
        tracer
            .preamble()
            .contains(&format!("serving metrics on http://{addr}/metrics")),
        "{}",
        tracer.preamble()
    );

    let nobody = get(tcp(addr), None).unwrap();
    assert_eq!(status(&nobody), "HTTP/1.1 401 Unauthorized", "{nobody}");
    let lower = nobody.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nwww-authenticate: basic realm=\"probe-user\""),
        "{nobody}"
    );
    assert!(!nobody.contains("tcpconn_"), "{nobody}");
    // The configured header comes with every answer, refusals included.
    assert!(
        lower.contains("\r\nx-content-type-options: nosniff\r\n"),
        "{nobody}"
    );
    for (user, password) in [(USER, "wrong"), ("nobody", PASSWORD), (USER, "")] {
        let refused = get(tcp(addr), Some((user, password))).unwrap();
        assert_eq!(
            status(&refused),
            "HTTP/1.1 401 Unauthorized",
            "{user}:{password}"
        );
        assert!(!refused.contains("tcpconn_"), "{refused}");
    }
    let body =
        connect_and_see_it_counted(target, || get(tcp(addr), Some((USER, PASSWORD))).unwrap());
    assert!(
        body.to_ascii_lowercase()
            .contains("\r\nx-content-type-options: nosniff\r\n"),
        "{body}"
    );
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn web_tls_with_basic_auth() {
    let dir = Dir::new("tls");
    let server_ca = ca("probe test server CA");
    let (cert, key) = leaf(&server_ca, "localhost");
    dir.write("server.crt", &cert);
    dir.write("server.key", &key);
    // Relative names: relative to the config file's directory.
    let config = dir.write(
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{}",
            users()
        ),
    );
    let target = listener("127.0.0.1:0");
    let (tracer, addr) = start(&config, target.port());
    assert!(
        tracer
            .preamble()
            .contains(&format!("serving metrics on https://{addr}/metrics")),
        "{}",
        tracer.preamble()
    );

    // Verified against the CA as "localhost"; credentials still needed inside TLS.
    let nobody = get(tls(addr, &server_ca, None), None).unwrap();
    assert_eq!(status(&nobody), "HTTP/1.1 401 Unauthorized", "{nobody}");
    connect_and_see_it_counted(target, || {
        get(tls(addr, &server_ca, None), Some((USER, PASSWORD))).unwrap()
    });

    // Plain HTTP to the TLS port gets no HTTP answer, let alone the metrics.
    let plain = get(tcp(addr), Some((USER, PASSWORD))).unwrap_or_default();
    assert!(!plain.starts_with("HTTP/"), "{plain:?}");
    assert!(!plain.contains("tcpconn_"), "{plain:?}");

    // A client that trusts another CA refuses the server.
    let stranger = get(
        tls(addr, &ca("probe test stranger CA"), None),
        Some((USER, PASSWORD)),
    );
    assert!(stranger.is_err(), "{stranger:?}");

    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn web_tls_client_certificates_required_and_verified() {
    let dir = Dir::new("mtls");
    let server_ca = ca("probe test server CA");
    let (cert, key) = leaf(&server_ca, "localhost");
    let clients_ca = ca("probe test clients CA");
    dir.write("server.crt", &cert);
    dir.write("server.key", &key);
    dir.write("clients.crt", &clients_ca.pem());
    let config = dir.write(
        "web.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.crt\n",
    );
    let target = listener("127.0.0.1:0");
    let (tracer, addr) = start(&config, target.port());

    // No certificate, or one the clients' CA did not sign: no answer but a TLS alert.
    let anonymous = get(tls(addr, &server_ca, None), None);
    assert!(
        anonymous
            .as_ref()
            .is_err_and(|e| e.to_string().contains("CertificateRequired")),
        "{anonymous:?}"
    );
    let forged = leaf(&ca("probe test other CA"), "scraper");
    let forged = get(tls(addr, &server_ca, Some(&forged)), None);
    assert!(
        forged
            .as_ref()
            .is_err_and(|e| e.to_string().contains("UnknownCA")),
        "{forged:?}"
    );
    let scraper = leaf(&clients_ca, "scraper");
    connect_and_see_it_counted(target, || {
        get(tls(addr, &server_ca, Some(&scraper)), None).unwrap()
    });

    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn web_config_errors_are_one_line_before_anything_is_attached() {
    let dir = Dir::new("errors");
    let bad_hash = dir.write("hash.yml", "basic_auth_users:\n  prometheus: secret\n");
    let missing_cert = dir.write(
        "cert.yml",
        "tls_server_config:\n  cert_file: nowhere.crt\n  key_file: nowhere.key\n",
    );
    for (config, problem) in [
        (
            bad_hash.clone(),
            "basic_auth_users: the hash of user \"prometheus\" is not a bcrypt hash: ".to_string(),
        ),
        (
            missing_cert.clone(),
            format!(
                "cannot read cert_file {}: No such file or directory (os error 2)",
                dir.0.join("nowhere.crt").display()
            ),
        ),
        (
            dir.0.join("absent.yml"),
            "cannot read it: No such file or directory (os error 2)".to_string(),
        ),
    ] {
        let out = probe_user_command()
            .args(["--metrics", "127.0.0.1:0", "--web-config-file"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        let expected = format!(
            "probe-user: error: --web-config-file {}: {problem}",
            config.display()
        );
        assert!(
            stderr.starts_with(&expected) && stderr.lines().count() == 1,
            "{stderr:?}, expected {expected:?}"
        );
    }
    // --web-config-file is for --metrics.
    let out = probe_user_command()
        .args(["--count", "--web-config-file"])
        .arg(&bad_hash)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "probe-user: error: the following required arguments were not provided: --metrics <ADDR>\n"
    );
}

/// `--metrics` outlives clients that hold connections without scraping: 300 idle connections
/// and one that never finishes its request headers do not keep a scrape out for more than
/// probe-user's header timeout (5 s; its connection deadline is 10 s): the connections
/// beyond its cap (64) are answered 503 and closed at once, the others closed when the header
/// timeout expires. `--metrics 0` says which port the kernel picked.
#[test]
fn metrics_endpoint_outlasts_idle_and_slow_clients() {
    use std::{
        io::{Read as _, Write as _},
        net::{Ipv4Addr, SocketAddr, TcpStream},
        time::Instant,
    };

    /// probe-user's cap on connections served at once (`metrics::MAX_CONNECTIONS`).
    const MAX_CONNECTIONS: usize = 64;
    const BUSY: &str = "HTTP/1.1 503 Service Unavailable\r\n";
    const OK: &str = "HTTP/1.1 200 OK\r\n";

    /// The address in probe-user's `probe-user: serving metrics on http://ADDR/metrics` line,
    /// printed before the banner, never port 0.
    fn serving_addr(tracer: &ProbeUser) -> SocketAddr {
        let preamble = tracer.preamble();
        let addr = preamble
            .lines()
            .find_map(|l| l.strip_prefix("probe-user: serving metrics on http://"))
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("no serving line before the banner: {preamble:?}"));
        let addr: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}"));
        assert_ne!(addr.port(), 0, "{preamble:?}");
        addr
    }

    /// Everything `stream` receives until the server closes it, each read bounded by
    /// `timeout`: Err if a read times out (the server kept the connection open).
    fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> std::io::Result<String> {
        stream.set_read_timeout(Some(timeout))?;
        let mut received = Vec::new();
        match stream.read_to_end(&mut received) {
            Ok(_) => {}
            // Closed with unread data on the server's side.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => return Err(e),
        }
        Ok(String::from_utf8_lossy(&received).into_owned())
    }

    /// One scrape of `/metrics` on a new connection, every step bounded by `timeout`.
    fn scrape(addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        read_until_closed(&mut stream, timeout)
    }

    // `--metrics 0`: loopback, on a port the kernel picks, and that port is the one served.
    let tracer = ProbeUser::start_until(
        probe_user_command().args(["--metrics", "0"]),
        "Counting TCP connects",
    );
    let addr = serving_addr(&tracer);
    assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST);
    let response = scrape(addr, Duration::from_secs(5)).unwrap();
    assert!(response.starts_with(OK), "{response:?}");
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");

    let tracer = ProbeUser::start_until(
        probe_user_command().args(["--metrics", "127.0.0.1:0"]),
        "Counting TCP connects",
    );
    let addr = serving_addr(&tracer);
    assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST);
    let start = Instant::now();
    // First a request whose headers never end, then 300 connections that send nothing (well
    // within this process's and probe-user's 1024 descriptors).
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let mut idle: Vec<TcpStream> = (0..300)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();

    // Scrapes get through once the header timeout has freed the slots (503 until then).
    let mut attempts = 0;
    let response = loop {
        attempts += 1;
        let refused = match scrape(addr, Duration::from_secs(5)) {
            Ok(response) if response.starts_with(OK) => break response,
            other => other,
        };
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no scrape got through in 20 s ({attempts} attempts), the last: {refused:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let waited = start.elapsed();
    let (head, body) = probe_tests::http_response(&response);
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.contains("tcpconn_events_dropped_total 0\n"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    // Not at once: the first attempts found every slot taken.
    assert!(attempts > 1, "{attempts} attempts in {waited:?}");

    // Every connection was closed by probe-user: the slow one and the first 63 idle ones (the
    // cap, less the slow one) when their header timeout expired, without an answer; the 237
    // beyond the cap at once, with a 503.
    assert_eq!(
        read_until_closed(&mut slow, Duration::from_secs(5)).unwrap(),
        ""
    );
    let mut refused = 0;
    for (i, stream) in idle.iter_mut().enumerate() {
        let received = read_until_closed(stream, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("idle connection {i} still open: {e}"));
        if i < MAX_CONNECTIONS - 1 {
            assert_eq!(received, "", "idle connection {i}");
        } else {
            assert!(
                received.starts_with(BUSY),
                "idle connection {i}: {received:?}"
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 300 - (MAX_CONNECTIONS - 1));
    drop((slow, idle));

    // And it keeps serving, straight away now.
    let response = scrape(addr, Duration::from_secs(5)).unwrap();
    assert!(response.starts_with(OK), "{response:?}");
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "", "nothing is printed per connect");
}
