//! Why a connect failed ([`FailureCause`], with `--outcome`): decoded from the cause the kernel
//! side decided and what its cause hooks saw ([`probe_common::Trouble`]), with the kernel's
//! own names for its drop reasons (read from its BTF's `enum skb_drop_reason` when the tracer
//! starts: the values differ between kernels).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::OnceLock,
};

pub use probe_common::Cause;
use probe_common::Trouble;

/// Why a connect failed, and what answered it, as far as the kernel tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureCause {
    /// A reset came back (from the peer, or from a firewall on the way that rejects with
    /// resets).
    Rst,
    /// An ICMP error the kernel matched to the socket ended the handshake: its type, code and
    /// sender where the ICMP hook could be attached (it needs kprobes), `None` otherwise.
    Icmp(Option<IcmpError>),
    /// The connect call failed inside this host (its errno says why: no route, no source
    /// port...).
    Local,
    /// Nothing came back, and a SYN was dropped inside this host, for this reason.
    Drop(DropReason),
    /// Nothing came back: the kernel gave up retrying the SYN.
    Timeout,
    /// The application closed the socket before the handshake ended.
    App,
}

impl FailureCause {
    /// The kernel side's cause, with what its hooks saw; `None` for a cause of 0 (established,
    /// pending); `Err` with the value if it is no cause.
    pub(crate) fn decode(cause: u32, trouble: &Trouble) -> Result<Option<Self>, u32> {
        if cause == 0 {
            return Ok(None);
        }
        Ok(Some(match Cause::try_from(cause)? {
            Cause::Rst => FailureCause::Rst,
            Cause::Icmp => {
                FailureCause::Icmp((trouble.flags & Trouble::ICMP != 0).then(|| IcmpError {
                    v6: trouble.flags & Trouble::ICMP_V6 != 0,
                    icmp_type: trouble.icmp_type,
                    code: trouble.icmp_code,
                    from: if trouble.flags & Trouble::ICMP_V6 != 0 {
                        IpAddr::V6(Ipv6Addr::from(trouble.icmp_from.octets()))
                    } else {
                        let [a, b, c, d, ..] = trouble.icmp_from.octets();
                        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
                    },
                }))
            }
            Cause::Local => FailureCause::Local,
            Cause::Drop => FailureCause::Drop(DropReason::of(trouble.drop_reason)),
            Cause::Timeout => FailureCause::Timeout,
            Cause::App => FailureCause::App,
        }))
    }

    /// The cause without its details (`rst`, `icmp`, ...: what counts and metrics label).
    pub fn cause(&self) -> Cause {
        match self {
            FailureCause::Rst => Cause::Rst,
            FailureCause::Icmp(_) => Cause::Icmp,
            FailureCause::Local => Cause::Local,
            FailureCause::Drop(_) => Cause::Drop,
            FailureCause::Timeout => Cause::Timeout,
            FailureCause::App => Cause::App,
        }
    }
}

/// An ICMP (or ICMPv6) error that ended a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpError {
    /// An ICMPv6 error (type and code are ICMPv6's).
    pub v6: bool,
    /// The ICMP type (3 destination unreachable, 11 time exceeded, ...; ICMPv6: 1
    /// destination unreachable, 3 time exceeded, ...).
    pub icmp_type: u8,
    /// The code (ICMP destination unreachable: 0 net, 1 host, 3 port unreachable, 13
    /// administratively prohibited...; ICMPv6: 0 no route, 1 administratively prohibited, 3
    /// address unreachable, 4 port unreachable...).
    pub code: u8,
    /// Who sent it: the peer, or a router (or firewall) on the way.
    pub from: IpAddr,
}

/// A kernel drop reason (`enum skb_drop_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropReason {
    /// Its value in the running kernel.
    pub value: u32,
    /// Its name without the `SKB_DROP_REASON_` prefix (`NETFILTER_DROP`, `BPF_CGROUP_EGRESS`,
    /// `NEIGH_FAILED`...), as the kernel's own `skb:kfree_skb` tracepoint prints it; `None` if
    /// the running kernel's BTF does not name it.
    pub name: Option<&'static str>,
}

impl DropReason {
    /// The reason of `value`, named from the running kernel's BTF.
    pub fn of(value: u32) -> DropReason {
        let name = NAMES
            .get()
            .and_then(|names| names.iter().find(|&&(v, _)| v == value))
            .map(|&(_, name)| name);
        DropReason { value, name }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.value),
        }
    }
}

/// The running kernel's drop reasons by value, set once by the first tracer that reads them
/// (a fact of the kernel, the same for every tracer of the process).
static NAMES: OnceLock<Vec<(u32, &'static str)>> = OnceLock::new();

/// Remembers the kernel's drop reasons (value, name without prefix); the first call wins.
pub(crate) fn set_drop_reasons(reasons: Vec<(u32, String)>) {
    let _ = NAMES.get_or_init(|| {
        reasons
            .into_iter()
            .map(|(value, name)| (value, &*Box::leak(name.into_boxed_str())))
            .collect()
    });
}

#[cfg(test)]
mod tests {
    use probe_common::RawAddr;

    use super::*;

    #[test]
    fn causes_decode_with_their_details() {
        let none = Trouble::NONE;
        assert_eq!(FailureCause::decode(0, &none), Ok(None));
        assert_eq!(FailureCause::decode(99, &none), Err(99));
        assert_eq!(
            FailureCause::decode(Cause::Rst as u32, &none),
            Ok(Some(FailureCause::Rst))
        );
        assert_eq!(
            FailureCause::decode(Cause::Icmp as u32, &none),
            Ok(Some(FailureCause::Icmp(None)))
        );
        let icmp = Trouble {
            icmp_type: 3,
            icmp_code: 13,
            flags: Trouble::ICMP,
            icmp_from: RawAddr::from_octets([10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            ..Trouble::NONE
        };
        assert_eq!(
            FailureCause::decode(Cause::Icmp as u32, &icmp),
            Ok(Some(FailureCause::Icmp(Some(IcmpError {
                v6: false,
                icmp_type: 3,
                code: 13,
                from: "10.0.0.1".parse().unwrap(),
            }))))
        );
        let mut from6 = [0u8; 16];
        from6[15] = 1;
        let icmp6 = Trouble {
            icmp_type: 1,
            icmp_code: 1,
            flags: Trouble::ICMP | Trouble::ICMP_V6,
            icmp_from: RawAddr::from_octets(from6),
            ..Trouble::NONE
        };
        let Ok(Some(FailureCause::Icmp(Some(e)))) = FailureCause::decode(2, &icmp6) else {
            panic!("not an ICMPv6 error");
        };
        assert_eq!((e.v6, e.from), (true, "::1".parse().unwrap()));
        set_drop_reasons(vec![(6, "NETFILTER_DROP".into())]);
        let drop = Trouble {
            drop_reason: 6,
            flags: Trouble::DROP,
            ..Trouble::NONE
        };
        let Ok(Some(FailureCause::Drop(reason))) = FailureCause::decode(4, &drop) else {
            panic!("not a drop");
        };
        assert_eq!(reason.to_string(), "NETFILTER_DROP");
        assert_eq!(DropReason::of(12345).to_string(), "12345");
        assert_eq!(FailureCause::Local.cause(), Cause::Local);
    }
}
