//! The command line, shaped after runc's: global flags, one subcommand per verb. Each verb
//! is a short function over the `container` library; errors are printed here, on stderr
//! and in the --log file (as runc's JSON lines when --log-format json, for containerd).

mod args;
mod log;

pub use log::warn;

use anyhow::{Context, Result, bail};
use args::{Cli, Command};
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;

mod lib {
    pub use crate::container;
    pub use crate::spec;
    pub use crate::state::Store;
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    // Before the log file or anything else is opened: fds 3.. the container is promised.
    let preserve = match &cli.command {
        Some(Command::Create(a)) => a.c.preserve_fds,
        Some(Command::Run(a)) => a.c.preserve_fds,
        Some(Command::Exec(a)) => a.preserve_fds,
        _ => 0,
    };
    crate::linux::fds::reserve(3, preserve);
    // The verbs that put a process into a container keep the binary out of its reach
    // (CVE-2019-5736): the final execve goes through a sealed trampoline
    // (linux/exec_stub.rs), or where none can be made, tinyrt re-executes itself from a
    // binary nobody can write (linux/exeseal.rs).
    if matches!(cli.command, Some(Command::Create(_) | Command::Run(_) | Command::Exec(_)))
        && let Err(e) = crate::linux::exec_stub::prepare().or_else(|_| crate::linux::exeseal::ensure_sealed())
    {
        eprintln!("error: protecting the runtime binary: {e}");
        return 1;
    }
    log::init(cli.log.as_deref(), &cli.log_format, cli.debug);
    if cli.version {
        print!("{}", args::version_text());
        return 0;
    }
    match dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            log::error(&msg);
            1
        }
    }
}

fn store(cli: &Cli) -> lib::Store {
    lib::Store::new(&cli.root)
}

fn not_yet(verb: &str) -> Result<i32> {
    bail!("{verb}: not implemented yet in tinyrt")
}

fn dispatch(cli: &Cli) -> Result<i32> {
    let st = store(cli);
    let Some(command) = &cli.command else {
        bail!("no command given: see tinyrt --help");
    };
    match command {
        Command::Create(a) => {
            let mut o = a.opts();
            o.systemd_cgroup = cli.systemd_cgroup;
            lib::container::create(&st, &o).with_context(|| format!("create {}", a.id))?;
            Ok(0)
        }
        Command::Start(a) => {
            lib::container::start(&st, &a.id)?;
            Ok(0)
        }
        Command::Run(a) => {
            let mut o = a.opts();
            o.create.systemd_cgroup = cli.systemd_cgroup;
            Ok(lib::container::run(&st, &o)?)
        }
        Command::State(a) => {
            let v = lib::container::state(&st, &a.id)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(0)
        }
        Command::Kill(a) => {
            let sig = lib::container::parse_signal(a.signal.as_deref().unwrap_or("SIGTERM")).map_err(anyhow::Error::msg)?;
            lib::container::kill(&st, &a.id, sig, a.all)?;
            Ok(0)
        }
        Command::Delete(a) => {
            for id in &a.ids {
                lib::container::delete(&st, id, a.force)?;
            }
            Ok(0)
        }
        Command::List(a) => list(&st, a),
        Command::Spec(a) => spec(a),
        Command::Exec(a) => Ok(lib::container::exec(&st, &a.opts()?)?),
        Command::Ps(a) => {
            match a.format.as_str() {
                "json" => println!("{}", serde_json::to_string(&lib::container::ps::pids(&st, &a.id)?)?),
                "table" => print!("{}", lib::container::ps::table(&st, &a.id, &a.ps_args)?),
                f => bail!("--format: invalid value {f:?} (table or json)"),
            }
            Ok(0)
        }
        Command::Pause(a) => {
            lib::container::pause(&st, &a.id)?;
            Ok(0)
        }
        Command::Resume(a) => {
            lib::container::resume(&st, &a.id)?;
            Ok(0)
        }
        Command::Update(a) => {
            lib::container::update(&st, &a.id, a.resources.as_deref(), &a.flags()?)?;
            Ok(0)
        }
        Command::Events(a) => {
            let interval = lib::container::parse_duration(&a.interval).map_err(|e| anyhow::anyhow!("--interval: {e}"))?;
            lib::container::events(&st, &a.id, interval, a.stats)?;
            Ok(0)
        }
        Command::Features => {
            println!("{}", serde_json::to_string_pretty(&lib::spec::features())?);
            Ok(0)
        }
        Command::Checkpoint(_) => not_yet("checkpoint"),
        Command::Restore(_) => not_yet("restore"),
        Command::Image(a) => image(a),
        Command::Hook(a) => {
            let mut state = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut state).context("reading the container state from stdin")?;
            crate::net::hook(&a.action, &state)?;
            Ok(0)
        }
    }
}

fn list(st: &lib::Store, a: &args::ListArgs) -> Result<i32> {
    let rows = lib::container::list(st)?;
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for r in &rows {
            writeln!(out, "{}", r["id"].as_str().unwrap_or(""))?;
        }
    } else if a.format == "json" {
        writeln!(out, "{}", serde_json::to_string(&rows)?)?;
    } else if a.format == "table" {
        let cols = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"];
        let keys = ["id", "pid", "status", "bundle", "created", "owner"];
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                keys.iter()
                    .map(|k| match &r[*k] {
                        serde_json::Value::String(s) => s.clone(),
                        v => v.to_string(),
                    })
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = (0..cols.len())
            .map(|i| cells.iter().map(|c| c[i].len()).chain([cols[i].len()]).max().unwrap_or(0))
            .collect();
        let line = |vals: Vec<&str>| {
            vals.iter()
                .enumerate()
                .map(|(i, v)| {
                    if i + 1 == vals.len() {
                        v.to_string()
                    } else {
                        format!("{v:<w$}   ", w = widths[i])
                    }
                })
                .collect::<String>()
        };
        writeln!(out, "{}", line(cols.to_vec()))?;
        for c in &cells {
            writeln!(out, "{}", line(c.iter().map(String::as_str).collect()))?;
        }
    } else {
        bail!("--format: invalid value {:?} (table or json)", a.format);
    }
    Ok(0)
}

fn spec(a: &args::SpecArgs) -> Result<i32> {
    let dir = a.bundle.clone().unwrap_or_else(|| PathBuf::from("."));
    let path = dir.join("config.json");
    if path.exists() {
        bail!("File {} exists. Remove it first", path.display());
    }
    let mut v = lib::spec::default_spec(a.rootless, nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
    if a.network {
        if a.rootless {
            bail!("--network needs root (it creates a bridge and firewall rules): not with --rootless");
        }
        let exe = std::env::current_exe().context("finding the tinyrt binary for the network hooks")?;
        crate::net::add_to_spec(&mut v, &exe);
        let files = dir.join(crate::net::dns::BUNDLE_DIR);
        std::fs::create_dir_all(&files).with_context(|| format!("creating {}", files.display()))?;
        for f in crate::net::dns::FILES {
            std::fs::write(files.join(f), "").with_context(|| format!("writing {}", files.join(f).display()))?;
        }
    }
    std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(0)
}

/// `tinyrt image VERB`: the image store (`crate::image`).
fn image(a: &args::ImageArgs) -> Result<i32> {
    use crate::image::{self as img, ImageStore};
    use args::ImageVerb as V;
    let root = img::root_from(a.store.as_deref());
    let store = ImageStore::open(&root).with_context(|| format!("image store {}", root.display()))?;
    let mut out = std::io::stdout().lock();
    match &a.verb {
        V::Import {
            name,
            reference,
            quiet,
            source,
        } => {
            let o = img::import::ImportOpts {
                name: name.clone(),
                reference: reference.clone(),
                progress: !quiet,
            };
            for r in img::import::import(&store, source, &o).with_context(|| format!("import {source}"))? {
                let name = r.image.names.first().cloned().unwrap_or_default();
                writeln!(
                    out,
                    "{} {name} layers={} unpacked={} bytes={}",
                    r.image.id, r.layers_total, r.layers_unpacked, r.bytes_read
                )?;
            }
        }
        V::Bundle { image, dir } => {
            let d = img::config::make_bundle(&store, image, dir).with_context(|| format!("bundle {image}"))?;
            writeln!(out, "{}", d.display())?;
        }
        V::Ls {
            layers,
            bundles,
            containers,
            format,
        } => {
            let rows: Vec<serde_json::Value> = if *layers {
                let all = store.images()?;
                store
                    .layers()?
                    .into_iter()
                    .map(|(l, dir)| {
                        let users = all.iter().filter(|i| i.layers.contains(&l.diff_id)).count();
                        serde_json::json!({"diff_id": l.diff_id, "size": l.size, "entries": l.entries, "images": users, "dir": dir})
                    })
                    .collect()
            } else if *bundles {
                store
                    .bundles()?
                    .into_iter()
                    .map(|b| serde_json::json!({"dir": b.dir, "image": b.image, "created": b.created}))
                    .collect()
            } else if *containers {
                store
                    .containers()?
                    .into_iter()
                    .map(|c| {
                        serde_json::json!({"key": c.key, "id": c.id, "mounted": img::store::is_mountpoint(&c.rootfs),
                            "keep_upper": c.keep_upper, "rootfs": c.rootfs, "upper": store.container_dir(&c.key).join("upper")})
                    })
                    .collect()
            } else {
                store
                    .images()?
                    .into_iter()
                    .map(|i| serde_json::json!({"id": i.id, "names": i.names, "layers": i.layers.len(), "created": i.created}))
                    .collect()
            };
            match format.as_str() {
                "json" => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
                "table" => {
                    for r in &rows {
                        let cells: Vec<String> = r
                            .as_object()
                            .map(|o| {
                                o.iter()
                                    .map(|(k, v)| match v {
                                        serde_json::Value::String(s) => format!("{k}={s}"),
                                        v => format!("{k}={v}"),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        writeln!(out, "{}", cells.join("  "))?;
                    }
                }
                f => bail!("--format: invalid value {f:?} (table or json)"),
            }
        }
        V::Rm {
            bundle,
            upper,
            no_gc,
            names,
        } => {
            for n in names {
                if *bundle {
                    store
                        .remove_bundle(std::path::Path::new(n))
                        .with_context(|| format!("rm bundle {n}"))?;
                } else if *upper {
                    let c = store.find_container(n)?;
                    if img::store::is_mountpoint(&c.rootfs) {
                        bail!("rm {n}: {} is still mounted", c.rootfs.display());
                    }
                    store.remove_container(&c.key)?;
                } else {
                    let r = store.remove_image(n).with_context(|| format!("rm {n}"))?;
                    writeln!(out, "removed {n} ({})", r.id)?;
                }
            }
            if !no_gc {
                let g = store.gc()?;
                writeln!(out, "layers removed: {}, bytes freed: {}", g.layers_removed.len(), g.bytes_freed)?;
            }
        }
        V::Gc => {
            let g = store.gc()?;
            for l in &g.layers_removed {
                writeln!(out, "removed layer {l}")?;
            }
            writeln!(out, "layers removed: {}, bytes freed: {}", g.layers_removed.len(), g.bytes_freed)?;
        }
        V::Diff { container, output } => {
            let c = store.find_container(container)?;
            let upper = store.container_dir(&c.key).join("upper");
            if output.as_os_str() == "-" {
                img::overlay::diff_upper(&upper, &mut out)?;
            } else {
                let f = std::fs::File::create(output).with_context(|| format!("creating {}", output.display()))?;
                img::overlay::diff_upper(&upper, std::io::BufWriter::new(f)).with_context(|| format!("writing {}", output.display()))?;
            }
        }
    }
    Ok(0)
}
