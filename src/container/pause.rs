//! `pause` / `resume`: freeze and thaw every process of the container through its cgroup.

use super::{Error, Result};
use crate::state::{Status, Store};

pub fn pause(store: &Store, id: &str) -> Result<()> {
    let dir = store.open(id)?;
    let mut st = dir.read_state()?;
    match st.status() {
        Status::Running | Status::Created => {}
        s => return Err(Error::Status(format!("cannot pause container {id}: it is {s}"))),
    }
    st.cgroup.freeze(true)?;
    st.status = Status::Paused;
    dir.write_state(&st)?;
    Ok(())
}

pub fn resume(store: &Store, id: &str) -> Result<()> {
    let dir = store.open(id)?;
    let mut st = dir.read_state()?;
    match st.status() {
        Status::Paused => {}
        s => return Err(Error::Status(format!("cannot resume container {id}: it is {s}, not paused"))),
    }
    st.cgroup.freeze(false)?;
    st.status = Status::Running;
    dir.write_state(&st)?;
    Ok(())
}
