//! runc's flags, as clap structs. Both `--flag value` and `--flag=value` parse; global
//! flags may stand before or after the verb.

use crate::container::{CreateOpts, RunOpts};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "tinyrt",
    about = "tinyrt: an OCI container runtime with runc's command line",
    disable_version_flag = true
)]
pub struct Cli {
    /// Root directory for container state
    #[arg(long, global = true, default_value = "/run/tinyrt")]
    pub root: PathBuf,
    /// Log file (default: stderr)
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json
    #[arg(long = "log-format", global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Debug logging
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd cgroup paths (slice:prefix:name)
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Rootless mode: true, false or auto (before the verb, as in runc)
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
    /// Path to criu (accepted for runc compatibility)
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
    /// Print the version
    #[arg(short = 'v', long)]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

pub fn version_text() -> String {
    format!(
        "tinyrt version {}\ncommit: {}\nspec: 1.2.0\n",
        env!("CARGO_PKG_VERSION"),
        option_env!("TINYRT_COMMIT").unwrap_or("unknown")
    )
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container
    Create(CreateArgs),
    /// Start a created container
    Start(IdArg),
    /// Create and start a container
    Run(RunArgs),
    /// Output the state of a container
    State(IdArg),
    /// Send a signal to the container's init
    Kill(KillArgs),
    /// Delete a container
    Delete(DeleteArgs),
    /// List containers
    List(ListArgs),
    /// Write a default config.json
    Spec(SpecArgs),
    /// Run a process in a running container
    Exec(ExecArgs),
    /// List the processes of a container
    Ps(PsArgs),
    /// Pause every process of a container
    Pause(IdArg),
    /// Resume a paused container
    Resume(IdArg),
    /// Update resource limits
    Update(UpdateArgs),
    /// Container events and statistics
    Events(EventsArgs),
    /// Describe what tinyrt implements
    Features,
    /// Checkpoint a container (not supported)
    Checkpoint(CheckpointArgs),
    /// Restore a container (not supported)
    Restore(CheckpointArgs),
    /// Images: import, bundle, ls, rm, gc, diff
    Image(ImageArgs),
    /// Built-in OCI hooks (`hook network up|down`: reads the container state on stdin)
    Hook(HookArgs),
}

#[derive(Args, Debug)]
pub struct HookArgs {
    /// Which hook: network
    #[arg(value_parser = ["network"])]
    pub kind: String,
    /// up (a createRuntime hook) or down (a poststop hook)
    #[arg(value_parser = ["up", "down"])]
    pub action: String,
}

#[derive(Args, Debug)]
pub struct IdArg {
    pub id: String,
}

#[derive(Args, Debug, Clone)]
pub struct CommonCreate {
    /// Path to the bundle directory
    #[arg(short = 'b', long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket to send the pty master to
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// File to write the init's pid to
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Use MS_MOVE and chroot instead of pivot_root
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Keep the caller's session keyring
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass N extra fds (3 .. 3+N-1) to the container
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub c: CommonCreate,
    pub id: String,
}

impl CommonCreate {
    fn opts(&self, id: &str, detached: bool) -> CreateOpts {
        CreateOpts {
            id: id.to_string(),
            bundle: self.bundle.clone(),
            console_socket: self.console_socket.clone(),
            pid_file: self.pid_file.clone(),
            preserve_fds: self.preserve_fds,
            no_pivot: self.no_pivot,
            no_new_keyring: self.no_new_keyring,
            detached,
            systemd_cgroup: false,
        }
    }
}

impl CreateArgs {
    pub fn opts(&self) -> CreateOpts {
        self.c.opts(&self.id, true)
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub c: CommonCreate,
    /// Detach from the container's process
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep the container after it exits
    #[arg(long)]
    pub keep: bool,
    /// Do not become a subreaper (accepted for runc compatibility)
    #[arg(long = "no-subreaper")]
    pub no_subreaper: bool,
    pub id: String,
}

impl RunArgs {
    pub fn opts(&self) -> RunOpts {
        RunOpts {
            create: self.c.opts(&self.id, self.detach),
            detach: self.detach,
            keep: self.keep,
        }
    }
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal every process of the container
    #[arg(short = 'a', long)]
    pub all: bool,
    pub id: String,
    /// Signal name or number (default SIGTERM)
    pub signal: Option<String>,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Kill a running container first; no error if it does not exist
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// table or json
    #[arg(short = 'f', long, default_value = "table")]
    pub format: String,
    /// Only ids
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct SpecArgs {
    #[arg(short = 'b', long)]
    pub bundle: Option<PathBuf>,
    /// A spec for a rootless container
    #[arg(long)]
    pub rootless: bool,
    /// Add tinyrt's network hooks and the resolv.conf/hosts/hostname mounts
    #[arg(long)]
    pub network: bool,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    #[arg(long)]
    pub cwd: Option<String>,
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    #[arg(short = 't', long)]
    pub tty: bool,
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<String>,
    #[arg(short = 'p', long)]
    pub process: Option<PathBuf>,
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    #[arg(long)]
    pub apparmor: Option<String>,
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    #[arg(short = 'c', long = "cap")]
    pub cap: Vec<String>,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    #[arg(long)]
    pub cgroup: Vec<String>,
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

impl ExecArgs {
    pub fn opts(&self) -> anyhow::Result<crate::container::ExecOpts> {
        let gids = self
            .additional_gids
            .iter()
            .flat_map(|g| g.split(','))
            .map(|g| {
                g.trim()
                    .parse::<u32>()
                    .map_err(|_| anyhow::anyhow!("--additional-gids: {g:?} is not a number"))
            })
            .collect::<anyhow::Result<Vec<u32>>>()?;
        Ok(crate::container::ExecOpts {
            id: self.id.clone(),
            process: self.process.clone(),
            args: self.command.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            user: self.user.clone(),
            additional_gids: gids,
            caps: self.cap.clone(),
            tty: self.tty,
            no_new_privs: self.no_new_privs,
            console_socket: self.console_socket.clone(),
            pid_file: self.pid_file.clone(),
            detach: self.detach,
            preserve_fds: self.preserve_fds,
            cgroup: self.cgroup.clone(),
            ignore_paused: self.ignore_paused,
            apparmor: self.apparmor.clone(),
            process_label: self.process_label.clone(),
        })
    }
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[arg(short = 'f', long, default_value = "table")]
    pub format: String,
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[arg(short = 'r', long)]
    pub resources: Option<String>,
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    #[arg(long = "cpu-quota")]
    pub cpu_quota: Option<i64>,
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<u64>,
    #[arg(long = "cpu-rt-runtime")]
    pub cpu_rt_runtime: Option<i64>,
    #[arg(long = "cpu-share")]
    pub cpu_share: Option<u64>,
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    #[arg(long = "kernel-memory")]
    pub kernel_memory: Option<String>,
    #[arg(long = "kernel-memory-tcp")]
    pub kernel_memory_tcp: Option<String>,
    #[arg(long)]
    pub memory: Option<String>,
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<String>,
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    #[arg(long = "l3-cache-schema")]
    pub l3_cache_schema: Option<String>,
    #[arg(long = "mem-bw-schema")]
    pub mem_bw_schema: Option<String>,
    pub id: String,
}

impl UpdateArgs {
    pub fn flags(&self) -> anyhow::Result<crate::container::UpdateFlags> {
        let size = |name: &str, v: &Option<String>| -> anyhow::Result<Option<i64>> {
            v.as_deref()
                .map(|s| crate::container::parse_size(s).map_err(|e| anyhow::anyhow!("--{name}: {e}")))
                .transpose()
        };
        if self.kernel_memory.is_some() || self.kernel_memory_tcp.is_some() {
            anyhow::bail!("--kernel-memory and --kernel-memory-tcp are not supported (kernel memory limits are gone from the kernel)");
        }
        if self.l3_cache_schema.is_some() || self.mem_bw_schema.is_some() {
            anyhow::bail!("--l3-cache-schema and --mem-bw-schema (Intel RDT) are not supported by tinyrt");
        }
        Ok(crate::container::UpdateFlags {
            blkio_weight: self.blkio_weight,
            cpu_period: self.cpu_period,
            cpu_quota: self.cpu_quota,
            cpu_rt_period: self.cpu_rt_period,
            cpu_rt_runtime: self.cpu_rt_runtime,
            cpu_share: self.cpu_share,
            cpuset_cpus: self.cpuset_cpus.clone(),
            cpuset_mems: self.cpuset_mems.clone(),
            memory: size("memory", &self.memory)?,
            memory_reservation: size("memory-reservation", &self.memory_reservation)?,
            memory_swap: size("memory-swap", &self.memory_swap)?,
            pids_limit: self.pids_limit,
        })
    }
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    #[arg(long, default_value = "5s")]
    pub interval: String,
    #[arg(long)]
    pub stats: bool,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct CheckpointArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ImageArgs {
    /// The image store (default: $TINYRT_IMAGE_ROOT, else /var/lib/tinyrt)
    #[arg(long, global = true)]
    pub store: Option<PathBuf>,
    #[command(subcommand)]
    pub verb: ImageVerb,
}

#[derive(Subcommand, Debug)]
pub enum ImageVerb {
    /// Import a docker-archive tarball or an OCI layout (docker-archive:PATH, oci:DIR[:REF], or a path)
    Import {
        /// Also name the image so
        #[arg(long)]
        name: Option<String>,
        /// In an OCI layout with several images: the ref.name to import
        #[arg(long = "ref")]
        reference: Option<String>,
        /// No progress line
        #[arg(short = 'q', long)]
        quiet: bool,
        source: String,
    },
    /// Write a bundle (config.json and an empty rootfs mount point) for an image
    Bundle { image: String, dir: PathBuf },
    /// List images (or layers, bundles, container upper dirs)
    Ls {
        #[arg(long, conflicts_with_all = ["bundles", "containers"])]
        layers: bool,
        #[arg(long, conflicts_with = "containers")]
        bundles: bool,
        #[arg(long)]
        containers: bool,
        /// table or json
        #[arg(short = 'f', long, default_value = "table")]
        format: String,
    },
    /// Remove images (by name or id), then collect unused layers
    Rm {
        /// The arguments are bundle dirs made by `image bundle`
        #[arg(long, conflicts_with = "upper")]
        bundle: bool,
        /// The arguments are kept container upper dirs (key or container id)
        #[arg(long)]
        upper: bool,
        /// Do not collect layers afterwards
        #[arg(long = "no-gc")]
        no_gc: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove layers no image, bundle or container uses
    Gc,
    /// Write a container's upper dir as a layer tar (whiteouts as .wh. entries); - for stdout
    Diff { container: String, output: PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Cli {
        Cli::try_parse_from(line.split_whitespace()).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    /// Every create/start/kill/delete/state/list form from shared/reference/engine-argv.txt.
    #[test]
    fn engine_forms_parse() {
        let b = "/run/containerd/io.containerd.runtime.v2.task/moby/abc";
        for l in [
            format!(
                "tinyrt --root /var/run/docker/runtime-runc/moby --log {b}/log.json --log-format json create --bundle {b} --pid-file {b}/init.pid abc"
            ),
            format!("tinyrt --root /run/containerd/runc/default --log {b}/log.json --log-format json start abc"),
            format!("tinyrt --root /r --log {b}/log.json --log-format json kill abc 15"),
            format!("tinyrt --root /r --log {b}/log.json --log-format json kill --all abc 9"),
            format!("tinyrt --root /r --log {b}/log.json --log-format json delete abc"),
            format!("tinyrt --root /r --log {b}/log.json --log-format json delete --force abc"),
            format!(
                "tinyrt --root /r --log {b}/log.json --log-format json create --bundle {b} --pid-file {b}/init.pid --console-socket /tmp/pty1/pty.sock abc"
            ),
            format!("tinyrt --log-format=json --log {b}/oci-log create --bundle {b} --pid-file {b}/pidfile abc"),
            "tinyrt start abc".into(),
            "tinyrt kill abc 10".into(),
            "tinyrt delete --force abc".into(),
            "tinyrt --root=/x list --format=json".into(),
            "tinyrt update --resources=/var/tmp/x abc".into(),
            format!(
                "tinyrt --log-format=json --log {b}/oci-log exec --pid-file {b}/p --process {b}/exec-process-1 --detach --tty --console-socket /tmp/c abc"
            ),
            "tinyrt --root /r ps --format json abc".into(),
        ] {
            parse(&l);
        }
        let c = parse("tinyrt --version");
        assert!(c.version);
        let c = parse("tinyrt kill --all abc 9");
        match c.command {
            Some(Command::Kill(k)) => assert!(k.all && k.id == "abc" && k.signal.as_deref() == Some("9")),
            _ => panic!(),
        }
    }
}
