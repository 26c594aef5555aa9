//! tinyrt library: the layers are
//! `cli` -> `container` (lifecycle, one file per verb) -> {`process`, `linux`, `hooks`, `state`, `spec`}.
//! Nothing below `cli` knows about clap; `linux` knows nothing of the lifecycle.

pub mod cgroups;
pub mod cli;
pub mod container;
pub mod hooks;
pub mod image;
pub mod linux;
pub mod net;
pub mod process;
pub mod spec;
pub mod state;
