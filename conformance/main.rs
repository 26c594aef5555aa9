//! tinyrt's conformance suite: drives the `tinyrt` binary against OCI bundles built on a
//! busybox rootfs and checks the result from inside the container and from the host.
//!
//! Run with `cargo test --test conformance` (as root). The suite is the subreaper of every
//! container init (they are reparented to it when `tinyrt create` exits); each test reaps the
//! inits it knows, and everything left is reaped once all tests ran.

mod bad_input;
mod concurrency;
mod console;
mod engine;
mod faults;
mod filesystem;
mod harness;
mod hooks;
mod hostile;
mod isolation;
mod lifecycle;
mod process;
mod runtime;
mod support {
    pub mod fault_seed;
    pub mod procs;
}

use libtest_mimic::{Arguments, Trial};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Every test, named after the requirement it checks. The bool marks a known tinyrt bug
/// (run with --ignored to see it).
fn tests() -> Vec<(&'static str, fn(), bool)> {
    vec![
        // lifecycle
        ("lifecycle_create_start_state_delete", lifecycle::create_start_state_delete, false),
        ("lifecycle_start_of_running_fails", lifecycle::start_running_fails, false),
        ("lifecycle_delete_running_needs_force", lifecycle::delete_running_needs_force, false),
        ("lifecycle_delete_created_container", lifecycle::delete_created_container, false),
        ("lifecycle_create_duplicate_id_fails", lifecycle::create_duplicate_id_fails, false),
        ("lifecycle_unknown_id_errors", lifecycle::unknown_id_errors, false),
        ("lifecycle_invalid_ids_rejected", lifecycle::invalid_ids_rejected, false),
        ("lifecycle_run_returns_exit_code", lifecycle::run_returns_exit_code, false),
        (
            "lifecycle_run_killed_is_128_plus_signal",
            lifecycle::run_killed_is_128_plus_signal,
            false,
        ),
        ("lifecycle_run_detach", lifecycle::run_detach, false),
        ("lifecycle_kill_signal_forms", lifecycle::kill_signal_forms, false),
        ("lifecycle_kill_all", lifecycle::kill_all, false),
        ("lifecycle_list_formats", lifecycle::list_formats, false),
        ("lifecycle_pid_file_content", lifecycle::pid_file_content, false),
        ("lifecycle_log_json_on_failure", lifecycle::log_json_on_failure, false),
        // isolation
        ("isolation_ns_pid", isolation::ns_pid, false),
        ("isolation_ns_uts", isolation::ns_uts, false),
        ("isolation_ns_ipc", isolation::ns_ipc, false),
        ("isolation_ns_net", isolation::ns_net, false),
        ("isolation_ns_mount", isolation::ns_mount, false),
        ("isolation_ns_cgroup", isolation::ns_cgroup, false),
        ("isolation_ns_user", isolation::ns_user, false),
        ("isolation_ns_time", isolation::ns_time, false),
        ("isolation_ns_join_by_path", isolation::ns_join_by_path, false),
        (
            "isolation_cgroup_mount_without_namespace",
            isolation::cgroup_mount_without_namespace,
            false,
        ),
        // filesystem
        ("fs_mount_tmpfs_options", filesystem::mount_tmpfs_options, false),
        ("fs_mount_bind_rw", filesystem::mount_bind_rw, false),
        ("fs_mount_bind_ro", filesystem::mount_bind_ro, false),
        ("fs_mount_propagation_options", filesystem::mount_propagation_options, false),
        ("fs_root_readonly", filesystem::root_readonly, false),
        ("fs_no_pivot", filesystem::no_pivot, false),
        ("fs_default_devices", filesystem::default_devices, false),
        ("fs_dev_fd_symlinks", filesystem::dev_fd_symlinks, false),
        ("fs_linux_devices_entry", filesystem::linux_devices_entry, false),
        ("fs_masked_paths", filesystem::masked_paths, false),
        ("fs_readonly_paths", filesystem::readonly_paths, false),
        ("fs_sysctl", filesystem::sysctl, false),
        ("fs_hostname_domainname", filesystem::hostname_domainname, false),
        // many containers, and commands racing on one
        (
            "concurrency_fifty_containers_list_and_state",
            concurrency::fifty_containers_list_and_state,
            false,
        ),
        ("concurrency_conflicting_operations", concurrency::conflicting_operations, false),
        // hostile bundles and the runc CVE classes
        ("hostile_cwd_through_proc_self_fd", hostile::cwd_through_proc_self_fd, false),
        ("hostile_symlinked_mount_destinations", hostile::symlinked_mount_destinations, false),
        (
            "hostile_setuid_under_no_new_privileges",
            hostile::setuid_under_no_new_privileges,
            false,
        ),
        ("hostile_no_inherited_capabilities", hostile::no_inherited_capabilities, false),
        (
            "hostile_overwrite_runtime_through_proc_exe",
            hostile::overwrite_runtime_through_proc_exe,
            false,
        ),
        ("hostile_dev_symlink_out_of_rootfs", hostile::dev_symlink_out_of_rootfs, false),
        (
            "hostile_masked_paths_symlinks_and_devices",
            hostile::masked_paths_symlinks_and_devices,
            false,
        ),
        (
            "hostile_console_symlink_out_of_rootfs",
            hostile::console_symlink_out_of_rootfs,
            false,
        ),
        ("hostile_device_node_denied_by_cgroup", hostile::device_node_denied_by_cgroup, false),
        // crash consistency: tinyrt SIGKILLed mid-verb, then delete --force leaves nothing
        ("faults_kill_during_create", faults::kill_during_create, false),
        ("faults_kill_during_run_detach", faults::kill_during_run_detach, false),
        ("faults_kill_during_start", faults::kill_during_start, false),
        ("faults_kill_during_exec", faults::kill_during_exec, false),
        ("faults_kill_during_kill", faults::kill_during_kill, false),
        ("faults_kill_during_delete", faults::kill_during_delete, false),
        ("faults_init_killed_during_create", faults::init_killed_during_create, false),
        ("faults_hook_killed_during_create", faults::hook_killed_during_create, false),
        ("faults_killed_while_hook_runs", faults::killed_while_hook_runs, false),
        // runtime verbs and resources (exec, ps, pause, update, events, seccomp, features)
        ("runtime_exec_joins_the_container", runtime::exec_joins_the_container, false),
        ("runtime_exec_process_json_and_detach", runtime::exec_process_json_and_detach, false),
        ("runtime_exec_bad_input", runtime::exec_bad_input, false),
        ("runtime_pause_resume", runtime::pause_resume, false),
        ("runtime_resources_and_update", runtime::resources_and_update, false),
        ("runtime_resources_bad_value", runtime::resources_bad_value, false),
        ("runtime_devices_cgroup_denies", runtime::devices_cgroup_denies, false),
        ("runtime_seccomp_enforced", runtime::seccomp_enforced, false),
        ("runtime_seccomp_bad_input", runtime::seccomp_bad_input, false),
        ("runtime_events_stats", runtime::events_stats, false),
        ("runtime_features_document", runtime::features_document, false),
        // process
        ("process_args", process::process_args, false),
        ("process_env", process::process_env, false),
        ("process_cwd", process::process_cwd, false),
        ("process_cwd_created", process::process_cwd_created, false),
        ("process_user", process::process_user, false),
        ("process_umask", process::process_umask, false),
        ("process_rlimits", process::process_rlimits, false),
        ("process_capabilities", process::process_capabilities, false),
        ("process_no_new_privileges", process::no_new_privileges, false),
        ("process_oom_score_adj", process::oom_score_adj, false),
        ("process_no_fd_leak", process::no_fd_leak, false),
        ("process_preserve_fds", process::preserve_fds, false),
        // hooks
        ("hooks_all_kinds_get_state", hooks::hooks_all_kinds, false),
        ("hooks_args_and_env", hooks::hook_args_and_env, false),
        ("hooks_failure_fails_create", hooks::hook_failure_fails_create, false),
        ("hooks_timeout", hooks::hook_timeout, false),
        // console
        ("console_socket", console::console_socket, false),
        // bad input
        ("bad_malformed_json", bad_input::malformed_json, false),
        ("bad_missing_rootfs", bad_input::missing_rootfs, false),
        ("bad_unknown_namespace_type", bad_input::unknown_namespace_type, false),
        ("bad_mount_symlink_escape", bad_input::mount_symlink_escape, false),
        ("bad_missing_binary", bad_input::missing_binary, false),
        ("bad_empty_args", bad_input::empty_args, false),
        ("bad_relative_hook_path", bad_input::relative_hook_path, false),
        ("bad_oci_version_2", bad_input::oci_version_2, false),
        ("bad_runtime_binary_refused", bad_input::runtime_binary_refused, false),
        ("bad_unknown_signal", bad_input::unknown_signal, false),
        ("bad_unknown_capability", bad_input::unknown_capability, false),
        ("bad_absurd_resource_values", bad_input::absurd_resource_values, false),
        ("bad_overlapping_id_maps", bad_input::overlapping_id_maps, false),
        // engine command lines
        ("engine_docker_flow", engine::engine_docker_flow, false),
        ("engine_run_rm_fg", engine::engine_run_rm_fg, false),
        ("engine_ctr_kill_all", engine::engine_ctr_kill_all, false),
        ("engine_tty_flow", engine::engine_tty_flow, false),
        ("engine_failure_logged", engine::engine_failure_logged, false),
        ("engine_podman_flow", engine::engine_podman_flow, false),
    ]
}

/// Our children still alive: container inits a failed test left (they were reparented to us).
fn live_children() -> Vec<i32> {
    support::procs::our_children()
        .into_iter()
        .filter(|&(_, state)| state != 'Z')
        .map(|(p, _)| p)
        .collect()
}

/// Reap every child left, until there are none: after a short grace period, the ones still
/// running (inits of containers a failed test left behind: ours) are killed.
fn reap_all() {
    std::thread::sleep(std::time::Duration::from_millis(100));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut killed = false;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                if std::time::Instant::now() > deadline && !killed {
                    for p in live_children() {
                        eprintln!("conformance: killing leftover child {p}");
                        let _ = nix::sys::signal::kill(Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
                    }
                    killed = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

fn main() {
    if let Some(report) = std::env::var_os("TINYRT_FAULT_REAPER") {
        faults::reaper_main(&report.to_string_lossy());
    }
    // Container inits are reparented to us when `tinyrt create` exits (PID 1 here does not reap).
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let args = Arguments::from_args();
    let trials = tests()
        .into_iter()
        .map(|(name, f, known_bug)| {
            Trial::test(name, move || {
                f();
                Ok(())
            })
            .with_ignored_flag(known_bug)
        })
        .collect();
    let root = nix::unistd::geteuid().is_root();
    let conclusion = if root {
        libtest_mimic::run(&args, trials)
    } else {
        eprintln!("conformance: needs root; every test is skipped");
        let trials: Vec<Trial> = trials.into_iter().map(|t| t.with_ignored_flag(true)).collect();
        libtest_mimic::run(&args, trials)
    };
    reap_all();
    conclusion.exit();
}
