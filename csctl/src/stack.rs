//! A stack directory, read once into memory and checked: config, convention, every file (symlinks must stay
//! inside the stack, every file must be readable). All later steps work on this snapshot, so what is hashed is
//! exactly what is packaged.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use metadata_schema::validate::{parse_cluster_addon_config, parse_csctl_config};
use metadata_schema::{CSCTL_CONFIG_FILES, ClusterAddonConfig, CsctlConfig, Problem};

use crate::error::InvalidInput;

/// Where the cluster addons come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Convention {
    /// `clusteraddon.yaml` + one subchart per stage under `cluster-addon/<stage>/`.
    MultiStage(ClusterAddonConfig),
    /// One umbrella chart `cluster-addon/` + `cluster-addon-values.yaml`.
    Umbrella,
}

/// A loaded stack directory.
#[derive(Debug, Clone)]
pub struct Stack {
    /// As given on the command line.
    pub dir: PathBuf,
    /// `csctl.yaml` or `csmctl.yaml`.
    pub config_file: String,
    pub config: CsctlConfig,
    pub convention: Convention,
    /// Every regular file, by `/`-separated path relative to `dir`.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Stack {
    /// `<provider>-<name>-<maj>-<min>`
    pub fn prefix(&self) -> String {
        self.config.stack_prefix()
    }

    /// A path inside the stack, for messages.
    pub fn display(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }

    /// Files under `dir/` (relative to it), e.g. `under("cluster-class")`.
    pub fn under<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let prefix = format!("{dir}/");
        self.files.iter().filter_map(move |(k, v)| {
            k.strip_prefix(prefix.as_str())
                .map(|rel| (rel, v.as_slice()))
        })
    }

    pub fn has_dir(&self, dir: &str) -> bool {
        self.under(dir).next().is_some()
    }

    /// Loads and checks a stack directory. Every problem found is returned at once.
    pub fn load(dir: &Path) -> Result<Self, InvalidInput> {
        let shown = dir.display().to_string();
        let meta = std::fs::metadata(dir).map_err(|e| {
            InvalidInput::one(Problem::error(
                &shown,
                0,
                0,
                format!("cannot open the stack directory: {e}"),
            ))
        })?;
        if !meta.is_dir() {
            return Err(InvalidInput::one(Problem::error(
                &shown,
                0,
                0,
                "not a directory; expected a stack directory providers/<provider>/<name>/<maj>-<min>",
            )));
        }
        let mut problems = Vec::new();
        let files = read_tree(dir, &mut problems);

        let config_file = CSCTL_CONFIG_FILES
            .iter()
            .find(|f| files.contains_key(**f))
            .map(|f| f.to_string());
        let Some(config_file) = config_file else {
            problems.push(Problem::error(
                &shown,
                0,
                0,
                "no csctl.yaml (or csmctl.yaml) in this directory: a stack directory needs one (see README, \"csctl.yaml\")",
            ));
            return Err(InvalidInput { problems });
        };
        let config_text = String::from_utf8_lossy(&files[&config_file]).into_owned();
        let config =
            match parse_csctl_config(&config_text, &dir.join(&config_file).display().to_string()) {
                Ok(c) => Some(c),
                Err(p) => {
                    problems.extend(p);
                    None
                }
            };

        let convention = if let Some(data) = files.get("clusteraddon.yaml") {
            let text = String::from_utf8_lossy(data).into_owned();
            match parse_cluster_addon_config(
                &text,
                &dir.join("clusteraddon.yaml").display().to_string(),
            ) {
                Ok((cfg, _)) => Some(Convention::MultiStage(cfg)),
                Err(p) => {
                    problems.extend(p);
                    None
                }
            }
        } else {
            Some(Convention::Umbrella)
        };

        let has = |d: &str| files.keys().any(|k| k.starts_with(&format!("{d}/")));
        if !files.contains_key("cluster-class/Chart.yaml") {
            problems.push(Problem::error(
                dir.join("cluster-class").display().to_string(),
                0,
                0,
                "missing cluster-class/Chart.yaml: the cluster-class must be a Helm chart",
            ));
        }
        match &convention {
            Some(Convention::Umbrella) if !files.contains_key("cluster-addon/Chart.yaml") => {
                problems.push(Problem::error(
                        dir.join("cluster-addon").display().to_string(),
                        0,
                        0,
                        "missing cluster-addon/Chart.yaml: without clusteraddon.yaml, cluster-addon/ must be one umbrella Helm chart",
                    ));
            }
            Some(Convention::MultiStage(_)) if !has("cluster-addon") => {
                problems.push(Problem::error(
                        dir.join("cluster-addon").display().to_string(),
                        0,
                        0,
                        "missing cluster-addon/: clusteraddon.yaml needs one subchart directory per stage",
                    ));
            }
            _ => {}
        }

        if problems
            .iter()
            .any(|p| p.severity == metadata_schema::Severity::Error)
        {
            return Err(InvalidInput { problems });
        }
        let (Some(config), Some(convention)) = (config, convention) else {
            return Err(InvalidInput { problems });
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config_file,
            config,
            convention,
            files,
        })
    }
}

/// Reads every file under `root`. Symlinks are followed only when they resolve inside `root`.
fn read_tree(root: &Path, problems: &mut Vec<Problem>) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let canonical_root = match root.canonicalize() {
        Ok(p) => p,
        Err(e) => {
            problems.push(Problem::error(
                root.display().to_string(),
                0,
                0,
                format!("cannot resolve the stack directory: {e}"),
            ));
            return files;
        }
    };
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                problems.push(Problem::error(path, 0, 0, format!("cannot read: {e}")));
                continue;
            }
        };
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let Some(rel_str) = rel.to_str().map(|s| s.replace('\\', "/")) else {
            problems.push(Problem::error(
                path.display().to_string(),
                0,
                0,
                "file name is not valid UTF-8",
            ));
            continue;
        };
        let mut target = path.to_path_buf();
        if entry.path_is_symlink() {
            match path.canonicalize() {
                Ok(t) if t.starts_with(&canonical_root) => target = t,
                Ok(t) => {
                    problems.push(Problem::error(
                        path.display().to_string(),
                        0,
                        0,
                        format!(
                            "symlink points outside the stack (to {}); copy the file into the stack instead",
                            t.display()
                        ),
                    ));
                    continue;
                }
                Err(e) => {
                    problems.push(Problem::error(
                        path.display().to_string(),
                        0,
                        0,
                        format!("broken symlink: {e}"),
                    ));
                    continue;
                }
            }
        }
        let meta = match std::fs::metadata(&target) {
            Ok(m) => m,
            Err(e) => {
                problems.push(Problem::error(
                    path.display().to_string(),
                    0,
                    0,
                    format!("cannot read: {e}"),
                ));
                continue;
            }
        };
        if meta.is_dir() {
            if entry.path_is_symlink() {
                // A symlinked directory inside the stack: read it under the link's name.
                let mut sub = Vec::new();
                for (k, v) in read_tree(&target, &mut sub) {
                    files.insert(format!("{rel_str}/{k}"), v);
                }
                problems.extend(sub);
            }
            continue;
        }
        if !meta.is_file() {
            problems.push(Problem::error(
                path.display().to_string(),
                0,
                0,
                "not a regular file (a FIFO, socket or device cannot be part of a stack)",
            ));
            continue;
        }
        match std::fs::read(&target) {
            Ok(data) => {
                files.insert(rel_str, data);
            }
            Err(e) => problems.push(Problem::error(
                path.display().to_string(),
                0,
                0,
                format!("cannot read the file: {e}; check its permissions"),
            )),
        }
    }
    files
}
