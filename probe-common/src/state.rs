//! Values of the maps the kernel side keeps for itself: calls in flight, counts and counters
//! (userspace reads them, and deletes stale calls).

use crate::{CountBy, RawAddr, outcome::LATENCY_BUCKETS};

/// Index of each counter in the `COUNTERS` per-CPU array (written by the kernel side).
pub mod counter {
    /// Events lost because the ring buffer was full.
    pub const RING_FULL: u32 = 0;
    /// Connects not traced because the map of connects in flight was full.
    pub const PENDING_FULL: u32 = 1;
    /// Connects whose return probe never ran (the kernel's kretprobe ran out of instances), seen
    /// when the same thread enters its next connect.
    pub const MISSED_RETURN: u32 = 2;
    /// Connects not counted (`--count`) because the map of counts was full.
    pub const COUNTS_FULL: u32 = 3;
    /// Entries the kernel side put into the LRU `CONNECTING` map. Not a loss: with
    /// [`CONNECTING_REMOVED`] and what userspace reaped, it tells how many entries the map
    /// evicted (each a connect that cannot be reported), which the kernel does silently.
    pub const CONNECTING_ADDED: u32 = 4;
    /// Entries the kernel side is about to remove from `CONNECTING` (a completion, or a new
    /// connect on a socket whose previous one was missed): counted before the removal, so that
    /// userspace, reading the map and the counters at different instants, never sees an entry
    /// in neither. See [`CONNECTING_ADDED`].
    pub const CONNECTING_REMOVED: u32 = 5;
    /// Of [`CONNECTING_REMOVED`], the removals that then failed (someone else removed the entry
    /// first).
    pub const CONNECTING_REMOVE_FAILED: u32 = 6;
    /// Connects counted under an overflow key (see `CountKey::overflow`) because
    /// `CONNECT_COUNTS` held as many label sets as its budget. Not a loss: they are counted.
    pub const SERIES_OVERFLOW: u32 = 7;
    /// Entries the kernel side put into the LRU `LIVE` map (`--lifetime`). Not a loss: with
    /// [`LIVE_REMOVED`] and the entries left at the end, it tells how many connections the map
    /// evicted (each a close that cannot be reported), which the kernel does silently.
    pub const LIVE_ADDED: u32 = 8;
    /// Entries the kernel side is about to remove from `LIVE` as reported (a close), counted
    /// before the removal (an entry the LRU evicts meanwhile was reported all the same); an
    /// entry replaced, or removed because its socket now holds another connection, is not
    /// counted, so it counts as lost. See [`LIVE_ADDED`].
    pub const LIVE_REMOVED: u32 = 9;
    /// Number of counters.
    pub const COUNT: u32 = 10;
}

/// How long a socket can legitimately stay in SYN_SENT, in seconds, when its SYN is sent
/// `retries` more times (`tcp_syn_retries`, or the socket's `TCP_SYNCNT`: at most 127, the
/// kernel's `MAX_TCP_SYNCNT`) of which the first `linear` wait the initial timeout
/// (`tcp_syn_linear_timeouts`, Linux 6.5+; 0 before).
///
/// The kernel's SYN_SENT timer (tcp_retransmit_timer / tcp_write_timeout in
/// net/ipv4/tcp_timer.c): the first SYN waits `TCP_TIMEOUT_INIT` (1 s); while
/// `icsk_retransmits <= linear` a retransmitted SYN waits that again, otherwise the timeout
/// doubles (`icsk_rto << 1`), capped at `TCP_RTO_MAX` (120 s; `tcp_rto_max_ms`, 6.15+, can
/// only lower it); the connect fails with ETIMEDOUT when the timer fires with
/// `icsk_retransmits >= retries + linear`. So `retries + linear + 1` timeouts run: `linear + 1`
/// of 1 s, then 2, 4, ... 64 s and 120 s for the rest. With 6 retries (the default, no linear
/// timeouts): 1 + 2 + 4 + 8 + 16 + 32 + 64 = 127 s. With 127: 127 s for the first seven, and
/// 121 more of 120 s, 14,647 s (4 h 4 min 7 s), plus 1 s per linear timeout.
pub const fn syn_sent_lifetime_secs(retries: u32, linear: u32) -> u64 {
    const TIMEOUT_INIT: u64 = 1;
    const RTO_MAX: u64 = 120;
    let mut total = TIMEOUT_INIT * (linear as u64 + 1);
    let (mut rto, mut timer) = (TIMEOUT_INIT, 0);
    while timer < retries {
        rto = if rto * 2 < RTO_MAX { rto * 2 } else { RTO_MAX };
        total += rto;
        timer += 1;
    }
    total
}

/// How old (`CLOCK_BOOTTIME` ns since the call) a connect held in `CONNECTING_SLOTS` or
/// `CONNECTING` may be before it is stale: longer than any socket can legitimately stay in
/// SYN_SENT, whatever its settings. [`syn_sent_lifetime_secs`] is the usual case (127 retries:
/// 14,647 s); the bound here does not assume the first timeout of 1 s, since a sock_ops
/// program (`BPF_SOCK_OPS_TIMEOUT_INIT`) may raise it up to `TCP_RTO_MAX`: at most 127 retries
/// (`MAX_TCP_SYNCNT`) and 4 linear timeouts (`tcp_syn_linear_timeouts`' maximum) make at most
/// 132 timeouts, none longer than `TCP_RTO_MAX` (120 s), 15,840 s; plus one `TCP_RTO_MAX` for
/// a late timer: 15,960 s (4 h 26 min). One rule for both stores: a connect held longer
/// never completes as far as the tracer can see (its transition out of SYN_SENT was missed),
/// so it is never reported, only counted as missed, by whoever removes it (userspace's reaper,
/// the kernel side reusing its slot or meeting it at a completion, or the end of tracing).
pub const CONNECTING_STALE_NS: u64 = ((127 + 4 + 1) + 1) * 120 * 1_000_000_000;

/// A slot of the kernel's `CONNECTING_SLOTS` table (the object for kernels with BPF atomics):
/// the connect of socket `sk`, from the call (or SYN_SENT) to the socket's next state.
///
/// `sk` says whose the slot is: 0 free; a socket's address (8-byte aligned) while its connect is
/// tracked; that address with [`ConnectingSlot::BUSY`] set while the kernel side writes
/// `record` (nobody else reads or takes the slot then). The kernel side changes `sk` only with
/// atomic compare-and-exchange, so one writer owns a slot at a time; userspace reads the table
/// only once the programs are detached.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectingSlot {
    /// The owner (see above).
    pub sk: u64,
    /// The connect, complete once `sk` has no [`ConnectingSlot::BUSY`] bit.
    pub record: crate::ConnectRecord,
}

impl ConnectingSlot {
    /// The bit of [`ConnectingSlot::sk`] set while the slot is being written.
    pub const BUSY: u64 = 1;

    /// The socket whose connect this slot holds, if it holds a complete one.
    #[inline(always)]
    pub fn owner(&self) -> Option<u64> {
        (self.sk != 0 && self.sk & Self::BUSY == 0).then_some(self.sk)
    }
}

/// A key of the kernel's `CONNECT_COUNTS` map: what `--count` counts connects by, one key per
/// label set (the latency histogram is in the value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountKey {
    /// The caller's cgroup v2 id when counting by cgroup or container, or with the
    /// `COUNT_CGROUP` global (`--metrics-label`); otherwise 0.
    pub cgroup_id: u64,
    /// Destination address (zero when counting by port, cgroup or container).
    pub daddr: RawAddr,
    /// Destination port (host order).
    pub dport: u16,
    /// `AF_INET` or `AF_INET6` (a [`crate::Family`] value).
    pub family: u16,
    /// With `--outcome`: the [`crate::Outcome`] (as `u8`); otherwise 0.
    pub outcome: u8,
    /// Non-zero in an overflow key ([`CountKey::overflow`]): the connects of every label set
    /// that found the map at its budget. Its cgroup, address and port are zero.
    pub overflow: u8,
    /// With `--outcome`: the [`crate::Cause`] of a failed connect (as `u8`); otherwise 0.
    pub cause: u8,
    /// A [`crate::Role`] value: 0 (client) in every key the kernel side makes; userspace counts
    /// the connections local listeners accepted (`--accept`) under 1 (server).
    pub role: u8,
}

impl CountKey {
    /// The key a connect to `daddr`:`dport` of `family` (an `AF_*`) by a task of cgroup
    /// `cgroup_id` (0 unless the caller's cgroup is counted) is counted under, counting by `by`
    /// (a `COUNT_BY` value): with its address and port by destination, its port only by port,
    /// neither by cgroup or container; with `--outcome`, with its `outcome` (as u8; 0 without).
    /// The kernel's emit path and userspace (connects still pending at the end) build keys
    /// alike.
    #[inline(always)]
    pub fn new(
        by: u8,
        cgroup_id: u64,
        (daddr, dport): (RawAddr, u16),
        family: u16,
        (outcome, cause): (u8, u8),
    ) -> CountKey {
        // Masks rather than a zeroed address: a zeroed array is a call to the byte-by-byte
        // `memset` in eBPF, on every counted connect.
        let addr_mask = if by == CountBy::Destination as u8 {
            u32::MAX
        } else {
            0
        };
        let port_mask = if by <= CountBy::Port as u8 {
            u16::MAX
        } else {
            0
        };
        CountKey {
            cgroup_id,
            daddr: RawAddr(daddr.0.map(|word| word & addr_mask)),
            dport: dport & port_mask,
            family,
            outcome,
            overflow: 0,
            cause,
            role: 0,
        }
    }

    /// The same key, of `role`'s side.
    #[inline(always)]
    pub const fn of_role(mut self, role: crate::Role) -> CountKey {
        self.role = role as u8;
        self
    }

    /// The overflow key of `family` and `outcome`: where the kernel side counts a connect whose
    /// own key finds `CONNECT_COUNTS` at its budget, so totals stay exact (by family and
    /// outcome) however many label sets there are. Userspace inserts one per family and
    /// outcome before attaching, in room reserved for them ([`crate::limit::OVERFLOW_KEYS`]),
    /// and never removes them.
    #[inline(always)]
    pub const fn overflow(family: u16, (outcome, cause): (u8, u8)) -> CountKey {
        CountKey {
            cgroup_id: 0,
            daddr: RawAddr([0; 4]),
            dport: 0,
            family,
            outcome,
            overflow: 1,
            cause,
            role: 0,
        }
    }
}

/// A value of the kernel's `CONNECT_COUNTS` map: the connects of one key, and with `--outcome`
/// their latencies (sum and histogram). Shared by every CPU (added to with atomic adds): per
/// CPU, a 64-CPU host would hold 64 copies of every histogram.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountValue {
    /// Connects counted under the key.
    pub connects: u64,
    /// Sum of their latencies in nanoseconds (with `--outcome`; otherwise 0).
    pub latency_ns: u64,
    /// With `--outcome`, how many took each latency bucket
    /// ([`crate::outcome::latency_bucket`]); otherwise zero.
    pub buckets: [u64; LATENCY_BUCKETS as usize + 1],
    /// With `--outcome`, the SYN retransmits of those connects, summed.
    pub syn_retransmits: u64,
}

impl CountValue {
    /// No connects.
    pub const ZERO: CountValue = CountValue {
        connects: 0,
        latency_ns: 0,
        buckets: [0; LATENCY_BUCKETS as usize + 1],
        syn_retransmits: 0,
    };
}

/// A value of the kernel's `SYN_TROUBLE` map, keyed by socket address: what the cause hooks saw
/// happen to a socket in SYN_SENT, and which connect of that socket it was: its initial
/// sequence number (`snd_una` in SYN_SENT), random per connect, so that the completion path
/// ignores a note left by an earlier connect at the same address (a connect that came up leaves
/// its note, unread).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynTrouble {
    /// The connect's initial sequence number.
    pub isn: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// What was seen.
    pub trouble: crate::Trouble,
}

/// A connect call between its entry and its return probe, keyed by pid_tgid in the kernel's
/// `PENDING` map (userspace reaps entries whose return never came).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingConnect {
    /// The `struct sock *` being connected.
    pub sk: u64,
    /// `CLOCK_BOOTTIME` at entry.
    pub boot_ns: u64,
    /// The requested destination.
    pub daddr: RawAddr,
    /// The requested destination port (host order).
    pub dport: u16,
    /// `AF_INET` or `AF_INET6`: which function was entered.
    pub family: u16,
    /// Explicit padding, always zero.
    pub _pad: u32,
}

/// A traced connection between ESTABLISHED and CLOSE (`--lifetime`), keyed by socket address in
/// the kernel's LRU `LIVE` map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LiveConnection {
    /// The connect that opened it, as reported.
    pub connect: crate::ConnectRecord,
    /// `CLOCK_BOOTTIME` nanoseconds when it was established.
    pub established_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_its_owner_and_record_without_padding() {
        assert_eq!(
            core::mem::size_of::<ConnectingSlot>(),
            8 + crate::ConnectRecord::SIZE
        );
    }

    #[test]
    fn syn_sent_lifetime_follows_the_kernels_backoff() {
        // Each retry doubles the timeout from 1 s until TCP_RTO_MAX (120 s).
        assert_eq!(syn_sent_lifetime_secs(0, 0), 1);
        assert_eq!(syn_sent_lifetime_secs(1, 0), 1 + 2);
        // The default 6 retries: the familiar "about two minutes".
        assert_eq!(syn_sent_lifetime_secs(6, 0), 127);
        // 7 retries reach the cap: 64 * 2 = 128 > 120.
        assert_eq!(syn_sent_lifetime_secs(7, 0), 127 + 120);
        assert_eq!(syn_sent_lifetime_secs(127, 0), 127 + 121 * 120);
        // Linear timeouts wait the initial second each before the doubling starts.
        assert_eq!(syn_sent_lifetime_secs(6, 4), 127 + 4);
        assert_eq!(syn_sent_lifetime_secs(127, 127), 127 + 121 * 120 + 127);
        // A sum of timeouts, each at most 120 s: never more than that many of 120 s.
        for retries in 0..=127 {
            for linear in [0, 4, 127] {
                let secs = syn_sent_lifetime_secs(retries, linear);
                assert!(
                    secs <= u64::from(retries + linear + 1) * 120,
                    "{retries} {linear}"
                );
                assert!(secs * 1_000_000_000 < CONNECTING_STALE_NS);
            }
        }
        // With every timeout raised to TCP_RTO_MAX (a sock_ops TIMEOUT_INIT of 120 s), the
        // kernel's maxima of 127 retries and 4 linear timeouts still fit, with a late timer.
        const {
            assert!(
                (127 + 4 + 1) * 120 * 1_000_000_000 + 120 * 1_000_000_000 <= CONNECTING_STALE_NS
            )
        };
        assert_eq!(CONNECTING_STALE_NS, 15_960 * 1_000_000_000);
    }

    #[test]
    fn only_a_published_slot_has_an_owner() {
        // SAFETY: plain integers and arrays: zero is a valid record.
        let mut slot: ConnectingSlot = unsafe { core::mem::zeroed() };
        assert_eq!(slot.owner(), None);
        slot.sk = 0xffff_8880_1234_5640;
        assert_eq!(slot.owner(), Some(0xffff_8880_1234_5640));
        slot.sk |= ConnectingSlot::BUSY;
        assert_eq!(slot.owner(), None);
    }
}
