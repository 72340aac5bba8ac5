//! Workload identity, resolved in userspace from what the kernel shows in `/proc` and `/sys`
//! alone (no container runtime API to trust, reach or wait for): the cgroup v2 id the kernel
//! side records becomes a cgroup path ([`CgroupResolver`]), and the path names the container
//! and Kubernetes pod the connecting task runs in ([`container_of`]).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the cgroup2 filesystem is mounted, from `/proc/self/mountinfo`: `/sys/fs/cgroup` when
/// it is there (the unified hierarchy), else the first one found (hybrid hosts mount it at
/// `/sys/fs/cgroup/unified`); `None` on a cgroup v1 only host.
pub fn cgroup2_mount() -> Option<PathBuf> {
    cgroup2_mount_in(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// [`cgroup2_mount`] for the text of a mountinfo file.
pub fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    // Fields: id parent major:minor root mount-point options [optional...] - fstype source ...
    let mut mounts = mountinfo.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| unescape(point))
    });
    let first = mounts.next()?;
    let preferred = Path::new("/sys/fs/cgroup");
    if first == preferred || mounts.any(|m| m == preferred) {
        return Some(preferred.to_owned());
    }
    Some(first)
}

/// A mountinfo path with its octal escapes (`\040` for a space, `\134` for a backslash) undone.
fn unescape(field: &str) -> PathBuf {
    let (mut out, mut rest) = (Vec::with_capacity(field.len()), field.as_bytes());
    while let Some((&byte, tail)) = rest.split_first() {
        match (byte, tail) {
            (b'\\', [h @ b'0'..=b'3', m @ b'0'..=b'7', l @ b'0'..=b'7', more @ ..]) => {
                out.push(((h - b'0') << 6) | ((m - b'0') << 3) | (l - b'0'));
                rest = more;
            }
            _ => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The cgroup id of the cgroup v2 directory at `path`: its inode number, which on 64-bit
/// kernels is what `bpf_get_current_cgroup_id()` returns for tasks in it.
pub fn id_of(path: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(path)?.ino())
}

/// Entries kept at most; past this the cache starts over (it is only a cache).
const MAX_ENTRIES: usize = 65_536;
/// How long "no such cgroup" is believed, so a cgroup created later still resolves; also the
/// least time between two walks of the tree, so a flood of unknown ids cannot keep it walking.
const RETRY: Duration = Duration::from_secs(1);
/// `FILEID_KERNFS`: a kernfs file handle is the node's 64-bit id, i.e. the cgroup id.
const FILEID_KERNFS: i32 = 0xfe;

/// What the cache knows of an id: its path, or since when it named no cgroup.
enum Entry {
    Found(Arc<str>),
    Missing(Instant),
}

/// Maps cgroup v2 ids to their paths below the cgroup2 mount (`/system.slice/nginx.service`,
/// `/` for the root), caching both answers, so that a hit costs one hash lookup.
///
/// A miss asks the kernel directly with `open_by_handle_at` (as systemd and bpftool do), which
/// needs `CAP_DAC_READ_SEARCH`; without it, it walks the cgroup tree instead, at most once a
/// second, and remembers every directory it saw.
pub struct CgroupResolver {
    mount: Option<PathBuf>,
    mount_fd: Option<OwnedFd>,
    /// Whether `open_by_handle_at` is worth trying (false once it proved unpermitted).
    handles: bool,
    last_walk: Option<Instant>,
    cache: HashMap<u64, Entry>,
}

impl CgroupResolver {
    /// A resolver for the cgroup2 filesystem of [`cgroup2_mount`].
    pub fn new() -> Self {
        Self::with_mount(cgroup2_mount())
    }

    /// A resolver for the cgroup2 filesystem mounted at `mount`; with `None`, it resolves
    /// nothing.
    pub fn with_mount(mount: Option<PathBuf>) -> Self {
        let mount_fd = mount.as_deref().and_then(|m| {
            let dir = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(m);
            dir.map(OwnedFd::from).ok()
        });
        Self {
            handles: mount_fd.is_some(),
            mount,
            mount_fd,
            last_walk: None,
            cache: HashMap::new(),
        }
    }

    /// The cgroup2 mount point the paths are below.
    pub fn mount(&self) -> Option<&Path> {
        self.mount.as_deref()
    }

    /// The path of the cgroup with id `id`, or `None` if there is no such cgroup (or it could
    /// not be found out right now).
    pub fn resolve(&mut self, id: u64) -> Option<Arc<str>> {
        match self.cache.get(&id) {
            Some(Entry::Found(path)) => return Some(path.clone()),
            Some(Entry::Missing(since)) if since.elapsed() < RETRY => return None,
            _ => {}
        }
        let mount = self.mount.clone()?;
        if self.handles {
            match self.by_handle(&mount, id) {
                Ok(found) => return self.remember(id, found),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EPERM | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => {
                        log::debug!(
                            "cgroup ids by file handle unavailable ({e}); walking {mount:?}"
                        );
                        self.handles = false;
                    }
                    _ => log::debug!("cgroup id {id} by file handle: {e}"),
                },
            }
        }
        if self.last_walk.is_some_and(|t| t.elapsed() < RETRY) {
            return None;
        }
        self.last_walk = Some(Instant::now());
        let found = self.walk(&mount, id);
        self.remember(id, found)
    }

    /// The path of cgroup `id`, the cgroup of a connect by process `pid`: as
    /// [`CgroupResolver::resolve`], but where file handles are not permitted, first from
    /// `/proc/<pid>/cgroup`, checked against the id (the process may have moved on or exited,
    /// or be another namespace's), so that a cgroup created since the last walk is named on its
    /// first event rather than after the next.
    pub fn resolve_for(&mut self, id: u64, pid: u32) -> Option<Arc<str>> {
        if let Some(Entry::Found(path)) = self.cache.get(&id) {
            return Some(path.clone());
        }
        if !self.handles
            && let Some(found) = self.by_proc(id, pid)
        {
            return self.remember(id, Some(found));
        }
        self.resolve(id)
    }

    /// The cgroup v2 path `/proc/<pid>/cgroup` gives, if its directory has id `id`.
    fn by_proc(&self, id: u64, pid: u32) -> Option<Arc<str>> {
        let mount = self.mount.as_deref()?;
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let path = text.lines().find_map(|line| line.strip_prefix("0::"))?;
        let below = Path::new(path.trim_start_matches('/'));
        (id_of(&mount.join(below)).ok()? == id).then(|| below_mount(below))
    }

    /// Caches what `id` was found to be, and returns it.
    fn remember(&mut self, id: u64, found: Option<Arc<str>>) -> Option<Arc<str>> {
        let entry = match &found {
            Some(path) => Entry::Found(path.clone()),
            None => Entry::Missing(Instant::now()),
        };
        self.insert(id, entry);
        found
    }

    /// Asks the kernel for the cgroup directory with this id: `Ok(None)` when it is gone.
    fn by_handle(&self, mount: &Path, id: u64) -> io::Result<Option<Arc<str>>> {
        #[repr(C)]
        struct FileHandle {
            handle_bytes: u32,
            handle_type: i32,
            f_handle: [u8; 8],
        }
        let dir = self.mount_fd.as_ref().ok_or(io::ErrorKind::Unsupported)?;
        let mut handle = FileHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            f_handle: id.to_ne_bytes(),
        };
        // O_PATH is refused here by older kernels, hence a read-only directory open.
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        let (dir, handle) = (dir.as_raw_fd(), &mut handle as *mut FileHandle);
        // SAFETY: a valid descriptor and a `struct file_handle` with its 8 bytes of f_handle.
        let fd = unsafe { libc::syscall(libc::SYS_open_by_handle_at, dir, handle, flags) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ESTALE | libc::ENOENT) => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        if target.to_string_lossy().ends_with(" (deleted)") {
            return Ok(None);
        }
        match target.strip_prefix(mount) {
            Ok(below) => Ok(Some(below_mount(below))),
            // Outside what this mount shows (another cgroup namespace's root): let a walk say.
            Err(_) => Err(io::Error::from_raw_os_error(libc::EXDEV)),
        }
    }

    /// Walks the cgroup tree once, caching every directory, and returns the one with `id`.
    fn walk(&mut self, mount: &Path, id: u64) -> Option<Arc<str>> {
        let mut found = None;
        let mut seen = |ino: u64, below: &Path, cache: &mut Self| {
            let path = below_mount(below);
            if ino == id {
                found = Some(path);
            } else {
                cache.insert(ino, Entry::Found(path));
            }
        };
        if let Ok(root) = id_of(mount) {
            seen(root, Path::new(""), self);
        }
        // An explicit stack, not recursion: the depth of the tree is not ours to choose.
        let mut pending = vec![PathBuf::new()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(mount.join(&dir)) else {
                continue; // removed meanwhile, or unreadable
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    // On kernfs a directory entry's inode number is the node's id, as st_ino.
                    let below = dir.join(entry.file_name());
                    seen(entry.ino(), &below, self);
                    pending.push(below);
                }
            }
        }
        found
    }

    fn insert(&mut self, id: u64, entry: Entry) {
        if self.cache.len() >= MAX_ENTRIES && !self.cache.contains_key(&id) {
            self.cache.clear();
        }
        self.cache.insert(id, entry);
    }
}

impl Default for CgroupResolver {
    fn default() -> Self {
        Self::new()
    }
}

/// `/` followed by a path relative to the mount (`""` is the root, `/`).
fn below_mount(below: &Path) -> Arc<str> {
    let below = below.to_string_lossy();
    Arc::from(format!("/{}", below.trim_start_matches('/')))
}

/// The container runtime a cgroup's name shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// Docker (`docker-<id>.scope`, `/docker/<id>`).
    Docker,
    /// containerd through its CRI plugin (`cri-containerd-<id>.scope`).
    Containerd,
    /// CRI-O (`crio-<id>.scope`).
    Crio,
    /// Podman (`libpod-<id>.scope`).
    Podman,
}

impl Runtime {
    /// The runtime's usual lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Crio => "crio",
            Runtime::Podman => "podman",
        }
    }
}

/// The container and Kubernetes pod a cgroup path belongs to, as far as its names tell.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ContainerInfo {
    /// The container's id: 64 lowercase hex digits.
    pub container_id: Option<String>,
    /// The pod's UID, in the 8-4-4-4-12 lowercase form.
    pub pod_uid: Option<String>,
    /// The runtime, when the cgroup's name shows it.
    pub runtime: Option<Runtime>,
}

/// The workload of the cgroup at `cgroup_path` (below the cgroup2 mount). The deepest
/// component naming a container wins: runtimes make sub-cgroups inside containers, and nested
/// containers are the inner one's. Conmon's scopes (the runtime's monitor) are no container.
pub fn container_of(cgroup_path: &str) -> ContainerInfo {
    let mut workload = ContainerInfo::default();
    let mut parent = "";
    for component in cgroup_path.split('/').filter(|c| !c.is_empty()) {
        if let Some((id, runtime)) = container_in(component, parent) {
            workload.container_id = Some(id.to_owned());
            workload.runtime = runtime;
        }
        if let Some(uid) = pod_uid_in(component) {
            workload.pod_uid = Some(uid);
        }
        parent = component;
    }
    workload
}

/// The container id (and runtime) a cgroup directory's name gives, if it names one.
fn container_in<'a>(component: &'a str, parent: &str) -> Option<(&'a str, Option<Runtime>)> {
    if is_container_id(component) {
        return Some((component, (parent == "docker").then_some(Runtime::Docker)));
    }
    // Systemd's drivers add ".scope"; CRI-O with the cgroupfs driver does not.
    let name = component.strip_suffix(".scope").unwrap_or(component);
    const PREFIXES: [(&str, Runtime); 4] = [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::Crio),
        ("libpod-", Runtime::Podman),
    ];
    PREFIXES.iter().find_map(|&(prefix, runtime)| {
        let id = name.strip_prefix(prefix)?;
        // `crio-conmon-<id>` and `libpod-conmon-<id>` fail here: "conmon-..." is no id.
        is_container_id(id).then_some((id, Some(runtime)))
    })
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The pod UID a cgroup directory's name gives: `kubepods[-<qos>]-pod<uid>.slice` (systemd's
/// driver, with `_` for `-`) or `pod<uid>` (the cgroupfs driver).
fn pod_uid_in(component: &str) -> Option<String> {
    let pod = match component.strip_suffix(".slice") {
        Some(slice) if slice.starts_with("kubepods-") => slice.rsplit_once('-')?.1,
        Some(_) => return None,
        None => component,
    };
    let uid = pod
        .strip_prefix("pod")?
        .replace('_', "-")
        .to_ascii_lowercase();
    let is_uuid = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    is_uuid.then_some(uid)
}

/// A `--container` filter's id prefix: 12 to 64 hex digits, in any case, returned lowercase.
pub fn container_prefix(arg: &str) -> Result<String, String> {
    if (12..=64).contains(&arg.len()) && arg.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(arg.to_ascii_lowercase())
    } else {
        Err(format!(
            "container id must be 12 to 64 hex digits, got {arg:?}"
        ))
    }
}

/// The names of each workload a tracer meets, by cgroup id: its cgroup path, container and pod,
/// resolved once per cgroup ([`CgroupResolver`], then [`container_of`]) and kept, so that the
/// event path pays a map lookup per event. A cgroup not resolved yet (created after the last
/// look, or removed) is looked up again on its next event; the cache is bounded like the
/// resolver's.
pub struct Workloads {
    resolver: CgroupResolver,
    names: HashMap<u64, Names>,
}

/// What [`Workloads`] knows of one cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    /// The cgroup's path below the cgroup2 mount.
    pub cgroup: Option<Arc<str>>,
    /// The container its path names.
    pub container_id: Option<Arc<str>>,
    /// The Kubernetes pod its path names.
    pub pod_uid: Option<Arc<str>>,
}

impl Default for Workloads {
    fn default() -> Self {
        Self::new()
    }
}

impl Workloads {
    /// Names resolved under the machine's cgroup2 mount.
    pub fn new() -> Self {
        Workloads {
            resolver: CgroupResolver::new(),
            names: HashMap::new(),
        }
    }

    /// The names of cgroup `id` (all `None` if it cannot be resolved now).
    pub fn names(&mut self, id: u64) -> Names {
        self.names_for(id, None)
    }

    /// The names of cgroup `id`, the cgroup of a connect by process `pid` if known (see
    /// [`CgroupResolver::resolve_for`]).
    fn names_for(&mut self, id: u64, pid: Option<u32>) -> Names {
        if let Some(names) = self.names.get(&id) {
            return names.clone();
        }
        let path = match pid {
            Some(pid) => self.resolver.resolve_for(id, pid),
            None => self.resolver.resolve(id),
        };
        let Some(path) = path else {
            return Names::default();
        };
        let container = container_of(&path);
        let names = Names {
            container_id: container.container_id.map(Arc::from),
            pod_uid: container.pod_uid.map(Arc::from),
            cgroup: Some(path),
        };
        if self.names.len() >= MAX_ENTRIES {
            self.names.clear();
        }
        self.names.insert(id, names.clone());
        names
    }

    /// Fills in the names of `workload`'s cgroup, that of a connect by process `pid`.
    pub fn fill(&mut self, workload: &mut crate::Workload, pid: u32) {
        let names = self.names_for(workload.cgroup_id, Some(pid));
        workload.cgroup = names.cgroup;
        workload.container_id = names.container_id;
        workload.pod_uid = names.pod_uid;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f3a0b9c2d1e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";
    const ID2: &str = "5f3a0b9c2d1e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";
    const UID: &str = "0b2c5e1a-3d4f-4a6b-8c9d-0e1f2a3b4c5d";
    const KUBE: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podUID_.slice";
    const ROOTLESS: &str = "/user.slice/user-1000.slice/user@1000.service/user.slice";

    /// A path template with `KUBE`, `ROOTLESS`, `UID_` (underscored), `UID`, `ID2` and `ID`.
    fn expand(template: &str) -> String {
        template
            .replace("KUBE", KUBE)
            .replace("ROOTLESS", ROOTLESS)
            .replace("UID_", &UID.replace('-', "_"))
            .replace("UID", UID)
            .replace("ID2", ID2)
            .replace("ID", ID)
    }

    #[test]
    fn workloads() {
        use Runtime::*;
        #[rustfmt::skip]
        let cases = [
            // (path, container, in a pod, runtime)
            ("/system.slice/docker-ID.scope", "ID", false, Some(Docker)),
            ("/docker/ID", "ID", false, Some(Docker)),
            ("/docker/ID/app/worker", "ID", false, Some(Docker)), // a sub-cgroup
            ("/system.slice/docker-ID.scope/docker/ID2", "ID2", false, Some(Docker)), // nested
            ("KUBE/cri-containerd-ID.scope", "ID", true, Some(Containerd)),
            ("KUBE/crio-ID.scope", "ID", true, Some(Crio)),
            ("KUBE/crio-ID.scope/sub", "ID", true, Some(Crio)),
            ("KUBE/crio-conmon-ID.scope", "", true, None),
            ("KUBE", "", true, None),
            ("/kubepods.slice/kubepods-podUID_.slice/crio-ID.scope", "ID", true, Some(Crio)),
            ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podUID_.slice/cri-containerd-ID.scope", "ID", true, Some(Containerd)),
            ("/machine.slice/libpod-ID.scope", "ID", false, Some(Podman)),
            ("/machine.slice/libpod-ID.scope/container", "ID", false, Some(Podman)),
            ("ROOTLESS/libpod-ID.scope", "ID", false, Some(Podman)),
            ("/machine.slice/libpod-conmon-ID.scope", "", false, None),
            ("ROOTLESS/libpod-conmon-ID.scope", "", false, None),
            ("/kubepods/burstable/podUID/ID", "ID", true, None),
            ("/kubepods/besteffort/podUID/ID", "ID", true, None),
            ("/kubepods/podUID/ID", "ID", true, None), // Guaranteed QoS
            ("/kubepods/burstable/podUID/crio-ID", "ID", true, Some(Crio)),
            ("/kubepods/burstable/podUID", "", true, None),
            ("/custom/ID", "ID", false, None),
            ("/", "", false, None),
            ("", "", false, None),
            ("/system.slice/nginx.service", "", false, None),
            ("/user.slice/user-1000.slice/session-3.scope", "", false, None),
            ("/system.slice/podman-ID.scope", "", false, None), // unknown prefix
            ("/system.slice/system-podUID.slice", "", false, None), // not kubepods
        ];
        for (template, container, pod, runtime) in cases {
            let want = ContainerInfo {
                container_id: Some(expand(container)).filter(|c| !c.is_empty()),
                pod_uid: pod.then(|| UID.to_owned()),
                runtime,
            };
            assert_eq!(container_of(&expand(template)), want, "{template}");
        }
    }

    #[test]
    fn malformed_ids() {
        let upper_pod = format!("/kubepods/pod{}/{ID}", UID.to_uppercase());
        assert_eq!(container_of(&upper_pod).pod_uid.as_deref(), Some(UID));
        for path in [
            format!("/docker/{}", &ID[1..]),                     // 63 digits
            format!("/docker/{ID}0"),                            // 65 digits
            format!("/docker/{}", ID.to_uppercase()),            // uppercase
            format!("/system.slice/docker-{}g.scope", &ID[1..]), // not hex
            format!("/kubepods/pod{}", &UID[1..]),               // short uid
            format!("/kubepods/pod{}", UID.replace('-', "")),    // no dashes
            format!("/kubepods/pod{}", UID.replace('a', "x")),   // not hex
            format!("/kubepods.slice/kubepods-pod{}.slice", UID.replace('-', "")),
        ] {
            assert_eq!(container_of(&path), ContainerInfo::default(), "{path}");
        }
    }

    #[test]
    fn container_prefixes() {
        assert_eq!(
            container_prefix("4F3A0B9C2D1E").as_deref(),
            Ok("4f3a0b9c2d1e")
        );
        assert_eq!(container_prefix(ID).as_deref(), Ok(ID));
        let too_long = format!("{ID}0");
        for bad in [
            "4f3a0b9c2d1",
            "",
            "4f3a0b9c2d1g",
            &too_long,
            " 4f3a0b9c2d1e",
        ] {
            assert!(container_prefix(bad).is_err(), "{bad:?}");
        }
        let err = container_prefix("xyz").err();
        let want = "container id must be 12 to 64 hex digits, got \"xyz\"";
        assert_eq!(err.as_deref(), Some(want));
        assert_eq!(Runtime::Crio.name(), "crio");
    }

    #[test]
    fn mountinfo() {
        let hybrid = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:30 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
34 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct";
        let mount = |info: &str| cgroup2_mount_in(info).map(|p| p.display().to_string());
        assert_eq!(mount(hybrid).as_deref(), Some("/sys/fs/cgroup/unified"));
        assert_eq!(
            mount(&hybrid.replace("cgroup2 cgroup2", "cgroup cgroup")),
            None
        );
        let escaped = "40 22 0:40 / /mnt/my\\040cgroups rw - cgroup2 none rw";
        assert_eq!(mount(escaped).as_deref(), Some("/mnt/my cgroups"));
        let unified = "41 22 0:27 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw";
        let both = format!("{escaped}\n{unified}");
        assert_eq!(mount(&both).as_deref(), Some("/sys/fs/cgroup")); // preferred, though second
        assert_eq!(unescape("a\\134b\\07x\\"), PathBuf::from("a\\b\\07x\\"));
        assert_eq!(mount("garbage\n\n - cgroup2\n1 2 3 4 - cgroup2"), None);
    }

    #[test]
    fn resolves_this_machines_cgroups() {
        let Some(mount) = cgroup2_mount() else {
            println!("skipped: no cgroup2 mount");
            return;
        };
        // Up to 50 cgroups, nested ones too, with their expected paths.
        let mut cgroups = vec![("/".to_owned(), mount.clone())];
        let mut next = 0;
        while next < cgroups.len() && cgroups.len() < 50 {
            let dir = cgroups[next].clone();
            next += 1;
            for entry in std::fs::read_dir(&dir.1).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) && cgroups.len() < 50 {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let path = format!("{}/{name}", dir.0.trim_end_matches('/'));
                    cgroups.push((path, entry.path()));
                }
            }
        }
        // By file handle where permitted, and by walking the tree.
        for handles in [true, false] {
            let mut resolver = CgroupResolver::with_mount(Some(mount.clone()));
            resolver.handles &= handles;
            for (want, dir) in &cgroups {
                let id = id_of(dir).expect("stat a cgroup");
                let want = Some(want.as_str());
                assert_eq!(resolver.resolve(id).as_deref(), want, "{dir:?}");
                assert_eq!(resolver.resolve(id).as_deref(), want, "{dir:?} cached");
            }
            // An id no cgroup has (those of live cgroups are far below it).
            assert_eq!(resolver.resolve(u64::MAX - 1), None);
            let (n, handles) = (cgroups.len(), resolver.handles);
            println!("resolved {n} cgroups below {mount:?}, by file handle: {handles}");
        }
    }
}
