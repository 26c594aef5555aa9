//! The test processes' view of their own children, shared by the suites (conformance, and
//! integration/network.rs through `#[path]`): each suite is the subreaper of the container
//! processes it starts, so what it must reap or end is found among its children.

/// Our children, with their state letter (`Z` for a zombie), from /proc.
pub fn our_children() -> Vec<(i32, char)> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let rest = stat.rsplit_once(") ")?.1;
            let mut f = rest.split(' ');
            let state = f.next()?.chars().next()?;
            (f.next()? == me).then_some((p, state))
        })
        .collect()
}

/// Our children (zombies included) in container `id`'s cgroup, or below it.
pub fn children_in_cgroup(id: &str) -> Vec<i32> {
    our_children()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| {
            let cg = std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap_or_default();
            cg.lines()
                .any(|l| l.splitn(3, ':').nth(2).is_some_and(|path| path.split('/').any(|c| c == id)))
        })
        .collect()
}
