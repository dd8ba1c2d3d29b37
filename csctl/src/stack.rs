//! A stack directory, read once into memory and checked: config, convention, every file (symlinks must stay
//! inside the stack or its stack family, every file must be readable). All later steps work on this snapshot,
//! so what is hashed is exactly what is packaged: a symlinked file is its target's bytes under the link's
//! name, so a release built from links equals one built from copies.
use std::collections::{BTreeMap, HashSet};
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

/// Expands the command-line stack arguments (a parent directory stands for its stack subdirectories).
pub fn expand_stack_dirs(args: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in args {
        let has_config = CSCTL_CONFIG_FILES.iter().any(|f| dir.join(f).exists());
        if !has_config && dir.is_dir() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| CSCTL_CONFIG_FILES.iter().any(|f| p.join(f).is_file()))
                .collect();
            children.sort();
            if !children.is_empty() {
                out.extend(children);
                continue;
            }
        }
        out.push(dir.clone());
    }
    out
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
        let files = read_stack_files(dir, &mut problems);

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

/// Where symlinks of the stack at `canonical_root` may lead: its stack family `providers/<provider>/<name>/`
/// (the parent directory, when it and its parent are named after the csctl.yaml's `clusterStackName` and
/// provider `type`), so the Kubernetes minors of one stack share files instead of copying them; otherwise
/// only the stack directory itself. The config is only peeked at here; it is checked after the walk.
fn link_boundary(canonical_root: &Path) -> PathBuf {
    let family = || -> Option<PathBuf> {
        let text = CSCTL_CONFIG_FILES
            .iter()
            .find_map(|f| std::fs::read_to_string(canonical_root.join(f)).ok())?;
        let config = parse_csctl_config(&text, "").ok()?.config;
        let parent = canonical_root.parent()?;
        let grandparent = parent.parent()?;
        let named = |p: &Path, want: &str| p.file_name().and_then(|n| n.to_str()) == Some(want);
        (named(parent, &config.cluster_stack_name) && named(grandparent, &config.provider.kind))
            .then(|| parent.to_path_buf())
    };
    family().unwrap_or_else(|| canonical_root.to_path_buf())
}

/// Reads every file of the stack in `root` (see [`link_boundary`] for symlinks).
fn read_stack_files(root: &Path, problems: &mut Vec<Problem>) -> BTreeMap<String, Vec<u8>> {
    let canonical_root = match root.canonicalize() {
        Ok(p) => p,
        Err(e) => {
            problems.push(Problem::error(
                root.display().to_string(),
                0,
                0,
                format!("cannot resolve the stack directory: {e}"),
            ));
            return BTreeMap::new();
        }
    };
    let mut reader = TreeReader {
        boundary: link_boundary(&canonical_root),
        is_family: false,
        reading: vec![canonical_root.clone()],
        problems,
    };
    reader.is_family = reader.boundary != canonical_root;
    reader.read(root)
}

struct TreeReader<'a> {
    /// Symlinks must resolve inside this directory (canonical).
    boundary: PathBuf,
    /// `boundary` is the stack family, not the stack itself (for messages).
    is_family: bool,
    /// Canonical directories being read, outermost first: a directory symlink into one of them is a loop.
    reading: Vec<PathBuf>,
    problems: &'a mut Vec<Problem>,
}

impl TreeReader<'_> {
    fn error(&mut self, path: &Path, message: String) {
        self.problems
            .push(Problem::error(path.display().to_string(), 0, 0, message));
    }

    /// Every regular file under `root`, by `/`-separated path relative to it.
    fn read(&mut self, root: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name();
        for entry in walker {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let path = e.path().map(Path::to_path_buf).unwrap_or_default();
                    self.error(&path, format!("cannot read: {e}"));
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
                self.error(path, "file name is not valid UTF-8".into());
                continue;
            };
            let is_link = entry.path_is_symlink();
            let target = if is_link {
                match self.resolve_link(path) {
                    Some(t) => t,
                    None => continue,
                }
            } else {
                path.to_path_buf()
            };
            let meta = match std::fs::metadata(&target) {
                Ok(m) => m,
                Err(e) => {
                    self.error(path, format!("cannot read: {e}"));
                    continue;
                }
            };
            if meta.is_dir() {
                if is_link {
                    // A symlinked directory: read it under the link's name.
                    if let Some(inside) = self.reading.iter().find(|r| r.starts_with(&target)) {
                        let message = if *inside == target {
                            format!(
                                "symlink loop: leads back to {}, which is being read",
                                target.display()
                            )
                        } else {
                            format!(
                                "symlink loop: leads to {}, which contains {} (being read)",
                                target.display(),
                                inside.display()
                            )
                        };
                        self.error(path, message);
                        continue;
                    }
                    let link_dir = path
                        .parent()
                        .and_then(|p| p.canonicalize().ok())
                        .unwrap_or_default();
                    if link_dir.starts_with(&target) {
                        let message = format!(
                            "symlink loop: leads to {}, a directory that contains the link",
                            target.display()
                        );
                        self.error(path, message);
                        continue;
                    }
                    self.reading.push(target.clone());
                    for (k, v) in self.read(&target) {
                        files.insert(format!("{rel_str}/{k}"), v);
                    }
                    self.reading.pop();
                }
                continue;
            }
            if !meta.is_file() {
                self.error(
                    path,
                    "not a regular file (a FIFO, socket or device cannot be part of a stack)"
                        .into(),
                );
                continue;
            }
            match std::fs::read(&target) {
                Ok(data) => {
                    files.insert(rel_str, data);
                }
                Err(e) => self.error(
                    path,
                    format!("cannot read the file: {e}; check its permissions"),
                ),
            }
        }
        files
    }

    /// Where a symlink leads (canonical), or `None` after reporting why it may not be followed.
    fn resolve_link(&mut self, path: &Path) -> Option<PathBuf> {
        match std::fs::read_link(path) {
            Ok(t) if t.is_absolute() => {
                let message = format!(
                    "symlink target {} is absolute: use a relative path (e.g. ../../1-33/cluster-class/values.yaml) so the stack builds the same in every checkout",
                    t.display()
                );
                self.error(path, message);
                return None;
            }
            Ok(_) => {}
            Err(e) => {
                self.error(path, format!("cannot read the symlink: {e}"));
                return None;
            }
        }
        let target = match path.canonicalize() {
            Ok(t) => t,
            Err(e) => {
                let message = if link_chain_loops(path) {
                    "symlink loop: the link leads back to itself".to_string()
                } else {
                    format!("broken symlink: {e}")
                };
                self.error(path, message);
                return None;
            }
        };
        if target.starts_with(&self.boundary) {
            return Some(target);
        }
        let message = if self.is_family {
            format!(
                "symlink points outside the stack family {} (to {}): links may only share files between the Kubernetes minors of one stack; copy the file instead",
                self.boundary.display(),
                target.display()
            )
        } else {
            format!(
                "symlink points outside the stack (to {}); copy the file into the stack instead (links to the other minors of a stack work in the providers/<provider>/<name>/<maj>-<min>/ layout)",
                target.display()
            )
        };
        self.error(path, message);
        None
    }
}

/// Whether following `path` link by link comes back to a link already seen (the OS only says "too many
/// levels of symbolic links").
fn link_chain_loops(path: &Path) -> bool {
    let mut seen = HashSet::new();
    let mut at = path.to_path_buf();
    // Deeper chains than this are refused by the OS anyway (Linux: 40).
    for _ in 0..64 {
        let Ok(next) = std::fs::read_link(&at) else {
            return false;
        };
        let next = at.parent().map(|p| p.join(&next)).unwrap_or(next);
        if !seen.insert(next.clone()) {
            return true;
        }
        at = next;
    }
    true
}
