//! Where and how to push: `--otlp-endpoint` and the OpenTelemetry SDK's environment variables
//! (`OTEL_EXPORTER_OTLP_*`, `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_SERVICE_NAME`), read and checked once at start, before anything is attached. Each
//! `OTEL_EXPORTER_OTLP_METRICS_X` wins over `OTEL_EXPORTER_OTLP_X`; an empty variable counts as
//! unset, as the specification says.

use std::time::Duration;

use hyper::{
    Uri,
    header::{HeaderMap, HeaderName, HeaderValue},
};

/// The wire protocol (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `grpc`: the `MetricsService/Export` call over HTTP/2.
    Grpc,
    /// `http/protobuf`: the request's protobuf encoding POSTed over HTTP/1.1.
    HttpProtobuf,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// The path of metrics under an http/protobuf base endpoint.
const METRICS_PATH: &str = "v1/metrics";

/// Everything the push needs, checked.
#[derive(Debug)]
pub struct Config {
    pub protocol: Protocol,
    /// The URL requests go to (for http/protobuf, with its path).
    pub endpoint: Uri,
    pub headers: HeaderMap,
    /// The longest one push may take.
    pub timeout: Duration,
    /// How often to push.
    pub interval: Duration,
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`'s PEM: roots trusted besides the system's.
    pub certificate: Option<Vec<u8>>,
    /// The resource's attributes: `OTEL_RESOURCE_ATTRIBUTES` (decoded), then `service.name`
    /// (`OTEL_SERVICE_NAME` wins over the one in `OTEL_RESOURCE_ATTRIBUTES`).
    pub resource: Vec<(String, String)>,
}

impl Config {
    /// The configuration of `--otlp-endpoint [URL]` (`flag`: the URL, if given) from the
    /// environment `var`, or the one line that says what is wrong.
    pub fn from_env(
        flag: Option<&str>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, String> {
        // Unset and empty are the same (the specification says so).
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let signal = |x: &str| {
            let specific = format!("OTEL_EXPORTER_OTLP_METRICS_{x}");
            match var(&specific) {
                Some(v) => Some((specific, v)),
                None => {
                    let generic = format!("OTEL_EXPORTER_OTLP_{x}");
                    var(&generic).map(|v| (generic, v))
                }
            }
        };
        let protocol = match signal("PROTOCOL") {
            None => Protocol::HttpProtobuf,
            Some((_, v)) if v.trim() == "grpc" => Protocol::Grpc,
            Some((_, v)) if v.trim() == "http/protobuf" => Protocol::HttpProtobuf,
            Some((name, v)) => {
                return Err(format!(
                    "{name}={v:?} is not a protocol probe-user pushes (expected grpc or http/protobuf)"
                ));
            }
        };
        let endpoint = match (flag, var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")) {
            (Some(url), _) => flag_endpoint(url, protocol)?,
            (None, Some(url)) => parse_url("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &url)?,
            (None, None) => {
                let (name, base) = match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                    Some(url) => ("OTEL_EXPORTER_OTLP_ENDPOINT", url),
                    None => ("the default endpoint", default_base(protocol).to_string()),
                };
                let base = parse_url(name, &base)?;
                match protocol {
                    Protocol::Grpc => base,
                    Protocol::HttpProtobuf => with_metrics_path(&base),
                }
            }
        };
        let headers = match signal("HEADERS") {
            Some((name, v)) => parse_headers(&v).map_err(|e| format!("{name}: {e}"))?,
            None => HeaderMap::new(),
        };
        let timeout = match signal("TIMEOUT") {
            Some((name, v)) => millis(&name, &v)?,
            None => Duration::from_secs(10),
        };
        let interval = match var("OTEL_METRIC_EXPORT_INTERVAL") {
            Some(v) => millis("OTEL_METRIC_EXPORT_INTERVAL", &v)?,
            None => Duration::from_secs(60),
        };
        let certificate = match signal("CERTIFICATE") {
            Some((name, path)) => Some(
                std::fs::read(&path).map_err(|e| format!("{name}: cannot read {path:?}: {e}"))?,
            ),
            None => None,
        };
        if let Some((name, v)) = signal("COMPRESSION")
            && v.trim() != "none"
        {
            return Err(format!(
                "{name}={v:?}: probe-user pushes uncompressed only (expected none)"
            ));
        }
        let mut resource = match var("OTEL_RESOURCE_ATTRIBUTES") {
            Some(v) => parse_pairs(&v).map_err(|e| format!("OTEL_RESOURCE_ATTRIBUTES: {e}"))?,
            None => Vec::new(),
        };
        if let Some(name) = var("OTEL_SERVICE_NAME") {
            resource.retain(|(k, _)| k != "service.name");
            resource.push(("service.name".into(), name));
        }
        Ok(Config {
            protocol,
            endpoint,
            headers,
            timeout,
            interval,
            certificate,
            resource,
        })
    }
}

/// The specification's default endpoint of `protocol`.
fn default_base(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Grpc => "http://localhost:4317",
        Protocol::HttpProtobuf => "http://localhost:4318",
    }
}

/// `--otlp-endpoint URL`: a URL for metrics like `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, used as
/// it is, except that for http/protobuf a URL without a path (`http://collector:4318`) gets
/// `/v1/metrics`, where a collector's OTLP receiver takes metrics.
fn flag_endpoint(url: &str, protocol: Protocol) -> Result<Uri, String> {
    let uri = parse_url("--otlp-endpoint", url)?;
    let bare = matches!(uri.path_and_query().map(|p| p.as_str()), None | Some("/"));
    Ok(if protocol == Protocol::HttpProtobuf && bare {
        with_metrics_path(&uri)
    } else {
        uri
    })
}

/// An `http` or `https` URL with a host.
fn parse_url(name: &str, url: &str) -> Result<Uri, String> {
    let bad = |why: &str| format!("{name}: {url:?} is not an OTLP endpoint: {why}");
    let uri: Uri = url.trim().parse().map_err(|e| bad(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("expected http://HOST:PORT or https://HOST:PORT")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(uri)
}

/// `base` with `v1/metrics` appended to its path (the specification's rule for the generic
/// endpoint: `http://host:4318/prefix` sends to `http://host:4318/prefix/v1/metrics`).
fn with_metrics_path(base: &Uri) -> Uri {
    let path = base.path().trim_end_matches('/');
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(
        format!("{path}/{METRICS_PATH}")
            .parse()
            .expect("a valid path with a plain suffix is valid"),
    );
    Uri::from_parts(parts).expect("the parts came from a valid URI")
}

/// A positive number of milliseconds.
fn millis(name: &str, v: &str) -> Result<Duration, String> {
    match v.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "{name}={v:?}: expected a positive number of milliseconds"
        )),
    }
}

/// `key1=value1,key2=value2` (W3C Baggage without properties), keys and values
/// percent-decoded and trimmed, as `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS`
/// are written.
fn parse_pairs(list: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for item in list.split(',').filter(|i| !i.trim().is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!("{:?} is not KEY=VALUE", item.trim()));
        };
        let key = percent_decode(key.trim())?;
        if key.is_empty() {
            return Err(format!("{:?} has no key", item.trim()));
        }
        pairs.push((key, percent_decode(value.trim())?));
    }
    Ok(pairs)
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: pairs that must be valid HTTP header names and values.
fn parse_headers(list: &str) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (key, value) in parse_pairs(list)? {
        let name = HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| format!("{key:?} is not a header name"))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("the value of {key:?} is not a header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// `%XX` escapes decoded; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{s:?} has a % not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flag: Option<&str>, env: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_env(flag, |name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_follow_the_specification() {
        let c = config(None, &[]).unwrap();
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.endpoint, "http://localhost:4318/v1/metrics");
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.interval, Duration::from_secs(60));
        assert!(c.headers.is_empty() && c.resource.is_empty() && c.certificate.is_none());
        let grpc = config(None, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap();
        assert_eq!(grpc.protocol, Protocol::Grpc);
        assert_eq!(grpc.endpoint, "http://localhost:4317/");
    }

    #[test]
    fn generic_endpoint_gets_the_metrics_path_and_the_specific_one_does_not() {
        let generic = |url| {
            config(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", url)])
                .unwrap()
                .endpoint
        };
        assert_eq!(generic("http://c:4318"), "http://c:4318/v1/metrics");
        assert_eq!(generic("http://c:4318/"), "http://c:4318/v1/metrics");
        assert_eq!(generic("https://c/otlp/"), "https://c/otlp/v1/metrics");
        let both = config(
            None,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
                ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://c:9/custom"),
            ],
        )
        .unwrap();
        assert_eq!(both.endpoint, "http://c:9/custom");
        // gRPC takes the endpoint as it is.
        let grpc = config(
            None,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
        )
        .unwrap();
        assert_eq!(grpc.endpoint, "http://c:4317/");
    }

    #[test]
    fn the_flag_wins_and_a_bare_http_url_gets_the_metrics_path() {
        let env = [("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://env:1/x")];
        let flag = |url| config(Some(url), &env).unwrap().endpoint;
        assert_eq!(flag("http://c:4318"), "http://c:4318/v1/metrics");
        assert_eq!(flag("http://c:4318/in"), "http://c:4318/in");
        let grpc = config(
            Some("http://c:4317"),
            &[("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc")],
        )
        .unwrap();
        assert_eq!(grpc.endpoint, "http://c:4317/");
    }

    #[test]
    fn the_metrics_variable_wins_over_the_generic_one() {
        let c = config(
            None,
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
                ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
                ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "b=2"),
                // Empty is unset.
                ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", ""),
            ],
        )
        .unwrap();
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.headers.len(), 1);
        assert_eq!(c.headers["b"], "2");
        assert_eq!(c.endpoint, "http://localhost:4317/");
    }

    #[test]
    fn headers_and_resource_attributes_are_percent_decoded() {
        let c = config(
            None,
            &[
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    " Authorization = Basic%20dTpw ,x-tenant=a%2Cb,",
                ),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "service.name=ignored,deployment.environment=prod%20eu,k8s.cluster.name=c%3D1",
                ),
                ("OTEL_SERVICE_NAME", "edge"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "250"),
            ],
        )
        .unwrap();
        assert_eq!(c.headers["authorization"], "Basic dTpw");
        assert_eq!(c.headers["x-tenant"], "a,b");
        assert_eq!(
            c.resource,
            [
                ("deployment.environment".into(), "prod eu".into()),
                ("k8s.cluster.name".into(), "c=1".into()),
                ("service.name".into(), "edge".into()),
            ]
        );
        assert_eq!(c.interval, Duration::from_millis(250));
    }

    #[test]
    fn bad_values_are_one_line_naming_the_variable() {
        let err = |flag: Option<&str>, env: &[(&str, &str)]| config(flag, env).unwrap_err();
        for (flag, env, expected) in [
            (
                Some("collector:4317"),
                &[][..],
                "--otlp-endpoint: \"collector:4317\" is not an OTLP endpoint: expected http://HOST:PORT or https://HOST:PORT",
            ),
            (
                Some("ftp://c/"),
                &[],
                "--otlp-endpoint: \"ftp://c/\" is not an OTLP endpoint: expected http://HOST:PORT or https://HOST:PORT",
            ),
            (
                Some("http://"),
                &[],
                "--otlp-endpoint: \"http://\" is not an OTLP endpoint: empty string",
            ),
            (
                None,
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a b")],
                "OTEL_EXPORTER_OTLP_ENDPOINT: \"http://a b\" is not an OTLP endpoint: invalid uri character",
            ),
            (
                None,
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
                "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\" is not a protocol probe-user pushes (expected grpc or http/protobuf)",
            ),
            (
                None,
                &[("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "10s")],
                "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT=\"10s\": expected a positive number of milliseconds",
            ),
            (
                None,
                &[("OTEL_METRIC_EXPORT_INTERVAL", "0")],
                "OTEL_METRIC_EXPORT_INTERVAL=\"0\": expected a positive number of milliseconds",
            ),
            (
                None,
                &[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")],
                "OTEL_EXPORTER_OTLP_HEADERS: \"novalue\" is not KEY=VALUE",
            ),
            (
                None,
                &[("OTEL_EXPORTER_OTLP_HEADERS", "bad name=1")],
                "OTEL_EXPORTER_OTLP_HEADERS: \"bad name\" is not a header name",
            ),
            (
                None,
                &[("OTEL_EXPORTER_OTLP_HEADERS", "a=%0A")],
                "OTEL_EXPORTER_OTLP_HEADERS: the value of \"a\" is not a header value",
            ),
            (
                None,
                &[("OTEL_RESOURCE_ATTRIBUTES", "a=%zz")],
                "OTEL_RESOURCE_ATTRIBUTES: \"%zz\" has a % not followed by two hex digits",
            ),
            (
                None,
                &[("OTEL_RESOURCE_ATTRIBUTES", "=x")],
                "OTEL_RESOURCE_ATTRIBUTES: \"=x\" has no key",
            ),
            (
                None,
                &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")],
                "OTEL_EXPORTER_OTLP_COMPRESSION=\"gzip\": probe-user pushes uncompressed only (expected none)",
            ),
            (
                None,
                &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")],
                "OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read \"/nonexistent/ca.pem\": No such file or directory (os error 2)",
            ),
        ] {
            let e = err(flag, env);
            assert_eq!(e, expected);
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
