//! The JSON lines: an event, or a count table, as one object per line (serde's escaping).

use serde::Serialize;

/// The JSON line: every field of a [`ConnectEvent`], timestamps in ns and in s. An accept's
/// starts with `"event":"accept"` and has `"role":"server"` (a connect's has neither).
#[derive(Serialize)]
pub(super) struct JsonLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) event: Option<&'static str>,
    pub(super) time_ns: u64,
    pub(super) time_s: u64,
    pub(super) pid: u32,
    pub(super) tid: u32,
    pub(super) uid: u32,
    pub(super) comm: &'a str,
    pub(super) family: &'static str,
    pub(super) function: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) role: Option<&'static str>,
    pub(super) saddr: std::net::IpAddr,
    pub(super) sport: u16,
    pub(super) daddr: std::net::IpAddr,
    pub(super) dport: u16,
    pub(super) ret: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) latency_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) errno: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) syn_retransmits: Option<u32>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub(super) cause: Option<JsonCause>,
    #[serde(flatten)]
    pub(super) naming: JsonNaming<'a>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub(super) workload: Option<JsonWorkload<'a>>,
}

/// A close's JSON line (`--lifetime`): `"event":"close"`, the connect's own fields, and the
/// connection's figures (absent for one still open at the end).
#[derive(Serialize)]
pub(super) struct JsonClose<'a> {
    pub(super) event: &'static str,
    pub(super) time_ns: u64,
    pub(super) time_s: u64,
    pub(super) pid: u32,
    pub(super) tid: u32,
    pub(super) uid: u32,
    pub(super) comm: &'a str,
    pub(super) family: &'static str,
    pub(super) function: &'static str,
    pub(super) role: &'static str,
    pub(super) saddr: std::net::IpAddr,
    pub(super) sport: u16,
    pub(super) daddr: std::net::IpAddr,
    pub(super) dport: u16,
    pub(super) established_time_ns: u64,
    pub(super) duration_ns: u64,
    pub(super) end: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) errno: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) bytes_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) bytes_received: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) segs_out: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) segs_in: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) retransmits: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) srtt_us: Option<u32>,
    #[serde(flatten)]
    pub(super) naming: JsonNaming<'a>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub(super) workload: Option<JsonWorkload<'a>>,
}

/// The JSON fields of a [`crate::FailureCause`]: `cause`, and with an ICMP error's details
/// `icmp_type`, `icmp_code`, `icmp_from` (and `icmp_v6` for ICMPv6), with a drop its
/// `drop_reason` (the kernel's name, or its value if unnamed).
#[derive(Serialize)]
pub(super) struct JsonCause {
    cause: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_from: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    icmp_v6: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    drop_reason: Option<String>,
}

impl JsonCause {
    pub(super) fn of(cause: crate::FailureCause) -> Self {
        use crate::{FailureCause, names::Named as _};
        let icmp = match cause {
            FailureCause::Icmp(icmp) => icmp,
            _ => None,
        };
        JsonCause {
            cause: cause.cause().name(),
            icmp_type: icmp.map(|i| i.icmp_type),
            icmp_code: icmp.map(|i| i.code),
            icmp_from: icmp.map(|i| i.from),
            icmp_v6: icmp.is_some_and(|i| i.v6),
            drop_reason: match cause {
                FailureCause::Drop(reason) => Some(reason.to_string()),
                _ => None,
            },
        }
    }
}

/// The JSON fields of a [`crate::Workload`] (with identities): names that could not be resolved
/// are `null`, so every line of a run has the same fields.
#[derive(Serialize)]
pub(super) struct JsonWorkload<'a> {
    pub(super) cgroup_id: u64,
    pub(super) cgroup: Option<&'a str>,
    pub(super) container_id: Option<&'a str>,
    pub(super) pod_uid: Option<&'a str>,
    pub(super) ns_pid: u32,
    pub(super) ns_tid: u32,
    pub(super) pidns: u32,
    pub(super) netns: u32,
}

impl<'a> JsonWorkload<'a> {
    pub(super) fn of(w: &'a crate::Workload) -> Self {
        JsonWorkload {
            cgroup_id: w.cgroup_id,
            cgroup: w.names.cgroup.as_deref(),
            container_id: w.names.container.as_deref(),
            pod_uid: w.names.pod.as_deref(),
            ns_pid: w.ns_pid,
            ns_tid: w.ns_tid,
            pidns: w.pidns,
            netns: w.netns,
        }
    }
}

/// What names a destination, in a JSON line or count row: its DNS name (`--names`) and where
/// a NAT sent the SYN (`--nat`), each absent when there was none.
#[derive(Serialize)]
pub(super) struct JsonNaming<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nat_daddr: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nat_dport: Option<u16>,
}

impl<'a> JsonNaming<'a> {
    pub(super) fn of(dns_name: Option<&'a str>, nat: Option<std::net::SocketAddr>) -> Self {
        JsonNaming {
            dns_name,
            nat_daddr: nat.map(|a| a.ip()),
            nat_dport: nat.map(|a| a.port()),
        }
    }
}

/// One row of the JSON count table.
#[derive(Serialize)]
pub(super) struct JsonCount<'a> {
    pub(super) function: &'static str,
    /// `"server"` for a row of accepts (`--accept`), as accept lines say; absent for connects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) role: Option<&'static str>,
    pub(super) family: &'static str,
    pub(super) daddr: Option<std::net::IpAddr>,
    pub(super) dport: u16,
    pub(super) connects: u64,
    /// The row of every label set past the budget (`--max-series`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) overflow: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cause: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) latency_ns_sum: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) syn_retransmits: Option<u64>,
    /// With lifetimes, the connections of a row of established connects (or accepts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) connections: Option<JsonConnections>,
    #[serde(flatten)]
    pub(super) naming: JsonNaming<'a>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub(super) workload: Option<JsonCountWorkload<'a>>,
}

/// A count row's connections (`--lifetime`): open now, closed, and the closed ones' payload
/// bytes and durations.
#[derive(Serialize)]
pub(super) struct JsonConnections {
    active: u64,
    closed: u64,
    bytes_sent: u64,
    bytes_received: u64,
    duration_ns_sum: u64,
}

impl From<&crate::ConnectionCounts> for JsonConnections {
    fn from(c: &crate::ConnectionCounts) -> Self {
        JsonConnections {
            active: c.active(),
            closed: c.closed,
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
            duration_ns_sum: c.duration_ns,
        }
    }
}

/// The JSON fields of a count row's workload (counting by cgroup or container).
#[derive(Serialize)]
pub(super) struct JsonCountWorkload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cgroup_id: Option<u64>,
    /// Absent for a row of a whole container; `null` if unresolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cgroup: Option<Option<&'a str>>,
    pub(super) container_id: Option<&'a str>,
    pub(super) pod_uid: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::tests::*;
    use crate::{Format, Formatter};

    #[test]
    fn json_carries_every_field() {
        assert_eq!(
            line(Format::Json, &v4()),
            concat!(
                r#"{"time_ns":1795778063000000123,"time_s":1795778063,"pid":42,"tid":43,"uid":1000,"#,
                r#""comm":"curl","family":"ipv4","function":"tcp_v4_connect","saddr":"127.0.0.1","#,
                r#""sport":59538,"daddr":"127.0.0.1","dport":8080,"ret":0}"#,
                "\n"
            )
        );
        let mut failed = v6();
        failed.ret = -111;
        assert_eq!(
            line(Format::Json, &failed),
            concat!(
                r#"{"time_ns":1795778063000000123,"time_s":1795778063,"pid":42,"tid":43,"uid":1000,"#,
                r#""comm":"curl","family":"ipv6","function":"tcp_v6_connect","saddr":"fd00::1","#,
                r#""sport":40000,"daddr":"::1","dport":443,"ret":-111}"#,
                "\n"
            )
        );
    }

    /// JSON round-trips every field of arbitrary events.
    mod properties {
        use proptest::prelude::*;

        use super::super::super::tests::strategies::{clock, event};
        use super::*;

        proptest! {
            #[test]
            fn json_round_trips(ev in event(), clock in clock()) {
                let mut out = Vec::new();
                Formatter::new(Format::Json, clock).write_connect(&mut out, &ev);
                prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
                let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
                let time_ns = clock.unix_ns(ev.boot_ns);
                prop_assert_eq!(v["time_ns"].as_u64(), Some(time_ns));
                prop_assert_eq!(v["time_s"].as_u64(), Some(time_ns / 1_000_000_000));
                prop_assert_eq!(v["pid"].as_u64(), Some(u64::from(ev.pid)));
                prop_assert_eq!(v["tid"].as_u64(), Some(u64::from(ev.tid)));
                prop_assert_eq!(v["uid"].as_u64(), Some(u64::from(ev.uid)));
                prop_assert_eq!(v["ret"].as_i64(), Some(i64::from(ev.ret)));
                prop_assert_eq!(v["comm"].as_str(), Some(&*ev.comm()));
                prop_assert_eq!(v["family"].as_str(), Some(ev.family.name()));
                prop_assert_eq!(v["function"].as_str(), Some(ev.function().name()));
                let endpoint = |addr: &str, port: &str| {
                    SocketAddr::new(v[addr].as_str().unwrap().parse().unwrap(), v[port].as_u64().unwrap() as u16)
                };
                prop_assert_eq!(endpoint("saddr", "sport"), ev.src);
                prop_assert_eq!(endpoint("daddr", "dport"), ev.dst);
            }
        }
    }
}
