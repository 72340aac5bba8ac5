//! Turning filter arguments into what the kernel side's filter maps hold.

use std::{net::IpAddr, os::unix::fs::MetadataExt as _, path::Path};

use ipnet::IpNet;
use probe_common::{COMM_LEN, Family, RawAddr, config::DstKey};

use crate::error::FilterError;

/// `CGROUP2_SUPER_MAGIC` from `linux/magic.h`.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The id the kernel gives the cgroup v2 directory at `path` (what `bpf_get_current_cgroup_id`
/// returns for its tasks): the directory's inode number on the cgroup2 filesystem.
pub fn cgroup_id(path: &Path) -> Result<u64, FilterError> {
    let unusable = |source| FilterError::Cgroup {
        path: path.to_owned(),
        source,
    };
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| unusable(e.into()))?;
    // SAFETY: plain syscall with a valid path and out-pointer.
    let mut fs = unsafe { std::mem::zeroed::<libc::statfs>() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut fs) } != 0 {
        return Err(unusable(std::io::Error::last_os_error()));
    }
    let meta = std::fs::metadata(path).map_err(unusable)?;
    if fs.f_type as i64 != CGROUP2_SUPER_MAGIC || !meta.is_dir() {
        return Err(FilterError::NotCgroup2(path.to_owned()));
    }
    Ok(meta.ino())
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

/// Parses `--dst`: a network (`10.0.0.0/8`, `fd00::/8`) or a single address.
pub fn parse_network(s: &str) -> Result<IpNet, FilterError> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| FilterError::Network(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let err = cgroup_id(Path::new("/")).unwrap_err().to_string();
        assert!(err.contains("is not a cgroup v2 directory"), "{err}");
        assert!(cgroup_id(Path::new("/nonexistent")).is_err());
    }
}
