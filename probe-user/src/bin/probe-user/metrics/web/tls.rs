//! `tls_server_config` as a rustls server configuration (the ring provider), with Go's
//! `crypto/tls` names (what exporter-toolkit's files say) mapped onto rustls'.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    DigitallySignedStruct, DistinguishedName, NamedGroup, RootCertStore, SignatureScheme,
    SupportedProtocolVersion,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject as _},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    version::{TLS12, TLS13},
};

use super::TlsFile;

/// Go's names of the curves exporter-toolkit accepts, and the groups they are.
const CURVES: &[(&str, NamedGroup)] = &[
    ("CurveP256", NamedGroup::secp256r1),
    ("CurveP384", NamedGroup::secp384r1),
    ("CurveP521", NamedGroup::secp521r1),
    ("X25519", NamedGroup::X25519),
];

/// The server side of every TLS connection, from `tls`, whose files are relative to `dir`.
pub(super) fn server_config(tls: TlsFile, dir: &Path) -> Result<rustls::ServerConfig, String> {
    tls.refuse_unsupported()?;
    let (cert_what, cert) = source(("cert", tls.cert), ("cert_file", tls.cert_file), dir)?
        .ok_or("tls_server_config needs cert_file (or cert) with key_file (or key)")?;
    let (key_what, key) = source(("key", tls.key), ("key_file", tls.key_file), dir)?
        .ok_or("tls_server_config needs key_file (or key) with cert_file (or cert)")?;
    let certs = certificates(&cert_what, &cert)?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{key_what} holds no private key (PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
        ),
        e => format!("{key_what}: {e}"),
    })?;
    let client_cas = match source(
        ("client_ca", tls.client_ca),
        ("client_ca_file", tls.client_ca_file),
        dir,
    )? {
        Some((what, pem)) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(&what, &pem)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{what}: not a usable CA certificate: {e}"))?;
            }
            Some(roots)
        }
        None => None,
    };

    let provider = Arc::new(provider(&tls.cipher_suites, &tls.curve_preferences)?);
    let versions = versions(tls.min_version.as_deref(), tls.max_version.as_deref())?;
    let verifier = client_verifier(tls.client_auth_type.as_deref(), client_cas, &provider)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("{cert_what} and {key_what}: {e}"))?;
    // Go's default, and exporter-toolkit's: the server's order of cipher suites wins.
    config.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The PEM text given inline (`cert`) or in a file (`cert_file`, relative to `dir`), with
/// what to call it in errors; `None` if neither is set.
fn source(
    (inline_key, inline): (&str, Option<String>),
    (file_key, file): (&str, Option<PathBuf>),
    dir: &Path,
) -> Result<Option<(String, Vec<u8>)>, String> {
    let inline = inline.filter(|s| !s.is_empty());
    let file = file.filter(|p| !p.as_os_str().is_empty());
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!(
            "tls_server_config: set {inline_key} or {file_key}, not both"
        )),
        (Some(text), None) => Ok(Some((inline_key.to_string(), text.into_bytes()))),
        (None, Some(file)) => {
            let path = dir.join(file);
            let what = format!("{file_key} {}", path.display());
            let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {what}: {e}"))?;
            Ok(Some((what, bytes)))
        }
        (None, None) => Ok(None),
    }
}

/// Every certificate of a PEM text (at least one).
fn certificates(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} holds no certificate (PEM BEGIN CERTIFICATE)"
        ));
    }
    Ok(certs)
}

/// The TLS versions from `min_version` to `max_version` (TLS12 and TLS13 by default, as in
/// exporter-toolkit).
fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let parse = |key: &str, name: Option<&str>, default: u8| match name {
        None | Some("") => Ok(default),
        Some("TLS12") => Ok(12),
        Some("TLS13") => Ok(13),
        Some(old @ ("TLS10" | "TLS11")) => Err(format!(
            "tls_server_config.{key} {old} is not supported: probe-user speaks TLS12 and TLS13 only"
        )),
        Some(other) => Err(format!(
            "tls_server_config.{key}: unknown TLS version {other:?} (expected TLS12 or TLS13)"
        )),
    };
    let min = parse("min_version", min, 12)?;
    let max = parse("max_version", max, 13)?;
    if min > max {
        return Err(format!(
            "tls_server_config: min_version TLS{min} is above max_version TLS{max}"
        ));
    }
    Ok([(12, &TLS12), (13, &TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, version)| version)
        .collect())
}

/// The ring provider, its TLS 1.2 cipher suites and its key exchange groups narrowed and
/// ordered as the file says (TLS 1.3's suites are not configurable, as in Go).
fn provider(cipher_suites: &[String], curves: &[String]) -> Result<CryptoProvider, String> {
    // Deprecated in rustls for lacking post-quantum key exchange (X25519MLKEM768), which only
    // its aws-lc-rs provider has; that one needs cmake to build, and a scrape's connection
    // falls back to X25519, which clients that offer the hybrid offer too.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    if !cipher_suites.is_empty() {
        let all = provider.cipher_suites.clone();
        let name = |suite: &rustls::SupportedCipherSuite| format!("{:?}", suite.suite());
        let mut chosen: Vec<_> = all
            .iter()
            .filter(|s| s.tls13().is_some())
            .copied()
            .collect();
        for wanted in cipher_suites {
            let suite = all.iter().find(|s| name(s) == *wanted).ok_or_else(|| {
                let names: Vec<String> = all.iter().map(name).collect();
                format!(
                    "tls_server_config.cipher_suites: {wanted:?} is not one probe-user can use (it has {})",
                    names.join(", ")
                )
            })?;
            if suite.tls13().is_none() {
                chosen.push(*suite);
            }
        }
        provider.cipher_suites = chosen;
    }
    if !curves.is_empty() {
        let all = provider.kx_groups.clone();
        let has: Vec<&str> = CURVES
            .iter()
            .filter(|(_, g)| all.iter().any(|kx| kx.name() == *g))
            .map(|(n, _)| *n)
            .collect();
        provider.kx_groups = curves
            .iter()
            .map(|wanted| {
                CURVES
                    .iter()
                    .find(|(n, _)| n == wanted)
                    .and_then(|(_, group)| all.iter().find(|kx| kx.name() == *group))
                    .copied()
                    .ok_or_else(|| {
                        format!(
                            "tls_server_config.curve_preferences: {wanted:?} is not one probe-user can use (it has {})",
                            has.join(", ")
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(provider)
}

/// `client_auth_type` (Go's `tls.ClientAuthType` names) with the client CAs, if any.
fn client_verifier(
    auth_type: Option<&str>,
    client_cas: Option<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let auth_type = auth_type.unwrap_or("");
    let verified = |cas: Option<RootCertStore>| {
        cas.map(Arc::new).ok_or_else(|| {
            format!("tls_server_config.client_auth_type {auth_type} needs client_ca_file (or client_ca): the CAs that sign client certificates")
        })
    };
    let any = |mandatory| -> Arc<dyn ClientCertVerifier> {
        Arc::new(AnyClientCert {
            mandatory,
            algorithms: provider.signature_verification_algorithms,
        })
    };
    Ok(match auth_type {
        "" | "NoClientCert" => {
            if client_cas.is_some() {
                return Err("tls_server_config: client CAs are set but client_auth_type is NoClientCert (set client_auth_type: RequireAndVerifyClientCert to check client certificates)".into());
            }
            WebPkiClientVerifier::no_client_auth()
        }
        "RequestClientCert" => any(false),
        // "RequireClientCert": exporter-toolkit's older name for it.
        "RequireAnyClientCert" | "RequireClientCert" => any(true),
        "VerifyClientCertIfGiven" => {
            WebPkiClientVerifier::builder_with_provider(verified(client_cas)?, Arc::clone(provider))
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?
        }
        "RequireAndVerifyClientCert" => {
            WebPkiClientVerifier::builder_with_provider(verified(client_cas)?, Arc::clone(provider))
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: unknown {other:?} (expected NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
            ));
        }
    })
}

/// Go's `RequestClientCert` and `RequireAnyClientCert`: a client certificate is asked for
/// (and with `mandatory`, required) but not checked against any CA; the client still proves
/// it holds the certificate's key. Neither admits anyone a CA did not vouch for any less than
/// no client authentication does: exporter-toolkit's docs call them insecure too.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
