//! Every in-kernel filter admits exactly the right connects, alone and combined (run by
//! `cargo xtask test`, in the VM with each backend and natively: see the `probe_tests` crate
//! docs).

use std::{
    net::SocketAddr,
    sync::{Arc, Barrier},
};

use probe_tests::{ProbeUser, SeenConnect, StapLine, connect, connect_from, listener, test_cgroup};

/// The connects a tracer printed, in order.
fn printed(stdout: &str) -> Vec<SeenConnect> {
    stdout
        .lines()
        .map(|l| StapLine::parse(l).connect())
        .collect()
}

#[test]
fn uid_filter_traces_only_the_listed_users() {
    let v4 = listener("127.0.0.1:0");
    let tracer = ProbeUser::start(&["--uid", "65534"]);
    connect(v4, None).unwrap(); // as root
    let nobody = connect_from(&["as-user", "--caps", "", "--", "connect-once"], &[], v4);
    let out = tracer.stop();
    assert_eq!(printed(&out.stdout), vec![nobody]);
}

#[test]
fn comm_filter_traces_only_the_named_tasks() {
    let v4 = listener("127.0.0.1:0");
    let tracer = ProbeUser::start(&["--comm", "probe-wanted"]);
    let connect_as = |name: &str| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || connect(v4, None).unwrap())
            .unwrap()
            .join()
            .unwrap()
    };
    let wanted = connect_as("probe-wanted");
    connect_as("probe-other");
    connect_as("probe-wanted-2");
    let out = tracer.stop();
    assert_eq!(printed(&out.stdout), vec![wanted]);
}

#[test]
fn cgroup_filter_traces_only_tasks_in_the_cgroup() {
    let v6 = listener("[::1]:0");
    let cgroup = test_cgroup();
    let tracer = ProbeUser::start(&["--cgroup", &cgroup]);
    connect(v6, None).unwrap(); // outside
    let inside = connect_from(&[], &["--cgroup", &cgroup], v6);
    let out = tracer.stop();
    let _ = std::fs::remove_dir(&cgroup);
    assert_eq!(printed(&out.stdout), vec![inside]);
}

#[test]
fn dst_filter_traces_only_destinations_in_the_networks() {
    // Listening on every IPv4 address: 127.0.0.1 and 127.0.0.2 are both loopback.
    let any4 = listener("0.0.0.0:0");
    let v6 = listener("[::1]:0");
    let at = |host: &str, port: u16| -> SocketAddr { format!("{host}:{port}").parse().unwrap() };
    let targets = [
        at("127.0.0.1", any4.port()),
        at("127.0.0.2", any4.port()),
        at("[::1]", v6.port()),
        at("[::ffff:127.0.0.2]", any4.port()),
    ];
    for (networks, wanted) in [
        ("127.0.0.2,::1/128", [false, true, true, true]),
        ("127.0.0.0/8", [true, true, false, true]),
        ("fd00::/8", [false, false, false, false]),
    ] {
        let tracer = ProbeUser::start(&["--dst", networks]);
        let seen: Vec<SeenConnect> = targets
            .iter()
            .map(|&dst| connect(dst, None).unwrap())
            .collect();
        let out = tracer.stop();
        let expected: Vec<SeenConnect> = seen
            .into_iter()
            .zip(wanted)
            .filter_map(|(c, w)| w.then_some(c))
            .collect();
        assert_eq!(printed(&out.stdout), expected, "--dst {networks}");
    }
}

#[test]
fn filters_combine_with_and() {
    let any4 = listener("0.0.0.0:0");
    let to = |host: &str| -> SocketAddr { format!("{host}:{}", any4.port()).parse().unwrap() };
    let (one, two) = (to("127.0.0.1"), to("127.0.0.2"));
    let tracer = ProbeUser::start(&[
        "--comm",
        "probe-wanted",
        "--dst",
        "127.0.0.2",
        "--filter-port",
        &any4.port().to_string(),
        "--uid",
        "0",
    ]);
    // Both threads connect to both addresses at once: only the wanted thread's connect to
    // 127.0.0.2 passes every filter.
    let barrier = Arc::new(Barrier::new(2));
    let spawn = |name: &str| {
        let barrier = barrier.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                barrier.wait();
                [connect(one, None).unwrap(), connect(two, None).unwrap()]
            })
            .unwrap()
    };
    let (wanted, other) = (spawn("probe-wanted"), spawn("probe-other"));
    let wanted = wanted.join().unwrap();
    other.join().unwrap();
    let out = tracer.stop();
    assert_eq!(printed(&out.stdout), vec![wanted[1]]);
}

#[test]
fn bad_filter_values_get_one_line_errors() {
    // Every filter value is checked before anything is loaded: a usage error (exit 2).
    let too_many_pids = (1..=1025)
        .map(|p: u32| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    for (args, code, expected) in [
        (
            &["--dst", "bogus"][..],
            2,
            "probe-user: error: invalid value 'bogus' for '--dst <CIDR>': not an address or network in CIDR notation: \"bogus\"",
        ),
        (
            &["--comm", "a-name-longer-than-15"][..],
            2,
            "probe-user: error: a task name (--comm) is 1 to 15 bytes, as the kernel truncates them: \"a-name-longer-than-15\"",
        ),
        (
            &["--cgroup", "/proc"][..],
            2,
            "probe-user: error: /proc is not a cgroup v2 directory (e.g. /sys/fs/cgroup/system.slice/nginx.service)",
        ),
        (
            &["--pid", &too_many_pids][..],
            2,
            "probe-user: error: at most 1024 pids can be filtered",
        ),
    ] {
        probe_tests::assert_one_line_error(args, code, expected);
    }
}
