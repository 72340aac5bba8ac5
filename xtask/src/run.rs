//! `cargo xtask run -- <args>`: probe-user inside the VM, traced while a client connects.

use anyhow::{Result, bail};

use crate::{
    artifacts::{self, Arch},
    vm,
};

#[derive(clap::Args)]
pub struct Options {
    /// The VM's architecture (aarch64: qemu-system-aarch64 and Debian's arm64 6.1 kernel).
    #[arg(long, value_enum, default_value_t)]
    arch: Arch,
    /// A kernel of the matrix (5.10, 6.1, 6.12) instead of the default one.
    #[arg(long)]
    kernel: Option<String>,
    /// Connects the client makes to each port, over IPv4 and over IPv6.
    #[arg(long, default_value_t = 3)]
    count: u32,
    /// Ports the client listens on and connects to (comma-separated).
    #[arg(long, default_value = "8080,9090", value_delimiter = ',')]
    ports: Vec<u16>,
    /// Arguments for probe-user.
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(options: Options) -> Result<()> {
    let probe_user = artifacts::probe_user(options.arch)?;
    let helpers = artifacts::test_helpers(options.arch)?;
    let ports: Vec<String> = options.ports.iter().map(u16::to_string).collect();
    let args: Vec<String> = options.args.iter().map(|a| shell_quote(a)).collect();
    let script = format!(
        "/bin/probe-user {args} 2> /tmp/err &\n\
         tracer=$!\n\
         # Attached once it says so (the banner, or where it serves metrics).\n\
         until grep -q 'Tracing\\|serving metrics' /tmp/err; do\n\
         kill -0 $tracer 2>/dev/null || {{ cat /tmp/err; exit 1; }}; sleep 0.1; done\n\
         cat /tmp/err; tail -f -n 0 /tmp/err & tailer=$!\n\
         /bin/connector --count {count} --ports {ports}\n\
         sleep 0.2; kill -INT $tracer; wait $tracer; rc=$?; sleep 0.1; kill $tailer; exit $rc",
        args = args.join(" "),
        count = options.count,
        ports = ports.join(","),
    );
    let guest = vm::Guest::new(script)
        .binary("probe-user", &probe_user)
        .binaries(&helpers);
    let kernel = match &options.kernel {
        Some(version) => Some(crate::kernels::image(version, options.arch)?),
        None => None,
    };
    let boot = vm::Boot {
        arch: options.arch,
        kernel,
        ..Default::default()
    };
    let code = boot.run(&guest, &artifacts::work_dir("run"), |line| {
        println!("{line}")
    })?;
    if code != 0 {
        bail!("probe-user exited with {code} in the VM");
    }
    Ok(())
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}
