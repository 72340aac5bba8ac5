//! The `--count` table: a text table in the `stap` format, one JSON object per table in `json`.

use std::{io::Write as _, net::SocketAddr};

use super::{
    Format, Formatter,
    json::{JsonCount, JsonCountWorkload, JsonNaming},
    line::{push_endpoint, push_millis},
};
use crate::{
    ConnectCount, CountBy,
    escape::{Escaped, escape},
    names::Named as _,
};

impl Formatter {
    /// Appends the `--count` table of `counts` as of `unix_s`: a text table in `stap` format,
    /// one JSON object (`{"time_s":..,"counts":[..]}`) and a newline in `json`. (`minimal`
    /// shows no destination; the command refuses it with counting, and here it writes the text
    /// table.)
    pub fn write_counts(&self, out: &mut Vec<u8>, unix_s: u64, counts: &[ConnectCount]) {
        if self.format == Format::Json {
            let rows: Vec<JsonCount> = counts
                .iter()
                .map(|c| JsonCount {
                    function: c.function().name(),
                    role: (c.role == crate::Role::Server).then(|| c.role.name()),
                    family: c.family.name(),
                    daddr: c.daddr,
                    dport: c.dport,
                    connects: c.connects,
                    overflow: c.overflow,
                    outcome: c.outcome.map(|o| o.name()),
                    cause: c.cause.map(|o| o.name()),
                    latency_ns_sum: c.outcome.map(|_| c.latency_ns),
                    syn_retransmits: c.outcome.map(|_| c.syn_retransmits),
                    connections: c.connections.as_ref().map(Into::into),
                    naming: JsonNaming::of(c.dns_name.as_deref(), c.nat_dst),
                    workload: c.workload.as_ref().map(|w| JsonCountWorkload {
                        // A row of a whole container has no one cgroup.
                        cgroup_id: c.cgroup_id,
                        cgroup: c.cgroup_id.map(|_| w.cgroup.as_deref()),
                        container_id: w.container.as_deref(),
                        pod_uid: w.pod.as_deref(),
                    }),
                })
                .collect();
            let table = serde_json::json!({ "time_s": unix_s, "counts": rows });
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &table);
            out.push(b'\n');
            return;
        }
        let _ = writeln!(out, "{unix_s}: connects since start");
        // With outcomes, a row per destination, outcome and cause, with the average latency
        // and the SYN retransmits.
        let outcomes = counts.iter().any(|c| c.outcome.is_some());
        let _ = write!(out, "{:>10}  ", "CONNECTS");
        if outcomes {
            let _ = write!(
                out,
                "{:<11}  {:<7}  {:>12}  {:>7}  ",
                "OUTCOME", "CAUSE", "AVG LATENCY", "RETRANS"
            );
        }
        // With lifetimes, the connections of the established rows: open now, closed, and the
        // closed ones' payload bytes each way.
        let connections = counts.iter().any(|c| c.connections.is_some());
        if connections {
            let _ = write!(
                out,
                "{:>7}  {:>7}  {:>12}  {:>12}  ",
                "ACTIVE", "CLOSED", "BYTES SENT", "BYTES RECV"
            );
        }
        // By cgroup or container the row names who connected instead of where to (the
        // formatter is told, or else the rows tell: an empty table then says DESTINATION).
        let rows = || counts.iter().filter(|c| !c.overflow);
        let inferred_workload =
            rows().any(|c| c.workload.is_some() && c.daddr.is_none() && c.dport == 0);
        let inferred_container =
            inferred_workload && rows().all(|c| c.workload.is_some() && c.cgroup_id.is_none());
        let (by_workload, by_container) = match self.count_by {
            Some(CountBy::Cgroup) => (true, false),
            Some(CountBy::Container) => (true, true),
            Some(CountBy::Destination | CountBy::Port | CountBy::Name) => (false, false),
            None => (inferred_workload, inferred_container),
        };
        let last = match (by_workload, by_container) {
            (false, _) => "DESTINATION",
            (true, false) => "CGROUP",
            (true, true) => "CONTAINER",
        };
        // `tcp_v6_connect`, and with accepts `inet_csk_accept`.
        let width = match counts.iter().any(|c| c.role == crate::Role::Server) {
            true => "inet_csk_accept".len(),
            false => "tcp_v6_connect".len(),
        };
        let _ = writeln!(out, "{:<width$}  {last}", "FUNCTION");
        for c in counts {
            // A row of accepts (`--accept`) is `inet_csk_accept`'s, its destination the local
            // end.
            let function = c.function().name();
            let _ = write!(out, "{:>10}  ", c.connects);
            if let Some(outcome) = c.outcome {
                let mut avg = Vec::new();
                push_millis(&mut avg, c.latency_ns / c.connects.max(1));
                let avg = String::from_utf8_lossy(&avg);
                let cause = c.cause.map_or("-", |c| c.name());
                let _ = write!(
                    out,
                    "{:<11}  {cause:<7}  {avg:>12}  {:>7}  ",
                    outcome.name(),
                    c.syn_retransmits
                );
            } else if outcomes {
                // A row of accepts beside connects' outcomes: accepts have none.
                let _ = write!(out, "{:<11}  {:<7}  {:>12}  {:>7}  ", "-", "-", "-", "-");
            }
            match &c.connections {
                Some(n) => {
                    let _ = write!(
                        out,
                        "{:>7}  {:>7}  {:>12}  {:>12}  ",
                        n.active(),
                        n.closed,
                        n.bytes_sent,
                        n.bytes_received
                    );
                }
                None if connections => {
                    let _ = write!(out, "{:>7}  {:>7}  {:>12}  {:>12}  ", "-", "-", "-", "-");
                }
                None => {}
            }
            let _ = write!(out, "{function:<width$}  ");
            match (&c.workload, c.daddr) {
                // Every label set past the budget (`--max-series`).
                _ if c.overflow => out.extend_from_slice(b"other"),
                (Some(w), _) if by_workload => push_workload(out, w, c.cgroup_id, by_container),
                (_, Some(ip)) => push_endpoint(out, SocketAddr::new(ip, c.dport)),
                // By name: the name and port (names are anyone's to answer: escaped).
                (_, None) if self.count_by == Some(CountBy::Name) => {
                    let name = c.dns_name.as_deref().map_or("*".into(), escape);
                    let _ = write!(out, "{name}:{}", c.dport);
                }
                (_, None) => {
                    let _ = write!(out, "*:{}", c.dport);
                }
            }
            // The destination's name (unless it is the row's key), and where a NAT sent the
            // connects.
            let by_name = self.count_by == Some(CountBy::Name);
            if let Some(name) = c.dns_name.as_deref().filter(|_| !by_name) {
                let _ = write!(out, " ({})", Escaped(name));
            }
            if let Some(nat) = c.nat_dst {
                out.extend_from_slice(b" -> ");
                push_endpoint(out, nat);
            }
            out.push(b'\n');
        }
    }
}

/// A count row's workload: its container id (`-` for none), or its cgroup path (its id if the
/// path could not be resolved), with the pod after it if any; names escaped, as anyone who can
/// make a cgroup chooses them.
fn push_workload(
    out: &mut Vec<u8>,
    w: &crate::WorkloadNames,
    cgroup_id: Option<u64>,
    by_container: bool,
) {
    if by_container {
        let id = w.container.as_deref().unwrap_or("-");
        out.extend_from_slice(escape(id).as_bytes());
    } else {
        match &w.cgroup {
            Some(path) => out.extend_from_slice(escape(path).as_bytes()),
            None => {
                let _ = write!(out, "cgroup id {}", cgroup_id.unwrap_or(0));
            }
        }
    }
    if let Some(pod) = &w.pod {
        let _ = write!(out, " (pod {})", Escaped(pod));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;

    #[test]
    fn count_tables() {
        let counts = [
            ConnectCount {
                family: crate::Family::V4,
                daddr: Some("127.0.0.1".parse().unwrap()),
                dport: 8080,
                connects: 12,
                ..COUNT
            },
            ConnectCount {
                family: crate::Family::V6,
                daddr: None,
                dport: 443,
                connects: 3,
                ..COUNT
            },
        ];
        let table = |format| table(format, &counts);
        assert_eq!(
            table(Format::Stap),
            concat!(
                "1795778063: connects since start\n",
                "  CONNECTS  FUNCTION        DESTINATION\n",
                "        12  tcp_v4_connect  127.0.0.1:8080\n",
                "         3  tcp_v6_connect  *:443\n",
            )
        );
        assert_eq!(
            table(Format::Json),
            concat!(
                r#"{"counts":[{"connects":12,"daddr":"127.0.0.1","dport":8080,"family":"ipv4","function":"tcp_v4_connect"},"#,
                r#"{"connects":3,"daddr":null,"dport":443,"family":"ipv6","function":"tcp_v6_connect"}],"time_s":1795778063}"#,
                "\n"
            )
        );
    }

    /// `counts` as a table in `format`.
    fn table(format: Format, counts: &[ConnectCount]) -> String {
        let mut out = Vec::new();
        Formatter::new(format, CLOCK).write_counts(&mut out, 1795778063, counts);
        String::from_utf8(out).unwrap()
    }

    const COUNT: ConnectCount = ConnectCount::new(crate::Family::V4, None, 0);

    /// Names and NAT destinations in tables: by name the row is `name:port` (`*` for no name),
    /// otherwise the name follows the destination in parentheses, escaped, and the NAT's
    /// destination after `->`; JSON rows carry them as fields.
    #[test]
    fn count_tables_with_names_and_nat() {
        let named = ConnectCount {
            dport: 443,
            dns_name: Some("api.test\u{1b}[2J".into()),
            connects: 3,
            ..COUNT
        };
        let unnamed = ConnectCount {
            dport: 443,
            connects: 1,
            ..COUNT
        };
        let mut out = Vec::new();
        Formatter::new(Format::Stap, CLOCK)
            .count_by(CountBy::Name)
            .write_counts(&mut out, 1795778063, &[named.clone(), unnamed.clone()]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                "1795778063: connects since start\n",
                "  CONNECTS  FUNCTION        DESTINATION\n",
                "         3  tcp_v4_connect  api.test\\u{1b}[2J:443\n",
                "         1  tcp_v4_connect  *:443\n",
            )
        );
        let natted = ConnectCount {
            daddr: Some("10.96.0.10".parse().unwrap()),
            nat_dst: Some("10.0.3.17:8443".parse().unwrap()),
            ..named
        };
        assert_eq!(
            table(Format::Stap, std::slice::from_ref(&natted))
                .lines()
                .nth(2),
            Some(
                "         3  tcp_v4_connect  10.96.0.10:443 (api.test\\u{1b}[2J) -> 10.0.3.17:8443"
            )
        );
        let by_port = ConnectCount {
            daddr: None,
            ..natted
        };
        assert!(table(Format::Stap, std::slice::from_ref(&by_port)).contains("*:443 (api.test"));
        let json: serde_json::Value =
            serde_json::from_str(&table(Format::Json, &[by_port, unnamed])).unwrap();
        let rows = &json["counts"];
        assert_eq!(
            (
                &rows[0]["dns_name"],
                &rows[0]["nat_daddr"],
                &rows[0]["nat_dport"]
            ),
            (
                &serde_json::json!("api.test\u{1b}[2J"),
                &serde_json::json!("10.0.3.17"),
                &serde_json::json!(8443)
            )
        );
        assert!(rows[1].get("dns_name").is_none() && rows[1].get("nat_daddr").is_none());
    }

    /// 4 connects established to 127.0.0.1:8080, 0.25 ms on average.
    fn established_8080() -> ConnectCount {
        ConnectCount {
            daddr: Some("127.0.0.1".parse().unwrap()),
            dport: 8080,
            outcome: Some(crate::Outcome::Established),
            connects: 4,
            latency_ns: 1_000_000,
            ..COUNT
        }
    }

    #[test]
    fn count_tables_with_outcomes() {
        let counts = [
            established_8080(),
            ConnectCount {
                daddr: Some("127.0.0.1".parse().unwrap()),
                dport: 8081,
                outcome: Some(crate::Outcome::Refused),
                cause: Some(crate::failure::Cause::Rst),
                connects: 1,
                latency_ns: 183_400,
                ..COUNT
            },
        ];
        let table = |format| table(format, &counts);
        assert_eq!(
            table(Format::Stap),
            concat!(
                "1795778063: connects since start\n",
                "  CONNECTS  OUTCOME      CAUSE     AVG LATENCY  RETRANS  FUNCTION        DESTINATION\n",
                "         4  established  -             0.250ms        0  tcp_v4_connect  127.0.0.1:8080\n",
                "         1  refused      rst           0.183ms        0  tcp_v4_connect  127.0.0.1:8081\n",
            )
        );
        assert!(table(Format::Json).contains(
            r#"{"cause":"rst","connects":1,"daddr":"127.0.0.1","dport":8081,"family":"ipv4","function":"tcp_v4_connect","latency_ns_sum":183400,"outcome":"refused","syn_retransmits":0}"#
        ));
    }

    /// A row of accepts beside connects' outcomes: `-` where accepts have nothing, the
    /// function `inet_csk_accept`, the local end; in JSON `"role":"server"`.
    #[test]
    fn count_tables_with_accepts() {
        let counts = [
            established_8080(),
            ConnectCount {
                daddr: Some("127.0.0.1".parse().unwrap()),
                dport: 8080,
                connects: 3,
                role: crate::Role::Server,
                ..COUNT
            },
        ];
        assert_eq!(
            table(Format::Stap, &counts),
            concat!(
                "1795778063: connects since start\n",
                "  CONNECTS  OUTCOME      CAUSE     AVG LATENCY  RETRANS  FUNCTION         DESTINATION\n",
                "         4  established  -             0.250ms        0  tcp_v4_connect   127.0.0.1:8080\n",
                "         3  -            -                   -        -  inet_csk_accept  127.0.0.1:8080\n",
            )
        );
        assert!(table(Format::Json, &counts).contains(
            r#"{"connects":3,"daddr":"127.0.0.1","dport":8080,"family":"ipv4","function":"inet_csk_accept","role":"server"}"#
        ));
    }

    /// A row of a cgroup or container whose names hold control characters: the text table
    /// shows them escaped, on one line each; JSON keeps serde's escaping.
    #[test]
    fn count_tables_escape_workload_names() {
        let workload = |cgroup: Option<&str>, container: Option<&str>| {
            Some(crate::WorkloadNames {
                cgroup: cgroup.map(Into::into),
                container: container.map(Into::into),
                pod: Some("pod\r\u{1b}[2J".into()),
            })
        };
        let counts = [ConnectCount {
            cgroup_id: Some(7),
            workload: workload(Some("/evil\u{1b}[31m\r\n\tx\u{7f}"), None),
            connects: 2,
            ..COUNT
        }];
        assert_eq!(
            table(Format::Stap, &counts),
            concat!(
                "1795778063: connects since start\n",
                "  CONNECTS  FUNCTION        CGROUP\n",
                r"         2  tcp_v4_connect  /evil\u{1b}[31m\r\n\tx\u{7f} (pod pod\r\u{1b}[2J)",
                "\n",
            )
        );
        let json: serde_json::Value = serde_json::from_str(&table(Format::Json, &counts)).unwrap();
        assert_eq!(json["counts"][0]["cgroup"], "/evil\u{1b}[31m\r\n\tx\u{7f}");
        let counts = [ConnectCount {
            workload: workload(None, Some("c\u{1b}]0;title\u{7}")),
            connects: 1,
            ..COUNT
        }];
        let text = table(Format::Stap, &counts);
        assert!(
            text.ends_with("  CONTAINER\n         1  tcp_v4_connect  c\\u{1b}]0;title\\u{7} (pod pod\\r\\u{1b}[2J)\n"),
            "{text}"
        );
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
    }
}
