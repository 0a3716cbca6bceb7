//! Runs a program with `io_uring` denied: `io_uring_setup` fails with EPERM, as under a
//! container's default seccomp profile. Tests use it to check that hexad-node says so.
//!
//! Usage: `deny-io-uring PROGRAM [ARGS...]`

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: deny-io-uring PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    let arch =
        TargetArch::try_from(std::env::consts::ARCH).expect("a seccomp-supported architecture");
    // An empty rule list matches the syscall unconditionally.
    let rules = BTreeMap::from([(libc::SYS_io_uring_setup, vec![])]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .expect("valid filter");
    let program_bpf: BpfProgram = filter.try_into().expect("filter compiles");
    seccompiler::apply_filter(&program_bpf).expect("seccomp filter applies");
    let err = std::process::Command::new(&program).args(args).exec();
    eprintln!(
        "deny-io-uring: cannot run {}: {err}",
        program.to_string_lossy()
    );
    std::process::exit(127);
}
