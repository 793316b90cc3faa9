//! Reading manifests: files, folders (recursive `*.yaml`/`*.yml`, sorted) and stdin, split into
//! documents, each parsed into a typed resource. Every problem becomes a positioned diagnostic;
//! one bad document never hides the errors of the others.

use super::diag::{Diagnostic, did_you_mean};
use super::node::{Node, Pos, RawValue, Value};
use super::resource::{Kind, Origin, Resource, Spec};
use super::types::{API_VERSION, Metadata};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_saphyr::Spanned;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One input file's text, kept so diagnostics can show the offending line.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: Arc<str>,
    /// Canonical path for files, `None` for stdin.
    pub path: Option<PathBuf>,
    pub text: String,
}

/// Everything read from a set of `-f` arguments.
#[derive(Debug, Default)]
pub struct Loaded {
    pub sources: Vec<Source>,
    pub resources: Vec<Resource>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn source_text(&self, file: &str) -> Option<&str> {
        self.sources
            .iter()
            .find(|s| &*s.name == file)
            .map(|s| s.text.as_str())
    }
}

/// Reads every `-f` argument. A `-` is stdin, a folder is walked recursively.
pub fn load_paths(args: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    for arg in args {
        if arg.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => loaded.add_source(Source {
                    name: Arc::from("<stdin>"),
                    path: None,
                    text,
                }),
                Err(e) => loaded.io_error("<stdin>", &format!("cannot read stdin: {e}")),
            }
            continue;
        }
        let mut files = Vec::new();
        if let Err(e) = collect_files(arg, true, &mut files) {
            loaded.io_error(&arg.display().to_string(), &e);
            continue;
        }
        if files.is_empty() {
            loaded.io_error(
                &arg.display().to_string(),
                "no *.yaml or *.yml files in this folder",
            );
        }
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => loaded.add_source(Source {
                    name: Arc::from(file.display().to_string()),
                    path: std::fs::canonicalize(&file).ok(),
                    text,
                }),
                Err(e) => {
                    loaded.io_error(&file.display().to_string(), &format!("cannot read: {e}"))
                }
            }
        }
    }
    loaded
}

fn collect_files(path: &Path, explicit: bool, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("cannot list folder: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            let hidden = entry
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !hidden {
                collect_files(&entry, false, out)?;
            }
        }
    } else if explicit || is_yaml(path) {
        out.push(path.to_path_buf());
    }
    Ok(())
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

impl Loaded {
    fn io_error(&mut self, name: &str, message: &str) {
        let file: Arc<str> = Arc::from(name);
        self.diagnostics
            .push(Diagnostic::error(&file, Pos { line: 1, col: 1 }, message));
    }

    /// Parses a source's documents and keeps the source for rendering diagnostics.
    pub fn add_source(&mut self, source: Source) {
        for (offset, chunk) in split_documents(&source.text) {
            parse_document(&source, offset, &chunk, self);
        }
        self.sources.push(source);
    }
}

/// Splits a YAML stream at `---` / `...` lines, as kubectl does, returning each document's text
/// and the number of lines before it. The marker is blanked, not removed, so columns stay true.
pub fn split_documents(text: &str) -> Vec<(u32, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 0u32;
    let mut ended = false;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_start = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        let is_end = bare == "..." || bare.starts_with("... ");
        if is_start || is_end {
            if !current.trim().is_empty() {
                docs.push((start, std::mem::take(&mut current)));
            }
            current.clear();
            start = i;
            ended = is_end;
            if is_start {
                // keep the rest of the line (e.g. `--- {a: 1}`) at its true column
                current.push_str("   ");
                current.push_str(&line[3..]);
            } else {
                current.push('\n');
            }
            continue;
        }
        if ended && bare.trim().is_empty() {
            current.push_str(line);
            continue;
        }
        current.push_str(line);
    }
    if has_content(&current) {
        docs.push((start, current));
    }
    docs.retain(|(_, d)| has_content(d));
    docs
}

/// A chunk holding only blank lines, comments or directives is not a document.
fn has_content(chunk: &str) -> bool {
    chunk.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#') && !t.starts_with('%')
    })
}

/// Deepest nesting a manifest may have. The parser recurses per level: at its default of 64 a
/// document nested that deep overflowed a 2 MiB stack (tokio's workers, where `serve` loads
/// manifests) in a debug build (found by tests/fuzz_inputs.rs). Real manifests nest under 10.
pub const MAX_DEPTH: usize = 32;

fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
        },
    }
}

/// Position of a serde-saphyr error, shifted to the document's place in its file.
fn error_pos(e: &serde_saphyr::Error, offset: u32) -> Pos {
    match e.location() {
        Some(l) if l.line() > 0 => Pos {
            line: u32::try_from(l.line())
                .unwrap_or(u32::MAX)
                .saturating_add(offset),
            col: u32::try_from(l.column()).unwrap_or(u32::MAX).max(1),
        },
        _ => Pos {
            line: offset + 1,
            col: 1,
        },
    }
}

/// serde-saphyr's message without its own location decorations, plus a suggestion for unknown
/// fields and enum values.
fn error_message(e: &serde_saphyr::Error) -> (String, Option<String>) {
    let raw = e.without_snippet().to_string();
    let mut msg = raw.trim().trim_start_matches("error: ").to_string();
    if let Some(rest) = msg.strip_prefix("line ")
        && let Some(idx) = rest.find(": ")
        && rest[..idx].contains("column")
    {
        msg = rest[idx + 2..].to_string();
    }
    if let Some(idx) = msg.rfind(" at line ") {
        msg.truncate(idx);
    }
    if msg.contains("budget breached: Depth") {
        return (
            format!("nested deeper than {MAX_DEPTH} levels"),
            Some("a manifest needs a few levels; check for unclosed brackets".into()),
        );
    }
    let help = suggestion_for(&msg);
    (msg, help)
}

/// For serde's `unknown field `x`, expected one of a, b` (and `unknown variant`) messages.
fn suggestion_for(msg: &str) -> Option<String> {
    let (what, rest) = if let Some(r) = msg.strip_prefix("unknown field `") {
        ("field", r)
    } else if let Some(r) = msg.strip_prefix("unknown variant `") {
        ("value", r)
    } else {
        return None;
    };
    let end = rest.find('`')?;
    let word = &rest[..end];
    let expected = rest[end..].split_once("expected ")?.1;
    let expected = expected.strip_prefix("one of ").unwrap_or(expected);
    let candidates: Vec<&str> = expected
        .split(',')
        .map(|c| c.trim().trim_matches('`'))
        .filter(|c| !c.is_empty())
        .collect();
    did_you_mean(word, candidates.iter().copied())
        .map(|m| format!("did you mean the {what} `{m}`?"))
}

/// Keys that would carry a secret in clear text, and the fields to use instead.
const INLINE_SECRETS: &[(&str, &str, &str)] = &[
    ("token", "tokenEnv", "tokenFile"),
    ("password", "passwordEnv", "passwordFile"),
    ("community", "communityEnv", "communityFile"),
    ("authPassword", "authPasswordEnv", "authPasswordFile"),
    ("privPassword", "privPasswordEnv", "privPasswordFile"),
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Doc<S> {
    #[allow(dead_code)]
    api_version: IgnoredAny,
    #[allow(dead_code)]
    kind: IgnoredAny,
    metadata: Metadata,
    spec: S,
    /// Accepted (and ignored) so the output of `get -o yaml` can be applied back.
    #[allow(dead_code)]
    status: Option<IgnoredAny>,
}

fn typed<S: DeserializeOwned>(
    chunk: &str,
    wrap: fn(S) -> Spec,
) -> Result<(Metadata, Spec), serde_saphyr::Error> {
    let doc: Doc<S> = serde_saphyr::from_str_with_options(chunk, yaml_options())?;
    Ok((doc.metadata, wrap(doc.spec)))
}

fn parse_document(source: &Source, offset: u32, chunk: &str, out: &mut Loaded) {
    let file = &source.name;
    let root: Node =
        match serde_saphyr::from_str_with_options::<Spanned<RawValue>>(chunk, yaml_options()) {
            Ok(v) => {
                let mut node = Node::from(v);
                shift(&mut node, offset);
                node
            }
            Err(e) => {
                let (msg, help) = error_message(&e);
                let mut d =
                    Diagnostic::error(file, error_pos(&e, offset), format!("invalid YAML: {msg}"));
                d.help = help;
                out.diagnostics.push(d);
                return;
            }
        };
    if !matches!(root.value, Value::Map(_)) {
        out.diagnostics.push(Diagnostic::error(
            file,
            root.pos,
            "a document must be a mapping with apiVersion, kind, metadata and spec",
        ));
        return;
    }
    let before = out.diagnostics.len();

    match root.get("apiVersion") {
        None => out.diagnostics.push(
            Diagnostic::error(file, root.pos, "missing `apiVersion`")
                .with_help(format!("add `apiVersion: {API_VERSION}`")),
        ),
        Some(v) if v.as_str() != Some(API_VERSION) => out.diagnostics.push(
            Diagnostic::error(
                file,
                v.pos,
                format!(
                    "unsupported apiVersion `{}`",
                    v.as_str().unwrap_or("(not a string)")
                ),
            )
            .with_help(format!("this version of microfaas reads `{API_VERSION}`")),
        ),
        Some(_) => {}
    }

    let kind = match root.get("kind") {
        None => {
            out.diagnostics.push(
                Diagnostic::error(file, root.pos, "missing `kind`").with_help(format!(
                    "one of {}",
                    Kind::ALL.map(|k| k.as_str()).join(", ")
                )),
            );
            None
        }
        Some(k) => {
            let text = k.as_str().unwrap_or("");
            match Kind::ALL.into_iter().find(|kind| kind.as_str() == text) {
                Some(kind) => Some(kind),
                None => {
                    let mut d = Diagnostic::error(file, k.pos, format!("unknown kind `{text}`"));
                    d.help = Some(match did_you_mean(text, Kind::ALL.map(|k| k.as_str())) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => {
                            format!("known kinds: {}", Kind::ALL.map(|k| k.as_str()).join(", "))
                        }
                    });
                    out.diagnostics.push(d);
                    None
                }
            }
        }
    };

    match root
        .get("metadata")
        .and_then(|m| m.get("name").map(|n| (m, n)))
    {
        None => {
            let pos = root.get("metadata").map_or(root.pos, |m| m.pos);
            out.diagnostics
                .push(Diagnostic::error(file, pos, "missing `metadata.name`"));
        }
        Some((_, n)) => {
            if let Err(why) = check_dns_label(n.as_str().unwrap_or("")) {
                out.diagnostics.push(Diagnostic::error(
                    file,
                    n.pos,
                    format!("invalid name `{}`: {why}", n.as_str().unwrap_or("")),
                ));
            }
        }
    }

    if let Some(spec) = root.get("spec") {
        let mut secret_found = false;
        spec.walk_keys(&mut |k| {
            if let Some((_, env, file_field)) = INLINE_SECRETS.iter().find(|(s, _, _)| *s == k.name) {
                secret_found = true;
                out.diagnostics.push(
                    Diagnostic::error(
                        file,
                        k.pos,
                        format!("`{}` must not be written inline in a manifest", k.name),
                    )
                    .with_help(format!(
                        "name where to read it instead: `{env}` (an environment variable) or `{file_field}` (a file)"
                    )),
                );
            }
        });
        if secret_found {
            return;
        }
    }

    let Some(kind) = kind else { return };
    let parsed = match kind {
        Kind::Cluster => typed(chunk, Spec::Cluster),
        Kind::Switch => typed(chunk, Spec::Switch),
        Kind::PowerMeter => typed(chunk, Spec::PowerMeter),
        Kind::Worker => typed(chunk, Spec::Worker),
        Kind::WorkerSet => typed(chunk, Spec::WorkerSet),
        Kind::Function => typed(chunk, Spec::Function),
        Kind::Workload => typed(chunk, Spec::Workload),
    };
    match parsed {
        // Kept even when the header had errors, so the rest of the document is still checked;
        // any error anywhere stops apply all the same.
        Ok((metadata, spec)) => out.resources.push(Resource {
            metadata,
            spec,
            origin: Origin {
                file: file.clone(),
                pos: root.pos,
            },
            node: root,
            owner: None,
        }),
        Err(e) => {
            let (msg, help) = error_message(&e);
            let name_missing = msg.contains("missing field `name`")
                && out.diagnostics[before..]
                    .iter()
                    .any(|d| d.message.contains("missing `metadata.name`"));
            if name_missing {
                return;
            }
            let mut d = Diagnostic::error(file, error_pos(&e, offset), msg);
            d.help = help;
            out.diagnostics.push(d);
        }
    }
}

fn shift(node: &mut Node, offset: u32) {
    node.pos.line = node.pos.line.saturating_add(offset);
    match &mut node.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                k.pos.line = k.pos.line.saturating_add(offset);
                shift(v, offset);
            }
        }
        Value::Seq(items) => items.iter_mut().for_each(|n| shift(n, offset)),
        _ => {}
    }
}

/// RFC 1123 label, as Kubernetes names: what a worker is called on a command line, in a file
/// name under the state dir and on the kernel command line.
pub fn check_dns_label(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > 63 {
        return Err("must be at most 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only lowercase letters, digits and `-` are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// An orchestrator's name (`serve --name`, a worker's `orchestrators`): a host name, i.e.
/// dot-separated RFC 1123 labels, at most 253 characters.
pub fn check_orchestrator_name(name: &str) -> Result<(), &'static str> {
    if name.len() > 253 {
        return Err("must be at most 253 characters");
    }
    name.split('.').try_for_each(check_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orchestrator_names_are_host_names() {
        assert!(check_orchestrator_name("rack-1.lab").is_ok());
        assert!(check_orchestrator_name("orch").is_ok());
        assert!(check_orchestrator_name("Rack").is_err());
        assert!(check_orchestrator_name("a..b").is_err());
        assert!(check_orchestrator_name("").is_err());
    }

    #[test]
    fn splits_documents_keeping_line_offsets() {
        let docs = split_documents("# c\na: 1\n---\nb: 2\n--- \n---\nc: 3\n...\n");
        let starts: Vec<u32> = docs.iter().map(|d| d.0).collect();
        assert_eq!(starts, vec![0, 2, 5]);
        assert!(docs[1].1.contains("b: 2"));
    }

    #[test]
    fn dns_labels() {
        assert!(check_dns_label("vm-0").is_ok());
        assert!(check_dns_label("Vm").is_err());
        assert!(check_dns_label("-a").is_err());
        assert!(check_dns_label(&"a".repeat(64)).is_err());
    }
}
