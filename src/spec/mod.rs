//! Loading and checking `config.json`. Everything that decides "is this config acceptable"
//! lives here and runs before anything on the host is touched. Errors name the spec field.

mod default;
mod features;
#[cfg(test)]
pub(crate) mod fuzz_corpus;
mod validate;

pub use default::default_spec;
pub use features::features;
pub use validate::{check_resources, validate};

use oci_spec::runtime::Spec;
use std::path::{Path, PathBuf};

/// An error in the bundle: which field, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{file}: {field}: {msg}")]
    Parse { file: PathBuf, field: String, msg: String },
    #[error("{field}: {msg}")]
    Invalid { field: String, msg: String },
}

impl SpecError {
    pub fn invalid(field: impl Into<String>, msg: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, SpecError>;

/// Parse JSON text into `T`, reporting the JSON path of the offending field.
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &[u8], file: &Path) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        SpecError::Parse {
            file: file.to_path_buf(),
            field: if field == "." { "(document)".into() } else { field },
            msg: inner.to_string(),
        }
    })
}

/// A validated bundle: the spec, the bundle directory and the absolute rootfs path.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    pub rootfs: PathBuf,
}

/// Read `<dir>/config.json`, parse it and validate it. No side effects.
pub fn load_bundle(dir: &Path) -> Result<Bundle> {
    let dir = std::path::absolute(dir).map_err(|e| SpecError::Io { path: dir.into(), err: e })?;
    let file = dir.join("config.json");
    let text = std::fs::read(&file).map_err(|e| SpecError::Io {
        path: file.clone(),
        err: e,
    })?;
    let spec: Spec = parse_json(&text, &file)?;
    let rootfs = validate(&spec, &dir)?;
    Ok(Bundle { dir, spec, rootfs })
}
