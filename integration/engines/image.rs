//! tinyrt's image store against a real `docker save`: an image built here with Docker (the
//! busybox base plus two committed layers that add, change and delete files and replace a
//! directory, which Docker stores as an opaque directory) is saved, imported by tinyrt,
//! bundled and run by tinyrt from its overlay. The layers are committed from containers run by
//! the runtime under test, so the runc column checks the same round trip with runc-made layers.

use crate::util::{R, check, check_eq, quote, sh, unique};
use crate::{Check, Rt, TINYRT, engines};
use std::path::{Path, PathBuf};

pub fn checks() -> Vec<Check> {
    vec![Check {
        engine: "docker",
        name: "image_round_trip",
        run: image_round_trip,
    }]
}

/// Everything one round trip made: images, the tinyrt container, store and bundle.
struct Trip {
    images: Vec<String>,
    root: PathBuf,
    id: String,
    dir: PathBuf,
}

impl Drop for Trip {
    fn drop(&mut self) {
        let e = engines();
        let _ = sh(&format!("{TINYRT} --root {} delete --force {}", self.root.display(), self.id));
        for i in &self.images {
            let _ = e.docker(&format!("rmi -f {i}"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `docker run --runtime=RT FROM sh -c SCRIPT`, then `docker commit` it as TO.
fn commit(rt: Rt, from: &str, script: &str, to: &str) -> R {
    let e = engines();
    let name = unique("commit");
    let r = (|| {
        e.docker(&format!(
            "run --name {name} --runtime={} {from} sh -c {}",
            rt.docker_name(),
            quote(script)
        ))
        .ok()?;
        e.docker(&format!("commit {name} {to}")).ok()?;
        Ok(())
    })();
    let _ = e.docker(&format!("rm -f {name}"));
    r
}

fn image_round_trip(rt: Rt) -> R {
    let e = engines();
    let tag = unique(&format!("trip-{}", rt.label()));
    let dir = e.work.join(&tag);
    let mut t = Trip {
        images: vec![],
        root: dir.join("state"),
        id: tag.clone(),
        dir: dir.clone(),
    };
    std::fs::create_dir_all(&dir).unwrap();
    let (l2, l3) = (format!("tinyrt-trip:{tag}-2"), format!("tinyrt-trip:{tag}-3"));
    t.images.push(l2.clone());
    commit(
        rt,
        &e.image,
        "mkdir -p /data/keep /data/opq && echo a > /data/keep/a && echo o1 > /data/opq/o1 && echo x > /data/x && echo 1 > /etc/motd",
        &l2,
    )?;
    t.images.push(l3.clone());
    commit(
        rt,
        &l2,
        "rm /data/x && echo changed > /data/keep/a && rm -rf /data/opq && mkdir /data/opq && echo o2 > /data/opq/o2 && echo new > /data/new",
        &l3,
    )?;
    let tar = dir.join("image.tar");
    e.docker(&format!("save -o {} {l3}", tar.display())).ok()?;
    // The archive really has what the check is about: a whiteout and an opaque marker.
    let listing = sh(&format!(
        "tar -xOf {} --wildcards '*/layer.tar' | tar -t --ignore-zeros 2>/dev/null",
        tar.display()
    ))
    .stdout;
    check(listing.contains("data/.wh.x"), "docker save has no whiteout for /data/x")?;
    check(
        listing.contains("data/opq/.wh..wh..opq"),
        "docker save has no opaque marker for /data/opq",
    )?;

    let store = dir.join("store");
    let rt_cmd = format!("{TINYRT} --root {}", t.root.display());
    let st = format!("--store {}", store.display());
    sh(&format!("{rt_cmd} image import {st} -q --name trip {}", tar.display())).ok()?;
    let bundle = dir.join("bundle");
    sh(&format!("{rt_cmd} image bundle {st} trip {}", bundle.display())).ok()?;
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path).map_err(|e| format!("config.json: {e}"))?)
        .map_err(|e| format!("config.json: {e}"))?;
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "cat /data/keep/a /data/opq/* /data/new /etc/motd; ls /data /data/opq | tr '\\n' ' '; echo; \
         test -e /data/x && echo x-present; echo w > /data/written-by-container; true"
    ]);
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let out = sh(&format!("{rt_cmd} run -b {} {}", bundle.display(), t.id)).ok()?;
    let want = "changed\no2\nnew\n1\n/data: keep new opq  /data/opq: o2 \n";
    check_eq(&out.stdout, want, "the files the container sees")?;
    // After the run (delete included), no overlay mount, no upper dir, and the container's
    // write reached no layer.
    let rootfs = bundle.join("rootfs");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(rootfs.to_str().unwrap()));
    check(!mounted, "the overlay is still mounted after delete")?;
    let found = sh(&format!("find {} -name written-by-container", store.display())).stdout;
    check(
        found.trim().is_empty(),
        format!("the container's write is left in the store: {found}"),
    )?;
    check(
        !Path::new(&store.join("containers"))
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "a container upper dir is left",
    )?;
    Ok(())
}
