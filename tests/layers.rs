//! The crate is layered: every module uses only modules below it, so there is no import cycle in
//! `src/` (see `src/lib.rs` and DESIGN.md for the order).
//!
//! This test reads `src/**/*.rs` (plain text, std only), strips comments and literals, collects
//! every `crate::…`, `super::…` and `self::…` path (including `use crate::{a, b::{c}}` groups and
//! names re-exported at the crate root), and builds a graph of modules: one node per top-level
//! module, and one per submodule of the modules in [`SPLIT`] (each dialect is its own node). It
//! fails with the cycle's path, and the line that makes each edge, when there is a cycle.
//!
//! Not checked: the binary's modules (`src/main.rs`, `src/cli/`: another crate, above the library
//! by construction); the emulator's files among themselves (`src/emulator/` is one node while it is
//! being restructured; its edges to the rest of the crate are checked).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Modules whose submodules are nodes of their own.
const SPLIT: &[&str] = &["dialect"];

/// Modules collapsed into one node (their internal structure is not checked).
const COLLAPSED: &[&str] = &["emulator"];

/// The lower layers, bottom first: a module listed here may use only modules listed before it
/// (or the leaf modules of [`LEAVES`]). Modules not listed are checked for cycles only.
const LAYERS: &[&[&str]] = &[
    &["failure", "backoff"],
    &["secret", "tls"],
    &["url_rule"],
    &["transport"],
    &["dialect", "dialect::route"],
    &["dialect::ibkr", "dialect::ticket", "dialect::signalr"],
    &["config"],
];

/// Plain-data modules that use no other module of the crate; anything may use them.
const LEAVES: &[&str] = &["subscription", "status", "channel"];

/// A module graph: node → (node it uses → first place it does so).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// Source text with comments, string, byte-string and char literals replaced by spaces (line
/// breaks kept, so line numbers stay right).
fn strip(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && !prev_is_ident(&b, i)
            && raw_string_at(&b, i + usize::from(c == 'b')).is_some()
        {
            let start = i + usize::from(c == 'b');
            let hashes = raw_string_at(&b, start).unwrap_or(0);
            let mut j = start + 1 + hashes + 1; // past r, #…#, "
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &b[i..j.min(b.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{1F}') — or a lifetime ('a), left alone.
            let end = if next == Some('\\') {
                (i + 2..b.len().min(i + 12)).find(|&j| b[j] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    for _ in i..=e {
                        out.push(' ');
                    }
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// At `r` of a raw string `r"…"` / `r#"…"#`: the number of hashes.
fn raw_string_at(b: &[char], i: usize) -> Option<usize> {
    if b.get(i) != Some(&'r') {
        return None;
    }
    let hashes = b[i + 1..].iter().take_while(|&&c| c == '#').count();
    (b.get(i + 1 + hashes) == Some(&'"')).then_some(hashes)
}

/// The module path of a file under `src/` (`dialect/signalr/wire.rs` → `[dialect, signalr, wire]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_string();
        if stem != "mod" && stem != "lib" {
            parts.push(stem);
        }
    }
    parts
}

/// Everything needed to resolve a path to a node.
struct Crate {
    /// All module paths that exist.
    modules: BTreeSet<Vec<String>>,
    /// Names re-exported at the crate root (`pub use status::Status` → `Status` → `[status]`).
    root_exports: BTreeMap<String, Vec<String>>,
}

impl Crate {
    /// The node of an absolute path (`[dialect, ibkr, Ibkr]` → `dialect::ibkr`).
    fn node(&self, path: &[String]) -> Option<String> {
        let first = path.first()?;
        let module: Vec<String> = if self.modules.contains(&vec![first.clone()]) {
            vec![first.clone()]
        } else {
            self.root_exports.get(first)?.clone()
        };
        let mut full = module.clone();
        full.extend(path.iter().skip(1).cloned());
        if SPLIT.contains(&module[0].as_str()) && full.len() >= 2 {
            let sub = vec![full[0].clone(), full[1].clone()];
            if self.modules.contains(&sub) {
                return Some(sub.join("::"));
            }
        }
        Some(module[0].clone())
    }
}

/// The paths (absolute, as segments) a `use`-tree or expression path starting at `i` names;
/// `prefix` is what it is relative to.
fn parse_paths(t: &[char], mut i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix;
    loop {
        while i < t.len() && t[i].is_whitespace() {
            i += 1;
        }
        if t.get(i) == Some(&'{') {
            i += 1;
            loop {
                i = parse_paths(t, i, path.clone(), out);
                while i < t.len() && t[i].is_whitespace() {
                    i += 1;
                }
                match t.get(i) {
                    Some(',') => i += 1,
                    Some('}') => return i + 1,
                    _ => return i,
                }
                while i < t.len() && t[i].is_whitespace() {
                    i += 1;
                }
                if t.get(i) == Some(&'}') {
                    return i + 1;
                }
            }
        }
        let start = i;
        while i < t.len() && (t[i].is_alphanumeric() || t[i] == '_') {
            i += 1;
        }
        if i == start {
            out.push(path);
            return i;
        }
        let seg: String = t[start..i].iter().collect();
        if seg != "self" || path.is_empty() {
            path.push(seg);
        }
        let mut j = i;
        while j < t.len() && t[j].is_whitespace() {
            j += 1;
        }
        if t.get(j) == Some(&':') && t.get(j + 1) == Some(&':') {
            i = j + 2;
        } else {
            out.push(path);
            return i;
        }
    }
}

/// Reads the crate's sources into a module graph.
fn graph(files: &[(PathBuf, String)]) -> Graph {
    let mut modules = BTreeSet::new();
    for (rel, _) in files {
        let m = module_path(rel);
        for n in 1..=m.len() {
            modules.insert(m[..n].to_vec());
        }
    }
    let mut root_exports = BTreeMap::new();
    if let Some((_, lib)) = files.iter().find(|(p, _)| p == Path::new("lib.rs")) {
        let text: Vec<char> = strip(lib).chars().collect();
        let s: String = text.iter().collect();
        for (at, _) in s.match_indices("pub use ") {
            let mut paths = Vec::new();
            parse_paths(&text, at + "pub use ".len(), Vec::new(), &mut paths);
            for p in paths {
                if let (Some(first), Some(last)) = (p.first(), p.last()) {
                    if modules.contains(&vec![first.clone()]) {
                        root_exports.insert(last.clone(), vec![first.clone()]);
                    }
                }
            }
        }
    }
    let krate = Crate {
        modules,
        root_exports,
    };
    let mut g = Graph::new();
    for (rel, src) in files {
        let module = module_path(rel);
        if module.is_empty() {
            continue; // lib.rs: declarations and re-exports only
        }
        let Some(from) = krate.node(&module) else {
            continue;
        };
        g.entry(from.clone()).or_default();
        // A file's unit tests (`#[cfg(test)] mod tests { use super::*; … }`, at its end) are not
        // part of the layering: their `super` is the file's own module, not its parent.
        let src = src.split("#[cfg(test)]\nmod tests").next().unwrap_or(src);
        let text: Vec<char> = strip(src).chars().collect();
        for (i, _) in text.iter().enumerate() {
            if prev_is_ident(&text, i) || (i > 0 && text[i - 1] == ':') {
                continue;
            }
            let rest = |kw: &str| {
                kw.chars()
                    .enumerate()
                    .all(|(k, c)| text.get(i + k) == Some(&c))
            };
            let (base, skip): (Vec<String>, usize) = if rest("crate::") {
                (Vec::new(), "crate::".len())
            } else if rest("self::") {
                (module.clone(), "self::".len())
            } else if rest("super::") {
                // A `mod.rs` file is its module, so `super` is always the parent module.
                let mut base = module.clone();
                let mut k = i;
                while text[k..].starts_with(&['s', 'u', 'p', 'e', 'r', ':', ':']) {
                    base.pop();
                    k += "super::".len();
                }
                (base, k - i)
            } else {
                continue;
            };
            let mut paths = Vec::new();
            parse_paths(&text, i + skip, base, &mut paths);
            let line = 1 + text[..i].iter().filter(|&&c| c == '\n').count();
            for p in paths {
                let Some(to) = krate.node(&p) else { continue };
                if to != from {
                    g.entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert_with(|| format!("src/{}:{line}", rel.display()));
                }
            }
        }
    }
    g
}

/// The first cycle found, as a list of nodes that starts and ends with the same node.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &Graph,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for to in g.get(n).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(to, g, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut done, &mut Vec::new()))
}

/// A readable account of a cycle: each edge with the line that makes it.
fn describe(g: &Graph, cycle: &[String]) -> String {
    let mut s = format!("import cycle: {}\n", cycle.join(" -> "));
    for w in cycle.windows(2) {
        let at = g
            .get(&w[0])
            .and_then(|e| e.get(&w[1]))
            .map_or("?", String::as_str);
        let _ = writeln!(s, "  {} uses {} at {at}", w[0], w[1]);
    }
    s
}

/// Edges that go against [`LAYERS`].
fn layer_violations(g: &Graph) -> Vec<String> {
    let layer = |n: &str| LAYERS.iter().position(|l| l.contains(&n));
    let mut bad = Vec::new();
    for (from, edges) in g {
        let Some(lf) = layer(from) else { continue };
        for (to, at) in edges {
            let ok = LEAVES.contains(&to.as_str()) || layer(to).is_some_and(|lt| lt < lf);
            if !ok {
                bad.push(format!("{from} (layer {lf}) uses {to} at {at}: only lower layers and {LEAVES:?} may be used"));
            }
        }
    }
    bad
}

fn read_sources(root: &Path) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            if path.is_dir() {
                if rel != Path::new("cli") {
                    walk(&path, root, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") && rel != Path::new("main.rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                out.push((rel, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

fn collapse(mut g: Graph) -> Graph {
    for c in COLLAPSED {
        // `Crate::node` already maps every emulator file to the `emulator` node.
        if let Some(e) = g.get_mut(*c) {
            e.remove(*c);
        }
    }
    g
}

#[test]
fn src_has_no_import_cycle_and_the_lower_layers_hold() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_sources(&src);
    assert!(
        files.len() > 20,
        "read only {} files from {}",
        files.len(),
        src.display()
    );
    let g = collapse(graph(&files));
    for (from, edges) in &g {
        println!(
            "{from} -> {}",
            edges.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(cycle) = find_cycle(&g) {
        panic!("{}", describe(&g, &cycle));
    }
    let bad = layer_violations(&g);
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
    // The checker saw the edges it must see (a parser that sees nothing proves nothing).
    for (from, to) in [
        ("config", "dialect::ibkr"),
        ("dialect::ibkr", "failure"),
        ("tls", "failure"),
    ] {
        assert!(
            g.get(from).is_some_and(|e| e.contains_key(to)),
            "the checker missed {from} -> {to}"
        );
    }
}

fn files(list: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    list.iter()
        .map(|(p, s)| (PathBuf::from(p), s.to_string()))
        .collect()
}

#[test]
fn a_planted_cycle_is_reported_with_its_path_and_lines() {
    let g = graph(&files(&[
        ("lib.rs", "pub mod config; pub mod dialect; pub mod failure;\npub use config::StreamConfig;"),
        ("failure.rs", "// use crate::dialect::X; (a comment is not an import)\nlet s = \"crate::dialect\";\nuse crate::StreamConfig;"),
        ("config.rs", "use crate::dialect::{ibkr::IbkrConfig, Dialect};"),
        ("dialect/mod.rs", "pub mod ibkr;"),
        ("dialect/ibkr.rs", "use super::Dialect;\nfn f() -> crate::failure::Failure { todo!() }"),
    ]));
    let cycle = find_cycle(&g).expect("the planted cycle");
    let text = describe(&g, &cycle);
    assert!(
        text.contains("failure uses config at src/failure.rs:3"),
        "{text}"
    );
    assert!(
        text.contains("config uses dialect::ibkr at src/config.rs:1"),
        "{text}"
    );
    assert!(
        text.contains("dialect::ibkr uses failure at src/dialect/ibkr.rs:2"),
        "{text}"
    );
    assert!(
        !g["failure"].contains_key("dialect"),
        "comments and strings are not imports"
    );
    assert!(
        g["dialect::ibkr"].contains_key("dialect"),
        "super:: resolves to the parent"
    );
}

#[test]
fn an_acyclic_graph_passes_and_an_upward_edge_breaks_the_layers() {
    let g = graph(&files(&[
        ("lib.rs", "pub mod config; pub mod failure; pub mod tls;"),
        ("failure.rs", "use std::fmt;"),
        ("tls.rs", "use crate::{failure::Failure, config};"),
        ("config.rs", "use crate::tls::{self, TlsConfig};"),
    ]));
    // tls <-> config is a cycle; without the upward edge the graph is clean.
    assert!(find_cycle(&g).is_some());
    let g = graph(&files(&[
        (
            "lib.rs",
            "pub mod config; pub mod failure; pub mod tls; pub mod handle;",
        ),
        ("failure.rs", "use std::fmt;"),
        ("tls.rs", "use crate::{failure::Failure};"),
        ("config.rs", "use crate::tls::{self, TlsConfig};"),
        ("handle.rs", "use crate::config::StreamConfig;"),
    ]));
    assert_eq!(find_cycle(&g), None);
    assert!(
        layer_violations(&g).is_empty(),
        "{:?}",
        layer_violations(&g)
    );
    let g = graph(&files(&[
        ("lib.rs", "pub mod config; pub mod failure; pub mod handle;"),
        ("failure.rs", "use crate::handle::Handle;"),
        ("handle.rs", "use crate::config::StreamConfig;"),
    ]));
    assert_eq!(find_cycle(&g), None);
    assert_eq!(
        layer_violations(&g).len(),
        1,
        "failure uses handle, above it"
    );
}

#[test]
fn a_files_unit_tests_are_not_part_of_the_layering() {
    let g = graph(&files(&[
        ("lib.rs", "pub mod dialect; pub mod failure;"),
        ("failure.rs", "use std::fmt;"),
        ("dialect/mod.rs", "pub mod route;"),
        (
            "dialect/route.rs",
            "use crate::failure::Failure;\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
        ),
    ]));
    assert!(g["dialect::route"].contains_key("failure"), "{g:?}");
    // `super` inside the test module is route itself, not its parent.
    assert!(!g["dialect::route"].contains_key("dialect"), "{g:?}");
}
