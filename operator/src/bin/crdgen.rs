//! Writes the Signet CRDs as YAML: to stdout, or one file each with `--write DIR`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// Generate the signet.dev CustomResourceDefinitions from the Rust types.
#[derive(Parser)]
struct Args {
    /// Write one `<name>.yaml` per CRD into this directory instead of
    /// printing a multi-document stream.
    #[arg(long, value_name = "DIR")]
    write: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let Args { write } = Args::parse();
    let manifests = signet_operator::crd::manifests().context("rendering the CRDs")?;
    match write {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for manifest in manifests {
                let path = dir.join(&manifest.file_name);
                std::fs::write(&path, &manifest.yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
        None => {
            let documents: Vec<String> = manifests.into_iter().map(|m| m.yaml).collect();
            print!("{}", documents.join("---\n"));
        }
    }
    Ok(())
}
