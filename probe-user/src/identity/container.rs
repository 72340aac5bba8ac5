//! What a cgroup's path says of the container and Kubernetes pod it belongs to, from the names
//! container runtimes and the kubelet give their cgroups.

/// The container runtime a cgroup's name shows (see [`runtime_of`]).
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
pub(crate) struct PathNames {
    /// The container's id: 64 lowercase hex digits.
    pub container: Option<String>,
    /// The pod's UID, in the 8-4-4-4-12 lowercase form.
    pub pod: Option<String>,
    /// The runtime, when the cgroup's name shows it.
    pub runtime: Option<Runtime>,
}

/// The workload of the cgroup at `cgroup_path` (below the cgroup2 mount). The deepest
/// component naming a container wins: runtimes make sub-cgroups inside containers, and nested
/// containers are the inner one's. Conmon's scopes (the runtime's monitor) are no container.
pub(crate) fn container_of(cgroup_path: &str) -> PathNames {
    let mut workload = PathNames::default();
    let mut parent = "";
    for component in cgroup_path.split('/').filter(|c| !c.is_empty()) {
        if let Some((id, runtime)) = container_in(component, parent) {
            workload.container = Some(id.to_owned());
            workload.runtime = runtime;
        }
        if let Some(uid) = pod_uid_in(component) {
            workload.pod = Some(uid);
        }
        parent = component;
    }
    workload
}

/// The runtime of the container the cgroup at `cgroup_path` (below the cgroup2 mount) belongs
/// to, when its name shows it (see [`super::WorkloadNames::of_cgroup`] for the container).
///
/// ```
/// use probe_user::identity::{Runtime, runtime_of};
///
/// let id = "4f3a0b9c2d1e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";
/// let path = format!("/system.slice/docker-{id}.scope");
/// assert_eq!(runtime_of(&path), Some(Runtime::Docker));
/// assert_eq!(runtime_of("/system.slice/nginx.service"), None);
/// ```
pub fn runtime_of(cgroup_path: &str) -> Option<Runtime> {
    container_of(cgroup_path).runtime
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
pub(crate) fn container_prefix(arg: &str) -> Result<String, String> {
    if (12..=64).contains(&arg.len()) && arg.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(arg.to_ascii_lowercase())
    } else {
        Err(format!(
            "container id must be 12 to 64 hex digits, got {arg:?}"
        ))
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
            let want = PathNames {
                container: Some(expand(container)).filter(|c| !c.is_empty()),
                pod: pod.then(|| UID.to_owned()),
                runtime,
            };
            assert_eq!(container_of(&expand(template)), want, "{template}");
        }
    }

    #[test]
    fn malformed_ids() {
        let upper_pod = format!("/kubepods/pod{}/{ID}", UID.to_uppercase());
        assert_eq!(container_of(&upper_pod).pod.as_deref(), Some(UID));
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
            assert_eq!(container_of(&path), PathNames::default(), "{path}");
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
}
