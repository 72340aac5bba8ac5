//! Workload identity, resolved in userspace from what the kernel shows in `/proc` and `/sys`
//! alone (no container runtime API to trust, reach or wait for): the cgroup v2 id the kernel
//! side records becomes a cgroup path ([`CgroupResolver`]), and the path names the container
//! and Kubernetes pod the connecting task runs in ([`WorkloadNames::of_cgroup`]).

mod cgroup;
mod container;

use std::{collections::HashMap, sync::Arc};

pub use cgroup::{CgroupResolver, cgroup2_mount, cgroup2_mount_in, id_of};
pub(crate) use container::container_prefix;
pub use container::{Runtime, runtime_of};

/// The names of a workload: its cgroup's path and the container and pod that path names. An
/// event's [`crate::Workload`] and a count row's [`crate::ConnectCount::workload`] carry them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct WorkloadNames {
    /// The cgroup's path below the cgroup2 mount (`/system.slice/nginx.service`), if it could
    /// be resolved (not when the cgroup was removed before the tracer named it, or no cgroup2
    /// filesystem is mounted), and if the names are of one cgroup (not of a whole container).
    pub cgroup: Option<Arc<str>>,
    /// The container (its id, 64 lowercase hex digits) the cgroup path names, if any.
    pub container: Option<Arc<str>>,
    /// The Kubernetes pod (its uid, in the 8-4-4-4-12 lowercase form) the cgroup path names,
    /// if any.
    pub pod: Option<Arc<str>>,
}

impl WorkloadNames {
    /// The names of the cgroup at `path` (below the cgroup2 mount): the path, and the container
    /// and pod its components name as container runtimes and the kubelet name them. The
    /// deepest component naming a container wins (runtimes make sub-cgroups inside
    /// containers; nested containers are the inner one's); conmon's scopes are no container.
    ///
    /// ```
    /// use probe_user::WorkloadNames;
    ///
    /// let id = "4f3a0b9c2d1e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";
    /// let pod = "0b2c5e1a-3d4f-4a6b-8c9d-0e1f2a3b4c5d";
    /// let path = format!("/kubepods/burstable/pod{pod}/crio-{id}");
    /// let names = WorkloadNames::of_cgroup(path.as_str());
    /// assert_eq!(names.cgroup.as_deref(), Some(path.as_str()));
    /// assert_eq!(names.container.as_deref(), Some(id));
    /// assert_eq!(names.pod.as_deref(), Some(pod));
    /// ```
    pub fn of_cgroup(path: impl Into<Arc<str>>) -> Self {
        let path = path.into();
        let names = container::container_of(&path);
        WorkloadNames {
            container: names.container.map(Arc::from),
            pod: names.pod.map(Arc::from),
            cgroup: Some(path),
        }
    }

    /// The names of a whole container (or of no container): no cgroup path, and the pod only
    /// with a container (cgroups outside containers may be of any pod or none).
    ///
    /// ```
    /// use probe_user::WorkloadNames;
    ///
    /// let cgroup = WorkloadNames::of_cgroup("/kubepods/burstable/pod0b2c5e1a-3d4f-4a6b-8c9d-0e1f2a3b4c5d");
    /// assert_eq!(cgroup.container_only(), WorkloadNames::default());
    /// ```
    pub fn container_only(&self) -> Self {
        WorkloadNames {
            cgroup: None,
            container: self.container.clone(),
            pod: self.container.as_ref().and(self.pod.clone()),
        }
    }
}

/// The names of each workload a tracer meets, by cgroup id: its cgroup path, container and pod,
/// resolved once per cgroup ([`CgroupResolver`], then [`WorkloadNames::of_cgroup`]) and kept,
/// so that the event path pays a map lookup per event. A cgroup not resolved yet (created
/// after the last look, or removed) is looked up again on its next event; the cache is bounded
/// like the resolver's.
///
/// ```no_run
/// use probe_user::identity::{Workloads, id_of};
///
/// let mut workloads = Workloads::new();
/// let id = id_of("/sys/fs/cgroup/system.slice".as_ref())?;
/// assert_eq!(workloads.names(id).cgroup.as_deref(), Some("/system.slice"));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Workloads {
    resolver: CgroupResolver,
    names: HashMap<u64, WorkloadNames>,
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

    /// Whether cgroup `id` exists now, asked of the kernel (see [`CgroupResolver::exists`]).
    pub fn exists(&mut self, id: u64) -> Option<bool> {
        let exists = self.resolver.exists(id);
        if exists == Some(false) {
            self.names.remove(&id);
        }
        exists
    }

    /// Whether cgroup `id` has been named (its path found) and is still cached.
    pub fn named(&self, id: u64) -> bool {
        self.names.get(&id).is_some_and(|n| n.cgroup.is_some())
    }

    /// The ids of every cgroup under the mount now, and whether that is every cgroup (see
    /// [`CgroupResolver::ids`]).
    pub fn ids(&mut self) -> Option<(std::collections::HashSet<u64>, bool)> {
        self.resolver.ids()
    }

    /// The names of cgroup `id` (all `None` if it cannot be resolved now).
    pub fn names(&mut self, id: u64) -> WorkloadNames {
        self.names_for(id, None)
    }

    /// The names of cgroup `id`, the cgroup of a connect by process `pid` if known (see
    /// [`CgroupResolver::resolve_for`]): what an event's workload is named.
    pub fn names_for(&mut self, id: u64, pid: Option<u32>) -> WorkloadNames {
        if let Some(names) = self.names.get(&id) {
            return names.clone();
        }
        let path = match pid {
            Some(pid) => self.resolver.resolve_for(id, pid),
            None => self.resolver.resolve(id),
        };
        let Some(path) = path else {
            return WorkloadNames::default();
        };
        let names = WorkloadNames::of_cgroup(path);
        if self.names.len() >= cgroup::MAX_ENTRIES {
            self.names.clear();
        }
        self.names.insert(id, names.clone());
        names
    }
}
