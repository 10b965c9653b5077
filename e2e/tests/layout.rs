//! The layout sections say where each concept lives, so a newcomer can find it; these
//! tests hold them to the tree. A module added, moved or renamed without its line fails
//! here instead of misleading the next reader: each crate's `lib.rs` names every module
//! it declares (and declares every source file beside it), and README.md's Layout block
//! names every top-level entry and each crate's modules and module folders, at any depth.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

/// The crates whose modules README.md's Layout names.
const CRATES: [&str; 8] = [
    "protocol",
    "client",
    "common",
    "hub",
    "device-proxy",
    "service-proxy",
    "e2e",
    "bench",
];

/// Top-level entries the Layout block need not name: build output, and files every
/// reader knows.
const UNLISTED: [&str; 4] = ["target", "Cargo.lock", "README.md", ".gitignore"];

fn root() -> PathBuf {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR"));
    e2e.parent()
        .expect("the workspace holds e2e/")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn names(dir: &Path) -> Vec<(String, PathBuf)> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut names: Vec<(String, PathBuf)> = entries
        .map(|e| e.expect("a directory entry").path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    names.sort();
    names
}

/// The modules a source folder holds: its `.rs` files but the crate roots and `mod.rs`,
/// and its folders that are modules (written `name/`).
fn modules_in(src: &Path) -> BTreeSet<String> {
    let mut modules = BTreeSet::new();
    for (name, path) in names(src) {
        if path.is_dir() && path.join("mod.rs").is_file() {
            modules.insert(format!("{name}/"));
        } else if let Some(stem) = name.strip_suffix(".rs") {
            if !["lib", "main", "mod"].contains(&stem) {
                modules.insert(stem.to_string());
            }
        }
    }
    modules
}

/// [`modules_in`] `src` and in each of its module folders, at any depth.
fn modules_within(src: &Path) -> BTreeSet<String> {
    let mut modules = modules_in(src);
    for folder in modules.clone() {
        if let Some(name) = folder.strip_suffix('/') {
            modules.extend(modules_within(&src.join(name)));
        }
    }
    modules
}

/// The modules a file declares: `mod x;`, `pub mod x;`, `pub(crate) mod x;`.
fn declared(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub ")
                .or(line.strip_prefix("pub(crate) "));
            let name = rest
                .unwrap_or(line)
                .strip_prefix("mod ")?
                .strip_suffix(';')?;
            Some(name.trim().to_string())
        })
        .collect()
}

/// The words of a text, as the Layout block and `//!` headers name modules: `[`x`]`,
/// `x`, `x/`, `x,` all give `x` (a folder also `x/`).
fn words(text: &str) -> BTreeSet<String> {
    let cut = |c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '*' | '/'));
    let mut words = BTreeSet::new();
    for word in text.split(cut).filter(|w| !w.is_empty()) {
        words.insert(word.trim_end_matches('.').to_string());
        words.insert(word.trim_end_matches(['.', '/']).to_string());
    }
    words
}

#[test]
fn every_lib_rs_names_each_module_it_declares_and_declares_each_file() {
    let mut wrong = Vec::new();
    for crate_dir in CRATES {
        let src = root().join(crate_dir).join("src");
        let lib = src.join("lib.rs");
        if !lib.is_file() {
            continue;
        }
        let text = read(&lib);
        let header: String = text.lines().filter(|l| l.starts_with("//!")).collect();
        let (declared, named) = (declared(&text), words(&header));
        for module in &declared {
            if !named.contains(module) {
                wrong.push(format!(
                    "{crate_dir}/src/lib.rs: its //! header names no `{module}`"
                ));
            }
        }
        for module in modules_in(&src) {
            if !declared.contains(module.trim_end_matches('/')) {
                wrong.push(format!(
                    "{crate_dir}/src: {module} is not a module of lib.rs"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// README.md's Layout block, as (entry, what its line says).
fn layout() -> Vec<(String, String)> {
    let readme = read(&root().join("README.md"));
    let (_, after) = readme
        .split_once("## Layout\n\n```\n")
        .expect("README.md has a ## Layout section with a code block");
    let (block, _) = after.split_once("```").expect("the Layout block ends");
    block
        .lines()
        .filter_map(|line| line.split_once(char::is_whitespace))
        .map(|(entry, what)| (entry.to_string(), what.trim().to_string()))
        .collect()
}

#[test]
fn the_readme_layout_names_every_top_level_entry_and_each_crate_s_modules() {
    let layout = layout();
    let listed: BTreeSet<&str> = layout
        .iter()
        .map(|(e, _)| e.trim_end_matches('/'))
        .collect();
    let mut wrong = Vec::new();
    for (name, _) in names(&root()) {
        let hidden = name.starts_with('.') && name != ".ci";
        if !hidden && !UNLISTED.contains(&name.as_str()) && !listed.contains(name.as_str()) {
            wrong.push(format!("{name} is not in README.md's Layout"));
        }
    }
    for (entry, _) in &layout {
        if !root().join(entry).exists() {
            wrong.push(format!(
                "README.md's Layout names {entry}, which is not in the tree"
            ));
        }
    }
    for crate_dir in CRATES {
        let line = layout
            .iter()
            .find(|(e, _)| e.trim_end_matches('/') == crate_dir);
        let Some((_, what)) = line else { continue };
        let named = words(what);
        for module in modules_within(&root().join(crate_dir).join("src")) {
            if !named.contains(&module) {
                wrong.push(format!(
                    "README.md's Layout line for {crate_dir}/ names no {module}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
