//! How attaching fails or falls back, and what it says: the eBPF object built with BPF atomics
//! rejected by a kernel without them (forced with probe-user's hidden test switch
//! `PROBE_USER_TEST_ATOMICS`), and fentry refused on a kernel that has BPF trampolines. Run by
//! `cargo xtask test` in the VM with each backend and natively.

use std::{
    io::Read as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use probe_tests::{
    ProbeUser, connect, json_lines, kernel_has_atomics, kernel_has_kprobes, listener, probe_user,
    probe_user_command,
};

/// probe-user's hidden switch for tests (see its `loader.rs`): `force` loads the object with
/// atomics whatever the kernel's version, `strict` the same without the fallback.
const TEST_ATOMICS: &str = "PROBE_USER_TEST_ATOMICS";

/// The line probe-user prints when it loads the object without atomics instead.
const WITHOUT_ATOMICS: &str =
    "probe-user: loading the eBPF object without BPF atomics: the verifier rejected ";

#[test]
fn a_kernel_rejecting_bpf_atomics_runs_the_object_without_them_and_says_so() {
    let v4 = listener("127.0.0.1:0");
    let port = v4.port().to_string();
    // With outcomes every backend holds connects in SYN_SENT, which with atomics is the table
    // of slots claimed by compare-and-exchange.
    let tracer = ProbeUser::start_with(probe_user_command().env(TEST_ATOMICS, "force").args([
        "--outcome",
        "--format",
        "json",
        "--filter-port",
        &port,
    ]));
    let notes: Vec<&str> = tracer
        .preamble()
        .lines()
        .filter(|l| l.contains("without BPF atomics"))
        .collect();
    if kernel_has_atomics() {
        assert_eq!(notes, Vec::<&str>::new(), "{}", tracer.preamble());
    } else {
        assert_eq!(notes.len(), 1, "{}", tracer.preamble());
        assert!(notes[0].starts_with(WITHOUT_ATOMICS), "{notes:?}");
        assert!(
            notes[0].ends_with(" (Invalid argument (os error 22)) (RUST_LOG=debug shows why)"),
            "{notes:?}"
        );
    }
    let seen = connect(v4, None).unwrap();
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    assert_eq!(lines[0]["sport"], seen.src.port(), "{}", lines[0]);
    assert_eq!(lines[0]["dport"], seen.dst.port(), "{}", lines[0]);
    assert_eq!(lines[0]["outcome"], "established", "{}", lines[0]);
}

#[test]
fn without_the_atomics_fallback_the_error_is_the_verifier_rejection_and_its_log() {
    if kernel_has_atomics() {
        // Nothing to reject: the object with atomics is the one loaded anyway.
        let tracer = ProbeUser::start_with(
            probe_user_command()
                .env(TEST_ATOMICS, "strict")
                .arg("--outcome"),
        );
        assert!(tracer.stop().status.success());
        return;
    }
    let out = probe_user_command()
        .env(TEST_ATOMICS, "strict")
        .arg("--outcome")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("probe-user: error: "), "{stderr}");
    // Each backend tried (one, or with auto each of them) names the program and shows the end
    // of its log, where the verifier says it does not know the atomic instruction.
    let rejections: Vec<&str> = stderr.split("the verifier rejected ").skip(1).collect();
    assert!(!rejections.is_empty(), "{stderr}");
    for rejection in rejections {
        let mut lines = rejection.lines();
        let head = lines.next().unwrap();
        assert!(
            head.contains(" (Invalid argument (os error 22)): the last 20 of its ")
                || head.ends_with(" (Invalid argument (os error 22)): its log:"),
            "{head}"
        );
        let log: Vec<&str> = lines.take_while(|l| l.starts_with("  ")).collect();
        assert!(!log.is_empty() && log.len() <= 20, "{rejection}");
        assert!(
            log.iter().any(|l| l.contains("uses reserved fields")),
            "{rejection}"
        );
    }
    // With debug logging, the whole log.
    let out = probe_user_command()
        .env(TEST_ATOMICS, "strict")
        .env("RUST_LOG", "debug")
        .arg("--outcome")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    let error = &stderr[stderr.find("probe-user: error: ").expect("no error")..];
    let head = error
        .split("the verifier rejected ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .unwrap();
    let total: usize = head
        .split("its log (")
        .nth(1)
        .and_then(|n| n.strip_suffix(" lines):"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{head}"));
    let log: Vec<&str> = error
        .lines()
        .skip_while(|l| !l.contains("its log ("))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert_eq!(log.len(), total, "{error}");
}

#[test]
fn fentry_that_cannot_attach_says_the_real_cause() {
    if kernel_has_kprobes() {
        // The test kernels with kprobes (the VMs') have fentry too: it attaches (the banner;
        // a failure to attach panics with what probe-user said).
        let tracer = ProbeUser::start_with(Command::new(probe_user()).args(["--attach", "fentry"]));
        assert!(tracer.stop().status.success());
        return;
    }
    let mut child = Command::new(probe_user())
        .args(["--attach", "fentry"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Attached (then it runs on) or failed (an exit) within a few seconds.
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if child.try_wait().unwrap().is_none() {
        // A host without kprobes whose kernel attaches fentry: nothing to classify.
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        assert!(child.wait().unwrap().success());
        return;
    }
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    // One line naming the program and its real cause. This project's machines (6.18, no
    // kprobes) have BPF trampolines but refuse tracing programs to root (EPERM, before the
    // verifier: an empty log): that is permission or a security policy, never "this kernel
    // cannot attach fentry/fexit programs", which only the kernel's ENOTSUPP means.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let line = lines[0];
    assert!(
        line.starts_with("probe-user: error: ") && line.contains("fexit_tcp_v4_connect"),
        "{stderr}"
    );
    if line.ends_with("Operation not permitted (os error 1)") {
        assert!(
            line.contains("a security policy forbids it") || line.contains("permission denied"),
            "{stderr}"
        );
        assert!(
            !line.contains("cannot attach fentry/fexit programs"),
            "{stderr}"
        );
    }
}
