use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Subcommand;
use kiln_data::checksum;
use kiln_data::fetch::{self, FetchSource};

use crate::output::outln;

/// `kiln data ...`
#[derive(Subcommand)]
pub(crate) enum DataCommand {
    /// Fetch a known dataset (mnist, fashion-mnist), verifying every file's SHA-256.
    Fetch {
        /// Dataset name.
        name: String,
        /// Destination directory (default: datasets/<name>).
        #[arg(long)]
        dest: Option<PathBuf>,
        /// Copy from a local directory holding the IDX files instead of downloading.
        #[arg(long, value_name = "DIR", conflicts_with = "mirror")]
        from: Option<PathBuf>,
        /// Download from this base address instead of the canonical mirrors (repeatable).
        #[arg(long, value_name = "URL")]
        mirror: Vec<String>,
    },
    /// Verify a dataset directory against its SHA256SUMS (and known content hashes).
    Verify {
        /// Dataset directory.
        #[arg(default_value = "datasets/mnist")]
        dir: PathBuf,
    },
    /// List the datasets `fetch` knows.
    List,
}

pub(crate) fn run(command: DataCommand) -> Result<u8> {
    match command {
        DataCommand::Fetch {
            name,
            dest,
            from,
            mirror,
        } => {
            let dataset = fetch::known(&name)?;
            let dest = dest.unwrap_or_else(|| PathBuf::from("datasets").join(dataset.name));
            let source = match from {
                Some(dir) => FetchSource::Dir(dir),
                None => FetchSource::Network(mirror),
            };
            let mut last_report = std::time::Instant::now();
            let mut progress = |file: &str, done: u64, total: Option<u64>| {
                if last_report.elapsed().as_millis() >= 500 {
                    last_report = std::time::Instant::now();
                    match total {
                        Some(t) => eprintln!(
                            "{file}: {:.1} / {:.1} MB",
                            done as f64 / 1e6,
                            t as f64 / 1e6
                        ),
                        None => eprintln!("{file}: {:.1} MB", done as f64 / 1e6),
                    }
                }
            };
            let dir = fetch::fetch(dataset, &source, &dest, &mut progress)?;
            eprintln!("{}: verified ({})", dir.display(), dataset.license);
            outln!("{}", dir.display());
            Ok(0)
        }
        DataCommand::Verify { dir } => {
            if !dir.is_dir() {
                return Err(kiln_data::DataError::MissingDir { path: dir }.into());
            }
            let mut checked = 0;
            if let Some(files) = checksum::verify_dir(&dir)? {
                for f in &files {
                    outln!("ok  {}", f.display());
                }
                checked += files.len();
            }
            if let Some(info) = kiln_data::dataset::read_info(&dir)?
                && let Ok(known) = fetch::known(&info.name)
            {
                fetch::verify_content(known, &dir)?;
                outln!(
                    "ok  content of {} matches the published {} checksums",
                    dir.display(),
                    known.name
                );
                checked += 1;
            }
            if checked == 0 {
                bail!(crate::UsageError(format!(
                    "{}: nothing to verify (no SHA256SUMS and no known dataset.json)",
                    dir.display()
                )));
            }
            Ok(0)
        }
        DataCommand::List => {
            for d in fetch::KNOWN {
                outln!(
                    "{:<14} {} classes  {}",
                    d.name,
                    d.class_names.len(),
                    d.license
                );
            }
            Ok(0)
        }
    }
}
