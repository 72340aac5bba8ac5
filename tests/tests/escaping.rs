//! Untrusted names in text output: a cgroup whose name holds ESC, CR, a tab and DEL, and a task
//! whose name (comm) holds control characters and a byte that is not UTF-8, connect; count
//! tables, stap lines, JSON lines and the metrics scrape then hold the escaped names and no raw
//! control byte (run by `cargo xtask test`, in the VM with each backend and natively; every name
//! here starts with `escaping_`).
//!
//! The escaped form is written out here by hand, as `probe_user::escape` documents it:
//! `\u{1b}`, `\r`, `\t`, `\u{7f}`.

use std::net::SocketAddr;

use probe_tests::{
    Cgroup, CgroupTree, ProbeUser, SeenConnect, StapLine, connect, connect_once_from, json_lines,
    listener, probe_user_command, scrape, serving_addr,
};

/// The name of the evil cgroup (a cgroup name cannot hold a newline: the kernel refuses it).
const EVIL_CGROUP: &str = "evil\u{1b}[31m\r\tx\u{7f}";

/// [`EVIL_CGROUP`] as text output shows it.
const EVIL_CGROUP_ESCAPED: &str = r"evil\u{1b}[31m\r\tx\u{7f}";

/// A task name with control characters and a byte that is not UTF-8 (15 bytes at most).
const EVIL_COMM: &[u8] = b"c\x1b[2J\r\t\x7f\xff";

/// [`EVIL_COMM`] as probe-user reads it (the invalid byte decoded as U+FFFD).
const EVIL_COMM_LOSSY: &str = "c\u{1b}[2J\r\t\u{7f}\u{fffd}";

/// A cgroup tree for the test `name`, with the evil cgroup in it.
fn evil_tree(name: &str) -> (CgroupTree, Cgroup) {
    let mut tree = CgroupTree::new(&format!("probe-esc-{}-{name}", std::process::id()));
    let evil = tree.mkdir(EVIL_CGROUP);
    (tree, evil)
}

/// The evil cgroup's path as text output shows it.
fn escaped_path(tree: &CgroupTree) -> String {
    format!("{}/{EVIL_CGROUP_ESCAPED}", tree.root().path)
}

/// A connect to `dst` made by `connect-once` in `cgroup`.
fn connect_in(cgroup: &Cgroup, dst: SocketAddr) -> SeenConnect {
    connect_once_from(&[], &["--cgroup", cgroup.dir()], dst).seen
}

/// A connect to `dst` made by a thread named [`EVIL_COMM`].
fn connect_as_evil_comm(dst: SocketAddr) -> SeenConnect {
    std::thread::spawn(move || {
        let mut name = EVIL_COMM.to_vec();
        name.push(0);
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
        assert_eq!(rc, 0, "prctl: {}", std::io::Error::last_os_error());
        connect(dst, None).unwrap()
    })
    .join()
    .unwrap()
}

/// Panics if `text` holds a control character other than the newlines that end its lines.
fn assert_no_control_characters(text: &str) {
    let raw: Vec<char> = text
        .chars()
        .filter(|&c| c.is_control() && c != '\n')
        .collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in {text:?}");
}

/// `--count --count-by cgroup` (stap format, with outcomes): the evil cgroup's row shows its
/// path escaped, with its count.
#[test]
fn escaping_count_tables_escape_cgroup_names() {
    let v4 = listener("127.0.0.1:0");
    let (tree, evil) = evil_tree("count");
    let tracer = ProbeUser::start_until(
        probe_user_command().args([
            "--count",
            "--count-by",
            "cgroup",
            "--outcome",
            "--interval",
            "1h",
            "--cgroup",
            tree.root().dir(),
        ]),
        "Counting TCP connects",
    );
    connect_in(&evil, v4);
    connect_in(&evil, v4);
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    assert_no_control_characters(&out.stdout);
    assert_no_control_characters(&out.stderr);
    // `         2  established       0.123ms  tcp_v4_connect  /probe-esc-.../evil\u{1b}...`
    let suffix = format!("  tcp_v4_connect  {}", escaped_path(&tree));
    let row = out
        .stdout
        .lines()
        .find(|l| l.ends_with(&suffix))
        .unwrap_or_else(|| panic!("no row ending {suffix:?} in {}", out.stdout));
    let words: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(words[..2], ["2", "established"], "{row}");
}

/// `--metrics --metrics-label cgroup`: the series carry the cgroup id; the info metric's `cgroup`
/// label value is the escaped path (its backslashes escaped once more by the exposition
/// format, its `"` too), and the scrape holds no control byte.
#[test]
fn escaping_metrics_label_values_escape_cgroup_names() {
    let v4 = listener("127.0.0.1:0");
    let port = v4.port().to_string();
    let (tree, evil) = evil_tree("metrics");
    let tracer = ProbeUser::start_until(
        probe_user_command().args([
            "--metrics",
            "127.0.0.1:0",
            "--metrics-label",
            "cgroup",
            "--filter-port",
            &port,
            "--cgroup",
            tree.root().dir(),
        ]),
        "Counting TCP connects",
    );
    connect_in(&evil, v4);
    let body = scrape(serving_addr(&tracer));
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    assert_no_control_characters(&body);
    let label = escaped_path(&tree)
        .replace('\\', r"\\")
        .replace('"', r#"\""#);
    let id = evil.id;
    for expected in [
        format!(r#"tcpconn_connects_total{{family="ipv4",dport="{port}",cgroup_id="{id}"}} 1"#),
        format!(
            r#"tcpconn_cgroup_info{{cgroup_id="{id}",cgroup="{label}",container_id="",pod_uid=""}} 1"#
        ),
    ] {
        assert!(
            body.lines().any(|l| l == expected),
            "no line {expected:?} in {body}"
        );
    }
}

/// A task named with control characters: its stap line (with the outcome suffix) is the
/// ordinary one, nothing of the name in it; its JSON line carries the name in JSON's escaping,
/// which gives the name back, and holds no raw C0 control byte.
#[test]
fn escaping_task_names_in_stap_and_json_lines() {
    let v4 = listener("127.0.0.1:0");
    let port = v4.port().to_string();
    for format in ["stap", "json"] {
        let tracer = ProbeUser::start_with(probe_user_command().args([
            "--format",
            format,
            "--outcome",
            "--filter-port",
            &port,
        ]));
        let seen = connect_as_evil_comm(v4);
        let out = tracer.stop();
        assert!(out.status.success(), "{out:?}");
        if format == "stap" {
            assert_no_control_characters(&out.stdout);
            let line = out
                .stdout
                .lines()
                .next()
                .unwrap_or_else(|| panic!("{out:?}"));
            let (plain, suffix) = line
                .split_once(" outcome=")
                .unwrap_or_else(|| panic!("no outcome suffix: {line:?}"));
            assert_eq!(StapLine::parse(plain).connect(), seen, "{line}");
            assert!(suffix.starts_with("established latency="), "{line}");
        } else {
            // JSON escapes C0 controls (\u001b, \r, \t); DEL and U+FFFD are valid as they are.
            assert!(
                !out.stdout.chars().any(|c| c < ' ' && c != '\n'),
                "{:?}",
                out.stdout
            );
            let lines = json_lines(&out.stdout);
            assert_eq!(lines.len(), 1, "{}", out.stdout);
            assert_eq!(lines[0]["comm"], EVIL_COMM_LOSSY, "{}", out.stdout);
            assert_eq!(lines[0]["sport"], seen.src.port(), "{}", out.stdout);
        }
    }
}

/// `--cgroup` with a path holding control characters that is no cgroup: one error line, the
/// path escaped, exit 2, before anything is loaded.
#[test]
fn escaping_cgroup_paths_in_error_lines() {
    let (tree, _evil) = evil_tree("error");
    let missing = format!("{}/{EVIL_CGROUP}-gone", tree.root().dir());
    let out = probe_tests::run_probe_user(&["--cgroup", &missing]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_no_control_characters(&out.stderr);
    let expected = format!("{}/{EVIL_CGROUP_ESCAPED}-gone", tree.root().dir());
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains(&expected), "{expected:?} in {out:?}");
}
