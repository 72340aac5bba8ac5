//! Kernel accounting of the tracer's own programs, read with `BPF_OBJ_GET_INFO_BY_FD`: run
//! counts and run times (while statistics are enabled) and recursion misses (runs the kernel
//! skipped because the program was already running on that CPU; fentry/fexit and raw
//! tracepoint programs since Linux 5.12, kprobes since 6.7). aya 0.16's `ProgramInfo` exposes
//! neither the misses nor a way to read a program it no longer holds, which the tracer needs
//! after detaching (see `Tracer::detach`).

use std::os::fd::{AsRawFd as _, BorrowedFd};

use aya_obj::generated::{bpf_cmd, bpf_prog_info};

/// The `info` member of `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The kernel's `struct bpf_prog_info` of the program behind `fd` (fields this kernel does not
/// know stay zero).
pub(crate) fn prog_info(fd: BorrowedFd<'_>) -> std::io::Result<bpf_prog_info> {
    // SAFETY: bpf_prog_info is plain integers and pointers-as-integers; all zero is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: (&raw mut info) as u64,
    };
    // SAFETY: attr points to a valid InfoByFd and info to a buffer of info_len bytes, both
    // alive for the call; the kernel writes at most info_len bytes.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &raw mut attr,
            std::mem::size_of::<InfoByFd>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info)
}
