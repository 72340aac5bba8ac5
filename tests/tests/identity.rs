//! Workload identity: the cgroup, container, pod and namespaces of each connect, and the
//! `--cgroup`, `--container` and `--netns` filters and per-workload counts built on them (run by
//! `cargo xtask test`, in the VM with each backend and natively: see the `probe_tests` crate
//! docs; `cargo xtask test identity` runs these alone, as every name here starts with
//! `identity_`).
//!
//! Each test makes cgroup v2 directories of its own, named as container runtimes name theirs,
//! under a root directory unique to it (`probe-id-<pid>-<name>`, removed at the end), moves
//! `connect-once` processes into them, and traces only that root (or matches its connects by
//! their source ports), so other traffic on the machine does not matter. Container ids and pod
//! uids are random.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::SocketAddr,
    process::{Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
};

use probe_tests::{
    Cgroup, CgroupTree, ConnectOnce, ProbeUser, SeenConnect, StapLine, assert_one_line_error,
    connect, connect_once_from, json_lines, line_reporting, listener, metric_samples, ns_inode,
    probe_user_command, run_connect_once, scrape, seen_of, serving_addr,
};
use serde_json::Value;

/// A cgroup tree for the test `name`, under a root of its own.
fn tree(name: &str) -> CgroupTree {
    CgroupTree::new(&format!("probe-id-{}-{name}", std::process::id()))
}

/// `digits` random lowercase hex digits (a fresh random key each call, with the pid and a
/// counter hashed in).
fn random_hex(digits: usize) -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let mut hex = String::new();
    while hex.len() < digits {
        let mut hasher = state.build_hasher();
        hasher.write_u32(std::process::id());
        hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
        hex.push_str(&format!("{:016x}", hasher.finish()));
    }
    hex.truncate(digits);
    hex
}

/// A random container id: 64 hex digits.
fn container_id() -> String {
    random_hex(64)
}

/// A random pod uid, in the dashed 8-4-4-4-12 form.
fn pod_uid() -> String {
    let hex = random_hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The systemd slice of a pod of QoS class `qos` (`burstable`, `besteffort`), as the kubelet's
/// systemd cgroup driver names it (dashes of the uid as underscores).
fn pod_slice(qos: &str, uid: &str) -> String {
    format!(
        "kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{}.slice",
        uid.replace('-', "_")
    )
}

/// Starts probe-user printing JSON lines, with `args`.
fn json_tracer(args: &[&str]) -> ProbeUser {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    ProbeUser::start(&all)
}

/// Runs `connect-once --cgroup DIR --print-ids dst` in `cgroup`.
fn connect_in(cgroup: &Cgroup, dst: SocketAddr) -> ConnectOnce {
    connect_once_from(&[], &["--cgroup", cgroup.dir(), "--print-ids"], dst)
}

/// The connects `lines` report, sorted.
fn seen_sorted(lines: &[Value]) -> Vec<SeenConnect> {
    let mut seen: Vec<SeenConnect> = lines.iter().map(seen_of).collect();
    seen.sort();
    seen
}

/// `made`'s connects, sorted.
fn made_sorted<'a>(made: impl IntoIterator<Item = &'a ConnectOnce>) -> Vec<SeenConnect> {
    let mut seen: Vec<SeenConnect> = made.into_iter().map(|m| m.seen).collect();
    seen.sort();
    seen
}

/// Checks that `line` names `connect-once`'s task `made` (in the test's own pid namespace) in
/// `cgroup`, of container `container` and pod `pod`.
fn assert_workload(
    line: &Value,
    made: &ConnectOnce,
    cgroup: &Cgroup,
    container: Option<&str>,
    pod: Option<&str>,
) {
    let ids = made.ids.expect("connect-once --print-ids");
    let want = serde_json::json!({
        "comm": "connect-once",
        "pid": ids.pid,
        "tid": ids.tid,
        "uid": 0,
        "cgroup_id": cgroup.id,
        "cgroup": cgroup.path,
        "container_id": container,
        "pod_uid": pod,
        "ns_pid": ids.pid,
        "ns_tid": ids.tid,
        "pidns": ids.pidns,
        "netns": ids.netns,
        "ret": 0,
    });
    let got: serde_json::Map<String, Value> = want
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (k.clone(), line[k].clone()))
        .collect();
    assert_eq!(Value::Object(got), want, "{line}");
}

/// Every container runtime's cgroup layout is reported with the right cgroup path and id,
/// container id and pod uid, along with the task's pid, tid and namespaces as it saw them:
/// Docker (systemd and cgroupfs drivers), containerd and CRI-O under Kubernetes pods (systemd
/// driver), Podman, and a plain service (no container, no pod).
#[test]
fn identity_of_every_runtime_layout_is_reported() {
    let v4 = listener("127.0.0.1:0");
    let mut cgroups = tree("layouts");
    let ids: Vec<String> = (0..5).map(|_| container_id()).collect();
    let (uid1, uid2) = (pod_uid(), pod_uid());
    let layouts: Vec<(String, Option<&str>, Option<&str>)> = vec![
        (
            format!("system.slice/docker-{}.scope", ids[0]),
            Some(&ids[0]),
            None,
        ),
        (format!("docker/{}", ids[1]), Some(&ids[1]), None),
        (
            format!(
                "{}/cri-containerd-{}.scope",
                pod_slice("burstable", &uid1),
                ids[2]
            ),
            Some(&ids[2]),
            Some(&uid1),
        ),
        (
            format!("{}/crio-{}.scope", pod_slice("besteffort", &uid2), ids[3]),
            Some(&ids[3]),
            Some(&uid2),
        ),
        (
            format!("machine.slice/libpod-{}.scope", ids[4]),
            Some(&ids[4]),
            None,
        ),
        ("system.slice/nginx.service".into(), None, None),
    ];
    let dirs: Vec<Cgroup> = layouts.iter().map(|(l, _, _)| cgroups.mkdir(l)).collect();
    let tracer = json_tracer(&["--cgroup", cgroups.root().dir()]);
    connect(v4, None).unwrap(); // this process, outside
    let made: Vec<ConnectOnce> = dirs.iter().map(|d| connect_in(d, v4)).collect();
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");

    let lines = json_lines(&out.stdout);
    assert_eq!(seen_sorted(&lines), made_sorted(&made), "{}", out.stdout);
    for ((made, dir), (layout, container, pod)) in made.iter().zip(&dirs).zip(&layouts) {
        assert!(dir.path.ends_with(layout.as_str()), "{dir:?}");
        assert_workload(
            line_reporting(&lines, &made.seen),
            made,
            dir,
            *container,
            *pod,
        );
    }
}

/// Cgroups created after probe-user started are resolved when their first connect comes: a
/// CRI-O container of the cgroupfs driver (`kubepods/burstable/pod<uid>/crio-<id>`) and a
/// sub-cgroup a Docker container made inside its own (the container's id).
#[test]
fn identity_of_a_cgroup_created_after_start_is_resolved() {
    let v4 = listener("127.0.0.1:0");
    let mut cgroups = tree("late");
    let tracer = json_tracer(&["--cgroup", cgroups.root().dir()]);
    let (crio, docker, uid) = (container_id(), container_id(), pod_uid());
    let late = [
        (
            cgroups.mkdir(&format!("kubepods/burstable/pod{uid}/crio-{crio}")),
            Some(&crio),
            Some(&uid),
        ),
        (
            cgroups.mkdir(&format!("system.slice/docker-{docker}.scope/app")),
            Some(&docker),
            None,
        ),
    ];
    let made: Vec<ConnectOnce> = late.iter().map(|(d, _, _)| connect_in(d, v4)).collect();
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");

    let lines = json_lines(&out.stdout);
    assert_eq!(seen_sorted(&lines), made_sorted(&made), "{}", out.stdout);
    for (made, (dir, container, pod)) in made.iter().zip(&late) {
        let line = line_reporting(&lines, &made.seen);
        assert_workload(
            line,
            made,
            dir,
            container.map(|c| c.as_str()),
            pod.map(|p| p.as_str()),
        );
    }
}

/// `--cgroup PARENT` admits PARENT and every cgroup below it, a grandchild created after
/// probe-user started included, and nothing else: not a sibling, not one whose name merely
/// starts with PARENT's, not the directory above, not this process.
#[test]
fn identity_cgroup_filter_admits_the_directory_and_below_only() {
    let v4 = listener("127.0.0.1:0");
    let mut cgroups = tree("subtree");
    let parent = cgroups.mkdir("parent");
    let child = cgroups.mkdir("parent/child");
    let sibling = cgroups.mkdir("sibling");
    let lookalike = cgroups.mkdir("parent2");
    let root = cgroups.root().clone();
    let tracer = json_tracer(&["--cgroup", parent.dir()]);
    let grandchild = cgroups.mkdir("parent/child/grandchild");

    connect(v4, None).unwrap();
    let admitted = [&parent, &child, &grandchild];
    let made: Vec<ConnectOnce> = admitted.iter().map(|d| connect_in(d, v4)).collect();
    for other in [&sibling, &lookalike, &root] {
        connect_in(other, v4);
    }
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");

    let lines = json_lines(&out.stdout);
    assert_eq!(seen_sorted(&lines), made_sorted(&made), "{}", out.stdout);
    for (made, dir) in made.iter().zip(admitted) {
        assert_workload(line_reporting(&lines, &made.seen), made, dir, None, None);
    }
}

/// `--container` with the first 12 digits of an id, or all 64, admits exactly the connects of
/// that container's cgroups, also of one created after probe-user started (by the cgroupfs
/// driver's name, the id alone), and the 12 digits also another id starting with them. Not
/// admitted: the container's conmon scope (`libpod-conmon-<id>.scope`), another container and
/// a plain service.
#[test]
fn identity_container_filter_admits_that_container_only() {
    let v4 = listener("127.0.0.1:0");
    let mut cgroups = tree("container");
    let (id, other, uid) = (container_id(), container_id(), pod_uid());
    // Same first 12 digits, then different ones.
    let lookalike = format!("{}{}", &id[..12], random_hex(52));
    let pod = pod_slice("burstable", &uid);
    // The longest name (cri-containerd-, 64 digits, .scope) the kernel side reads.
    let container = cgroups.mkdir(&format!("{pod}/cri-containerd-{id}.scope"));
    let rejected = [
        cgroups.mkdir(&format!("machine.slice/libpod-conmon-{id}.scope")),
        cgroups.mkdir(&format!("system.slice/docker-{other}.scope")),
        cgroups.mkdir("system.slice/nginx.service"),
    ];

    for (run, (filter, admits_lookalike)) in [(&id[..12], true), (&id[..], false)]
        .into_iter()
        .enumerate()
    {
        let tracer = json_tracer(&["--container", filter]);
        let late = cgroups.mkdir(&format!("run{run}/docker/{id}"));
        let late_lookalike =
            cgroups.mkdir(&format!("run{run}/machine.slice/libpod-{lookalike}.scope"));
        connect(v4, None).unwrap();
        let mut admitted = vec![
            (connect_in(&container, v4), &container, &id, Some(&uid)),
            (connect_in(&late, v4), &late, &id, None),
        ];
        let lookalike_connect = connect_in(&late_lookalike, v4);
        if admits_lookalike {
            admitted.push((lookalike_connect, &late_lookalike, &lookalike, None));
        }
        for dir in &rejected {
            connect_in(dir, v4);
        }
        let out = tracer.stop();
        assert!(out.status.success(), "--container {filter}: {out:?}");

        let lines = json_lines(&out.stdout);
        let made: Vec<&ConnectOnce> = admitted.iter().map(|a| &a.0).collect();
        assert_eq!(
            seen_sorted(&lines),
            made_sorted(made),
            "--container {filter}: {}",
            out.stdout
        );
        for (made, dir, container, pod) in &admitted {
            let line = line_reporting(&lines, &made.seen);
            assert_workload(line, made, dir, Some(container), pod.map(|p| p.as_str()));
        }
    }
}

/// crun (Podman's and CRI-O's runtime on many distributions) puts a container's tasks in a
/// sub-cgroup of the container's scope (`libpod-<id>.scope/container`): `--container` admits
/// them too (the kernel side also checks the parent directory's name), and their events name
/// the container.
#[test]
fn identity_container_filter_admits_cruns_sub_cgroup() {
    let v4 = listener("127.0.0.1:0");
    let mut cgroups = tree("crun");
    let (id, other) = (container_id(), container_id());
    let inner = cgroups.mkdir(&format!("machine.slice/libpod-{id}.scope/container"));
    let rejected = cgroups.mkdir(&format!("machine.slice/libpod-{other}.scope/container"));
    let tracer = json_tracer(&["--container", &id[..12]]);
    let made = connect_in(&inner, v4);
    connect_in(&rejected, v4);
    connect(v4, None).unwrap();
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out.stdout);
    assert_eq!(seen_sorted(&lines), made_sorted([&made]), "{}", out.stdout);
    assert_workload(
        line_reporting(&lines, &made.seen),
        &made,
        &inner,
        Some(&id),
        None,
    );
}

/// With `--outcome`, a connect is reported when its handshake ends, outside the caller's
/// context: its workload is still the caller's, read at the call.
#[test]
fn identity_of_a_connect_with_its_outcome() {
    let v4 = listener("127.0.0.1:0");
    let mut cgroups = tree("outcome");
    let (id, uid) = (container_id(), pod_uid());
    let dir = cgroups.mkdir(&format!("{}/crio-{id}.scope", pod_slice("burstable", &uid)));
    let tracer = json_tracer(&["--outcome", "--cgroup", cgroups.root().dir()]);
    let made = connect_in(&dir, v4);
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out.stdout);
    assert_eq!(seen_sorted(&lines), made_sorted([&made]), "{}", out.stdout);
    let line = line_reporting(&lines, &made.seen);
    assert_eq!(line["outcome"], "established", "{line}");
    assert_workload(line, &made, &dir, Some(&id), Some(&uid));
}

/// A process in a pid namespace of its own (`unshare -p -f`, where it is pid 1) is reported
/// with its pid as the machine sees it and, as `ns_pid`/`ns_tid`, as it sees it itself, with
/// its own pid namespace's inode; one in the test's namespace has the same pid both ways.
#[test]
fn identity_of_a_task_in_its_own_pid_namespace() {
    let v4 = listener("127.0.0.1:0");
    let cgroups = tree("pidns");
    let root = cgroups.root();
    let own_pidns = ns_inode("pid");
    let tracer = json_tracer(&["--cgroup", root.dir()]);
    let inner = connect_once_from(
        &["unshare", "-p", "-f", "connect-once"],
        &["--cgroup", root.dir(), "--print-ids"],
        v4,
    );
    let outer = connect_in(root, v4);
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");

    let lines = json_lines(&out.stdout);
    assert_eq!(
        seen_sorted(&lines),
        made_sorted([&inner, &outer]),
        "{}",
        out.stdout
    );
    assert_workload(
        line_reporting(&lines, &outer.seen),
        &outer,
        root,
        None,
        None,
    );
    assert_eq!(outer.ids.unwrap().pidns, own_pidns);

    let ids = inner.ids.unwrap();
    assert_eq!(ids.pid, 1, "pid 1 of its namespace: {inner:?}");
    assert_ne!(ids.pidns, own_pidns, "{inner:?}");
    let line = line_reporting(&lines, &inner.seen);
    assert_eq!(line["comm"], "connect-once", "{line}");
    assert_eq!(line["ns_pid"], ids.pid, "{line}");
    assert_eq!(line["ns_tid"], ids.tid, "{line}");
    assert_eq!(line["pidns"], ids.pidns, "{line}");
    assert_eq!(line["netns"], ids.netns, "{line}");
    assert_eq!(line["cgroup"], root.path, "{line}");
    let pid = line["pid"].as_u64().unwrap();
    assert!(pid > 1 && pid != u64::from(std::process::id()), "{line}");
    assert_eq!(line["tid"], pid, "a single thread: {line}");
}

/// A connect in a network namespace of its own is reported with that namespace's inode, one
/// in the test's with the test's; `--netns INODE` admits only the connects of sockets in that
/// namespace, whoever makes them.
#[test]
fn identity_of_a_network_namespace_and_the_netns_filter() {
    let v4 = listener("127.0.0.1:0");
    let cgroups = tree("netns");
    let root = cgroups.root();
    let own_netns = ns_inode("net");

    let tracer = json_tracer(&["--cgroup", root.dir()]);
    let inner = run_connect_once(Command::new("unshare").args([
        "-n",
        "sh",
        "-c",
        "ip link set lo up && exec connect-once --cgroup \"$1\" --self-listen --print-ids",
        "sh",
        root.dir(),
    ]));
    let outer = connect_in(root, v4);
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let inner_netns = inner.ids.unwrap().netns;
    assert_ne!(inner_netns, own_netns, "{inner:?}");
    assert_eq!(outer.ids.unwrap().netns, own_netns, "{outer:?}");
    // Ports of two namespaces may coincide: tell the lines apart by namespace too.
    let lines = json_lines(&out.stdout);
    let reported: BTreeSet<(SeenConnect, u64)> = lines
        .iter()
        .map(|l| (seen_of(l), l["netns"].as_u64().unwrap()))
        .collect();
    let expected = BTreeSet::from([(inner.seen, inner_netns), (outer.seen, own_netns)]);
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert_eq!(reported, expected, "{}", out.stdout);

    // A namespace that outlives a tracer's start: its shell says which it is, then waits.
    let mut shell = Command::new("unshare")
        .args([
            "-n",
            "sh",
            "-c",
            "ip link set lo up && readlink /proc/self/ns/net && read go \
             && exec connect-once --self-listen --print-ids",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot run unshare");
    let mut stdout = BufReader::new(shell.stdout.take().unwrap());
    let mut link = String::new();
    stdout.read_line(&mut link).unwrap();
    let netns: u64 = link
        .trim()
        .strip_prefix("net:[")
        .and_then(|l| l.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a netns link: {link:?}"));
    assert_ne!(netns, own_netns);
    let tracer = ProbeUser::start(&["--netns", &netns.to_string()]);
    connect(v4, None).unwrap();
    connect_in(root, v4);
    shell.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut line = String::new();
    stdout.read_to_string(&mut line).unwrap();
    let status = shell.wait().unwrap();
    assert!(status.success(), "{status}: {line:?}");
    let inner = probe_tests::parse_connect_once(&line)
        .unwrap_or_else(|| panic!("connect-once printed {line:?}"));
    assert_eq!(inner.ids.unwrap().netns, netns, "{inner:?}");
    connect_in(root, v4);
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let printed: Vec<SeenConnect> = out
        .stdout
        .lines()
        .map(|l| StapLine::parse(l).connect())
        .collect();
    assert_eq!(printed, vec![inner.seen], "--netns {netns}: {}", out.stdout);
}

/// Directories for the counting tests: container A (Docker, systemd driver), container B (a
/// pod's, cgroupfs driver) and a plain service, with 2, 3 and 1 connects made from them to
/// `dst` while a tracer counted (and one from this process, outside them).
struct Counted {
    _cgroups: CgroupTree,
    a: (Cgroup, String),
    b: (Cgroup, String),
    uid: String,
    plain: Cgroup,
}

/// Starts `start` (given the tree's root), makes the connects of [`Counted`] and stops it.
fn counted(
    name: &str,
    dst: SocketAddr,
    start: impl FnOnce(&Cgroup) -> ProbeUser,
    during: impl FnOnce(&ProbeUser),
) -> (Counted, probe_tests::Finished) {
    let mut cgroups = tree(name);
    let (a, b, uid) = (container_id(), container_id(), pod_uid());
    let a_dir = cgroups.mkdir(&format!("system.slice/docker-{a}.scope"));
    let b_dir = cgroups.mkdir(&format!("kubepods/besteffort/pod{uid}/{b}"));
    let plain = cgroups.mkdir("system.slice/nginx.service");
    let tracer = start(cgroups.root());
    connect(dst, None).unwrap();
    for (dir, n) in [(&a_dir, 2), (&b_dir, 3), (&plain, 1)] {
        for _ in 0..n {
            connect_in(dir, dst);
        }
    }
    during(&tracer);
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let counted = Counted {
        _cgroups: cgroups,
        a: (a_dir, a),
        b: (b_dir, b),
        uid,
        plain,
    };
    (counted, out)
}

/// Starts probe-user counting by `by` in JSON tables, in the cgroup `root` only.
fn count_tables(by: &str, root: &Cgroup) -> ProbeUser {
    ProbeUser::start_until(
        probe_user_command().args([
            "--count",
            "--count-by",
            by,
            "--format",
            "json",
            "--interval",
            "1s",
            "--cgroup",
            root.dir(),
        ]),
        "Counting TCP connects",
    )
}

/// The rows of the last JSON table in `stdout`, and the summary check: `n` counted, none lost.
fn last_table(out: &probe_tests::Finished, n: u64) -> Vec<Value> {
    let summary = format!("probe-user: {n} connects counted, 0 dropped, 0 missed, 0 malformed");
    assert!(out.stderr.lines().any(|l| l == summary), "{}", out.stderr);
    let tables = json_lines(&out.stdout);
    let last = tables.last().unwrap_or_else(|| panic!("no table: {out:?}"));
    last["counts"].as_array().unwrap().clone()
}

/// `--count --count-by container`: one row per container (its id and pod, no cgroup), and one
/// (a null id) for every connect made outside containers.
#[test]
fn identity_count_by_container_counts_each_container() {
    let v4 = listener("127.0.0.1:0");
    let (c, out) = counted(
        "count-container",
        v4,
        |root| count_tables("container", root),
        |_| {},
    );
    let rows = last_table(&out, 6);
    let got: BTreeMap<Option<String>, (u64, Value)> = rows
        .iter()
        .map(|r| {
            assert!(
                r.get("cgroup_id").is_none() && r.get("cgroup").is_none(),
                "{r}"
            );
            let id = r["container_id"].as_str().map(str::to_string);
            (id, (r["connects"].as_u64().unwrap(), r["pod_uid"].clone()))
        })
        .collect();
    assert_eq!(
        got.len(),
        rows.len(),
        "one row per container: {}",
        out.stdout
    );
    let expected = BTreeMap::from([
        (Some(c.a.1.clone()), (2, Value::Null)),
        (Some(c.b.1.clone()), (3, Value::from(c.uid.clone()))),
        (None, (1, Value::Null)),
    ]);
    assert_eq!(got, expected, "{}", out.stdout);
}

/// `--count --count-by cgroup`: one row per cgroup, with its path and id, and the container
/// and pod its path names.
#[test]
fn identity_count_by_cgroup_counts_each_cgroup() {
    let v4 = listener("127.0.0.1:0");
    let (c, out) = counted(
        "count-cgroup",
        v4,
        |root| count_tables("cgroup", root),
        |_| {},
    );
    let rows = last_table(&out, 6);
    let got: BTreeMap<String, (u64, u64, Value, Value)> = rows
        .iter()
        .map(|r| {
            (
                r["cgroup"].as_str().unwrap_or_else(|| panic!("{r}")).into(),
                (
                    r["cgroup_id"].as_u64().unwrap(),
                    r["connects"].as_u64().unwrap(),
                    r["container_id"].clone(),
                    r["pod_uid"].clone(),
                ),
            )
        })
        .collect();
    assert_eq!(got.len(), rows.len(), "one row per cgroup: {}", out.stdout);
    let expected = BTreeMap::from([
        (
            c.a.0.path.clone(),
            (c.a.0.id, 2, Value::from(c.a.1.clone()), Value::Null),
        ),
        (
            c.b.0.path.clone(),
            (
                c.b.0.id,
                3,
                Value::from(c.b.1.clone()),
                Value::from(c.uid.clone()),
            ),
        ),
        (
            c.plain.path.clone(),
            (c.plain.id, 1, Value::Null, Value::Null),
        ),
    ]);
    assert_eq!(got, expected, "{}", out.stdout);
}

/// A cgroup whose name ends in ` (deleted)` (the text the kernel appends to the path of a
/// removed directory) is a live cgroup like any other: its events and its count row carry its
/// real path. A cgroup really removed before probe-user names it is still reported by its id
/// alone (`cgroup` null), as its path is gone.
#[test]
fn identity_of_a_cgroup_named_deleted_is_its_real_path() {
    let v4 = listener("127.0.0.1:0");
    let mut cgroups = tree("named-deleted");
    let id = container_id();
    let named = cgroups.mkdir(&format!("system.slice/docker-{id}.scope (deleted)"));
    let plain = cgroups.mkdir("x (deleted)");
    assert!(plain.path.ends_with("/x (deleted)"), "{plain:?}");
    let gone = cgroups.mkdir("gone");

    // Events: named when they are drained, while every cgroup is there.
    let tracer = json_tracer(&["--cgroup", cgroups.root().dir()]);
    let made = [connect_in(&named, v4), connect_in(&plain, v4)];
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out.stdout);
    assert_eq!(seen_sorted(&lines), made_sorted(&made), "{}", out.stdout);
    // `docker-<id>.scope (deleted)` is no container's scope name.
    assert_workload(
        line_reporting(&lines, &made[0].seen),
        &made[0],
        &named,
        None,
        None,
    );
    assert_workload(
        line_reporting(&lines, &made[1].seen),
        &made[1],
        &plain,
        None,
        None,
    );

    // Counts: named at the end (one table, at exit), after `gone` was removed.
    let tracer = ProbeUser::start_until(
        probe_user_command().args([
            "--count",
            "--count-by",
            "cgroup",
            "--format",
            "json",
            "--interval",
            "24h",
            "--cgroup",
            cgroups.root().dir(),
        ]),
        "Counting TCP connects",
    );
    for (dir, n) in [(&plain, 2), (&gone, 3)] {
        for _ in 0..n {
            connect_in(dir, v4);
        }
    }
    cgroups.remove(&gone);
    assert!(!gone.dir.exists(), "{gone:?}");
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let rows = last_table(&out, 5);
    let got: BTreeMap<u64, (Value, u64)> = rows
        .iter()
        .map(|r| {
            let id = r["cgroup_id"].as_u64().unwrap_or_else(|| panic!("{r}"));
            (id, (r["cgroup"].clone(), r["connects"].as_u64().unwrap()))
        })
        .collect();
    let expected = BTreeMap::from([
        (plain.id, (Value::from(plain.path.clone()), 2)),
        (gone.id, (Value::Null, 3)),
    ]);
    assert_eq!(got, expected, "{}", out.stdout);
}

/// `--metrics --metrics-label container`: each connect series carries the caller's container
/// id (empty outside containers), counted per container.
#[test]
fn identity_metrics_label_connects_by_container() {
    let v4 = listener("127.0.0.1:0");
    let port = v4.port().to_string();
    let mut body = String::new();
    let (c, out) = counted(
        "metrics",
        v4,
        |root| {
            ProbeUser::start_until(
                probe_user_command().args([
                    "--metrics",
                    "127.0.0.1:0",
                    "--metrics-label",
                    "container",
                    "--filter-port",
                    &port,
                    "--cgroup",
                    root.dir(),
                ]),
                "Counting TCP connects",
            )
        },
        |tracer| body = scrape(serving_addr(tracer)),
    );
    assert_eq!(out.stdout, "", "nothing is printed per connect");
    let got: BTreeMap<String, u64> = metric_samples(&body, "tcpconn_connects_total")
        .into_iter()
        .map(|(mut labels, value)| {
            assert_eq!(labels.remove("family").as_deref(), Some("ipv4"), "{body}");
            assert_eq!(labels.remove("dport"), Some(port.clone()), "{body}");
            let container = labels.remove("container_id").expect("a container_id label");
            assert!(labels.is_empty(), "{labels:?} in {body}");
            (container, value as u64)
        })
        .collect();
    let expected = BTreeMap::from([(c.a.1.clone(), 2), (c.b.1.clone(), 3), (String::new(), 1)]);
    assert_eq!(got, expected, "{body}");
    assert!(
        body.contains("\ntcpconn_events_dropped_total 0\n"),
        "{body}"
    );
    // Each container's pod, to join on.
    let info = format!(
        r#"tcpconn_container_info{{container_id="{}",pod_uid="{}"}} 1"#,
        c.b.1, c.uid
    );
    assert!(body.lines().any(|l| l == info), "no {info:?} in {body}");
}

/// Bad `--container`, `--netns` and `--metrics-label` uses get one line and exit 2, before
/// anything is loaded.
#[test]
fn identity_bad_arguments_get_one_line_errors() {
    for (args, expected) in [
        (
            &["--container", "xyz"][..],
            "probe-user: error: container id must be 12 to 64 hex digits, got \"xyz\"",
        ),
        (
            &["--container", "0123456789a"][..],
            "probe-user: error: container id must be 12 to 64 hex digits, got \"0123456789a\"",
        ),
        (
            &["--netns", "0"][..],
            "probe-user: error: invalid value '0' for '--netns <INODE>': 0 is not in 1..=4294967295",
        ),
        (
            &["--metrics-label", "cgroup"][..],
            "probe-user: error: the following required arguments were not provided: <--metrics <ADDR>|--otlp-endpoint [<URL>]>",
        ),
        (
            &["--metrics", "0", "--count-by", "container"][..],
            "probe-user: error: --metrics counts by destination or port: label its series by cgroup or container with --metrics-label",
        ),
    ] {
        assert_one_line_error(args, 2, expected);
    }
}
