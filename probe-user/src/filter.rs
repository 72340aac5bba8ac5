//! Turning filter arguments into what the kernel side's filter maps hold.

use std::{os::fd::AsRawFd as _, path::Path};

use ipnet::IpNet;
use probe_common::{
    COMM_LEN, Family, RawAddr,
    config::{ContainerPrefix, DstKey},
};

use crate::error::FilterError;

/// `CGROUP2_SUPER_MAGIC` from `linux/magic.h`.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The cgroup v2 directory at `path`, open, for the kernel side's `CGROUP_FILTER` (a cgroup
/// array holds cgroups by descriptor, and admits what lies below them too).
pub fn cgroup_dir(path: &Path) -> Result<std::fs::File, FilterError> {
    let unusable = |source| FilterError::Cgroup {
        path: path.to_owned(),
        source,
    };
    let dir = std::fs::File::open(path).map_err(unusable)?;
    // SAFETY: plain syscall with a valid descriptor and out-pointer.
    let mut fs = unsafe { std::mem::zeroed::<libc::statfs>() };
    if unsafe { libc::fstatfs(dir.as_raw_fd(), &mut fs) } != 0 {
        return Err(unusable(std::io::Error::last_os_error()));
    }
    let meta = dir.metadata().map_err(unusable)?;
    if fs.f_type as i64 != CGROUP2_SUPER_MAGIC || !meta.is_dir() {
        return Err(FilterError::NotCgroup2(path.to_owned()));
    }
    Ok(dir)
}

/// A `--container` id as the kernel side's `ContainerPrefix`: 12 to 64 hex digits.
pub fn container_prefix(id: &str) -> Result<ContainerPrefix, FilterError> {
    let digits = crate::identity::container_prefix(id).map_err(FilterError::Container)?;
    let mut prefix = ContainerPrefix::EMPTY;
    prefix.len = digits.len() as u32;
    prefix.id[..digits.len()].copy_from_slice(digits.as_bytes());
    Ok(prefix)
}

/// `name` as the kernel keeps a task's `comm`: at most 15 bytes, NUL-padded to 16.
pub fn comm_key(name: &str) -> Result<[u8; COMM_LEN], FilterError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= COMM_LEN || bytes.contains(&0) {
        return Err(FilterError::Comm(name.to_owned()));
    }
    let mut key = [0u8; COMM_LEN];
    key[..bytes.len()].copy_from_slice(bytes);
    Ok(key)
}

/// A destination network as a `DST_FILTER` entry: (prefix length in bits, key). The family
/// takes the key's first [`DstKey::FAMILY_BITS`], so a network only ever matches destinations
/// of its own family. An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) is the IPv4 network
/// it maps, as mapped destinations are IPv4 ones.
pub fn dst_key(net: &IpNet) -> (u32, DstKey) {
    let (family, addr, prefix) = match net.trunc() {
        IpNet::V4(v4) => (Family::V4, v4_addr(v4.addr()), v4.prefix_len()),
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => (Family::V4, v4_addr(v4), v6.prefix_len() - 96),
            _ => (
                Family::V6,
                RawAddr::from_octets(v6.addr().octets()),
                v6.prefix_len(),
            ),
        },
    };
    (
        DstKey::FAMILY_BITS + u32::from(prefix),
        DstKey::new(family, addr),
    )
}

fn v4_addr(addr: std::net::Ipv4Addr) -> RawAddr {
    RawAddr([u32::from_ne_bytes(addr.octets()), 0, 0, 0])
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    /// A network, or a single address as one.
    fn parse_network(s: &str) -> Result<IpNet, ()> {
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| ())
    }

    #[test]
    fn networks_are_keyed_by_family() {
        let (prefix, key) = dst_key(&"10.1.2.3/8".parse().unwrap());
        assert_eq!(prefix, 32 + 8);
        assert_eq!(key, DstKey::new(Family::V4, v4_addr([10, 0, 0, 0].into())));
        let (prefix, key) = dst_key(&parse_network("::1").unwrap());
        assert_eq!(prefix, 32 + 128);
        let loopback = RawAddr::from_octets(std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!(key, DstKey::new(Family::V6, loopback));
        assert_eq!(dst_key(&parse_network("127.0.0.2").unwrap()).0, 32 + 32);
        // `::/0` is every IPv6 destination and no IPv4 one: the family word differs.
        let (prefix, any6) = dst_key(&parse_network("::/0").unwrap());
        assert_eq!(prefix, DstKey::FAMILY_BITS);
        assert_ne!(
            any6.family,
            DstKey::new(Family::V4, RawAddr::default()).family
        );
        // An IPv4-mapped network is its IPv4 network.
        assert_eq!(
            dst_key(&parse_network("::ffff:10.0.0.0/104").unwrap()),
            dst_key(&parse_network("10.0.0.0/8").unwrap())
        );
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("example.com").is_err());
    }

    #[test]
    fn comm_keys_are_nul_padded_and_bounded() {
        assert_eq!(&comm_key("curl").unwrap()[..5], b"curl\0");
        assert!(comm_key("0123456789abcdef").is_err());
        assert!(comm_key("").is_err());
    }

    #[test]
    fn cgroup_ids_need_a_cgroup2_directory() {
        let err = cgroup_dir(Path::new("/")).unwrap_err().to_string();
        assert!(err.contains("is not a cgroup v2 directory"), "{err}");
        assert!(cgroup_dir(Path::new("/nonexistent")).is_err());
    }
}
