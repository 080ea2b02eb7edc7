//! `summit-config crds`: the CRDs as YAML, generated from the Rust types.

use std::{fs, io, path::Path};

use crate::api;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot render CRD {name} as YAML")]
    Render {
        name: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Prints every CRD as one multi-document YAML stream, or writes a file per CRD.
pub fn print(out_dir: Option<&Path>) -> Result<(), Error> {
    let mut stream = String::new();
    for crd in api::crds() {
        let name = api::crd_file_name(&crd);
        let yaml = api::crd_yaml(&crd).map_err(|source| Error::Render {
            name: name.clone(),
            source,
        })?;
        match out_dir {
            Some(dir) => {
                let path = dir.join(&name);
                fs::write(&path, yaml).map_err(|source| Error::Write {
                    path: path.display().to_string(),
                    source,
                })?;
            }
            None => {
                stream.push_str("---\n");
                stream.push_str(&yaml);
            }
        }
    }
    if out_dir.is_none() {
        print!("{stream}");
    }
    Ok(())
}
