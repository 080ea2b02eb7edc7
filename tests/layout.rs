//! The shape the code keeps: no source file over 500 lines, no function over 80 outside
//! tests, and the top-level modules depend on each other in one direction only.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use syn::{
    Attribute, Block, ItemMod, Signature, UsePath, UseTree,
    visit::{self, Visit},
};

const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 80;

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).expect("read a source folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Whether `attrs` make an item test-only (`#[cfg(test)]`, `#[test]`).
fn test_only(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("test")
            || (attr.path().is_ident("cfg")
                && attr
                    .parse_args::<syn::Ident>()
                    .is_ok_and(|arg| arg == "test"))
    })
}

/// What one file says of itself: its long functions and the top-level modules it names.
#[derive(Default)]
struct Reading {
    long_functions: Vec<(String, usize)>,
    names: BTreeSet<String>,
}

impl Reading {
    fn function(&mut self, attrs: &[Attribute], signature: &Signature, body: &Block) {
        let start = signature.fn_token.span.start().line;
        let end = body.brace_token.span.close().end().line;
        let lines = end + 1 - start;
        if !test_only(attrs) && lines > MAX_FN_LINES {
            self.long_functions
                .push((signature.ident.to_string(), lines));
        }
    }

    fn crate_path<'a>(&mut self, mut segments: impl Iterator<Item = &'a syn::Ident>) {
        if segments.next().is_some_and(|first| first == "crate")
            && let Some(module) = segments.next()
        {
            self.names.insert(module.to_string());
        }
    }
}

impl<'ast> Visit<'ast> for Reading {
    fn visit_item_mod(&mut self, module: &'ast ItemMod) {
        if !test_only(&module.attrs) {
            visit::visit_item_mod(self, module);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        self.function(&item.attrs, &item.sig, &item.block);
        if !test_only(&item.attrs) {
            visit::visit_item_fn(self, item);
        }
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        self.function(&item.attrs, &item.sig, &item.block);
        visit::visit_impl_item_fn(self, item);
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(body) = &item.default {
            self.function(&item.attrs, &item.sig, body);
        }
        visit::visit_trait_item_fn(self, item);
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if let UseTree::Path(UsePath { ident, tree, .. }) = &item.tree
            && ident == "crate"
        {
            let mut modules = Vec::new();
            first_segments(tree, &mut modules);
            self.names.extend(modules);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.crate_path(path.segments.iter().map(|s| &s.ident));
        visit::visit_path(self, path);
    }
}

/// The first names under `use crate::…`: `{a::x, b}` names `a` and `b`.
fn first_segments(tree: &UseTree, into: &mut Vec<String>) {
    match tree {
        UseTree::Path(path) => into.push(path.ident.to_string()),
        UseTree::Name(name) => into.push(name.ident.to_string()),
        UseTree::Rename(rename) => into.push(rename.ident.to_string()),
        UseTree::Group(group) => group.items.iter().for_each(|t| first_segments(t, into)),
        UseTree::Glob(_) => {}
    }
}

/// Files that hold nothing but tests: `tests.rs` and files under a `tests` folder.
fn test_file(path: &Path) -> bool {
    path.file_stem().is_some_and(|s| s == "tests")
        || path.components().any(|c| c.as_os_str() == "tests")
}

fn read(path: &Path) -> (String, Reading) {
    let text = fs::read_to_string(path).expect("read a source file");
    let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reading = Reading::default();
    if !test_file(path) {
        reading.visit_file(&file);
    }
    (text, reading)
}

/// The top-level module a file under `src/` belongs to (`lib` and `main` for the roots).
fn top_module(path: &Path) -> String {
    let relative = path.strip_prefix(source()).expect("a file under src");
    let first = relative.components().next().expect("a path");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_owned()
}

#[test]
fn no_source_file_over_500_lines_and_no_function_over_80() {
    let mut too_long = Vec::new();
    for path in rust_files(&source()) {
        let (text, reading) = read(&path);
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            too_long.push(format!("{}: {lines} lines", path.display()));
        }
        for (function, lines) in reading.long_functions {
            too_long.push(format!(
                "{}: fn {function} is {lines} lines",
                path.display()
            ));
        }
    }
    assert!(too_long.is_empty(), "{}", too_long.join("\n"));
}

#[test]
fn top_level_modules_depend_one_way() {
    let mut depends: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in rust_files(&source()) {
        let module = top_module(&path);
        if module == "lib" || module == "main" {
            continue;
        }
        let (_, reading) = read(&path);
        let uses = depends.entry(module.clone()).or_default();
        uses.extend(reading.names.into_iter().filter(|name| *name != module));
    }
    // Peel off modules that depend on nothing left; whatever remains is in a cycle.
    let mut left = depends.clone();
    while let Some(leaf) = left
        .iter()
        .find(|(_, uses)| uses.iter().all(|name| !left.contains_key(name)))
        .map(|(module, _)| module.clone())
    {
        left.remove(&leaf);
    }
    assert!(
        left.is_empty(),
        "these top-level modules import each other in a cycle: {left:#?}"
    );
    // The order the design names: cli → operator → controller → {secrets, store} →
    // core → api.
    let below = |module: &str, other: &str| depends[module].contains(other);
    for (lower, upper) in [
        ("api", "core"),
        ("core", "store"),
        ("core", "secrets"),
        ("core", "controller"),
        ("store", "controller"),
        ("secrets", "controller"),
        ("controller", "operator"),
        ("operator", "cli"),
    ] {
        assert!(!below(lower, upper), "{lower} must not import {upper}");
    }
}
