//! Cgroup v2 ids to paths: where the cgroup2 filesystem is mounted, and [`CgroupResolver`],
//! which asks the kernel (a file handle of the id) or walks the tree.

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
///
/// ```
/// use probe_user::identity::cgroup2_mount_in;
///
/// let mountinfo = "32 31 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw";
/// assert_eq!(cgroup2_mount_in(mountinfo), Some("/sys/fs/cgroup/unified".into()));
/// ```
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
pub(super) const MAX_ENTRIES: usize = 65_536;
/// How long "no such cgroup" is believed, so a cgroup created later still resolves; also the
/// least time between two walks of the tree, so a flood of unknown ids cannot keep it walking.
const RETRY: Duration = Duration::from_secs(1);
/// The cgroup id of the hierarchy's root (its kernfs root node's).
const ROOT_ID: u64 = 1;
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
/// second, and remembers every directory it saw. A removed cgroup resolves to nothing: the
/// kernel no longer finds its id, or the directory is at no path any more (whatever its name).
///
/// ```no_run
/// use probe_user::identity::{CgroupResolver, id_of};
///
/// let mut resolver = CgroupResolver::new();
/// let mount = resolver.mount().expect("a cgroup2 mount").to_owned();
/// let id = id_of(&mount.join("system.slice"))?;
/// assert_eq!(resolver.resolve(id).as_deref(), Some("/system.slice"));
/// # Ok::<(), std::io::Error>(())
/// ```
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

    /// Whether cgroup `id` exists now, asked of the kernel by file handle (never from the
    /// cache), or `None` when that cannot be told this way: no cgroup2 mount, or no permission
    /// (`CAP_DAC_READ_SEARCH`; then [`CgroupResolver::ids`] tells). A cgroup outside what this
    /// mount shows (another cgroup namespace's) exists.
    pub fn exists(&mut self, id: u64) -> Option<bool> {
        let mount = self.mount.clone()?;
        if !self.handles {
            return None;
        }
        match self.by_handle(&mount, id) {
            Ok(found) => Some(found.is_some()),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Some(true),
            Err(e) => {
                log::debug!("cgroup id {id} by file handle: {e}");
                None
            }
        }
    }

    /// The ids of every cgroup under the mount now (a walk of the tree, not the cache), and
    /// whether that is every cgroup of the machine (the mount is of the hierarchy's root, id 1,
    /// not of a cgroup namespace's); `None` without a cgroup2 mount.
    pub fn ids(&mut self) -> Option<(std::collections::HashSet<u64>, bool)> {
        let mount = self.mount.clone()?;
        let mut ids = std::collections::HashSet::new();
        let root = id_of(&mount).ok();
        ids.extend(root);
        let mut pending = vec![mount];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue; // removed meanwhile, or unreadable
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    ids.insert(entry.ino());
                    pending.push(entry.path());
                }
            }
        }
        Some((ids, root == Some(ROOT_ID)))
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
        // Outside what this mount shows (another cgroup namespace's root): let a walk say.
        let below = target
            .strip_prefix(mount)
            .map_err(|_| io::Error::from_raw_os_error(libc::EXDEV))?;
        // A removed directory's link reads as its old path with " (deleted)" appended, but a
        // live cgroup may have that very text in its name: the path is this cgroup's only if
        // the directory there is the one with this id (a removed directory is at no path).
        if id_of(&target).ok() != Some(id) {
            return Ok(None);
        }
        Ok(Some(below_mount(below)))
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

#[cfg(test)]
mod tests {
    use super::*;

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
            let mut resolved = 0;
            for (want, dir) in &cgroups {
                // A cgroup may go between the listing and now (the test beside this one makes
                // and removes its own; systemd removes transient scopes): skip those, and
                // any that goes while it is resolved.
                let Ok(id) = id_of(dir) else { continue };
                let (first, cached) = (resolver.resolve(id), resolver.resolve(id));
                if id_of(dir).ok() != Some(id) {
                    continue;
                }
                let want = Some(want.as_str());
                assert_eq!(first.as_deref(), want, "{dir:?}");
                assert_eq!(cached.as_deref(), want, "{dir:?} cached");
                resolved += 1;
            }
            assert!(resolved > 0, "the mount's root always resolves");
            // An id no cgroup has (those of live cgroups are far below it).
            assert_eq!(resolver.resolve(u64::MAX - 1), None);
            let handles = resolver.handles;
            println!("resolved {resolved} cgroups below {mount:?}, by file handle: {handles}");
        }
    }

    /// A cgroup named `... (deleted)` is a live cgroup like any other (its name is not read as
    /// the kernel's mark of a removed directory), and a removed cgroup resolves to nothing,
    /// even while a descriptor keeps its directory alive. Needs root and a writable cgroup2
    /// mount (skipped otherwise; the VM tests cover it in any case).
    #[test]
    fn deletion_is_the_kernels_not_the_names() {
        let Some(mount) = cgroup2_mount() else {
            println!("skipped: no cgroup2 mount");
            return;
        };
        let pid = std::process::id();
        let named = mount.join(format!("probe-unit-{pid} (deleted)"));
        let removed = mount.join(format!("probe-unit-{pid}-removed"));
        /// Removes the cgroup when the test ends, failed or not: a cgroup left behind would be
        /// on the machine for every later test.
        struct Made(std::path::PathBuf);
        impl Drop for Made {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        if let Err(e) = std::fs::create_dir(&named) {
            println!("skipped: cannot make a cgroup: {e}");
            return;
        }
        let _named = Made(named.clone());
        std::fs::create_dir(&removed).expect("make a second cgroup");
        let _removed = Made(removed.clone());
        let (named_id, removed_id) = (id_of(&named).unwrap(), id_of(&removed).unwrap());
        let held = std::fs::File::open(&removed).expect("open the cgroup");
        std::fs::remove_dir(&removed).expect("remove the cgroup");
        let want = format!("/probe-unit-{pid} (deleted)");
        for handles in [true, false] {
            let mut resolver = CgroupResolver::with_mount(Some(mount.clone()));
            resolver.handles &= handles;
            assert_eq!(resolver.resolve(named_id).as_deref(), Some(want.as_str()));
            assert_eq!(
                resolver.resolve(removed_id),
                None,
                "by file handle: {handles}"
            );
        }
        drop(held);
    }
}
